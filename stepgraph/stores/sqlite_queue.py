"""The run queue of :class:`~stepgraph.stores.SqliteStore` (see ``stores/queue.py``).

A claim is one ``BEGIN IMMEDIATE`` transaction: SQLite has one writer at a time, so two
workers (in this process or others) never claim one run. Workers in other processes
learn of new runs by polling (the worker backs off while idle); in this process a submit
or a post wakes them at once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from .base import RunRecord, StoredCheckpoint
from .queue import Message, StoredEvent, Wakeups, check_postable, take_each

__all__ = ["QueueMixin"]

# The runs a claim takes, oldest first: queued runs and, with take-over, runs to take over
# in three parts that do not overlap (their worker's lease ran out, or it gave them up;
# running without a lease; paused, given up as idle, with a message waiting), each found
# through an index (stepgraph_runs_held, on the runs of a queue, or the inbox's), so that
# its cost grows with the runs to take and the runs named in the inbox, not with those
# running or paused. Each part stops at the limit.
_PART = (
    "SELECT * FROM (SELECT r.run_id, r.number FROM {source} WHERE {where} "
    "AND r.queue IN ({{queues}}){{workflows}} ORDER BY r.number LIMIT :limit)"
)
_RUNS = "stepgraph_runs AS r"
_HELD = "stepgraph_runs AS r INDEXED BY stepgraph_runs_held"  # (statistics may say: scan)
_QUEUED = _PART.format(source=_RUNS, where="r.status = 'queued'")
_WAITING = (  # CROSS JOIN: SQLite walks the inbox first
    "(SELECT DISTINCT run_id FROM stepgraph_inbox) AS m CROSS JOIN stepgraph_runs AS r"
)
_CLAIMABLE = " UNION ALL ".join(
    [
        _QUEUED,
        _PART.format(
            source=_HELD, where="r.status IN ('running', 'paused') AND r.lease_until < :now"
        ),
        _PART.format(source=_HELD, where="r.status = 'running' AND r.lease_until IS NULL"),
        _PART.format(
            source=_WAITING,
            where="r.run_id = m.run_id AND r.status = 'paused' AND r.lease_until IS NULL",
        ),
    ]
)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


class QueueMixin:
    """``claim``, ``take``, ``renew``, ``unclaim``, ``post``, ``inbox``, ``read_events``
    and ``wait_for_work`` over the store's connection."""

    _columns: ClassVar[str]  # the run record's columns, in ``_record``'s order
    _work: Wakeups

    def _transaction(self, what: str) -> AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError  # pragma: no cover - the store's

    def _reading(self, what: str) -> AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError  # pragma: no cover - the store's

    @staticmethod
    def _record(row: tuple[Any, ...]) -> RunRecord:
        raise NotImplementedError  # pragma: no cover - the store's

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
        """Take up to ``limit`` runs of ``queues`` for ``owner`` (see ``RunQueue.claim``)."""
        if not queues or limit < 1 or (workflows is not None and not workflows):
            return []
        now = time.time()
        names = {f"q{i}": queue for i, queue in enumerate(queues)}
        known = {f"w{i}": name for i, name in enumerate(workflows or ())}
        found = (_CLAIMABLE if take_over else _QUEUED).format(
            queues=", ".join(f":{name}" for name in names),
            workflows=(
                f" AND r.workflow IN ({', '.join(f':{name}' for name in known)})"
                if workflows is not None
                else ""
            ),
        )
        names.update(known)
        with self._transaction("claiming runs") as cursor:
            picked = [
                str(row[0])
                for row in cursor.execute(
                    f"SELECT run_id FROM ({found}) ORDER BY number LIMIT :limit",
                    {**names, "now": now, "limit": limit},
                )
            ]
            if not picked:
                return []
            marks = _marks(len(picked))
            cursor.execute(
                "UPDATE stepgraph_runs SET worker = ?, lease_until = ?, "
                "updated_at = CASE WHEN status = 'queued' THEN ? ELSE updated_at END, "
                "status = CASE WHEN status = 'queued' THEN 'running' ELSE status END "
                f"WHERE run_id IN ({marks})",
                (owner, now + lease_seconds, now, *picked),
            )
            rows = cursor.execute(
                f"SELECT {self._columns} FROM stepgraph_runs WHERE run_id IN ({marks}) "
                "ORDER BY number",
                picked,
            ).fetchall()
        return [self._record(row) for row in rows]

    async def take(self, owner: str, run_ids: Sequence[str]) -> dict[str, StoredCheckpoint | None]:
        """Take the leases of ``run_ids``, then read their checkpoints (see ``RunQueue.take``)."""
        return await take_each(self, owner, run_ids)

    async def release_taken(self) -> None:
        """Nothing: this store gives leases up as ``release`` is called."""

    async def renew(self, owner: str, run_ids: Sequence[str], lease_seconds: float) -> None:
        """Extend ``owner``'s lease on ``run_ids`` (see ``RunQueue.renew``)."""
        if not run_ids:
            return
        with self._transaction("renewing leases") as cursor:
            cursor.execute(
                "UPDATE stepgraph_runs SET worker = ?, lease_until = ? "
                f"WHERE run_id IN ({_marks(len(run_ids))}) AND worker IS NOT NULL",
                (owner, time.time() + lease_seconds, *run_ids),
            )

    async def unclaim(self, owner: str, run_ids: Sequence[str], *, idle: bool = False) -> None:
        """End ``owner``'s lease on ``run_ids`` (see ``RunQueue.unclaim``)."""
        if not run_ids:
            return
        with self._transaction("giving up leases") as cursor:
            cursor.execute(
                "UPDATE stepgraph_runs SET worker = NULL, lease_until = ? "
                f"WHERE worker = ? AND run_id IN ({_marks(len(run_ids))})",
                (None if idle else time.time(), owner, *run_ids),
            )
        self._work.notify()

    async def post(self, run_id: str, data: bytes) -> None:
        """Append ``data`` to the run's inbox."""
        with self._transaction(f"posting to run {run_id!r}") as cursor:
            row = cursor.execute(
                "SELECT status FROM stepgraph_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            check_postable(self, run_id, None if row is None else row[0])
            cursor.execute(
                "INSERT INTO stepgraph_inbox (run_id, data) VALUES (?, ?)", (run_id, data)
            )
        self._work.notify()

    async def inbox(self, run_ids: Sequence[str]) -> list[Message]:
        """The messages waiting for ``run_ids``, in the order posted."""
        if not run_ids:
            return []
        with self._reading("reading the inbox") as cursor:
            rows = cursor.execute(
                "SELECT id, run_id, data FROM stepgraph_inbox "
                f"WHERE run_id IN ({_marks(len(run_ids))}) ORDER BY id",
                tuple(run_ids),
            ).fetchall()
        return [Message(int(i), str(run), bytes(data)) for i, run, data in rows]

    async def read_events(self, run_id: str, after: int = -1) -> list[StoredEvent]:
        """The run's stored stream events after position ``after``."""
        with self._reading(f"reading the stream of run {run_id!r}") as cursor:
            rows = cursor.execute(
                "SELECT position, data FROM stepgraph_events WHERE run_id = ? AND position > ? "
                "ORDER BY position",
                (run_id, after),
            ).fetchall()
        return [StoredEvent(int(position), bytes(data)) for position, data in rows]

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Wait for a submit or post in this process, or ``timeout`` seconds (other
        processes' are found by the caller's next claim: it polls)."""
        return await self._work.wait(timeout)
