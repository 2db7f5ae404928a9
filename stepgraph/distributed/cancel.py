"""Cancelling a stored run that no process coordinates (queued, paused, or orphaned).

Such a run has no live coordinator to carry a cancel out: the canceller takes the run's
lease (proof that no process runs it, and no process takes it while it is held), checks
the run has not ended meanwhile, and stores it as ``cancelled`` with a
``WorkflowCancelled`` failure as its result, as a caller's cancel leaves a run. It can
still be resumed from its latest checkpoint. A run whose lease a live process holds is
left to that process (a cancel posted to its inbox reaches it).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from ..core import Failure
from ..durability.checkpoints import encode_value
from ..durability.serializer import serializer_named
from ..errors import RunNotFoundError, WorkflowCancelled
from ..stores.base import Commit, Store, StoredStatus

__all__ = ["Cancelled", "cancel_unowned"]


@dataclass(frozen=True)
class Cancelled:
    """What :func:`cancel_unowned` did: ``done`` (it stored the cancel), else why not:
    the run ``ended`` already, or a live process ``owns`` it; ``status``: the run's
    status when it looked."""

    done: bool
    status: StoredStatus
    ended: bool = False
    owned: bool = False


async def cancel_unowned(store: Store, run_id: str, reason: str) -> Cancelled:
    """Store run ``run_id`` as cancelled (``reason``: the failure's message) unless it has
    ended or a live process holds its lease.

    Raises:
        RunNotFoundError: the store has no such run.
        StoreError: the store failed.
    """
    record = await store.get_run(run_id)
    if record is None:
        raise RunNotFoundError(f"there is no run {run_id!r} in {store!r}")
    if record.status.final:
        return Cancelled(False, StoredStatus(record.status), ended=True)
    owner = f"stepgraph-cancel:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    if not await store.acquire(run_id, owner):
        return Cancelled(False, StoredStatus(record.status), owned=True)
    try:
        record = await store.get_run(run_id)  # as of the lease: it may have ended since
        if record is None:
            raise RunNotFoundError(f"run {run_id!r} is gone from {store!r}")
        if record.status.final:
            return Cancelled(False, StoredStatus(record.status), ended=True)
        failure = Failure.from_error(WorkflowCancelled(reason))
        result = encode_value(failure, serializer_named("json"), "the failure")
        pending = store.commit(Commit(run_id, status=StoredStatus.CANCELLED, result=result))
        if pending is not None:
            await pending
        return Cancelled(True, StoredStatus(record.status))
    finally:
        await store.release(run_id, owner)
