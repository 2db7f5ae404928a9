"""SqliteStore: durable runs in one SQLite file (the embedded default).

The file is opened in WAL mode. Each commit is one transaction: a process killed at any
moment leaves the file as before or as after the commit. Several store objects (in one
process or several) may use the same file; a run is owned by one of them at a time
(its lease dies with the owning process).

The store calls SQLite directly on the calling thread: a commit blocks the event loop for
as long as SQLite takes (tens of microseconds with ``synchronous="normal"``), which costs
less than handing it to a thread.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .base import (
    CheckpointInfo,
    Commit,
    RunRecord,
    StoredCheckpoint,
    StoredStatus,
)

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stepgraph_runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    parent_run_id TEXT,
    parent_checkpoint_id TEXT,
    result BLOB,
    checkpoints INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS stepgraph_checkpoints (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    superstep INTEGER NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    frame BLOB NOT NULL,
    UNIQUE (run_id, seq)
);
CREATE TABLE IF NOT EXISTS stepgraph_chunks (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB,
    PRIMARY KEY (run_id, name, seq)
);
CREATE TABLE IF NOT EXISTS stepgraph_journal (
    run_id TEXT NOT NULL,
    after_seq INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    entry BLOB NOT NULL,
    PRIMARY KEY (run_id, after_seq, pos)
);
CREATE TABLE IF NOT EXISTS stepgraph_leases (
    run_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL
);
"""

_SYNCHRONOUS = ("off", "normal", "full", "extra")


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (on this host) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SqliteStore:
    """Runs, checkpoints and journals in one SQLite file.

    Args:
        path: the database file (created if missing), or ``":memory:"``.
        synchronous: SQLite's ``synchronous`` setting. ``"normal"`` (the default) makes
            every commit safe against the process being killed (``kill -9``) at any
            moment, for one WAL append per commit; ``"full"`` also against losing power
            or the operating system crashing, for an fsync per commit (several times
            slower).
        timeout: seconds to wait for another process's write to finish.

    Example::

        store = SqliteStore("runs.db")
        handler = MyFlow(store=store).run(topic="tides")
    """

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: str = "normal", timeout: float = 5.0
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise StoreError(
                f"SqliteStore(synchronous={synchronous!r}): expected one of "
                f"{', '.join(map(repr, _SYNCHRONOUS))}"
            )
        self.path = str(path) if str(path) == ":memory:" else str(Path(path))
        self.synchronous = synchronous
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._host = socket.gethostname()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}, synchronous={self.synchronous!r})"

    # -- the connection -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self.timeout,
                    isolation_level=None,  # transactions are explicit
                    check_same_thread=False,  # one connection, behind the store's lock
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
                conn.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the SQLite store {self.path!r}: {exc}") from exc
            self._conn = conn
        return conn

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            conn = self._connect()
            cursor = conn.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                cursor.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"{what} in {self.path!r} failed: {exc}") from exc
                raise

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connect().cursor()
            try:
                yield cursor
            except sqlite3.Error as exc:
                raise StoreError(f"{what} in {self.path!r} failed: {exc}") from exc

    def close(self) -> None:
        """Close the file (the store opens it again when next used)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- writes ---------------------------------------------------------------------------------

    def commit(self, batch: Commit) -> None:
        with self._transaction(f"writing run {batch.run_id!r}") as cursor:
            self._write(cursor, batch, new=False)

    def _write(self, cursor: sqlite3.Cursor, batch: Commit, *, new: bool) -> None:
        run_id = batch.run_id
        now = datetime.now(UTC).timestamp()
        row = cursor.execute(
            "SELECT checkpoints, parent_run_id FROM stepgraph_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"cannot write to run {run_id!r}: the store has no such run")
        count, _ = row
        latest = count - 1
        if batch.journal:
            start = cursor.execute(
                "SELECT COUNT(*) FROM stepgraph_journal WHERE run_id = ? AND after_seq = ?",
                (run_id, latest),
            ).fetchone()[0]
            cursor.executemany(
                "INSERT INTO stepgraph_journal (run_id, after_seq, pos, entry) VALUES (?, ?, ?, ?)",
                [(run_id, latest, start + i, entry) for i, entry in enumerate(batch.journal)],
            )
        write = batch.checkpoint
        if write is not None:
            seq = count
            try:
                cursor.execute(
                    "INSERT INTO stepgraph_checkpoints "
                    "(id, run_id, seq, superstep, created_at, status, frame) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (write.id, run_id, seq, write.superstep, now, str(write.status), write.frame),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"checkpoint id {write.id!r} is taken") from exc
            rows = [(run_id, name, seq, data) for name, data in write.values.items()]
            if write.full and not new:
                kept = set(write.values)
                rows += [
                    (run_id, name, seq, None)
                    for (name,) in cursor.execute(
                        "SELECT DISTINCT name FROM stepgraph_chunks WHERE run_id = ?", (run_id,)
                    ).fetchall()
                    if name not in kept
                ]
            if rows:
                cursor.executemany(
                    "INSERT INTO stepgraph_chunks (run_id, name, seq, data) VALUES (?, ?, ?, ?)",
                    rows,
                )
            count += 1
        if batch.status is not None:
            if batch.result is not None:
                cursor.execute(
                    "UPDATE stepgraph_runs SET status = ?, result = ?, updated_at = ?, "
                    "checkpoints = ? WHERE run_id = ?",
                    (str(batch.status), batch.result, now, count, run_id),
                )
            else:
                cursor.execute(
                    "UPDATE stepgraph_runs SET status = ?, updated_at = ?, checkpoints = ? "
                    "WHERE run_id = ?",
                    (str(batch.status), now, count, run_id),
                )
        else:
            cursor.execute(
                "UPDATE stepgraph_runs SET updated_at = ?, checkpoints = ? WHERE run_id = ?",
                (now, count, run_id),
            )

    async def create_run(self, record: RunRecord, first: Commit | None = None) -> RunRecord | None:
        with self._transaction(f"creating run {record.run_id!r}") as cursor:
            row = cursor.execute(
                "SELECT * FROM stepgraph_runs WHERE run_id = ?", (record.run_id,)
            ).fetchone()
            if row is not None:
                return self._record(row)
            cursor.execute(
                "INSERT INTO stepgraph_runs (run_id, workflow, status, created_at, updated_at, "
                "parent_run_id, parent_checkpoint_id, result, checkpoints) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    record.run_id,
                    record.workflow,
                    str(record.status),
                    record.created_at.timestamp(),
                    record.updated_at.timestamp(),
                    record.parent_run_id,
                    record.parent_checkpoint_id,
                    record.result,
                ),
            )
            if first is not None:
                self._write(cursor, first, new=True)
            return None

    # -- reads ----------------------------------------------------------------------------------

    @staticmethod
    def _record(row: tuple[Any, ...]) -> RunRecord:
        run_id, workflow, status, created, updated, parent, parent_cp, result, _ = row
        return RunRecord(
            run_id=str(run_id),
            workflow=str(workflow),
            status=StoredStatus(status),
            created_at=_time(float(created)),
            updated_at=_time(float(updated)),
            parent_run_id=None if parent is None else str(parent),
            parent_checkpoint_id=None if parent_cp is None else str(parent_cp),
            result=None if result is None else bytes(result),
        )

    async def get_run(self, run_id: str) -> RunRecord | None:
        with self._reading(f"reading run {run_id!r}") as cursor:
            row = cursor.execute(
                "SELECT * FROM stepgraph_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None else self._record(row)

    async def list_runs(self, status: str | None = None) -> list[RunRecord]:
        with self._reading("listing runs") as cursor:
            if status is None:
                rows = cursor.execute(
                    "SELECT * FROM stepgraph_runs ORDER BY created_at, rowid"
                ).fetchall()
            else:
                rows = cursor.execute(
                    "SELECT * FROM stepgraph_runs WHERE status = ? ORDER BY created_at, rowid",
                    (str(status),),
                ).fetchall()
        return [self._record(row) for row in rows]

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        with self._reading(f"listing the checkpoints of run {run_id!r}") as cursor:
            parent = cursor.execute(
                "SELECT parent_run_id FROM stepgraph_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            rows = cursor.execute(
                "SELECT id, seq, superstep, created_at, status FROM stepgraph_checkpoints "
                "WHERE run_id = ? ORDER BY seq",
                (run_id,),
            ).fetchall()
        parent_run = None if parent is None else parent[0]
        return [self._info(run_id, parent_run, row) for row in rows]

    @staticmethod
    def _info(run_id: str, parent: str | None, row: tuple[Any, ...]) -> CheckpointInfo:
        checkpoint_id, seq, superstep, created, status = row
        return CheckpointInfo(
            id=str(checkpoint_id),
            run_id=run_id,
            superstep=int(superstep),
            created_at=_time(float(created)),
            status=StoredStatus(status),
            parent_run_id=parent,
            seq=int(seq),
        )

    async def load(self, run_id: str, checkpoint_id: str | None = None) -> StoredCheckpoint | None:
        with self._reading(f"reading a checkpoint of run {run_id!r}") as cursor:
            parent = cursor.execute(
                "SELECT parent_run_id FROM stepgraph_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if parent is None:
                return None
            columns = "id, seq, superstep, created_at, status, frame"
            if checkpoint_id is None:
                row = cursor.execute(
                    f"SELECT {columns} FROM stepgraph_checkpoints WHERE run_id = ? "
                    f"ORDER BY seq DESC LIMIT 1",
                    (run_id,),
                ).fetchone()
            else:
                row = cursor.execute(
                    f"SELECT {columns} FROM stepgraph_checkpoints WHERE run_id = ? AND id = ?",
                    (run_id, checkpoint_id),
                ).fetchone()
            if row is None:
                return None
            seq = int(row[1])
            chunks = cursor.execute(
                "SELECT c.name, c.data FROM stepgraph_chunks AS c WHERE c.run_id = ? AND c.seq = "
                "(SELECT MAX(seq) FROM stepgraph_chunks WHERE run_id = c.run_id "
                "AND name = c.name AND seq <= ?)",
                (run_id, seq),
            ).fetchall()
            journal = cursor.execute(
                "SELECT entry FROM stepgraph_journal WHERE run_id = ? AND after_seq = ? "
                "ORDER BY pos",
                (run_id, seq),
            ).fetchall()
        info = self._info(run_id, parent[0], row[:5])
        return StoredCheckpoint(
            info=info,
            frame=bytes(row[5]),
            values={str(name): bytes(data) for name, data in chunks if data is not None},
            journal=tuple(bytes(entry) for (entry,) in journal),
        )

    # -- leases ---------------------------------------------------------------------------------

    async def acquire(self, run_id: str, owner: str) -> bool:
        with self._transaction(f"taking the lease of run {run_id!r}") as cursor:
            row = cursor.execute(
                "SELECT owner, host, pid FROM stepgraph_leases WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is not None:
                holder, host, pid = row
                if holder != owner and not (host == self._host and not _alive(int(pid))):
                    return False
            cursor.execute(
                "INSERT OR REPLACE INTO stepgraph_leases (run_id, owner, host, pid) "
                "VALUES (?, ?, ?, ?)",
                (run_id, owner, self._host, os.getpid()),
            )
            return True

    async def release(self, run_id: str, owner: str) -> None:
        with self._transaction(f"releasing the lease of run {run_id!r}") as cursor:
            cursor.execute(
                "DELETE FROM stepgraph_leases WHERE run_id = ? AND owner = ?", (run_id, owner)
            )
