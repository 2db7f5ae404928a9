"""MemoryStore: a store in this process's memory (tests, and runs that need no restart).

It keeps the same bytes the other stores keep (the runtime serializes before it stores),
so whatever works in memory works on disk. It is a plain object: make it anywhere and use
it from one event loop after another.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ..errors import RunLockedError, StoreError
from .base import (
    ANOTHER_WRITER,
    CheckpointInfo,
    Commit,
    RunRecord,
    StoredCheckpoint,
    StoredStatus,
    checkpoint_id,
    checkpoint_seq,
    status_wanted,
)
from .queue import Message, StoredEvent, Wakeups, check_postable, take_each
from .results import StoreResults

__all__ = ["MemoryStore"]


@dataclass
class _Run:
    record: RunRecord
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    # chunk name -> [(checkpoint seq, bytes or None)], in seq order
    values: dict[str, list[tuple[int, bytes | None]]] = field(default_factory=dict)
    # the checkpoint seq entries follow -> the entries, by position
    journal: dict[int, list[bytes]] = field(default_factory=dict)
    events: list[StoredEvent] = field(default_factory=list)
    lease_until: float | None = None  # a claimed run: when its worker's lease ends


class MemoryStore(StoreResults):
    """A store in memory: runs live as long as this object.

    Example::

        store = MemoryStore()
        handler = MyFlow(store=store).run()
        await handler
        print(await store.list_runs())
    """

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._open: dict[str, _Run] = {}  # the submitted runs that have not ended: claimable
        self._leases: dict[str, str] = {}
        self._lock = threading.Lock()  # for threads; event loops use it in turn
        self._inbox: list[Message] = []
        self._numbers = itertools.count()  # ids of stream events and messages
        self._work = Wakeups()

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._runs)} runs)"

    @property
    def location(self) -> str:
        """What identifies the data: this object (its runs are in it alone)."""
        return f"memory:#{id(self)}"

    # -- writes ---------------------------------------------------------------------------------

    def commit(self, batch: Commit) -> None:
        with self._lock:
            run = self._runs.get(batch.run_id)
            if run is None:
                raise StoreError(f"cannot write to run {batch.run_id!r}: the store has no such run")
            self._apply(run, batch)

    @staticmethod
    def _check(run: _Run, batch: Commit) -> None:
        """Refuse a commit whose numbers are taken (nothing of it is written)."""
        run_id = run.record.run_id
        if batch.journal and len(run.journal.get(batch.journal_after, ())) != batch.journal_at:
            raise RunLockedError(
                f"journal position {batch.journal_at} after checkpoint {batch.journal_after} "
                f"of run {run_id!r} is not the next one: {ANOTHER_WRITER}"
            )
        write = batch.checkpoint
        if write is not None and write.seq != len(run.checkpoints):
            raise RunLockedError(
                f"checkpoint {write.seq} of run {run_id!r} is not the next one "
                f"({len(run.checkpoints)}): {ANOTHER_WRITER}"
            )

    def _apply(self, run: _Run, batch: Commit) -> None:
        self._check(run, batch)
        now = datetime.now(UTC)
        if batch.events:
            run.events.extend(StoredEvent(next(self._numbers), e) for e in batch.events)
        if batch.consumed:
            gone = set(batch.consumed)
            self._inbox = [m for m in self._inbox if m.id not in gone]
        if batch.status == StoredStatus.COMPLETED:  # what is left, nothing will read
            run_id = run.record.run_id
            self._inbox = [m for m in self._inbox if m.run_id != run_id]
        if batch.journal:
            run.journal.setdefault(batch.journal_after, []).extend(batch.journal)
        write = batch.checkpoint
        if write is not None:
            seq = write.seq
            info = CheckpointInfo(
                id=checkpoint_id(run.record.run_id, seq),
                run_id=run.record.run_id,
                superstep=write.superstep,
                created_at=now,
                status=StoredStatus(write.status),
                parent_run_id=run.record.parent_run_id,
                seq=seq,
            )
            if write.full:
                for name in run.values:
                    if name not in write.values:
                        run.values[name].append((seq, None))
            for name, data in write.values.items():
                run.values.setdefault(name, []).append((seq, data))
            run.checkpoints.append(info)
            run.frames.append(bytes(write.frame))
        if batch.status is not None:
            run.record = replace(
                run.record,
                status=StoredStatus(batch.status),
                updated_at=now,
                result=batch.result if batch.result is not None else run.record.result,
            )
            self._track(run)
        # ``updated_at`` is when the record (its status, its result) last changed

    def _track(self, run: _Run) -> None:
        """Keep ``_open`` (the submitted runs that have not ended) up to date with ``run``
        (a run that ended may go on: resumed after a cancel)."""
        record = run.record
        if record.queue is None:
            return
        if StoredStatus(record.status).final:
            self._open.pop(record.run_id, None)
        else:
            self._open[record.run_id] = run

    async def create_run(self, record: RunRecord, first: Commit | None = None) -> RunRecord | None:
        with self._lock:
            existing = self._runs.get(record.run_id)
            if existing is not None:
                return existing.record
            run = _Run(record=replace(record, worker=None))
            if first is not None:
                self._apply(run, first)
            self._runs[record.run_id] = run
            self._track(run)
        if record.queue is not None:
            self._work.notify()
        return None

    # -- reads ----------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        run = self._runs.get(run_id)
        return None if run is None else run.record

    async def list_runs(self, status: str | None = None) -> list[RunRecord]:
        with self._lock:
            records = [run.record for run in self._runs.values()]
        wanted = status_wanted(status)
        if wanted is not None:
            records = [r for r in records if r.status == wanted]
        return sorted(records, key=lambda r: r.created_at)

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        run = self._runs.get(run_id)
        return [] if run is None else list(run.checkpoints)

    async def load(self, run_id: str, checkpoint_id: str | None = None) -> StoredCheckpoint | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or not run.checkpoints:
                return None
            if checkpoint_id is None:
                seq = len(run.checkpoints) - 1
            else:
                found = checkpoint_seq(run_id, checkpoint_id)
                if found is None or found >= len(run.checkpoints):
                    return None
                seq = found
            values: dict[str, bytes] = {}
            for name, versions in run.values.items():
                data = None
                for at, version in versions:
                    if at > seq:
                        break
                    data = version
                if data is not None:
                    values[name] = data
            journal = tuple(run.journal.get(seq, ()))
            return StoredCheckpoint(
                info=run.checkpoints[seq], frame=run.frames[seq], values=values, journal=journal
            )

    # -- leases ---------------------------------------------------------------------------------

    async def acquire(self, run_id: str, owner: str) -> bool:
        with self._lock:
            holder = self._leases.get(run_id)
            if holder is not None and holder != owner:
                return False
            self._leases[run_id] = owner
            return True

    async def release(self, run_id: str, owner: str) -> None:
        with self._lock:
            if self._leases.get(run_id) == owner:
                del self._leases[run_id]

    # -- the run queue --------------------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        lease: bool = False,  # leases are taken by ``take``: no round trip to save here
        take_over: bool = True,
        workflows: Sequence[str] | None = None,
    ) -> list[RunRecord]:
        now = time.time()
        taken: list[RunRecord] = []
        with self._lock:
            for run in sorted(self._open.values(), key=lambda r: r.record.created_at):
                if len(taken) >= limit:
                    break
                record = run.record
                if record.queue not in queues:
                    continue
                if workflows is not None and record.workflow not in workflows:
                    continue
                status = StoredStatus(record.status)
                until = run.lease_until
                if status is StoredStatus.QUEUED:
                    status = StoredStatus.RUNNING
                elif not take_over:
                    continue
                elif status is StoredStatus.RUNNING:
                    if until is not None and until >= now:
                        continue
                elif status is StoredStatus.PAUSED:  # its lease ran out, or idle and answered
                    if until is None:
                        if not any(m.run_id == record.run_id for m in self._inbox):
                            continue
                    elif until >= now:
                        continue
                else:
                    continue
                run.record = replace(record, status=status, worker=owner)
                run.lease_until = now + lease_seconds
                taken.append(run.record)
        return taken

    async def take(self, owner: str, run_ids: Sequence[str]) -> dict[str, StoredCheckpoint | None]:
        """Take the leases of ``run_ids``, then read their checkpoints (see ``RunQueue.take``)."""
        return await take_each(self, owner, run_ids)

    async def release_taken(self) -> None:
        """Nothing: this store gives leases up as ``release`` is called."""

    async def renew(self, owner: str, run_ids: Sequence[str], lease_seconds: float) -> None:
        until = time.time() + lease_seconds
        with self._lock:
            for run_id in run_ids:
                run = self._runs.get(run_id)
                if run is not None and run.record.worker is not None:  # not given up meanwhile
                    run.record = replace(run.record, worker=owner)
                    run.lease_until = until

    async def unclaim(self, owner: str, run_ids: Sequence[str], *, idle: bool = False) -> None:
        now = time.time()
        with self._lock:
            for run_id in run_ids:
                run = self._runs.get(run_id)
                if run is not None and run.record.worker == owner:
                    run.record = replace(run.record, worker=None)
                    run.lease_until = None if idle else now
        self._work.notify()

    async def post(self, run_id: str, data: bytes) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            check_postable(self, run_id, None if run is None else run.record.status)
            self._inbox.append(Message(next(self._numbers), run_id, data))
        self._work.notify()

    async def inbox(self, run_ids: Sequence[str]) -> list[Message]:
        wanted = set(run_ids)
        with self._lock:
            return [m for m in self._inbox if m.run_id in wanted]

    async def read_events(self, run_id: str, after: int = -1) -> list[StoredEvent]:
        with self._lock:
            run = self._runs.get(run_id)
            return [] if run is None else [e for e in run.events if e.position > after]

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        return await self._work.wait(timeout)
