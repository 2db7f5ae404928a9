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
- **One statement per commit.** A commit is one SQL statement (so one transaction and one
  round trip): it finds the run (``UPDATE ... RETURNING``), then appends the journal,
  writes the checkpoint and its chunks at the numbers the writer gave; a number that is
  taken (another writer) fails the whole statement. It returns an awaitable and never
  blocks the event loop.
- **Leases are session advisory locks.** ``acquire`` takes ``pg_try_advisory_lock`` on a
  64-bit hash of the schema and run id, on the loop's lease connection; it never waits.
  The lock lives as long as that session: a killed process loses its leases as soon as
  the server sees its socket close (TCP keepalives, set on the lease session, catch a
  machine that vanished). Store objects over the same data must therefore be made with
  the same ``schema``. Leases are per event loop: a loop that ends gives its leases up.
- **Times** are ``timestamptz`` and come back as UTC datetimes.

It needs psycopg 3, the extra ``postgres``: ``pip install 'stepgraph[postgres]'``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..limits import Limiter
from .base import (
    CheckpointInfo,
    Commit,
    RunRecord,
    StoredCheckpoint,
    StoredStatus,
    checkpoint_id,
    checkpoint_seq,
)
from .pg_common import TABLES_KEY, lock_key, psycopg_error
from .pg_limits import PostgresGate, postgres_gate
from .postgres_queue import PostgresQueue
from .results import StoreResults

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow

    _Conn = AsyncConnection[TupleRow]

__all__ = ["PostgresStore"]

_POOL_SIZE = 4  # connections for reads and writes, per event loop
_MAX_SEQ = 2**31 - 1  # checkpoint seqs are INTEGER
_CLOSE_WAIT = 10.0  # seconds aclose() waits for the queries in flight

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

# A commit's statement: a first part names the run as `run` (its run_id, if it exists);
# this rest writes from it, at the numbers the writer gave. Every part sees the tables as
# before the statement.
_WRITE = """,
journal AS (
    INSERT INTO {p}stepgraph_journal (run_id, after_seq, pos, entry)
    SELECT run.run_id, %(after)s::integer, %(at)s::bigint + e.i - 1, e.entry
    FROM run, unnest(%(journal)s::bytea[]) WITH ORDINALITY AS e(entry, i)
),
checkpoint AS (
    INSERT INTO {p}stepgraph_checkpoints (run_id, seq, superstep, created_at, status, frame)
    SELECT run.run_id, %(seq)s::integer, %(superstep)s::integer, %(now)s::timestamptz,
           %(cp_status)s::text, %(frame)s::bytea
    FROM run WHERE %(seq)s::integer IS NOT NULL
),
chunks AS (
    INSERT INTO {p}stepgraph_chunks (run_id, name, seq, data)
    SELECT run.run_id, c.name, %(seq)s::integer, c.data
    FROM run, unnest(%(names)s::text[], %(data)s::bytea[]) AS c(name, data)
    UNION ALL
    SELECT DISTINCT run.run_id, old.name, %(seq)s::integer, NULL::bytea
    FROM run JOIN {p}stepgraph_chunks AS old ON old.run_id = run.run_id
    WHERE %(full)s::boolean AND old.seq < %(seq)s::integer
        AND old.name <> ALL(%(names)s::text[])
),
events AS (
    INSERT INTO {p}stepgraph_events (run_id, data)
    SELECT run.run_id, e.data
    FROM run, unnest(%(events)s::bytea[]) WITH ORDINALITY AS e(data, i) ORDER BY e.i
),
consumed AS (
    DELETE FROM {p}stepgraph_inbox AS m USING run
    WHERE m.run_id = run.run_id AND m.id = ANY(%(consumed)s::bigint[])
)
"""

_FOUND = "SELECT run.run_id FROM run"

_COMMIT = (
    """WITH run AS (
    UPDATE {p}stepgraph_runs SET
        status = COALESCE(%(status)s::text, status),
        result = COALESCE(%(result)s::bytea, result),
        updated_at = CASE WHEN %(touch)s::boolean THEN %(now)s::timestamptz ELSE updated_at END
    WHERE run_id = %(run_id)s::text
    RETURNING run_id
)"""
    + _WRITE
    + _FOUND
)

# A queued run wakes the workers listening (LISTEN stepgraph_work) as it is created.
_CREATE = (
    """WITH run AS (
    INSERT INTO {p}stepgraph_runs (run_id, workflow, status, created_at, updated_at,
        parent_run_id, parent_checkpoint_id, result, queue)
    VALUES (%(run_id)s::text, %(workflow)s, %(status)s::text, %(created_at)s,
        %(updated_at)s, %(parent_run_id)s, %(parent_checkpoint_id)s, %(result)s::bytea,
        %(queue)s::text)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id
)"""
    + _WRITE
    + """, woken AS (
    SELECT pg_notify('stepgraph_work', %(queue)s::text) FROM run WHERE %(queue)s::text IS NOT NULL
)
SELECT run.run_id, (SELECT count(*) FROM woken) FROM run
"""
)

# A checkpoint with every chunk as of it and the journal after it, in one statement.
_LOAD = """
SELECT c.seq, c.superstep, c.created_at, c.status, r.parent_run_id, c.frame,
    ch.names, ch.datas, j.entries
FROM {p}stepgraph_checkpoints AS c JOIN {p}stepgraph_runs AS r USING (run_id)
LEFT JOIN LATERAL (
    SELECT array_agg(x.name) AS names, array_agg(x.data) AS datas FROM (
        SELECT DISTINCT ON (name) name, data FROM {p}stepgraph_chunks
        WHERE run_id = c.run_id AND seq <= c.seq ORDER BY name, seq DESC
    ) AS x WHERE x.data IS NOT NULL
) AS ch ON true
LEFT JOIN LATERAL (
    SELECT array_agg(entry ORDER BY pos) AS entries FROM {p}stepgraph_journal
    WHERE run_id = c.run_id AND after_seq = c.seq
) AS j ON true
WHERE c.run_id = %(run_id)s AND (%(seq)s::integer IS NULL OR c.seq = %(seq)s::integer)
ORDER BY c.seq DESC LIMIT 1
"""

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
        status=StoredStatus(status),
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
        superstep=superstep,
        created_at=_utc(created),
        status=StoredStatus(status),
        parent_run_id=parent,
        seq=seq,
    )


def _params(run_id: str, batch: Commit | None, now: datetime) -> dict[str, Any]:
    """The parameters of ``_WRITE`` (and of ``_COMMIT``'s first part) for ``batch``."""
    journal = [] if batch is None else list(batch.journal)
    write = None if batch is None else batch.checkpoint
    status = None if batch is None or batch.status is None else StoredStatus(batch.status)
    return {
        "run_id": run_id,
        "now": now,
        "journal": journal,
        "after": -1 if batch is None else batch.journal_after,
        "at": 0 if batch is None else batch.journal_at,
        "status": None if status is None else status.value,
        "result": None if status is None or batch is None else batch.result,
        "touch": status is not None,  # updated_at: when the status or result last changed
        "seq": None if write is None else write.seq,
        "superstep": None if write is None else write.superstep,
        "cp_status": None if write is None else StoredStatus(write.status).value,
        "frame": None if write is None else bytes(write.frame),
        "names": [] if write is None else list(write.values),
        "data": [] if write is None else list(write.values.values()),
        "full": write is not None and write.full,
        "events": [] if batch is None else list(batch.events),
        "consumed": [] if batch is None else list(batch.consumed),
    }


def _finish(conn: _Conn) -> None:
    """Close ``conn`` at once, from any thread or loop (what ``aclose`` does, synchronously)."""
    conn.pgconn.finish()


class _LoopConnections:
    """A store's connections on one event loop."""

    def __init__(self) -> None:
        self.open: set[_Conn] = set()
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(_POOL_SIZE)
        self.lease_conn: _Conn | None = None
        self.lease_lock = asyncio.Lock()
        self.leases: dict[str, str] = {}  # run id -> owner, held on lease_conn
        self.listen_conn: _Conn | None = None  # LISTEN stepgraph_work, for workers
        self.listen_lock = asyncio.Lock()

    def discard(self, conn: _Conn) -> None:
        self.open.discard(conn)
        if conn is self.lease_conn:
            self.lease_conn = None
            self.leases.clear()  # the session, and so its locks, are gone
        if conn is self.listen_conn:
            self.listen_conn = None
        _finish(conn)

    def finish(self) -> None:
        for conn in list(self.open):
            self.discard(conn)
        self.idle.clear()


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

    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        if schema is not None and not schema:
            raise StoreError("PostgresStore(schema=''): give a schema name, or None")
        self.dsn = dsn
        self.schema = schema
        prefix = "" if schema is None else '"' + schema.replace('"', '""') + '".'
        self._tables = _TABLES.replace("{p}", prefix)
        self._create_schema = "" if schema is None else f"CREATE SCHEMA IF NOT EXISTS {prefix[:-1]}"
        self._commit_sql = _COMMIT.replace("{p}", prefix)
        self._create_sql = _CREATE.replace("{p}", prefix)
        self._load_sql = _LOAD.replace("{p}", prefix)
        self._prefix = prefix
        self._ready = False  # the tables exist
        self._loops: dict[asyncio.AbstractEventLoop, _LoopConnections] = {}
        self._lock = threading.Lock()  # guards _loops, for loops in several threads

    @property
    def location(self) -> str:
        """What identifies the data (store objects over one database and schema share it)."""
        return f"{self.dsn}#{self.schema or ''}"

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
            return await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc

    async def _make_tables(self, conn: _Conn) -> None:
        async with conn.transaction():
            # one creator at a time: concurrent CREATE ... IF NOT EXISTS can collide
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (TABLES_KEY,))
            if self._create_schema:
                await conn.execute(self._create_schema)
            await conn.execute(self._tables)
        self._ready = True

    @asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[_Conn]:
        """A connection of this loop's pool, its errors turned into StoreError."""
        error = psycopg_error()
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
                raise StoreError(f"{what} failed: {exc}") from exc
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
                await here.lease_lock.acquire()
                await here.listen_lock.acquire()
                for _ in range(_POOL_SIZE):
                    await here.slots.acquire()
        except TimeoutError:
            pass
        here.finish()

    # -- writes ---------------------------------------------------------------------------------

    async def _write(self, conn: _Conn, sql: str, params: dict[str, Any]) -> bool:
        """Run a commit's statement; whether it found its run."""
        from psycopg import errors

        try:
            cursor = await conn.execute(sql, params)
        except errors.UniqueViolation as exc:
            run = params["run_id"]
            if exc.diag.constraint_name == "stepgraph_checkpoints_pkey":
                raise StoreError(
                    f"checkpoint {params['seq']} of run {run!r} exists already (another writer?)"
                ) from exc
            if exc.diag.constraint_name == "stepgraph_journal_pkey":
                raise StoreError(
                    f"journal position {params['at']} after checkpoint {params['after']} of run "
                    f"{run!r} is taken (another writer?)"
                ) from exc
            raise
        return await cursor.fetchone() is not None

    async def commit(self, batch: Commit) -> None:
        """Write ``batch`` in one transaction (see :class:`~stepgraph.stores.base.Commit`).

        Raises:
            StoreError: the run does not exist, a number is taken (another writer), or the write
                failed; nothing of the batch is written then.
        """
        params = _params(batch.run_id, batch, datetime.now(UTC))
        async with self._connection(f"writing run {batch.run_id!r}") as conn:
            found = await self._write(conn, self._commit_sql, params)
        if not found:
            raise StoreError(f"cannot write to run {batch.run_id!r}: the store has no such run")

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
        params = _params(record.run_id, first, now)
        status, result = record.status, record.result
        if first is not None and first.status is not None:
            status = first.status
            result = first.result if first.result is not None else result
        params.update(
            workflow=record.workflow,
            status=StoredStatus(status).value,
            result=result,
            created_at=record.created_at,
            updated_at=now if params["touch"] else record.updated_at,
            parent_run_id=record.parent_run_id,
            parent_checkpoint_id=record.parent_checkpoint_id,
            queue=record.queue,
        )
        async with self._connection(f"creating run {record.run_id!r}") as conn:
            if await self._write(conn, self._create_sql, params):
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
        if status is not None:
            sql += " WHERE status = %s"
            params = (str(status),)
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
        if row is None:
            return None
        names, datas, entries = row[6], row[7], row[8]
        return StoredCheckpoint(
            info=_info(run_id, row[:5]),
            frame=bytes(row[5]),
            values={name: bytes(data) for name, data in zip(names or (), datas or (), strict=True)},
            journal=tuple(bytes(entry) for entry in entries or ()),
        )

    # -- limiters -------------------------------------------------------------------------------

    def limiter_gate(self, limiter: Limiter) -> PostgresGate:
        """The gate of ``limiter`` for runs kept here: its state in this database and schema,
        so that its limits hold across every process that declares it."""
        return postgres_gate(self.dsn, self.schema, limiter)

    # -- leases ---------------------------------------------------------------------------------

    def _lease_key(self, run_id: str) -> int:
        return lock_key(f"{self.schema or ''}\x00{run_id}")

    async def _lease_call(self, here: _LoopConnections, sql: str, run_id: str) -> bool:
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
            cursor = await conn.execute(sql, (self._lease_key(run_id),))
            row = await cursor.fetchone()
        except BaseException as exc:
            if here.lease_conn is not None and not isinstance(exc, StoreError):
                here.discard(here.lease_conn)
            if isinstance(exc, error):
                raise StoreError(f"the lease of run {run_id!r}: {exc}") from exc
            raise
        return row is not None and bool(row[0])

    async def acquire(self, run_id: str, owner: str) -> bool:
        """Take the run's lease for ``owner``, without waiting.

        Returns:
            True when ``owner`` holds the lease now (it may have held it already); False
            when another owner holds it (in this store or in another session).

        Raises:
            StoreError: the server cannot be reached.
        """
        here = self._here()
        async with here.lease_lock:
            holder = here.leases.get(run_id)
            if holder is not None:
                return holder == owner
            if not await self._lease_call(here, "SELECT pg_try_advisory_lock(%s)", run_id):
                return False
            here.leases[run_id] = owner
            return True

    async def release(self, run_id: str, owner: str) -> None:
        """Give up ``owner``'s lease on the run (nothing when it holds none here)."""
        here = self._here()
        async with here.lease_lock:
            if here.leases.get(run_id) != owner:
                return
            del here.leases[run_id]
            await self._lease_call(here, "SELECT pg_advisory_unlock(%s)", run_id)
