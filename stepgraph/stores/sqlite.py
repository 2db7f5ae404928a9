"""SqliteStore: durable runs in one SQLite file (the embedded default).

The file is opened in WAL mode. Each commit is one transaction: a process killed at any
moment leaves the file as before or as after the commit. Several store objects (in one
process or several) may use the same file; a run is owned by one of them at a time
(its lease dies with the owning process).

The store calls SQLite directly on the calling thread: a commit blocks the event loop for
as long as SQLite takes (tens of microseconds with ``synchronous="normal"``), which costs
less than handing it to a thread.

A checkpoint row is keyed by one integer, ``(run number << 32) | seq`` (the run number
is its row in ``stepgraph_runs``): writing one touches a single B-tree, as a plain row
insert does, and a taken ``seq`` is refused by that key.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    read_blob,
    read_count,
    read_status,
    read_time,
)
from .queue import Wakeups
from .results import StoreResults
from .sqlite_queue import QueueMixin

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stepgraph_runs (
    number INTEGER PRIMARY KEY,  -- the run's number in checkpoint keys (stable: no VACUUM
    run_id TEXT NOT NULL UNIQUE,  -- renumbers an INTEGER PRIMARY KEY)
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    parent_run_id TEXT,
    parent_checkpoint_id TEXT,
    result BLOB
);
CREATE TABLE IF NOT EXISTS stepgraph_checkpoints (
    key INTEGER PRIMARY KEY,  -- (run number << 32) | seq: the store finds rows by it
    run_id TEXT NOT NULL,  -- and seq: for people and tools reading the file
    seq INTEGER NOT NULL,
    superstep INTEGER NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    frame BLOB NOT NULL
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
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stepgraph_leases (
    run_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stepgraph_events (
    position INTEGER PRIMARY KEY,  -- the order written (never deleted: never reused)
    run_id TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS stepgraph_events_run ON stepgraph_events (run_id, position);
CREATE TABLE IF NOT EXISTS stepgraph_inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a delivered id is never reused
    run_id TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS stepgraph_inbox_run ON stepgraph_inbox (run_id, id);
"""

# Columns added since the first release: a file made before gets them when opened.
_ADDED_COLUMNS = {"queue": "TEXT", "worker": "TEXT", "lease_until": "REAL"}
_QUEUE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS stepgraph_runs_queue ON stepgraph_runs (queue, status, number) "
    "WHERE queue IS NOT NULL",
    # the runs a worker may take over, found without visiting every run running or paused
    "CREATE INDEX IF NOT EXISTS stepgraph_runs_held ON stepgraph_runs (status, lease_until) "
    "WHERE queue IS NOT NULL",
)

_SYNCHRONOUS = ("off", "normal", "full", "extra")


_RUN_COLUMNS = (
    "run_id, workflow, status, created_at, updated_at, parent_run_id, parent_checkpoint_id, "
    "result, queue, worker"
)

_Statement = tuple[str, list[tuple[object, ...]]]  # sql, rows
_SEQ_BITS = 32  # a checkpoint's key: (run number << 32) | seq
_SEQ_MASK = (1 << _SEQ_BITS) - 1


_INSERT_CHECKPOINT = (
    "INSERT INTO stepgraph_checkpoints (key, run_id, seq, superstep, created_at, status, frame) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


_INSERT_ENTRY = "INSERT INTO stepgraph_journal (run_id, after_seq, pos, entry) VALUES (?, ?, ?, ?)"


def _keys(number: int) -> tuple[int, int]:
    """The first and last checkpoint keys of run ``number``."""
    return number << _SEQ_BITS, (number << _SEQ_BITS) | _SEQ_MASK


def _statements(batch: Commit, number: int, now: float) -> list[_Statement]:
    """The statements of one commit of run ``number``, in order (see ``Commit``)."""
    run_id = batch.run_id
    out: list[_Statement] = []
    if batch.journal:
        after, at = batch.journal_after, batch.journal_at
        out.append(
            (
                _INSERT_ENTRY,
                [(run_id, after, at + i, entry) for i, entry in enumerate(batch.journal)],
            )
        )
    write = batch.checkpoint
    if write is not None:
        seq = write.seq
        out.append(
            (
                _INSERT_CHECKPOINT,
                [
                    (
                        (number << _SEQ_BITS) | seq,
                        run_id,
                        seq,
                        write.superstep,
                        now,
                        write.status,
                        write.frame,
                    )
                ],
            )
        )
        rows: list[tuple[object, ...]] = [
            (run_id, name, seq, data) for name, data in write.values.items()
        ]
        if rows:
            out.append(
                ("INSERT INTO stepgraph_chunks (run_id, name, seq, data) VALUES (?, ?, ?, ?)", rows)
            )
        if write.full and seq > 0:  # every chunk not written now is gone as of this one
            out.append(
                (
                    "INSERT INTO stepgraph_chunks (run_id, name, seq, data) "
                    "SELECT DISTINCT run_id, name, ?, NULL FROM stepgraph_chunks "
                    "WHERE run_id = ? AND seq < ? AND name NOT IN "
                    "(SELECT name FROM stepgraph_chunks WHERE run_id = ? AND seq = ?)",
                    [(seq, run_id, seq, run_id, seq)],
                )
            )
    if batch.status is not None:
        out.append(
            (
                "UPDATE stepgraph_runs SET status = ?, result = COALESCE(?, result), "
                "updated_at = ? WHERE number = ?",
                [(batch.status, batch.result, now, number)],
            )
        )
    if batch.events:
        out.append(
            (
                "INSERT INTO stepgraph_events (run_id, data) VALUES (?, ?)",
                [(run_id, data) for data in batch.events],
            )
        )
    if batch.consumed:
        out.append(("DELETE FROM stepgraph_inbox WHERE id = ?", [(i,) for i in batch.consumed]))
    if batch.status == StoredStatus.COMPLETED:  # what is left, nothing will read
        out.append(("DELETE FROM stepgraph_inbox WHERE run_id = ?", [(run_id,)]))
    return out


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (on this host) still runs (a process that has died but
    that its parent has not yet waited for, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:  # Linux: its state follows its name
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS, say): a zombie counts as alive until it is reaped


def _add_columns(conn: sqlite3.Connection) -> None:
    """Give a file made by an earlier version the run columns it lacks (and their index)."""
    have = {str(row[1]) for row in conn.execute("PRAGMA table_info(stepgraph_runs)")}
    missing = [(name, kind) for name, kind in _ADDED_COLUMNS.items() if name not in have]
    if missing:
        conn.execute("BEGIN IMMEDIATE")
        try:
            have = {str(row[1]) for row in conn.execute("PRAGMA table_info(stepgraph_runs)")}
            for name, kind in missing:
                if name not in have:  # another process may have added it meanwhile
                    conn.execute(f"ALTER TABLE stepgraph_runs ADD COLUMN {name} {kind}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    for index in _QUEUE_INDEXES:
        conn.execute(index)


class SqliteStore(QueueMixin, StoreResults):
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

    _columns = _RUN_COLUMNS

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
        self._numbers: dict[str, int] = {}  # run id -> its row (runs are never deleted)
        self._work = Wakeups()  # submits and posts of this process wake its workers at once

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}, synchronous={self.synchronous!r})"

    @property
    def location(self) -> str:
        """What identifies the data (store objects over one file share it)."""
        if self.path == ":memory:":
            return f"sqlite::memory:#{id(self)}"
        return f"sqlite:{os.path.realpath(self.path)}"

    # -- the connection -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            deadline = time.monotonic() + self.timeout
            while conn is None:
                try:
                    conn = self._open()
                except sqlite3.OperationalError as exc:
                    # Store objects opening a new file at once: SQLite refuses one of them
                    # at once (it does not wait) while another turns the file to WAL
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise StoreError(
                            f"cannot open the SQLite store {self.path!r}: {exc}"
                        ) from exc
                    time.sleep(0.001)  # (the other's set-up takes about a millisecond)
                except sqlite3.Error as exc:
                    raise StoreError(f"cannot open the SQLite store {self.path!r}: {exc}") from exc
            self._conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        """A connection to the file, set up (WAL, the tables); closed again if that fails."""
        conn = sqlite3.connect(
            self.path,
            timeout=self.timeout,
            isolation_level=None,  # transactions are explicit
            check_same_thread=False,  # one connection, behind the store's lock
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.executescript(_SCHEMA)
            _add_columns(conn)
        except BaseException:
            conn.close()
            raise
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

    def _number(self, cursor: sqlite3.Cursor, run_id: str) -> int:
        """The row number of run ``run_id``.

        Raises:
            StoreError: the store has no such run.
        """
        number = self._numbers.get(run_id)
        if number is None:
            row = cursor.execute(
                "SELECT number FROM stepgraph_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"cannot write to run {run_id!r}: the store has no such run")
            number = self._numbers[run_id] = int(row[0])
        return number

    def commit(self, batch: Commit) -> None:
        now = time.time()
        write = batch.checkpoint
        if write is not None and not 0 <= write.seq <= _SEQ_MASK:
            raise StoreError(
                f"checkpoint {write.seq} of run {batch.run_id!r}: a seq is from 0 to {_SEQ_MASK}"
            )
        number = self._numbers.get(batch.run_id)
        plain = not batch.events and not batch.consumed
        if (  # a checkpoint alone (a superstep's, mostly): one statement, no transaction
            write is not None
            and number is not None
            and not write.values
            and not write.full
            and not batch.journal
            and batch.status is None
            and plain
        ):
            row = (
                (number << _SEQ_BITS) | write.seq,
                batch.run_id,
                write.seq,
                write.superstep,
                now,
                write.status,
                write.frame,
            )
            with self._lock:
                try:
                    (self._conn or self._connect()).execute(_INSERT_CHECKPOINT, row)
                except sqlite3.Error as exc:
                    raise self._refusal(batch, exc) from exc
            return
        if (
            number is not None
            and write is None
            and batch.status is None
            and len(batch.journal) == 1
            and plain
        ):
            # one journal entry (a step of an async run, mostly): one statement, no transaction
            entry = (batch.run_id, batch.journal_after, batch.journal_at, batch.journal[0])
            with self._lock:
                try:
                    (self._conn or self._connect()).execute(_INSERT_ENTRY, entry)
                except sqlite3.Error as exc:
                    raise self._refusal(batch, exc) from exc
            return
        with self._lock:
            cursor = self._connect().cursor()
            statements = _statements(batch, self._number(cursor, batch.run_id), now)
            if len(statements) == 1 and len(statements[0][1]) == 1:  # a transaction of its own
                sql, (only,) = statements[0]
                try:
                    cursor.execute(sql, only)
                except sqlite3.Error as exc:
                    raise self._refusal(batch, exc) from exc
                return
        with self._transaction(f"writing run {batch.run_id!r}") as cursor:
            self._execute(cursor, batch, statements)

    def _execute(self, cursor: sqlite3.Cursor, batch: Commit, statements: list[_Statement]) -> None:
        for sql, rows in statements:
            try:
                cursor.executemany(sql, rows)
            except sqlite3.IntegrityError as exc:
                raise self._refusal(batch, exc) from exc

    def _refusal(self, batch: Commit, error: sqlite3.Error) -> StoreError:
        text = str(error)
        if batch.checkpoint is not None and "stepgraph_checkpoints" in text:
            return RunLockedError(
                f"checkpoint {batch.checkpoint.seq} of run {batch.run_id!r} exists already: "
                f"{ANOTHER_WRITER}"
            )
        if "stepgraph_journal" in text:
            return RunLockedError(
                f"journal position {batch.journal_at} after checkpoint {batch.journal_after} of "
                f"run {batch.run_id!r} is taken: {ANOTHER_WRITER}"
            )
        return StoreError(f"writing run {batch.run_id!r} in {self.path!r} failed: {error}")

    async def create_run(self, record: RunRecord, first: Commit | None = None) -> RunRecord | None:
        with self._transaction(f"creating run {record.run_id!r}") as cursor:
            row = cursor.execute(
                f"SELECT {_RUN_COLUMNS} FROM stepgraph_runs WHERE run_id = ?", (record.run_id,)
            ).fetchone()
            if row is not None:
                return self._record(row)
            number = cursor.execute(
                f"INSERT INTO stepgraph_runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 10)})",
                (
                    record.run_id,
                    record.workflow,
                    str(record.status),
                    record.created_at.timestamp(),
                    record.updated_at.timestamp(),
                    record.parent_run_id,
                    record.parent_checkpoint_id,
                    record.result,
                    record.queue,
                    None,
                ),
            ).lastrowid
            assert number is not None
            if first is not None:
                self._execute(cursor, first, _statements(first, number, time.time()))
            self._numbers[record.run_id] = number
        if record.queue is not None:
            self._work.notify()
        return None

    # -- reads ----------------------------------------------------------------------------------

    @staticmethod
    def _record(row: tuple[Any, ...]) -> RunRecord:
        run_id, workflow, status, created, updated, parent, parent_cp, result, queue, worker = row
        run_id = str(run_id)
        return RunRecord(
            run_id=run_id,
            workflow=str(workflow),
            status=read_status(status, run_id),
            created_at=read_time(created, "created_at", run_id),
            updated_at=read_time(updated, "updated_at", run_id),
            parent_run_id=None if parent is None else str(parent),
            parent_checkpoint_id=None if parent_cp is None else str(parent_cp),
            result=None if result is None else read_blob(result, "result", run_id),
            queue=None if queue is None else str(queue),
            worker=None if worker is None else str(worker),
        )

    async def get_run(self, run_id: str) -> RunRecord | None:
        with self._reading(f"reading run {run_id!r}") as cursor:
            row = cursor.execute(
                f"SELECT {_RUN_COLUMNS} FROM stepgraph_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None else self._record(row)

    async def list_runs(self, status: str | None = None) -> list[RunRecord]:
        with self._reading("listing runs") as cursor:
            if status is None:
                rows = cursor.execute(
                    f"SELECT {_RUN_COLUMNS} FROM stepgraph_runs ORDER BY created_at, number"
                ).fetchall()
            else:
                rows = cursor.execute(
                    f"SELECT {_RUN_COLUMNS} FROM stepgraph_runs WHERE status = ? "
                    "ORDER BY created_at, number",
                    (str(status),),
                ).fetchall()
        return [self._record(row) for row in rows]

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        with self._reading(f"listing the checkpoints of run {run_id!r}") as cursor:
            run = cursor.execute(
                "SELECT number, parent_run_id FROM stepgraph_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if run is None:
                return []
            number, parent = run
            rows = cursor.execute(
                f"SELECT key & {_SEQ_MASK}, superstep, created_at, status "
                "FROM stepgraph_checkpoints WHERE key BETWEEN ? AND ? ORDER BY key",
                _keys(number),
            ).fetchall()
        return [self._info(run_id, parent, row) for row in rows]

    @staticmethod
    def _info(run_id: str, parent: str | None, row: tuple[Any, ...]) -> CheckpointInfo:
        seq, superstep, created, status = row
        seq = int(seq)  # (from the key: an integer)
        return CheckpointInfo(
            id=checkpoint_id(run_id, seq),
            run_id=run_id,
            superstep=read_count(superstep, "superstep", run_id, seq),
            created_at=read_time(created, "created_at", run_id, seq),
            status=read_status(status, run_id, seq),
            parent_run_id=parent,
            seq=int(seq),
        )

    async def load(self, run_id: str, checkpoint_id: str | None = None) -> StoredCheckpoint | None:
        with self._reading(f"reading a checkpoint of run {run_id!r}") as cursor:
            run = cursor.execute(
                "SELECT number, parent_run_id FROM stepgraph_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if run is None:
                return None
            number, parent_run = run
            parent = (parent_run,)
            columns = f"key & {_SEQ_MASK}, superstep, created_at, status, frame"
            if checkpoint_id is None:
                row = cursor.execute(
                    f"SELECT {columns} FROM stepgraph_checkpoints WHERE key BETWEEN ? AND ? "
                    f"ORDER BY key DESC LIMIT 1",
                    _keys(number),
                ).fetchone()
            else:
                wanted = checkpoint_seq(run_id, checkpoint_id)
                row = None
                if wanted is not None and wanted <= _SEQ_MASK:
                    row = cursor.execute(
                        f"SELECT {columns} FROM stepgraph_checkpoints WHERE key = ?",
                        ((number << _SEQ_BITS) | wanted,),
                    ).fetchone()
            if row is None:
                return None
            seq = int(row[0])
            chunks = cursor.execute(
                "SELECT c.name, c.data FROM stepgraph_chunks AS c WHERE c.run_id = ? AND c.seq = "
                "(SELECT MAX(seq) FROM stepgraph_chunks WHERE run_id = c.run_id "
                "AND name = c.name AND seq <= ?)",
                (run_id, seq),
            ).fetchall()
            journal = cursor.execute(
                "SELECT pos, entry FROM stepgraph_journal WHERE run_id = ? AND after_seq = ? "
                "ORDER BY pos",
                (run_id, seq),
            ).fetchall()
        info = self._info(run_id, parent[0], row[:4])
        return StoredCheckpoint(
            info=info,
            frame=read_blob(row[4], "frame", run_id, seq),
            values={
                str(name): read_blob(data, f"chunk {name!r}", run_id, seq)
                for name, data in chunks
                if data is not None
            },
            journal=tuple(read_blob(entry, "journal", run_id, seq) for _, entry in journal),
            journal_last=int(journal[-1][0]) if journal else None,
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
