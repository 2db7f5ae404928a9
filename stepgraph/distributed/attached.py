"""AttachedRun: the caller's port on a run another process coordinates (``wf.attach``).

Everything goes through the store:

- the **stream** is read from the run's stored stream events, from its start, in order,
  ending with what the run streamed as it ended (the ``StopEvent``);
- the **outcome** resolves when the stored record says the run has ended (a failed run
  raises its stored error);
- **sends, responses and cancels** are posted to the run's inbox; the process holding the
  run (a worker) delivers them, or the one that resumes it, once. A send is posted in the
  background: ``await handler.flush()`` waits until what was sent is stored (a process
  that ends first loses it); ``await handler.cancel()`` waits for its cancel.

Reads poll the store with a back-off (2 ms, doubling to a quarter second); while the
store is unavailable (a lost connection, a server restarting), they are tried again with
the same back-off: an outage does not end the stream or fail the handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..core import RunStatus
from ..durability.checkpoints import decode_value
from ..durability.serializer import serializer_named
from ..errors import (
    RunFinishedError,
    RunIdConflictError,
    RunNotFoundError,
    StepgraphError,
    StoreError,
    WorkflowCancelled,
)
from ..runtime.run import settle_like
from ..stores.base import RunRecord, StoredStatus
from ..stores.results import outcome_of, read_on
from .cancel import cancel_unowned
from .messages import encode_message

if TYPE_CHECKING:
    from ..core.state import OpenRequest
    from ..runtime.launch import RunOptions
    from ..runtime.plan import RunPlan

__all__ = ["AttachedRun"]

_log = logging.getLogger("stepgraph.distributed")
_T = TypeVar("_T")

_FIRST_POLL = 0.002
_LAST_POLL = 0.25


class AttachedRun:
    """A :class:`~stepgraph.runtime.ports.CallerPort` over a stored run (see the module)."""

    def __init__(self, plan: RunPlan, options: RunOptions, run_id: str) -> None:
        self.plan = plan
        self.run_id = run_id
        self.context: Any = None  # the run's steps are elsewhere
        self._store = options.store
        self._serializer = options.serializer
        self._trusted = serializer_named(options.serializer)  # what its reads may load
        self.loop = asyncio.get_running_loop()
        self.outcome: asyncio.Future[Any] = self.loop.create_future()
        self._status = RunStatus.RUNNING
        self._posts: set[asyncio.Task[None]] = set()
        self._lost: list[StoreError] = []  # what posts no caller awaited failed with
        self._cancelling: asyncio.Task[None] | None = None
        self._consumed = False
        self._cancelled = False  # cancelled by this caller: its end is no news to report
        self._told_refusal = False  # a call raised that the run is missing (or another's)
        self._watch = self.loop.create_task(self._watch_outcome())

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def status(self) -> RunStatus:
        return self._status

    @property
    def running(self) -> bool:
        return not self.outcome.done()

    def waiter(self) -> asyncio.Future[Any]:
        """A future of its own, resolved as the outcome is (cancelling it cancels nothing)."""
        waiter: asyncio.Future[Any] = self.loop.create_future()

        self.outcome.add_done_callback(lambda outcome: settle_like(waiter, outcome))
        return waiter

    async def _watch_outcome(self) -> None:
        pause = _FIRST_POLL
        ended_before = True  # the run had ended when attached: its end is no news here
        while True:
            try:
                record = await self._record()
                status = StoredStatus(record.status)
                if status.final:
                    try:
                        value = outcome_of(record, self._trusted)
                    except WorkflowCancelled as exc:
                        self._status = RunStatus.CANCELLED
                        self.outcome.set_exception(exc)
                        if self._cancelled or ended_before:  # (as a local run's cancel by
                            self.outcome.exception()  # its caller) retrieved
                    except Exception as exc:
                        self._status = RunStatus.FAILED
                        self.outcome.set_exception(exc)
                        if ended_before:
                            self.outcome.exception()  # retrieved (awaits still get it)
                    else:
                        self._status = RunStatus.FINISHED
                        self.outcome.set_result(value)
                    return
            except Exception as exc:
                self._status = RunStatus.FAILED
                self.outcome.set_exception(exc)
                if self._told_refusal and isinstance(exc, _REFUSALS):
                    self.outcome.exception()  # retrieved: a call has raised it already
                return
            ended_before = False
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LAST_POLL)

    async def _record(self) -> RunRecord:
        """The run's record.

        Raises:
            RunNotFoundError: the store has no such run.
            RunIdConflictError: the run is one of another workflow.
        """
        record: RunRecord | None = await read_on(self._store.get_run, self.run_id)
        if record is None:
            raise RunNotFoundError(f"there is no run {self.run_id!r} in {self._store!r}")
        if record.workflow != self.name:
            raise RunIdConflictError(
                f"run {self.run_id!r} in {self._store!r} is a run of workflow "
                f"{record.workflow!r}, not of {self.name!r}: attach it with that workflow"
            )
        return record

    # -- talking to the run ---------------------------------------------------------------------

    def start(self, message: object) -> None:  # pragma: no cover - attached runs have started
        raise RuntimeError("an attached run has started elsewhere")

    def _post(self, body: dict[str, Any], *, answered: bool = False) -> asyncio.Task[None]:
        """Post ``body`` to the run's inbox. Unless the caller awaits the post
        (``answered``), a run that has ended meanwhile drops it, as a local run drops
        an event that arrives after its end."""
        data = encode_message(self._serializer, body, self.run_id)
        post = self._store.post(self.run_id, data)
        task = self.loop.create_task(post if answered else self._unless_ended(post))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)
        return task

    def send_external(self, event: object, step: str | None) -> None:
        self._post({"kind": "event", "event": event, "step": step})

    def respond(self, request_id: str, response: object) -> Awaitable[None] | None:
        body = {"kind": "response", "request_id": request_id, "response": response}
        return self._answered(self._post(body, answered=True))

    async def _answered(self, post: Awaitable[None]) -> None:
        try:
            await post
        except _REFUSALS:
            self._heard_refusal()
            raise

    def _heard_refusal(self) -> None:
        """A call raised that the run is missing (or another workflow's): awaiting the
        handler raises it again, but it is no unheard error."""
        self._told_refusal = True
        outcome = self.outcome
        if outcome.done() and not outcome.cancelled():
            outcome.exception()

    def open_request(self, request_id: str) -> OpenRequest | None:
        return None

    def cancel(self, reason: str) -> None:
        self._cancelled = True
        task = self._cancelling = self.loop.create_task(self._cancel(reason))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def stopped(self) -> None:
        """Once the cancel, and what was sent before it, is stored: a queued run as
        cancelled, any other in its inbox, whose worker carries it out when it reads it
        (awaiting the handler waits for the run's end).

        Raises:
            StoreError: the cancel, or what was sent before it, could not be stored.
        """
        await self._all_posted()
        cancelling, self._cancelling = self._cancelling, None
        if cancelling is not None and not cancelling.cancelled():
            error = cancelling.exception()
            if error is not None:
                raise error

    def flushed(self) -> Awaitable[None]:
        """Done once every post made so far is stored (a response's failure is raised
        to whoever awaits it; another post's, here: ``StoreError``)."""
        return self._all_posted()

    async def _all_posted(self) -> None:
        while self._posts:
            await asyncio.wait(list(self._posts))
        if self._lost:
            lost, self._lost = self._lost[0], []
            raise StoreError(
                f"what was sent to run {self.run_id!r} was not stored: {lost}"
            ) from lost

    async def _unless_ended(self, post: Coroutine[Any, Any, None]) -> None:
        """A post no caller awaits: dropped if the run has ended; a failure is logged and
        kept for ``flushed`` (not tried again: a post whose answer was lost may have
        been stored)."""
        try:
            await post
        except RunFinishedError:
            pass  # its outcome says so
        except StoreError as exc:  # (RunNotFoundError too: no run to take it)
            _log.error("what was sent to run %r is lost: %s", self.run_id, exc)
            self._lost.append(exc)
            if isinstance(exc, _REFUSALS):
                self._heard_refusal()  # (flushed() raises it)

    async def _cancel(self, reason: str) -> None:
        """A queued run no worker has taken is stored as cancelled here (it never starts);
        any other gets the cancel in its inbox, from where its coordinator carries it out."""
        record = await read_on(self._store.get_run, self.run_id)
        if record is not None and StoredStatus(record.status) is StoredStatus.QUEUED:
            try:
                if (await cancel_unowned(self._store, self.run_id, reason)).done:
                    return
            except StepgraphError as exc:  # the inbox, then (the post says if it fails)
                _log.info("run %r: cancelling it as queued failed: %s", self.run_id, exc)
        await self._post({"kind": "cancel", "reason": reason})  # (also: taken meanwhile)

    async def events(self, *, lifecycle: bool) -> AsyncIterator[Any]:
        """The stored stream, from the run's start, until the run has ended."""
        if self._consumed:
            from ..errors import WorkflowRuntimeError

            raise WorkflowRuntimeError(
                f"the event stream of run {self.run_id!r} is already being consumed; "
                "call stream_events() once per handler"
            )
        self._consumed = True
        try:
            await self._record()  # (another workflow's run has no stream for this one)
        except _REFUSALS:
            self._heard_refusal()
            raise
        position = -1
        pause = _FIRST_POLL
        while True:
            ended = self.outcome.done()  # read before the events: none is missed
            stored = await read_on(self._store.read_events, self.run_id, position)
            for event in stored:
                position = event.position
                yield decode_value(
                    event.data,
                    "a stream event",
                    run_id=self.run_id,
                    trusted=self._trusted,
                )
            if stored:
                pause = _FIRST_POLL
                continue
            if ended:
                error = None if self.outcome.cancelled() else self.outcome.exception()
                if isinstance(error, _REFUSALS):  # no stream to give
                    raise error
                return
            await asyncio.wait({self.outcome}, timeout=pause)
            pause = min(pause * 2, _LAST_POLL)


_REFUSALS = (RunNotFoundError, RunIdConflictError)  # no such run here, for this workflow
