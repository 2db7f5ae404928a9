"""``store.result(run_id)``: wait for a stored run's end, from any process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import (
    CheckpointError,
    RunNotFoundError,
    StoreUnavailableError,
    WorkflowCancelled,
    WorkflowTimeoutError,
)
from .base import RunRecord, StoredStatus

if TYPE_CHECKING:
    from ..durability.serializer import Serializer

__all__ = ["StoreResults", "outcome_of", "read_on"]

_log = logging.getLogger("stepgraph.stores")
_T = TypeVar("_T")

_FIRST_POLL = 0.002
_LAST_POLL = 0.25  # a poll that backs off: idle waiting costs a read every quarter second


async def read_on(read: Callable[..., Awaitable[_T]], *args: Any, until: float | None = None) -> _T:
    """``await read(*args)``, again (with a back-off) while the store is unavailable (a
    lost connection, a server restarting): what follows a run does not end for it.

    Raises:
        StoreUnavailableError: still, at ``until`` (a ``time.monotonic()``; None: never).
    """
    pause = _FIRST_POLL
    while True:
        try:
            return await read(*args)
        except StoreUnavailableError as exc:
            if until is not None and time.monotonic() >= until:
                raise
            if pause == _FIRST_POLL:  # once per outage
                _log.warning("%s; reading again until the store answers", exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LAST_POLL)


def outcome_of(record: RunRecord, trusted: Serializer | None = None) -> Any:
    """The result of an ended run's record; a failed run raises its stored error, a
    cancelled one ``WorkflowCancelled``. ``trusted``: the reader's serializer (None: JSON;
    a pickled result is read only by a reader that trusts pickle)."""
    from ..durability.checkpoints import decode_value  # durability builds on stores
    from ..durability.serializer import JSON

    status = StoredStatus(record.status)
    if status is StoredStatus.CANCELLED:
        raise WorkflowCancelled(f"run {record.run_id!r} was cancelled")
    if record.result is None and status is StoredStatus.COMPLETED:  # (None is stored too)
        raise CheckpointError(
            f"the record of run {record.run_id!r} is corrupt: the run completed, but its "
            f"result is missing",
            run_id=record.run_id,
        )
    value = (
        None
        if record.result is None
        else decode_value(
            record.result, "the stored result", run_id=record.run_id, trusted=trusted or JSON
        )
    )
    if status is StoredStatus.FAILED:
        error = getattr(value, "error", None)
        if isinstance(error, BaseException):
            raise error
        raise RuntimeError(f"run {record.run_id!r} failed (its error was not stored)")
    return value


class StoreResults:
    """``result()`` for a store: wait, polling with a back-off, until the run has ended."""

    async def get_run(self, run_id: str) -> RunRecord | None:  # pragma: no cover - the store's
        raise NotImplementedError

    async def result(
        self, run_id: str, timeout: float | None = None, *, serializer: str = "json"
    ) -> Any:
        """Wait until run ``run_id`` ends (in this process or another); its result.

        ``serializer``: what the reader trusts, as a workflow's option: ``"json"`` (the
        default) never unpickles; ``"pickle"`` also reads what pickle workflows wrote
        (loading a pickle runs code: only from a store only you write to).

        Raises:
            RunNotFoundError: the store has no such run.
            WorkflowTimeoutError: it did not end within ``timeout`` seconds.
            StoreUnavailableError: the store could not be reached until ``timeout`` ran
                out (it is read on, with a back-off, while it cannot be).
            WorkflowCancelled: it was cancelled.
            Exception: a failed run's stored error (``RecordedError`` when it failed in
                another process, with the original type's name, message and traceback).
        """
        from ..durability.serializer import serializer_named

        trusted = serializer_named(serializer)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_POLL
        while True:
            record = await read_on(self.get_run, run_id, until=deadline)
            if record is None:
                raise RunNotFoundError(f"no run {run_id!r} in {self!r}")
            status = StoredStatus(record.status)
            if status.final:
                return outcome_of(record, trusted)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkflowTimeoutError(
                        f"run {run_id!r} did not end within {timeout} s (it is {status})"
                    )
                pause = min(pause, left)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LAST_POLL)
