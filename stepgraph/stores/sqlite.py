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
insert does, and a taken ``seq`` is refused by that key. A journal entry is keyed the same
way, by ``(run number << 32) | ordinal``: the entries of a run are numbered in the order
written; a checkpoint's ``journal_base``, worked out from the file in the statement that
writes it, is the ordinal after the run's last entry, so entry ``pos`` after it is
``journal_base + pos`` and a taken position is refused by that key. Entries go only after
a run's latest checkpoint: a writer that has not seen a newer one is refused. (A text key,
or a key of several columns, costs a third more per entry.)
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
    CheckpointWrite,
    Commit,
    RunRecord,
    StoredCheckpoint,
    StoredStatus,
    checkpoint_id,
    checkpoint_seq,
    corrupt_row,
    read_blob,
    read_count,
    read_status,
    read_time,
    status_wanted,
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
    frame BLOB NOT NULL,
    journal_base INTEGER NOT NULL DEFAULT 0  -- the ordinal of the first entry after it
);
CREATE TABLE IF NOT EXISTS stepgraph_chunks (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB,
    PRIMARY KEY (run_id, name, seq)
);
CREATE TABLE IF NOT EXISTS stepgraph_entries (
    key INTEGER PRIMARY KEY,  -- (run number << 32) | ordinal: the store finds rows by it
    run_id TEXT NOT NULL,  -- and the rest: for people and tools reading the file
    after_seq INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    entry BLOB NOT NULL
);
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
_ADDED_COLUMNS = {
    "stepgraph_runs": {"queue": "TEXT", "worker": "TEXT", "lease_until": "REAL"},
    "stepgraph_checkpoints": {"journal_base": "INTEGER NOT NULL DEFAULT 0"},
}
_OLD_JOURNAL = "stepgraph_journal"  # the journal's table before stepgraph_entries
_QUEUE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS stepgraph_runs_queue ON stepgraph_runs (queue, status, number) "
    "WHERE queue IS NOT NULL",
    # the runs a worker may take over, found without visiting every run running or paused
    "CREATE INDEX IF NOT EXISTS stepgraph_runs_held ON stepgraph_runs (status, lease_until) "
    "WHERE queue IS NOT NULL",
)

_SYNCHRONOUS = ("off", "normal", "full", "extra")
_ENDED = frozenset({StoredStatus.COMPLETED, StoredStatus.FAILED, StoredStatus.CANCELLED})


_RUN_COLUMNS = (
    "run_id, workflow, status, created_at, updated_at, parent_run_id, parent_checkpoint_id, "
    "result, queue, worker"
)

_Statement = tuple[str, list[tuple[object, ...]]]  # sql, rows
_SEQ_BITS = 32  # a checkpoint's key: (run number << 32) | seq
_SEQ_MASK = (1 << _SEQ_BITS) - 1


# journal_base: the ordinal after the run's last entry, read in the statement that writes
# the checkpoint (so that no store object's count of another's writes can be behind)
_INSERT_CHECKPOINT = (
    "INSERT INTO stepgraph_checkpoints "
    "(key, run_id, seq, superstep, created_at, status, frame, journal_base) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, COALESCE((SELECT (MAX(key) & 4294967295) + 1 "
    "FROM stepgraph_entries WHERE key BETWEEN ?8 AND ?9), 0))"
)


# an entry goes in only while no checkpoint follows the one it is after (?6: the key of the
# checkpoint after that one, ?7: the run's last key), checked in the statement itself
_INSERT_ENTRY = (
    "INSERT INTO stepgraph_entries (key, run_id, after_seq, pos, entry) "
    "SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS "
    "(SELECT 1 FROM stepgraph_checkpoints WHERE key BETWEEN ?6 AND ?7)"
)

_FORMAT = 1  # PRAGMA user_version once the journal is in stepgraph_entries


def _keys(number: int) -> tuple[int, int]:
    """The first and last keys of run ``number`` (of its checkpoints, of its entries)."""
    return number << _SEQ_BITS, (number << _SEQ_BITS) | _SEQ_MASK


def _checkpoint_row(
    run_id: str, number: int, write: CheckpointWrite, now: float
) -> tuple[Any, ...]:
    """The parameters of ``_INSERT_CHECKPOINT`` for ``write``, of run ``number``."""
    lowest = number << _SEQ_BITS
    seq = write.seq
    row = (lowest | seq, run_id, seq, write.superstep, now, write.status, write.frame)
    return (*row, lowest, lowest | _SEQ_MASK)


def _entry_row(
    run_id: str, number: int, after: int, pos: int, ordinal: int, entry: bytes
) -> tuple[Any, ...]:
    """The parameters of ``_INSERT_ENTRY``: entry ``pos`` after checkpoint ``after`` of run
    ``number``, at ``ordinal``, refused once a checkpoint follows ``after``."""
    lowest = number << _SEQ_BITS
    return (lowest | ordinal, run_id, after, pos, entry, lowest + after + 1, lowest | _SEQ_MASK)


def _statements(batch: Commit, number: int, now: float, base: int) -> list[_Statement]:
    """The statements of one commit of run ``number``, in order (see ``Commit``); ``base``:
    the ``journal_base`` of the checkpoint its entries follow (0 before the first).

    Raises:
        StoreError: an entry's ordinal would not fit in a key.
    """
    run_id = batch.run_id
    out: list[_Statement] = []
    if batch.journal:
        after, at = batch.journal_after, batch.journal_at
        first = base + at
        if at < 0 or first + len(batch.journal) - 1 > _SEQ_MASK:
            raise StoreError(
                f"journal position {at} after checkpoint {after} of run {run_id!r}: a run "
                f"holds at most {_SEQ_MASK + 1} journal entries"
            )
        out.append(
            (
                _INSERT_ENTRY,
                [
                    _entry_row(run_id, number, after, at + i, first + i, entry)
                    for i, entry in enumerate(batch.journal)
                ],
            )
        )
    write = batch.checkpoint
    if write is not None:
        seq = write.seq
        out.append(
            (
                _INSERT_CHECKPOINT,
                [_checkpoint_row(run_id, number, write, now)],
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


def _missing_columns(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The columns added since the first release that the file lacks: table, name, type."""
    missing: list[tuple[str, str, str]] = []
    for table, columns in _ADDED_COLUMNS.items():
        have = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
        missing += [(table, name, kind) for name, kind in columns.items() if name not in have]
    return missing


def _has_old_journal(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_OLD_JOURNAL,)
    ).fetchone()
    return found is not None


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a file made by an earlier version up to date, once: the columns it lacks, and
    its journal moved to ``stepgraph_entries`` (then ``PRAGMA user_version`` says so). One
    transaction: a process opening the file at the same time waits for it, then finds
    nothing left to do.

    Raises:
        sqlite3.DatabaseError: an older stepgraph wrote to the old journal table after the
            file was brought up to date (its entries would never be read), or a newer one
            made the file.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > _FORMAT:
        raise sqlite3.DatabaseError(
            f"a newer stepgraph made it (its format is {version}; this one reads format "
            f"{_FORMAT} and older): upgrade stepgraph to use it"
        )
    if version < _FORMAT or _missing_columns(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table, name, kind in _missing_columns(conn):  # (another process may have
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")  # added some)
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version < _FORMAT:
                if _has_old_journal(conn):
                    _move_journal(conn)
                conn.execute(f"PRAGMA user_version = {_FORMAT}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # (SQLite may have rolled it back itself: a full disk)
                conn.execute("ROLLBACK")
            raise
    for index in _QUEUE_INDEXES:
        conn.execute(index)
    if _has_old_journal(conn) and conn.execute(f"SELECT 1 FROM {_OLD_JOURNAL} LIMIT 1").fetchone():
        raise sqlite3.DatabaseError(
            f"an older stepgraph wrote journal entries to {_OLD_JOURNAL} after the file was "
            "brought up to date: stop it (this version keeps journals in stepgraph_entries)"
        )


def _move_journal(conn: sqlite3.Connection) -> None:
    """Move the entries of the journal's old table (keyed by run id, checkpoint and
    position) to ``stepgraph_entries``, numbered as this version numbers them, give each
    checkpoint its ``journal_base``, and drop the old table. SQLite copies the entries
    itself (memory does not grow with the journal). Rows it cannot number (of no known
    run, or damaged) are kept in ``stepgraph_journal_unmoved``, which nothing reads."""
    valid = (
        "typeof(j.after_seq) = 'integer' AND typeof(j.pos) = 'integer' "
        f"AND j.pos BETWEEN 0 AND {_SEQ_MASK}"
    )
    groups: dict[tuple[str, int], dict[int, int]] = {}  # (run, number) -> after -> top pos
    for run_id, number, after, top in conn.execute(
        f"SELECT j.run_id, r.number, j.after_seq, MAX(j.pos) FROM {_OLD_JOURNAL} AS j "
        f"JOIN stepgraph_runs AS r ON r.run_id = j.run_id WHERE {valid} "
        "GROUP BY j.run_id, j.after_seq"
    ):
        groups.setdefault((str(run_id), int(number)), {})[int(after)] = int(top)
    conn.execute(
        "CREATE TEMP TABLE stepgraph_bases (run_id TEXT NOT NULL, after_seq INTEGER NOT NULL, "
        "high INTEGER NOT NULL, base INTEGER NOT NULL, PRIMARY KEY (run_id, after_seq)) "
        "WITHOUT ROWID"
    )
    try:
        for (run_id, number), tops in groups.items():
            lowest, highest = _keys(number)
            seqs = {
                int(key) & _SEQ_MASK
                for (key,) in conn.execute(
                    "SELECT key FROM stepgraph_checkpoints WHERE key BETWEEN ? AND ?",
                    (lowest, highest),
                )
            }
            following = 0  # the ordinal after the entries numbered so far
            updates: list[tuple[int, int]] = []
            bases: list[tuple[str, int, int, int]] = []
            for seq in sorted(seqs | tops.keys()):  # in the order written: -1 first
                base = following
                if seq in seqs:
                    updates.append((base, lowest | seq))
                if seq in tops and base <= _SEQ_MASK:
                    bases.append((run_id, seq, lowest, base))
                    following = min(base + tops[seq], _SEQ_MASK) + 1
            conn.executemany(
                "UPDATE stepgraph_checkpoints SET journal_base = ? WHERE key = ?", updates
            )
            conn.executemany("INSERT INTO temp.stepgraph_bases VALUES (?, ?, ?, ?)", bases)
        movable = (
            f"FROM {_OLD_JOURNAL} AS j JOIN temp.stepgraph_bases AS b "
            "ON b.run_id = j.run_id AND b.after_seq = j.after_seq "
            f"WHERE {valid} AND b.base + j.pos <= {_SEQ_MASK}"
        )
        conn.execute(
            "INSERT INTO stepgraph_entries (key, run_id, after_seq, pos, entry) "
            f"SELECT b.high | (b.base + j.pos), j.run_id, j.after_seq, j.pos, j.entry {movable}"
        )
        conn.execute(
            f"DELETE FROM {_OLD_JOURNAL} WHERE (run_id, after_seq, pos) IN "
            f"(SELECT j.run_id, j.after_seq, j.pos {movable})"
        )
    finally:
        conn.execute("DROP TABLE temp.stepgraph_bases")
    if conn.execute(f"SELECT 1 FROM {_OLD_JOURNAL} LIMIT 1").fetchone() is not None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS stepgraph_journal_unmoved (run_id, after_seq, pos, entry)"
        )
        conn.execute(f"INSERT INTO stepgraph_journal_unmoved SELECT * FROM {_OLD_JOURNAL}")
    conn.execute(f"DROP TABLE {_OLD_JOURNAL}")


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
        # run id -> its row (runs are never deleted), for the runs it writes until they end
        self._numbers: dict[str, int] = {}
        # run id -> its latest checkpoint's seq and journal_base (None: not read yet), as
        # this object last wrote or read them (another object may have written a newer
        # one since: an entry after an older one is refused by its own statement)
        self._latest: dict[str, tuple[int, int | None]] = {}
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
            _upgrade(conn)
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

    def _base(self, cursor: sqlite3.Cursor, batch: Commit, number: int) -> int:
        """The ``journal_base`` of the checkpoint the entries of ``batch`` follow.

        Raises:
            RunLockedError: the run has a checkpoint after that one (another writer).
            StoreError: the run has no such checkpoint.
        """
        run_id, after = batch.run_id, batch.journal_after
        known = self._latest.get(run_id)
        if known is not None and known[0] == after and known[1] is not None:
            return known[1]  # (a checkpoint row never changes: what was read stays true)
        lowest, highest = _keys(number)
        latest = cursor.execute(
            "SELECT key, journal_base FROM stepgraph_checkpoints WHERE key BETWEEN ? AND ? "
            "ORDER BY key DESC LIMIT 1",
            (lowest, highest),
        ).fetchone()
        seq, base = -1, 0
        if latest is not None:
            seq = int(latest[0]) & _SEQ_MASK
            base = read_count(latest[1], "journal_base", run_id, seq)
        if after < seq:
            raise RunLockedError(
                f"journal position {batch.journal_at} after checkpoint {after} of run "
                f"{run_id!r}: the run has checkpoint {seq} after it: {ANOTHER_WRITER}"
            )
        if after > seq:
            raise StoreError(
                f"cannot write journal entries after checkpoint {after} of run {run_id!r}: "
                "the run has no such checkpoint"
            )
        self._latest[run_id] = (seq, base)
        return base

    def _written(self, batch: Commit) -> None:
        """What this object knows of the run after ``batch`` was written."""
        write = batch.checkpoint
        if batch.status in _ENDED:  # nothing follows (and a worker writes run after run)
            self._latest.pop(batch.run_id, None)
            self._numbers.pop(batch.run_id, None)
        elif write is not None:
            self._latest[batch.run_id] = (write.seq, None)  # (its base is read when needed)

    def commit(self, batch: Commit) -> None:
        now = time.time()
        run_id = batch.run_id
        write = batch.checkpoint
        if write is not None and not 0 <= write.seq <= _SEQ_MASK:
            raise StoreError(
                f"checkpoint {write.seq} of run {run_id!r}: a seq is from 0 to {_SEQ_MASK}"
            )
        number = self._numbers.get(run_id)
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
            row = _checkpoint_row(run_id, number, write, now)
            with self._lock:
                try:
                    (self._conn or self._connect()).execute(_INSERT_CHECKPOINT, row)
                except sqlite3.Error as exc:
                    raise self._refusal(batch, exc) from exc
                self._latest[run_id] = (write.seq, None)
            return
        known = self._latest.get(run_id)
        conn = self._conn
        if (
            conn is not None
            and number is not None
            and known is not None
            and known[0] == batch.journal_after
            and known[1] is not None
            and write is None
            and batch.status is None
            and len(batch.journal) == 1
            and plain
        ):
            # one journal entry (a step of an async run, mostly): one statement, no transaction
            at = batch.journal_at
            ordinal = known[1] + at
            if at >= 0 and ordinal <= _SEQ_MASK:
                after = batch.journal_after
                entry = _entry_row(run_id, number, after, at, ordinal, batch.journal[0])
                with self._lock:
                    try:
                        written = conn.execute(_INSERT_ENTRY, entry).rowcount
                    except sqlite3.Error as exc:
                        raise self._refusal(batch, exc) from exc
                    if written != 1:
                        raise self._overtaken(batch)
                    return
        with self._lock:
            cursor = self._connect().cursor()
            try:
                number = self._number(cursor, run_id)
                base = self._base(cursor, batch, number) if batch.journal else 0
            except sqlite3.Error as exc:
                raise self._refusal(batch, exc) from exc
            statements = _statements(batch, number, now, base)
            if len(statements) == 1 and len(statements[0][1]) == 1:  # a transaction of its own
                sql, (only,) = statements[0]
                try:
                    written = cursor.execute(sql, only).rowcount
                except sqlite3.Error as exc:
                    raise self._refusal(batch, exc) from exc
                if sql is _INSERT_ENTRY and written != 1:
                    raise self._overtaken(batch)
            else:
                with self._transaction(f"writing run {run_id!r}") as cursor:
                    self._execute(cursor, batch, statements)
            self._written(batch)

    def _execute(self, cursor: sqlite3.Cursor, batch: Commit, statements: list[_Statement]) -> None:
        for sql, rows in statements:
            try:
                written = cursor.executemany(sql, rows).rowcount
            except sqlite3.IntegrityError as exc:
                raise self._refusal(batch, exc) from exc
            if sql is _INSERT_ENTRY and written != len(rows):
                raise self._overtaken(batch)

    def _overtaken(self, batch: Commit) -> StoreError:
        """The refusal of entries after a checkpoint that another has followed since."""
        self._latest.pop(batch.run_id, None)
        return RunLockedError(
            f"journal position {batch.journal_at} after checkpoint {batch.journal_after} of run "
            f"{batch.run_id!r}: the run has a checkpoint after it: {ANOTHER_WRITER}"
        )

    def _refusal(self, batch: Commit, error: sqlite3.Error) -> StoreError:
        self._latest.pop(batch.run_id, None)  # read again from the file, if written again
        text = str(error)
        taken = "UNIQUE constraint failed" in text  # (a number another writer took)
        if taken and batch.checkpoint is not None and "stepgraph_checkpoints" in text:
            return RunLockedError(
                f"checkpoint {batch.checkpoint.seq} of run {batch.run_id!r} exists already: "
                f"{ANOTHER_WRITER}"
            )
        if taken and "stepgraph_entries" in text:
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
                self._execute(cursor, first, _statements(first, number, time.time(), 0))
            self._numbers[record.run_id] = number
            self._latest[record.run_id] = (-1, 0)
            if first is not None:
                self._written(first)
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
        wanted = status_wanted(status)
        with self._reading("listing runs") as cursor:
            if wanted is None:
                rows = cursor.execute(
                    f"SELECT {_RUN_COLUMNS} FROM stepgraph_runs ORDER BY created_at, number"
                ).fetchall()
            else:
                rows = cursor.execute(
                    f"SELECT {_RUN_COLUMNS} FROM stepgraph_runs WHERE status = ? "
                    "ORDER BY created_at, number",
                    (str(wanted),),
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
            columns = f"key & {_SEQ_MASK}, superstep, created_at, status, frame, journal_base"
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
                "SELECT pos, entry FROM stepgraph_entries WHERE key BETWEEN ? AND ? "
                "AND after_seq = ? ORDER BY key",
                (*self._journal_keys(cursor, run_id, number, seq, row[5]), seq),
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

    @staticmethod
    def _journal_keys(
        cursor: sqlite3.Cursor, run_id: str, number: int, seq: int, base: object
    ) -> tuple[int, int]:
        """The keys between which the journal after checkpoint ``seq`` is: from its
        ``base`` to the next checkpoint's (the run's last key, for its latest).

        Raises:
            CheckpointError: a base is damaged: past the run's keys, below an entry after
                the checkpoint before it, or above one after its own.
        """
        lowest, highest = _keys(number)

        def read(value: object, at: int) -> int:
            ordinal = read_count(value, "journal_base", run_id, at)
            if ordinal > _SEQ_MASK + 1:
                raise corrupt_row(run_id, at, f"its journal_base {ordinal} is past the run's keys")
            return ordinal

        def entry_at(ordinal: int, after: int) -> bool:
            found = cursor.execute(
                "SELECT 1 FROM stepgraph_entries WHERE key = ? AND after_seq = ?",
                (lowest | ordinal, after),
            ).fetchone()
            return found is not None

        first = read(base, seq)
        if 0 < first <= _SEQ_MASK + 1 and entry_at(first - 1, seq):
            raise corrupt_row(run_id, seq, f"its journal_base {first} is past its own entries")
        if seq < _SEQ_MASK:
            after = cursor.execute(
                "SELECT journal_base FROM stepgraph_checkpoints WHERE key = ?",
                (lowest | (seq + 1),),
            ).fetchone()
            if after is not None:
                end = read(after[0], seq + 1)
                if end < first:
                    raise corrupt_row(
                        run_id, seq, f"its journal_base {first} is past the next one's ({end})"
                    )
                if end <= _SEQ_MASK and entry_at(end, seq):
                    raise corrupt_row(
                        run_id, seq + 1, f"its journal_base {end} is among the entries before it"
                    )
                highest = lowest | (end - 1) if end else lowest - 1
        return lowest | min(first, _SEQ_MASK), highest

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
