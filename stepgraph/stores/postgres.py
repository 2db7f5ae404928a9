"""PostgresStore: durable runs in PostgreSQL, for several processes or machines.

Its rules:

- **Plain object.** Constructing it opens nothing. The first use creates the tables
  (``stepgraph_runs``, ``stepgraph_checkpoints``, ``stepgraph_chunks``,
  ``stepgraph_journal``, in ``schema`` when given) if they are missing, under a
  transaction-level advisory lock, so that several processes may start at once.
- **One event loop after another.** An asyncio connection belongs to the loop that opened
  it, so the store keeps its connections per running loop: a few for reads and writes, and
  one for leases. A loop that has closed leaves its connections behind; the store closes
  them the next time it is used. ``await store.aclose()`` closes the running loop's
  connections (the store opens new ones when next used).
- **One statement per commit, one for several.** A commit is one SQL statement (so one
  transaction and one round trip): it finds the run (and updates its record when its
  status changes: a commit without a status writes no run row, except that a queued run
  that commits becomes running), then appends the journal, writes the checkpoint and its
  chunks at the numbers the writer gave;
  a number that is taken (another writer) fails the whole statement. Commits of several
  runs made while the loop's last write is under way go together in one statement (a
  group commit: a worker running many runs writes a transaction per round trip, not one
  per run); a refused group is written again commit by commit, so that only the commit at
  fault fails. ``commit`` returns an awaitable and never blocks the event loop.
- **Leases are session advisory locks.** ``acquire`` takes ``pg_try_advisory_lock`` on a
  64-bit hash of the schema and run id, on the loop's lease connection; it never waits.
  The lock lives as long as that session: a killed process loses its leases as soon as
  the server sees its socket close (TCP keepalives, set on the lease session, catch a
  machine that vanished). Store objects over the same data must therefore be made with
  the same ``schema``. Leases are per event loop: a loop that ends gives its leases up.
  A worker takes the leases of the runs it claims in one statement (``take``), and gives
  them up with its next one: the lease costs a run no round trip of its own.
- **Times** are ``timestamptz`` and come back as UTC datetimes.

It needs psycopg 3, the extra ``postgres``: ``pip install 'stepgraph[postgres]'``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import RunLockedError, StoreError, StoreUnavailableError
from ..limits import Limiter
from .base import (
    ANOTHER_WRITER,
    CheckpointInfo,
    Commit,
    RunRecord,
    StoredCheckpoint,
    StoredStatus,
    checkpoint_id,
    checkpoint_seq,
    read_count,
    read_status,
    status_wanted,
)
from .pg_common import TABLES_KEY, binary_params, psycopg_error, run_key
from .pg_limits import PostgresGate, postgres_gate
from .postgres_queue import PostgresQueue
from .results import StoreResults

if TYPE_CHECKING:
    from psycopg import AsyncConnection, AsyncCursor
    from psycopg.rows import TupleRow

    _Conn = AsyncConnection[TupleRow]

__all__ = ["PostgresStore"]

_POOL_SIZE = 4  # connections for reads and writes, per event loop
_MAX_SEQ = 2**31 - 1  # checkpoint seqs are INTEGER
_CLOSE_WAIT = 10.0  # seconds aclose() waits for the queries in flight
_GROUP_MAX = 64  # commits written together at most

# {p} is the schema prefix ('"name".' or nothing).
_TABLES = """
CREATE TABLE IF NOT EXISTS {p}stepgraph_runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    parent_run_id TEXT,
    parent_checkpoint_id TEXT,
    result BYTEA,
    pos BIGINT GENERATED ALWAYS AS IDENTITY  -- insertion order, for runs created together
);
CREATE TABLE IF NOT EXISTS {p}stepgraph_checkpoints (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    superstep INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    status TEXT NOT NULL,
    frame BYTEA NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS {p}stepgraph_chunks (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BYTEA,
    PRIMARY KEY (run_id, name, seq)
);
CREATE TABLE IF NOT EXISTS {p}stepgraph_journal (
    run_id TEXT NOT NULL,
    after_seq INTEGER NOT NULL,
    pos BIGINT NOT NULL,
    entry BYTEA NOT NULL,
    PRIMARY KEY (run_id, after_seq, pos)
);
ALTER TABLE {p}stepgraph_runs ADD COLUMN IF NOT EXISTS queue TEXT,
    ADD COLUMN IF NOT EXISTS worker TEXT, ADD COLUMN IF NOT EXISTS lease_until TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS stepgraph_runs_queue ON {p}stepgraph_runs (queue, status, pos)
    WHERE queue IS NOT NULL;
CREATE INDEX IF NOT EXISTS stepgraph_runs_queued ON {p}stepgraph_runs (pos)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS stepgraph_runs_held ON {p}stepgraph_runs (status, lease_until)
    WHERE status IN ('running', 'paused') AND queue IS NOT NULL;
CREATE TABLE IF NOT EXISTS {p}stepgraph_events (
    position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id TEXT NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS stepgraph_events_run ON {p}stepgraph_events (run_id, position);
CREATE TABLE IF NOT EXISTS {p}stepgraph_inbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id TEXT NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS stepgraph_inbox_run ON {p}stepgraph_inbox (run_id, id);
"""

# Commits, one statement for several (each of a different run). `input` has a row per
# commit (idx: its place, from 1); the commit's lists are flat arrays, each item with the
# idx of its commit. A first part names the runs found as `run` (idx, run_id); the rest
# writes from it, at the numbers the writers gave. Every part sees the tables as before
# the statement.
_INPUT = """WITH input AS (
    SELECT * FROM unnest(%(run_ids)s::text[], %(statuses)s::text[], %(results)s::bytea[],
        %(seqs)s::integer[], %(supersteps)s::integer[], %(cp_statuses)s::text[],
        %(frames)s::bytea[], %(fulls)s::boolean[], %(afters)s::integer[])
        WITH ORDINALITY AS i(run_id, status, result, seq, superstep, cp_status, frame, full_,
            after, idx)
)"""

_WRITE = """,
journal AS (
    INSERT INTO {p}stepgraph_journal (run_id, after_seq, pos, entry)
    SELECT run.run_id, i.after, j.pos, j.entry
    FROM run JOIN input AS i USING (idx)
    JOIN unnest(%(j_idx)s::bigint[], %(j_pos)s::bigint[], %(j_entry)s::bytea[])
        AS j(idx, pos, entry) ON j.idx = run.idx
),
checkpoint AS (
    INSERT INTO {p}stepgraph_checkpoints (run_id, seq, superstep, created_at, status, frame)
    SELECT run.run_id, i.seq, i.superstep, %(now)s::timestamptz, i.cp_status, i.frame
    FROM run JOIN input AS i USING (idx) WHERE i.seq IS NOT NULL
),
chunk AS (
    SELECT * FROM unnest(%(c_idx)s::bigint[], %(c_name)s::text[], %(c_data)s::bytea[])
        AS c(idx, name, data)
),
chunks AS (
    INSERT INTO {p}stepgraph_chunks (run_id, name, seq, data)
    SELECT run.run_id, c.name, i.seq, c.data
    FROM run JOIN input AS i USING (idx) JOIN chunk AS c ON c.idx = run.idx
    UNION ALL
    SELECT DISTINCT run.run_id, old.name, i.seq, NULL::bytea
    FROM run JOIN input AS i USING (idx)
    JOIN {p}stepgraph_chunks AS old ON old.run_id = run.run_id
    WHERE i.full_ AND old.seq < i.seq
        AND NOT EXISTS (SELECT 1 FROM chunk AS c WHERE c.idx = run.idx AND c.name = old.name)
),
events AS (
    INSERT INTO {p}stepgraph_events (run_id, data)
    SELECT run.run_id, e.data
    FROM run JOIN unnest(%(e_idx)s::bigint[], %(e_data)s::bytea[]) WITH ORDINALITY
        AS e(idx, data, ord) ON e.idx = run.idx
    ORDER BY e.ord
),
consumed AS (
    DELETE FROM {p}stepgraph_inbox AS m
    USING run, unnest(%(m_idx)s::bigint[], %(m_id)s::bigint[]) AS x(idx, id)
    WHERE x.idx = run.idx AND m.run_id = run.run_id AND m.id = x.id
),
finished AS (
    DELETE FROM {p}stepgraph_inbox AS f USING run JOIN input AS i USING (idx)
    WHERE f.run_id = run.run_id AND i.status = 'completed'
)
"""

# One commit alone (the most frequent group): the same `input`, of scalar parameters:
# psycopg makes a dumper for each array it sends, which costs more than the statement's
# other work on the client.
# A checkpoint number taken: its row, or a chunk of it (a value written at that seq).
_CHECKPOINT_KEYS = frozenset({"stepgraph_checkpoints_pkey", "stepgraph_chunks_pkey"})

_INPUT_ONE = """WITH input AS (
    SELECT %(run_id)s::text AS run_id, %(status)s::text AS status,
        %(result)s::bytea AS result, %(seq)s::integer AS seq,
        %(superstep)s::integer AS superstep, %(cp_status)s::text AS cp_status,
        %(frame)s::bytea AS frame, %(full)s::boolean AS full_, %(after)s::integer AS after,
        1::bigint AS idx
)"""

_COMMIT_REST = (
    """,
updated AS (
    UPDATE {p}stepgraph_runs AS r SET
        status = COALESCE(i.status, 'running'),  -- a queued run that commits is running
        result = COALESCE(i.result, r.result),  -- (see _LEASED, postgres_queue.py)
        updated_at = CASE WHEN i.status IS NOT NULL THEN %(now)s::timestamptz
            ELSE r.updated_at END
    FROM input AS i WHERE r.run_id = i.run_id AND (i.status IS NOT NULL OR r.status = 'queued')
    RETURNING i.idx, r.run_id
),
run AS (  -- the runs found; the record is written only when its status changes
    SELECT idx, run_id FROM updated
    UNION ALL
    SELECT i.idx, r.run_id FROM input AS i JOIN {p}stepgraph_runs AS r USING (run_id)
    WHERE i.idx NOT IN (SELECT idx FROM updated)
)"""
    + _WRITE
    + "SELECT run.idx FROM run"
)
_COMMIT = _INPUT + _COMMIT_REST
_COMMIT_ONE = _INPUT_ONE + _COMMIT_REST

# A new run: `run` (idx 1 and its run_id), nothing when its run_id is taken.
_NEW_RUN = """run AS (
    INSERT INTO {p}stepgraph_runs (run_id, workflow, status, created_at, updated_at,
        parent_run_id, parent_checkpoint_id, result, queue)
    VALUES (%(run_id)s::text, %(workflow)s, %(status)s::text, %(created_at)s,
        %(updated_at)s, %(parent_run_id)s, %(parent_checkpoint_id)s, %(result)s::bytea,
        %(queue)s::text)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING 1::bigint AS idx, run_id
)"""

# A queued run wakes the workers listening (LISTEN stepgraph_work) as it is created.
_WAKE = """, woken AS (
    SELECT pg_notify('stepgraph_work', %(queue)s::text) FROM run WHERE %(queue)s::text IS NOT NULL
)
SELECT run.idx, (SELECT count(*) FROM woken) FROM run
"""

_CREATE = _INPUT + ",\n" + _NEW_RUN + _WRITE + _WAKE

# A run created with nothing but a checkpoint without chunks (a submit's): less to send
# and to run than _CREATE.
_CREATE_PLAIN = (
    "WITH "
    + _NEW_RUN
    + """,
checkpoint AS (
    INSERT INTO {p}stepgraph_checkpoints (run_id, seq, superstep, created_at, status, frame)
    SELECT run.run_id, %(seq)s::integer, %(superstep)s::integer, %(now)s::timestamptz,
           %(cp_status)s::text, %(frame)s::bytea
    FROM run
)"""
    + _WAKE
)

# Checkpoints (the rows of {c}) with every chunk as of each and the journal after it.
_CHECKPOINTS = """
SELECT c.seq, c.superstep, c.created_at, c.status, r.parent_run_id, c.frame,
    ch.names, ch.datas, j.entries, c.run_id, j.last
FROM {c} AS c JOIN {p}stepgraph_runs AS r USING (run_id)
LEFT JOIN LATERAL (
    SELECT array_agg(x.name) AS names, array_agg(x.data) AS datas FROM (
        SELECT DISTINCT ON (name) name, data FROM {p}stepgraph_chunks
        WHERE run_id = c.run_id AND seq <= c.seq ORDER BY name, seq DESC
    ) AS x WHERE x.data IS NOT NULL
) AS ch ON true
LEFT JOIN LATERAL (
    SELECT array_agg(entry ORDER BY pos) AS entries, max(pos) AS last FROM {p}stepgraph_journal
    WHERE run_id = c.run_id AND after_seq = c.seq
) AS j ON true
"""

# One checkpoint of a run (its latest when seq is NULL), in one statement.
_LOAD = _CHECKPOINTS.replace("{c}", "{p}stepgraph_checkpoints") + (
    "WHERE c.run_id = %(run_id)s AND (%(seq)s::integer IS NULL OR c.seq = %(seq)s::integer)\n"
    "ORDER BY c.seq DESC LIMIT 1\n"
)

# The latest checkpoint of each of several runs, in one statement.
_LOAD_LATEST = _CHECKPOINTS.replace(
    "{c}",
    "(SELECT DISTINCT ON (run_id) * FROM {p}stepgraph_checkpoints "
    "WHERE run_id = ANY(%(run_ids)s::text[]) ORDER BY run_id, seq DESC)",
)

# Leases: lock the keys of `take` (each row says whether it got it), unlock those of `free`.
_LOCK_UNLOCK = (
    "SELECT k, pg_try_advisory_lock(k) FROM unnest(%(take)s::bigint[]) AS k UNION ALL "
    "SELECT NULL, bool_and(pg_advisory_unlock(k)) FROM unnest(%(free)s::bigint[]) AS k"
)

_RUN_COLUMNS = (
    "run_id, workflow, status, created_at, updated_at, parent_run_id, parent_checkpoint_id, "
    "result, queue, worker"
)
_INFO_COLUMNS = "c.seq, c.superstep, c.created_at, c.status, r.parent_run_id"


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _record(row: tuple[Any, ...]) -> RunRecord:
    run_id, workflow, status, created, updated, parent, parent_cp, result, queue, worker = row
    return RunRecord(
        run_id=run_id,
        workflow=workflow,
        status=read_status(status, run_id),
        created_at=_utc(created),
        updated_at=_utc(updated),
        parent_run_id=parent,
        parent_checkpoint_id=parent_cp,
        result=None if result is None else bytes(result),
        queue=queue,
        worker=worker,
    )


def _info(run_id: str, row: tuple[Any, ...]) -> CheckpointInfo:
    seq, superstep, created, status, parent = row
    return CheckpointInfo(
        id=checkpoint_id(run_id, seq),
        run_id=run_id,
        superstep=read_count(superstep, "superstep", run_id, seq),
        created_at=_utc(created),
        status=read_status(status, run_id, seq),
        parent_run_id=parent,
        seq=seq,
    )


def _stored(run_id: str, row: tuple[Any, ...]) -> StoredCheckpoint:
    """A checkpoint from a row of ``_CHECKPOINTS``."""
    names, datas, entries = row[6], row[7], row[8] or ()
    return StoredCheckpoint(
        info=_info(run_id, row[:5]),
        frame=bytes(row[5]),
        values={name: bytes(data) for name, data in zip(names or (), datas or (), strict=True)},
        journal=tuple(bytes(entry) for entry in entries),
        journal_last=row[10],
    )


def _input_row(batch: Commit) -> tuple[Any, ...]:
    """The values of ``input`` for ``batch`` (its columns: ``_INPUT_COLUMNS``)."""
    write = batch.checkpoint
    status = None if batch.status is None else StoredStatus(batch.status).value
    return (
        batch.run_id,
        status,
        None if status is None else batch.result,
        None if write is None else write.seq,
        None if write is None else write.superstep,
        None if write is None else StoredStatus(write.status).value,
        None if write is None else bytes(write.frame),
        write is not None and write.full,
        batch.journal_after,
    )


def _params(commits: Sequence[Commit], now: datetime) -> dict[str, Any]:
    """The parameters of ``_INPUT`` and ``_WRITE`` for ``commits`` (of different runs)."""
    p: dict[str, Any] = {"now": now}
    for name in _ARRAYS:
        p[name] = []
    columns = [p[name] for name in _ARRAYS[: len(_INPUT_COLUMNS)]]
    for idx, batch in enumerate(commits, 1):
        for column, value in zip(columns, _input_row(batch), strict=True):
            column.append(value)
        _add_items(p, idx, batch)
    for name in _SPARSE:  # unnest() pads a NULL array with NULLs: cheaper to send
        if all(value is None for value in p[name]):
            p[name] = None
    return _no_empty_items(p)


def _params_one(batch: Commit, now: datetime) -> dict[str, Any]:
    """The parameters of ``_INPUT_ONE`` and ``_WRITE`` for ``batch`` alone."""
    p: dict[str, Any] = dict(zip(_INPUT_COLUMNS, _input_row(batch), strict=True), now=now)
    for name in _ITEMS:
        p[name] = []
    _add_items(p, 1, batch)
    return _no_empty_items(p)


def _add_items(p: dict[str, Any], idx: int, batch: Commit) -> None:
    """Append the journal entries, chunks, stream events and consumed messages of
    ``batch`` (commit ``idx`` of its statement) to the item arrays of ``p``."""
    for pos, entry in enumerate(batch.journal, batch.journal_at):
        p["j_idx"].append(idx)
        p["j_pos"].append(pos)
        p["j_entry"].append(entry)
    if batch.checkpoint is not None:
        for name, data in batch.checkpoint.values.items():
            p["c_idx"].append(idx)
            p["c_name"].append(name)
            p["c_data"].append(data)
    for data in batch.events:
        p["e_idx"].append(idx)
        p["e_data"].append(data)
    for message_id in batch.consumed:
        p["m_idx"].append(idx)
        p["m_id"].append(message_id)


def _no_empty_items(p: dict[str, Any]) -> dict[str, Any]:
    """``p`` with None for its empty item arrays: unnest(NULL) has no rows, as
    unnest('{}'), and None costs less to send."""
    for name in _ITEMS:
        if not p[name]:
            p[name] = None
    return p


_ARRAYS = [
    "run_ids",
    "statuses",
    "results",
    "seqs",
    "supersteps",
    "cp_statuses",
    "frames",
    "fulls",
    "afters",
    "j_idx",
    "j_pos",
    "j_entry",
    "c_idx",
    "c_name",
    "c_data",
    "e_idx",
    "e_data",
    "m_idx",
    "m_id",
]


def _plain(batch: Commit) -> bool:
    """Whether ``batch`` is a checkpoint without chunks and nothing else."""
    write = batch.checkpoint
    return (
        write is not None
        and not write.values
        and batch.status is None
        and not batch.journal
        and not batch.events
        and not batch.consumed
    )


# the columns of `input`: _INPUT_ONE's parameters, and (plural) _INPUT's first arrays
_INPUT_COLUMNS = [
    "run_id",
    "status",
    "result",
    "seq",
    "superstep",
    "cp_status",
    "frame",
    "full",
    "after",
]
_SPARSE = ["statuses", "results"]  # None in each commit but those that change the status
_ITEMS = _ARRAYS[
    len(_INPUT_COLUMNS) :
]  # the lists of items (journal entries, chunks, events, messages)


def _finish(conn: _Conn) -> None:
    """Close ``conn`` at once, from any thread or loop (what ``aclose`` does, synchronously)."""
    conn.pgconn.finish()


def _store_error(message: str, cause: BaseException) -> StoreError:
    """A StoreError for psycopg's ``cause``: StoreUnavailableError when the server could
    not be reached or went away (the operation may be tried again later)."""
    import psycopg

    unreachable = isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError) and not (
        isinstance(cause, psycopg.errors.TransactionRollback)
    )
    return StoreUnavailableError(message) if unreachable else StoreError(message)


def _named(run_ids: Sequence[str]) -> str:
    """``run_ids`` for a message (the first few)."""
    shown = ", ".join(repr(run_id) for run_id in run_ids[:5])
    return shown + (f" and {len(run_ids) - 5} more" if len(run_ids) > 5 else "")


def _cancelled(commits: list[tuple[Commit, asyncio.Future[None]]]) -> None:
    """Fail the futures of ``commits`` whose writer was cancelled, each naming its run."""
    for batch, done in commits:
        if not done.done():
            done.set_exception(StoreError(f"writing run {batch.run_id!r} was cancelled"))


class _LoopConnections:
    """A store's connections on one event loop."""

    def __init__(self) -> None:
        self.open: set[_Conn] = set()
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(_POOL_SIZE)
        self.lease_conn: _Conn | None = None
        self.lease_lock = asyncio.Lock()
        self.leases: dict[str, str] = {}  # run id -> owner, held on lease_conn
        self.taken: set[str] = set()  # leases got with take(): released lazily
        self.due: dict[str, int] = {}  # run id -> lock key: released, the unlock still due
        self.loaded: dict[str, StoredCheckpoint] = {}  # read by the last claim, lease held
        self.listen_conn: _Conn | None = None  # LISTEN stepgraph_work, for workers
        self.commits: list[tuple[Commit, asyncio.Future[None]]] = []  # waiting to be written
        self.committer: asyncio.Task[None] | None = None  # writing them, a group at a time
        self.listen_lock = asyncio.Lock()
        self.cursors: dict[_Conn, dict[str, AsyncCursor[Any]]] = {}  # see cursor()

    def cursor(self, conn: _Conn, sql: str) -> AsyncCursor[Any]:
        """A cursor of ``conn`` kept for the store's statement ``sql`` (binary results).

        psycopg keeps a cursor's adapters while it runs the same statement again; a new
        cursor per statement makes them anew, a sixth of a group commit's CPU here.
        """
        kept = self.cursors.get(conn)
        if kept is None:
            kept = self.cursors[conn] = {}
        cursor = kept.get(sql)
        if cursor is None or cursor.closed:
            cursor = kept[sql] = conn.cursor(binary=True)
        return cursor

    def committer_ended(self, task: asyncio.Task[None]) -> None:
        """The writer of commits ended. Cancelled before it started (it let nothing go):
        the commits waiting fail."""
        if self.committer is not task:
            return  # it ended as it should, and let go (another may have taken over)
        self.committer = None
        waiting, self.commits = self.commits, []
        _cancelled(waiting)

    def discard(self, conn: _Conn) -> None:
        self.open.discard(conn)
        self.cursors.pop(conn, None)
        if conn is self.lease_conn:
            self.lease_conn = None
            self.leases.clear()  # the session, and so its locks, are gone
            self.taken.clear()
            self.due.clear()
            self.loaded.clear()
        if conn is self.listen_conn:
            self.listen_conn = None
        _finish(conn)

    def finish(self) -> None:
        for conn in list(self.open):
            self.discard(conn)
        self.idle.clear()


def _location(dsn: str, schema: str | None) -> str:
    """A store's ``location``: its database (the DSN as psycopg reads it, else as it is
    spelt: psycopg missing, or a DSN it cannot read) and schema. Worked out once: every
    durable run's start looks it up."""
    where: object = dsn
    try:
        from psycopg.conninfo import conninfo_to_dict

        where = sorted(conninfo_to_dict(dsn).items())
    except Exception:
        pass
    return f"postgresql:{where}#{schema or ''}"


class PostgresStore(PostgresQueue, StoreResults):
    """Runs, checkpoints and journals in PostgreSQL (psycopg 3; the extra ``postgres``).

    Args:
        dsn: a libpq connection string or URI, such as
            ``"postgresql://user:password@host:5432/dbname"``.
        schema: the PostgreSQL schema to keep the tables in (created if missing); None
            for the connection's current schema (usually ``public``).

    Raises:
        StoreError: (from its methods) psycopg is not installed, the server cannot be
            reached, or an operation failed; ``commit`` also when the run does not exist
            or a checkpoint seq or journal position is taken (nothing of the commit is written
            then).

    Example::

        store = PostgresStore("postgresql://postgres@127.0.0.1:5432/app", schema="flows")
        handler = MyFlow(store=store).run(topic="tides")
        await handler
        await store.aclose()
    """

    _columns = _RUN_COLUMNS
    _record_of = staticmethod(_record)
    _stored_of = staticmethod(_stored)

    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        if schema is not None and not schema:
            raise StoreError("PostgresStore(schema=''): give a schema name, or None")
        self.dsn = dsn
        self.schema = schema
        self._location = _location(dsn, schema)
        prefix = "" if schema is None else '"' + schema.replace('"', '""') + '".'
        self._tables = _TABLES.replace("{p}", prefix)
        self._create_schema = "" if schema is None else f"CREATE SCHEMA IF NOT EXISTS {prefix[:-1]}"
        self._commit_sql = binary_params(_COMMIT).replace("{p}", prefix)
        self._commit_one_sql = binary_params(_COMMIT_ONE).replace("{p}", prefix)
        self._create_sql = binary_params(_CREATE).replace("{p}", prefix)
        self._create_plain_sql = binary_params(_CREATE_PLAIN).replace("{p}", prefix)
        self._load_sql = _LOAD.replace("{p}", prefix)
        self._load_latest_sql = _LOAD_LATEST.replace("{p}", prefix)
        self._prefix = prefix
        self._ready = False  # the tables exist
        self._loops: dict[asyncio.AbstractEventLoop, _LoopConnections] = {}
        self._lock = threading.Lock()  # guards _loops, for loops in several threads

    @property
    def location(self) -> str:
        """What identifies the data (store objects over one database and schema share it,
        however their DSNs spell it: a URL or key=value pairs, in any order)."""
        return self._location

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    # -- connections ----------------------------------------------------------------------------

    def _here(self) -> _LoopConnections:
        loop = asyncio.get_running_loop()
        with self._lock:
            here = self._loops.get(loop)
            if here is None:
                for gone in [other for other in self._loops if other.is_closed()]:
                    self._loops.pop(gone).finish()
                here = self._loops[loop] = _LoopConnections()
            return here

    async def _connect(self) -> _Conn:
        psycopg_error()
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            # its statements are prepared (psycopg does it on the 5th run); planned once:
            # a plan made again at each run costs more than the claim or commit it runs
            await conn.execute("SET plan_cache_mode = force_generic_plan")
        except psycopg.errors.UndefinedObject:
            pass  # PostgreSQL before 12: plans as it sees fit
        except BaseException as exc:
            _finish(conn)
            if isinstance(exc, psycopg.Error):
                raise StoreUnavailableError(f"cannot connect to PostgreSQL: {exc}") from exc
            raise
        return conn

    async def _make_tables(self, conn: _Conn) -> None:
        async with conn.transaction():
            # one creator at a time: concurrent CREATE ... IF NOT EXISTS can collide
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (TABLES_KEY,))
            if self._create_schema:
                await conn.execute(self._create_schema)
            await conn.execute(self._tables)
        self._ready = True

    @asynccontextmanager
    async def _connection(
        self, what: str, here: _LoopConnections | None = None
    ) -> AsyncIterator[_Conn]:
        """A connection of this loop's pool (of ``here``'s), its errors turned into
        StoreError."""
        error = psycopg_error()
        if here is None:
            here = self._here()
        async with here.slots:
            conn = here.idle.pop() if here.idle else None
            try:
                if conn is None:
                    conn = await self._connect()
                    here.open.add(conn)
                if not self._ready:
                    await self._make_tables(conn)
                yield conn
            except error as exc:
                raise _store_error(f"{what} failed: {exc}", exc) from exc
            finally:
                if conn is not None:
                    self._give_back(here, conn)

    @staticmethod
    def _give_back(here: _LoopConnections, conn: _Conn) -> None:
        from psycopg.pq import TransactionStatus

        if conn in here.open and conn.info.transaction_status == TransactionStatus.IDLE:
            here.idle.append(conn)
        else:  # broken, closed by aclose, or left mid-query (a cancelled task)
            here.discard(conn)

    async def aclose(self) -> None:
        """Close the connections the store has on the running event loop.

        Its leases on this loop are given up with them. The store stays usable: it opens
        new connections when next used.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            here = self._loops.pop(loop, None)
        if here is None:
            return
        # Closing a connection a query is using frees what that query's C code is still
        # reading: wait for the lease call and every pooled connection in flight first.
        try:
            async with asyncio.timeout(_CLOSE_WAIT):  # a server that never answers: close
                if here.committer is not None:  # the commits made before: written
                    await asyncio.wait({here.committer})
                await here.lease_lock.acquire()
                await here.listen_lock.acquire()
                for _ in range(_POOL_SIZE):
                    await here.slots.acquire()
        except TimeoutError:
            pass
        here.finish()

    # -- writes ---------------------------------------------------------------------------------

    async def _write(
        self,
        here: _LoopConnections,
        conn: _Conn,
        sql: str,
        params: dict[str, Any],
        commits: Sequence[Commit],
    ) -> set[int]:
        """Run the statement of ``commits``; the places (from 1) of those whose run it found."""
        from psycopg import errors

        cursor = here.cursor(conn, sql)
        try:
            await cursor.execute(sql, params)
        except errors.UniqueViolation as exc:
            if len(commits) != 1:
                raise
            batch = commits[0]
            run = batch.run_id
            if exc.diag.constraint_name in _CHECKPOINT_KEYS:
                seq = None if batch.checkpoint is None else batch.checkpoint.seq
                raise RunLockedError(
                    f"checkpoint {seq} of run {run!r} exists already: {ANOTHER_WRITER}"
                ) from exc
            if exc.diag.constraint_name == "stepgraph_journal_pkey":
                raise RunLockedError(
                    f"journal position {batch.journal_at} after checkpoint "
                    f"{batch.journal_after} of run {run!r} is taken: {ANOTHER_WRITER}"
                ) from exc
            raise
        return {int(row[0]) for row in await cursor.fetchall()}

    def commit(self, batch: Commit) -> Awaitable[None]:
        """Write ``batch`` in one transaction (see :class:`~stepgraph.stores.base.Commit`).

        Commits of several runs made while the last write is under way are written together,
        in one statement (a group commit: one round trip and one transaction for all); each
        is all or nothing, and a refused one is written alone again, so that it alone fails.

        Raises:
            RunLockedError: (from the awaitable) a number is taken: another coordinator
                wrote it (this one no longer holds the run).
            StoreError: (from the awaitable) the run does not exist, or the write failed;
                nothing of the batch is written then.
        """
        here = self._here()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        here.commits.append((batch, done))
        if here.committer is None:
            here.committer = loop.create_task(self._commit_all(here))
            here.committer.add_done_callback(here.committer_ended)
        return done

    async def _commit_all(self, here: _LoopConnections) -> None:
        """Write the commits waiting, a group at a time, until none waits."""
        group: list[tuple[Commit, asyncio.Future[None]]] = []
        try:
            while here.commits:
                group, later, runs = [], [], set()
                for item in here.commits:  # a run's commits land in the order made
                    if item[1].done():
                        continue  # its caller stopped waiting before it went out: not written
                    if item[0].run_id in runs or len(group) >= _GROUP_MAX:
                        later.append(item)
                    else:
                        runs.add(item[0].run_id)
                        group.append(item)
                here.commits = later
                await self._commit_group(here, group)
                group = []
        except BaseException:  # this task was cancelled (its loop is closing, say)
            waiting, here.commits = [*group, *here.commits], []
            _cancelled(waiting)
            raise
        finally:
            here.committer = None

    async def _commit_group(
        self,
        here: _LoopConnections,
        group: list[tuple[Commit, asyncio.Future[None]]],
        attempt: int = 1,
    ) -> None:
        """Write ``group`` in one statement, and settle each commit's future."""
        import psycopg

        if not group:
            return
        commits = [batch for batch, _ in group]
        try:
            now = datetime.now(UTC)
            if len(commits) == 1:
                sql, params = self._commit_one_sql, _params_one(commits[0], now)
            else:
                sql, params = self._commit_sql, _params(commits, now)
            async with self._connection(f"writing run {commits[0].run_id!r}", here) as conn:
                found = await self._write(here, conn, sql, params, commits)
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ else exc
            rolled_back = isinstance(cause, psycopg.errors.TransactionRollback)  # a deadlock
            refused = not isinstance(cause, psycopg.Error) or (  # one commit's fault, maybe
                isinstance(cause, psycopg.DatabaseError)
                and not isinstance(cause, psycopg.OperationalError)
            )
            if len(group) > 1 and (refused or rolled_back):  # nothing was written: each
                for item in group:  # alone, so that only the commit at fault fails
                    await self._commit_group(here, [item])
                return
            if rolled_back and attempt == 1:
                await self._commit_group(here, group, attempt + 1)
                return
            for batch, done in group:
                if done.done():
                    continue
                if len(group) == 1:
                    done.set_exception(exc)
                    continue
                error = _store_error(f"writing run {batch.run_id!r} failed: {cause}", cause)
                error.__cause__ = cause
                done.set_exception(error)
            return
        for idx, (batch, done) in enumerate(group, 1):
            if done.done():
                continue
            if idx in found:
                done.set_result(None)
            else:
                done.set_exception(
                    StoreError(f"cannot write to run {batch.run_id!r}: the store has no such run")
                )

    async def create_run(self, record: RunRecord, first: Commit | None = None) -> RunRecord | None:
        """Create the run ``record`` with its ``first`` commit, in one transaction.

        Returns:
            None when the run was created; the existing record (and nothing written) when
            a run with that id exists already.

        Raises:
            StoreError: the first commit's numbers are wrong (no run is created), or
                the write failed.
        """
        now = datetime.now(UTC)
        commits = [] if first is None else [first]
        plain = first is not None and _plain(first)
        if plain:
            assert first is not None and first.checkpoint is not None
            write = first.checkpoint
            params: dict[str, Any] = {
                "now": now,
                "seq": write.seq,
                "superstep": write.superstep,
                "cp_status": StoredStatus(write.status).value,
                "frame": bytes(write.frame),
            }
        else:
            params = _params(commits, now)
        status, result = record.status, record.result
        touch = first is not None and first.status is not None
        if first is not None and first.status is not None:
            status = first.status
            result = first.result if first.result is not None else result
        params.update(
            run_id=record.run_id,
            workflow=record.workflow,
            status=StoredStatus(status).value,
            result=result,
            created_at=record.created_at,
            updated_at=now if touch else record.updated_at,
            parent_run_id=record.parent_run_id,
            parent_checkpoint_id=record.parent_checkpoint_id,
            queue=record.queue,
        )
        sql = self._create_plain_sql if plain else self._create_sql
        here = self._here()
        async with self._connection(f"creating run {record.run_id!r}", here) as conn:
            if await self._write(here, conn, sql, params, commits):
                return None
            cursor = await conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM {self._prefix}stepgraph_runs WHERE run_id = %s",
                (record.run_id,),
            )
            row = await cursor.fetchone()
        if row is None:  # taken, then gone: stores delete no runs, so not expected
            raise StoreError(f"run {record.run_id!r} was neither created nor found")
        return _record(row)

    # -- reads ----------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The record of run ``run_id``, or None."""
        async with self._connection(f"reading run {run_id!r}") as conn:
            cursor = await conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM {self._prefix}stepgraph_runs WHERE run_id = %s",
                (run_id,),
                binary=True,
            )
            row = await cursor.fetchone()
        return None if row is None else _record(row)

    async def list_runs(self, status: str | None = None) -> list[RunRecord]:
        """Every run, or the runs with ``status``, oldest first."""
        sql = f"SELECT {_RUN_COLUMNS} FROM {self._prefix}stepgraph_runs"
        params: tuple[str, ...] = ()
        wanted = status_wanted(status)
        if wanted is not None:
            sql += " WHERE status = %s"
            params = (str(wanted),)
        async with self._connection("listing runs") as conn:
            cursor = await conn.execute(sql + " ORDER BY created_at, pos", params, binary=True)
            rows = await cursor.fetchall()
        return [_record(row) for row in rows]

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """The run's checkpoints, by seq ([] for an unknown run)."""
        async with self._connection(f"listing the checkpoints of run {run_id!r}") as conn:
            cursor = await conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM {self._prefix}stepgraph_checkpoints AS c "
                f"JOIN {self._prefix}stepgraph_runs AS r USING (run_id) "
                "WHERE c.run_id = %s ORDER BY c.seq",
                (run_id,),
            )
            rows = await cursor.fetchall()
        return [_info(run_id, row) for row in rows]

    async def load(self, run_id: str, checkpoint_id: str | None = None) -> StoredCheckpoint | None:
        """Checkpoint ``checkpoint_id`` of the run (its latest when None), or None.

        Its values are every chunk as of it; its journal, the entries appended after it
        and before the run's next checkpoint. One statement: one round trip.
        """
        params: dict[str, Any] = {"run_id": run_id, "seq": None}
        if checkpoint_id is not None:
            wanted = checkpoint_seq(run_id, checkpoint_id)
            if wanted is None or wanted > _MAX_SEQ:  # seq is an INTEGER: no such checkpoint
                return None
            params["seq"] = wanted
        async with self._connection(f"reading a checkpoint of run {run_id!r}") as conn:
            cursor = await conn.execute(self._load_sql, params, binary=True)
            row = await cursor.fetchone()
        return None if row is None else _stored(run_id, row)

    async def _load_latest(self, run_ids: list[str]) -> dict[str, StoredCheckpoint]:
        """The latest checkpoint of each of ``run_ids`` (those that have one)."""
        async with self._connection(f"reading the checkpoints of runs {_named(run_ids)}") as conn:
            cursor = await conn.execute(self._load_latest_sql, {"run_ids": run_ids}, binary=True)
            rows = await cursor.fetchall()
        return {row[9]: _stored(row[9], row) for row in rows}

    # -- limiters -------------------------------------------------------------------------------

    def limiter_gate(self, limiter: Limiter) -> PostgresGate:
        """The gate of ``limiter`` for runs kept here: its state in this database and schema,
        so that its limits hold across every process that declares it."""
        return postgres_gate(self.dsn, self.schema, limiter)

    # -- leases ---------------------------------------------------------------------------------

    def _lease_key(self, run_id: str) -> int:
        return run_key(self.schema, run_id)

    async def _lease_rows(
        self, here: _LoopConnections, sql: str, params: Any, what: str
    ) -> list[tuple[Any, ...]]:
        """Run ``sql`` on the loop's lease session (``here.lease_lock`` held)."""
        error = psycopg_error()
        try:
            conn = here.lease_conn
            if conn is None:
                conn = await self._connect()
                here.open.add(conn)
                here.lease_conn = conn
                # a machine that vanishes takes its leases along within about 15 s
                await conn.execute(
                    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; "
                    "SET tcp_keepalives_count = 5"
                )
            cursor = here.cursor(conn, sql)
            await cursor.execute(sql, params)
            return await cursor.fetchall()
        except BaseException as exc:
            if here.lease_conn is not None and not isinstance(exc, StoreError):
                here.discard(here.lease_conn)
            if isinstance(exc, error):
                raise _store_error(f"{what}: {exc}", exc) from exc
            raise

    async def _lease_call(self, here: _LoopConnections, sql: str, run_id: str) -> bool:
        rows = await self._lease_rows(
            here, sql, (self._lease_key(run_id),), f"the lease of run {run_id!r}"
        )
        return bool(rows and rows[0][0])

    async def acquire(self, run_id: str, owner: str) -> bool:
        """Take the run's lease for ``owner``, without waiting.

        Returns:
            True when ``owner`` holds the lease now (it may have held it already); False
            when another owner holds it (in this store or in another session).

        Raises:
            StoreError: the server cannot be reached.
        """
        here = self._here()
        holder = here.leases.get(run_id)
        if holder is not None:  # no need to wait for the lease session to answer
            return holder == owner
        async with here.lease_lock:
            holder = here.leases.get(run_id)
            if holder is not None:
                return holder == owner
            if here.due.pop(run_id, None) is not None:  # released, not unlocked yet: ours
                here.leases[run_id] = owner
                return True
            if not await self._lease_call(here, "SELECT pg_try_advisory_lock(%s)", run_id):
                return False
            here.leases[run_id] = owner
            return True

    async def release(self, run_id: str, owner: str) -> None:
        """Give up ``owner``'s lease on the run (nothing when it holds none here).

        A lease got with :meth:`take` is unlocked by the next ``take``, ``unclaim`` or
        :meth:`release_taken` (a worker's next claim): no round trip of its own.
        """
        here = self._here()
        if here.leases.get(run_id) != owner:
            return
        here.loaded.pop(run_id, None)
        if run_id in here.taken:
            here.taken.discard(run_id)
            del here.leases[run_id]
            here.due[run_id] = self._lease_key(run_id)
            return
        async with here.lease_lock:
            if here.leases.get(run_id) != owner:
                return
            del here.leases[run_id]
            await self._lease_call(here, "SELECT pg_advisory_unlock(%s)", run_id)

    async def take(self, owner: str, run_ids: Sequence[str]) -> dict[str, StoredCheckpoint | None]:
        """Take the leases of ``run_ids`` for ``owner`` and read the latest checkpoint of
        each run got (see ``RunQueue.take``): two round trips at most however many runs,
        the first also unlocking the leases released since the last one; none for runs
        whose leases and checkpoints the last claim took and read (``claim(lease=True)``)."""
        here = self._here()
        got: list[str] = []  # held now: taken by this call, or the owner's already
        fresh: list[str] = []  # taken by this call
        async with here.lease_lock:
            wanted: dict[int, str] = {}
            for run_id in dict.fromkeys(run_ids):
                if here.due.pop(run_id, None) is not None:  # released, not unlocked yet
                    here.leases[run_id] = owner
                    here.taken.add(run_id)
                    fresh.append(run_id)
                elif run_id not in here.leases:
                    wanted[self._lease_key(run_id)] = run_id
                elif here.leases[run_id] == owner:  # its already
                    got.append(run_id)
            due = dict(here.due)
            if wanted or due:
                params = {"take": list(wanted), "free": list(due.values())}
                what = f"taking the leases of runs {_named(list(wanted.values()))}"
                rows = await self._lease_rows(here, _LOCK_UNLOCK, params, what)
                for run_id, key in due.items():
                    if here.due.get(run_id) == key:
                        del here.due[run_id]
                for key, locked in rows:
                    if key is not None and locked:
                        here.leases[wanted[key]] = owner
                        here.taken.add(wanted[key])
                        fresh.append(wanted[key])
        got += fresh
        ready = {run_id: here.loaded.pop(run_id) for run_id in got if run_id in here.loaded}
        if len(ready) == len(got):  # read by the claim that took their leases
            return dict(ready)
        try:  # read once the leases are held: the last owners' last commits have landed
            loaded = await self._load_latest(got)
        except BaseException:
            for run_id in fresh:
                await self.release(run_id, owner)
            raise
        return {run_id: loaded.get(run_id) for run_id in got}

    async def release_taken(self) -> None:
        """Unlock the leases got with :meth:`take` that were released since (one round trip)."""
        here = self._here()
        if not here.due:
            return
        async with here.lease_lock:
            due = dict(here.due)
            if not due:
                return
            params = {"take": [], "free": list(due.values())}
            what = f"giving up the leases of runs {_named(list(due))}"
            await self._lease_rows(here, _LOCK_UNLOCK, params, what)
            for run_id, key in due.items():
                if here.due.get(run_id) == key:
                    del here.due[run_id]
