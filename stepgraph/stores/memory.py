"""MemoryStore: a store in this process's memory (tests, and runs that need no restart).

It keeps the same bytes the other stores keep (the runtime serializes before it stores),
so whatever works in memory works on disk. It is a plain object: make it anywhere and use
it from one event loop after another.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ..errors import StoreError
from .base import (
    CheckpointInfo,
    Commit,
    RunRecord,
    StoredCheckpoint,
    StoredStatus,
    checkpoint_id,
    checkpoint_seq,
)
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
        self._leases: dict[str, str] = {}
        self._lock = threading.Lock()  # for threads; event loops use it in turn

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._runs)} runs)"

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
            raise StoreError(
                f"journal position {batch.journal_at} after checkpoint {batch.journal_after} "
                f"of run {run_id!r} is not the next one (another writer?)"
            )
        write = batch.checkpoint
        if write is not None and write.seq != len(run.checkpoints):
            raise StoreError(
                f"checkpoint {write.seq} of run {run_id!r} is not the next one "
                f"({len(run.checkpoints)}; another writer?)"
            )

    def _apply(self, run: _Run, batch: Commit) -> None:
        self._check(run, batch)
        now = datetime.now(UTC)
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
        # ``updated_at`` is when the record (its status, its result) last changed

    async def create_run(self, record: RunRecord, first: Commit | None = None) -> RunRecord | None:
        with self._lock:
            existing = self._runs.get(record.run_id)
            if existing is not None:
                return existing.record
            run = _Run(record=record)
            if first is not None:
                self._apply(run, first)
            self._runs[record.run_id] = run
            return None

    # -- reads ----------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        run = self._runs.get(run_id)
        return None if run is None else run.record

    async def list_runs(self, status: str | None = None) -> list[RunRecord]:
        with self._lock:
            records = [run.record for run in self._runs.values()]
        if status is not None:
            records = [r for r in records if r.status == status]
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
