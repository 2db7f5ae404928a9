"""PostgresGate: a limiter whose state lives in PostgreSQL, so that it holds across processes.

:class:`~stepgraph.limits.Gate` keeps a limiter's holders and tokens in one process;
:class:`PostgresGate` has the same interface and keeps them in a PostgreSQL database, so
that every process (on any machine) that uses the limiter over that database and schema
shares its limits. Its rules:

- **Plain object.** Constructing it opens nothing. The first use creates the table
  ``stepgraph_limiters`` (in ``schema`` when given) if it is missing, under a
  transaction-level advisory lock, and checks the declaration: the limiter's row is
  inserted when missing, and a row with other limits is an error naming the limiter.
- **Slots are session advisory locks.** ``max_concurrency=N`` is N slots, the two-int
  advisory locks ``(k, 0)`` to ``(k, N-1)``, ``k`` a 32-bit hash of the schema and the
  limiter's name. A holder holds one slot on its event loop's connection; one statement
  takes the first free slot, trying them in turn and stopping at the first it gets (a
  recursive query: it cannot take two). A session's advisory locks are re-entrant, so the
  slots this connection holds already are never tried. A process that dies loses its
  session and so its slots as soon as the server sees its socket close (TCP keepalives,
  set on the session, catch a machine that vanished).
- **The rate is a token bucket in the table,** on the server's clock: one statement takes
  a token when there is one, or says how long until the next one; the gate sleeps that
  long and tries again. With both limits, a holder takes its slot first, then its token:
  one statement takes a slot and, when it got one, a token (a slot without a token then
  waits for one, holding the slot).
- **Waiting is polling,** with a back-off from 2 ms to 50 ms, for slots that other
  processes hold; within a process, a release wakes the first waiter of its event loop at
  once, and waiters of one event loop are served first come, first served.
- **Cancellation leaks nothing.** A round trip to the server runs to its end even when the
  acquisition that started it is cancelled; a slot it took then is given back.
- **One connection per event loop,** as :class:`~stepgraph.stores.PostgresStore` does: an
  asyncio connection belongs to the loop that opened it. A loop that has closed leaves its
  connection behind; the gate closes it the next time it is used. Acquire and release a
  slot on the same event loop.

It needs psycopg 3, the extra ``postgres``: ``pip install 'stepgraph[postgres]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import StepgraphError, StoreError
from ..limits import Limiter, _tell_wait, tell_waiting
from .pg_common import TABLES_KEY, lock_key, psycopg_error

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow

    _Conn = AsyncConnection[TupleRow]

__all__ = ["PostgresGate", "postgres_gate"]

_T = TypeVar("_T")
_log = logging.getLogger("stepgraph.limits")

_FIRST_POLL = 0.002  # seconds between two tries for a slot held elsewhere, doubling ...
_LAST_POLL = 0.05  # ... up to this
_TOKEN_MARGIN = 0.001  # slept beyond a token's due time (timers may fire a little early)
_CLOSE_WAIT = 10.0  # seconds aclose() waits for the round trips in flight

# {p} is the schema prefix ('"name".' or nothing).
_TABLE = """
CREATE TABLE IF NOT EXISTS {p}stepgraph_limiters (
    name TEXT PRIMARY KEY,
    max_concurrency INTEGER,
    rate TEXT,
    tokens DOUBLE PRECISION,
    stamp DOUBLE PRECISION
)
"""

_DECLARE = """
INSERT INTO {p}stepgraph_limiters (name, max_concurrency, rate, tokens, stamp)
VALUES (%s, %s, %s, %s, extract(epoch FROM clock_timestamp())::float8)
ON CONFLICT (name) DO NOTHING
"""

_DECLARED = "SELECT max_concurrency, rate FROM {p}stepgraph_limiters WHERE name = %s"

# Try the candidate slots in order, one per step of the recursion, and stop at the first
# one taken: the lock function is only in select lists, evaluated for the rows that pass
# the recursion's condition, so at most one lock is ever taken (unlike a WHERE clause, whose
# conditions the planner may evaluate in any order, or a LIMIT, which the planner may apply
# after evaluating more rows). The candidates exclude the slots this session holds: its
# locks are re-entrant, and would be "taken" again.
_ATTEMPT = """
WITH RECURSIVE attempt(n, got) AS (
    SELECT 1, pg_try_advisory_lock(%(k)s::integer, (%(free)s::integer[])[1])
    UNION ALL
    SELECT n + 1, pg_try_advisory_lock(%(k)s::integer, (%(free)s::integer[])[n + 1])
    FROM attempt
    WHERE NOT got AND n < cardinality(%(free)s::integer[])
)"""

_TAKE = (
    _ATTEMPT
    + """
SELECT (%(free)s::integer[])[n], NULL::boolean, NULL::float8 FROM attempt WHERE got
"""
)

_UNLOCK = "SELECT pg_advisory_unlock(%s::integer, %s::integer)"

_HOLDERS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND classid::bigint = %s AND objid::bigint < %s
"""

# The tokens there are now: the stored ones, refilled since their stamp (server clock).
_AVAILABLE = "least(%(cap)s::float8, l.tokens + greatest(c.now - l.stamp, 0) * %(per)s::float8)"

# Take a token when there is one (the UPDATE re-reads a row another writer changed, so no
# token is taken twice); say how many there were either way. {when} is a further condition.
_BUCKET = f"""
c AS MATERIALIZED (SELECT extract(epoch FROM clock_timestamp())::float8 AS now),
took AS (
    UPDATE {{p}}stepgraph_limiters AS l
    SET tokens = {_AVAILABLE} - 1, stamp = greatest(l.stamp, c.now)
    FROM c
    WHERE l.name = %(name)s::text AND {_AVAILABLE} >= 1{{when}}
    RETURNING 1
)"""
_TOOK = f"""EXISTS (SELECT FROM took),
    (SELECT {_AVAILABLE} FROM {{p}}stepgraph_limiters AS l, c WHERE l.name = %(name)s::text)"""

_TOKEN = "WITH" + _BUCKET.replace("{when}", "") + "\nSELECT " + _TOOK

# A slot, and a token only when it got the slot: one round trip for both (the recursion,
# named twice, runs once).
_TAKE_BOTH = (
    _ATTEMPT
    + ",\nslot AS (SELECT (%(free)s::integer[])[n] AS i FROM attempt WHERE got),"
    + _BUCKET.replace("{when}", " AND EXISTS (SELECT FROM slot)")
    + "\nSELECT (SELECT i FROM slot), "
    + _TOOK
)


# A slot taken: its number, the generation of the connection holding it, and (with a rate)
# None when a token came with it, or the seconds until the next token.
_Slot = tuple[int, int, float | None]


class _Attempt:
    """One acquisition: when it started, and whether it had to wait for the limits.

    Queueing behind another acquisition of the loop while that one only makes its round
    trip is not waiting; queueing behind one that waits for the limits is.
    """

    def __init__(self, gate: PostgresGate, state: _LoopState) -> None:
        self.gate = gate
        self.state = state
        self.started = time.monotonic()
        self.waited = False

    def wait(self) -> None:
        if self.waited:
            return
        self.waited = True
        with self.gate._lock:
            self.gate.waits += 1
        tell_waiting(self.gate.limiter.name)  # visible while it lasts
        if self.state.head is self:  # those in line behind it wait too
            for other in self.state.queued:
                other.wait()


class _LoopState:
    """A gate's connection on one event loop, and the slots it holds there."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.conn: _Conn | None = None
        self.gen = 0  # which connection: a slot is unlocked on the one that took it
        self.lock = asyncio.Lock()  # one round trip at a time on conn
        self.turn = asyncio.Lock()  # the acquisitions of this loop, one after another
        self.head: _Attempt | None = None  # the one that has the turn
        self.queued: list[_Attempt] = []  # those in line for it
        self.freed = asyncio.Event()  # a slot of this loop was given back
        self.slots: set[int] = set()  # the slots conn holds
        self.releasing: set[int] = set()  # ... of which these are being given back
        self.given: list[tuple[asyncio.Task[Any] | None, int, int]] = []  # holders' slots
        self.tasks: set[asyncio.Task[Any]] = set()  # round trips in flight

    def drop(self) -> None:
        """Close the connection: the server frees its slots."""
        if self.conn is not None:
            self.conn.pgconn.finish()
            self.conn = None
        self.slots.clear()
        self.releasing.clear()
        self.freed.set()


class PostgresGate:
    """A limiter's state in PostgreSQL: its limits hold across processes and machines.

    The interface of :class:`~stepgraph.limits.Gate` (``limiter``, ``acquire``,
    ``release``, ``hold``, ``held``, ``waits``), plus ``holders`` and ``aclose``.

    Args:
        dsn: a libpq connection string or URI, such as
            ``"postgresql://user:password@host:5432/dbname"``.
        limiter: the limiter's declaration; every process gives the same one.
        schema: the PostgreSQL schema of the table ``stepgraph_limiters`` (created if
            missing); None for the connection's current schema. Gates share a limiter
            when they name it in the same database and schema.

    Raises:
        StepgraphError: (from ``acquire`` and ``hold``) the database holds the limiter
            with other limits.
        StoreError: (from its methods) psycopg is not installed, the server cannot be
            reached, or a statement failed.

    Example::

        gate = PostgresGate(DSN, Limiter("llm", max_concurrency=4, rate="10/s"))
        async with gate.hold():
            await call_the_model()
        await gate.aclose()
    """

    def __init__(self, dsn: str, limiter: Limiter, *, schema: str | None = None) -> None:
        if schema is not None and not schema:
            raise StoreError("PostgresGate(schema=''): give a schema name, or None")
        self.dsn = dsn
        self.limiter = limiter
        self.schema = schema
        self.waits = 0  # acquisitions that had to wait (for tests and reports)
        prefix = "" if schema is None else '"' + schema.replace('"', '""') + '".'
        self._table = _TABLE.replace("{p}", prefix)
        self._create_schema = "" if schema is None else f"CREATE SCHEMA IF NOT EXISTS {prefix[:-1]}"
        self._declare_sql = _DECLARE.replace("{p}", prefix)
        self._declared_sql = _DECLARED.replace("{p}", prefix)
        self._token_sql = _TOKEN.replace("{p}", prefix)
        self._take_sql = _TAKE if limiter.rate is None else _TAKE_BOTH.replace("{p}", prefix)
        self._slot_key = lock_key(f"{schema or ''}\x00{limiter.name}", 4)
        # a bucket never holds less than one token, or it would never give one
        self._token_params = {
            "name": limiter.name,
            "cap": max(limiter.burst, 1.0),
            "per": limiter.per_second,
        }
        self._declared = False
        self._held = 0
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._lock = threading.Lock()  # guards _loops, _held, waits and each state's given

    def __repr__(self) -> str:
        return f"PostgresGate({self.limiter!r}, schema={self.schema!r})"

    @property
    def held(self) -> int:
        """How many hold it now through this gate (in this process)."""
        return self._held

    # -- acquiring ------------------------------------------------------------------------------

    async def acquire(self) -> float:
        """Wait until the limits allow one more holder; the seconds it waited (0.0 when it
        did not wait).

        Within an event loop, first come, first served; across processes, whoever finds a
        slot free first.

        Raises:
            StepgraphError: the database holds the limiter with other limits.
            StoreError: the server cannot be reached, or a statement failed.
        """
        state = self._here()
        attempt = _Attempt(self, state)
        if state.head is not None and state.head.waited:  # in line behind one who waits
            attempt.wait()
        state.queued.append(attempt)
        try:
            async with state.turn:
                state.queued.remove(attempt)
                state.head = attempt
                try:
                    await self._take(state, attempt)
                finally:
                    state.head = None
        finally:
            if attempt in state.queued:  # cancelled in line
                state.queued.remove(attempt)
        return time.monotonic() - attempt.started if attempt.waited else 0.0

    async def _take(self, state: _LoopState, attempt: _Attempt) -> None:
        """Take a slot, then a token (those the limiter has), waiting as long as it takes."""
        if not self._declared:
            await self._shielded(state, "checking its declaration", _nothing)
        slot: tuple[int, int] | None = None
        wait: float | None = None  # until the next token, or None: it has one
        if self.limiter.max_concurrency is not None:
            number, gen, wait = await self._wait_slot(state, attempt)
            slot = number, gen
        elif self.limiter.rate is not None:
            wait = await self._shielded(state, "taking a token", self._try_token)
        try:
            while wait is not None:
                attempt.wait()
                await asyncio.sleep(wait)
                wait = await self._shielded(state, "taking a token", self._try_token)
        except BaseException:  # cancelled or failed: the slot goes back
            if slot is not None:
                self._unlock_soon(state, *slot)
            raise
        with self._lock:
            self._held += 1
            if slot is not None:
                state.given.append((asyncio.current_task(), *slot))

    async def _wait_slot(self, state: _LoopState, attempt: _Attempt) -> _Slot:
        """Take a slot, polling while none is free."""
        limit = self.limiter.max_concurrency
        assert limit is not None
        delay = _FIRST_POLL
        while True:
            state.freed.clear()
            if len(state.slots - state.releasing) >= limit:  # this loop holds them all
                attempt.wait()
                await state.freed.wait()
                continue
            slot = await self._take_slot(state)
            if slot is not None:
                return slot
            attempt.wait()
            try:
                async with asyncio.timeout(delay):
                    await state.freed.wait()  # a holder of this loop gave one back
                delay = _FIRST_POLL
            except TimeoutError:
                delay = min(delay * 2, _LAST_POLL)

    async def _take_slot(self, state: _LoopState) -> _Slot | None:
        task = self._spawn(state, "taking a slot", self._try_slot)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:  # the round trip goes on: give back what it takes
            task.add_done_callback(functools.partial(self._undo, state))
            raise

    async def _try_slot(self, state: _LoopState, conn: _Conn) -> _Slot | None:
        limit = self.limiter.max_concurrency
        assert limit is not None
        free = [i for i in range(limit) if i not in state.slots]
        if not free:
            return None
        params: dict[str, object] = {"k": self._slot_key, "free": free}
        if self.limiter.rate is not None:
            params.update(self._token_params)
        cursor = await conn.execute(self._take_sql, params)
        row = await cursor.fetchone()
        if row is None or row[0] is None:
            return None
        number, took, available = row
        state.slots.add(number)
        wait = None if self.limiter.rate is None else self._token_wait(took, available)
        return number, state.gen, wait

    def _undo(self, state: _LoopState, task: asyncio.Task[_Slot | None]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        slot = task.result()
        if slot is not None:
            self._unlock_soon(state, slot[0], slot[1])

    async def _try_token(self, state: _LoopState, conn: _Conn) -> float | None:
        cursor = await conn.execute(self._token_sql, self._token_params)
        row = await cursor.fetchone()
        assert row is not None
        return self._token_wait(*row)

    def _token_wait(self, took: bool, available: float | None) -> float | None:
        """None when a token was taken; else the seconds until the next one."""
        if took:
            return None
        if available is None:  # its row is gone (deleted by hand): declare it again
            self._declared = False
            return 0.0
        return max(0.0, (1.0 - available) / self.limiter.per_second) + _TOKEN_MARGIN

    # -- releasing ------------------------------------------------------------------------------

    def release(self) -> None:
        """One holder is done: its slot goes back (on the event loop that took it).

        Raises:
            StepgraphError: nobody holds it through this gate.
        """
        self._release()

    def _release(self) -> asyncio.Task[None] | None:
        """Release; the unlock's task when it runs on the current loop."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        me = asyncio.current_task() if loop is not None else None
        with self._lock:
            if self._held <= 0:
                raise StepgraphError(
                    f"limiter {self.limiter.name!r}: release() without a holder (call it once "
                    f"per acquire(), or use 'async with gate.hold():')"
                )
            self._held -= 1
            picked = self._pick(loop, me)
        if picked is None:
            return None
        state, slot, gen = picked
        if state.loop is loop:
            return self._unlock_soon(state, slot, gen)
        # a loop that has closed took its connection, and the slot, along
        with contextlib.suppress(RuntimeError):
            state.loop.call_soon_threadsafe(self._unlock_soon, state, slot, gen)
        return None

    def _pick(
        self, loop: asyncio.AbstractEventLoop | None, me: asyncio.Task[Any] | None
    ) -> tuple[_LoopState, int, int] | None:
        """The slot a release gives back: the current task's on this loop, else any of this
        loop, else any (slots are alike). Under ``_lock``."""
        here = self._loops.get(loop) if loop is not None else None
        if here is not None and here.given:
            given = here.given
            mine = [i for i, (task, _, _) in enumerate(given) if task is me]
            _, slot, gen = given.pop(mine[-1] if mine else -1)
            return here, slot, gen
        for state in self._loops.values():  # released on another loop than it was taken
            if state.given:
                _, slot, gen = state.given.pop()
                return state, slot, gen
        return None

    def _unlock_soon(self, state: _LoopState, slot: int, gen: int) -> asyncio.Task[None]:
        if state.gen == gen and slot in state.slots:
            # a take that comes next finds it free: it queues for the connection behind this
            state.releasing.add(slot)
        task = state.loop.create_task(self._unlock(state, slot, gen))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        return task

    async def _unlock(self, state: _LoopState, slot: int, gen: int) -> None:
        error = psycopg_error("PostgresGate")
        async with state.lock:
            conn = state.conn
            if conn is None or state.gen != gen or slot not in state.slots:
                return  # that connection is gone, and its slots with it
            try:
                await conn.execute(_UNLOCK, (self._slot_key, slot))
            except BaseException as exc:
                state.drop()  # ending the session is what frees the slot now
                if not isinstance(exc, error):
                    raise
                _log.warning(
                    "limiter %r: giving back slot %d failed (%s): closed its connection",
                    self.limiter.name,
                    slot,
                    exc,
                )
                return
            state.slots.discard(slot)
            state.releasing.discard(slot)
            state.freed.set()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[float]:
        """``async with gate.hold():`` holds it for the block (yields the seconds waited).

        The slot is free on the server when the block is over. A wait is visible, as with
        :meth:`Gate.hold <stepgraph.limits.Gate.hold>`: a ``stepgraph.limiter.wait`` event
        on the current span and a line on the ``stepgraph.limits`` logger.
        """
        waited = await self.acquire()
        if waited:
            _tell_wait(self.limiter.name, waited)
        try:
            yield waited
        finally:
            unlocking = self._release()
            if unlocking is not None:
                await asyncio.shield(unlocking)

    # -- others ---------------------------------------------------------------------------------

    async def declare(self) -> None:
        """Declare the limiter in the database now (else its first use does).

        Raises:
            StepgraphError: the database has it declared with other limits.
            StoreError: the server cannot be reached, or the query failed.
        """
        if not self._declared:
            await self._shielded(self._here(), "declaring it", _nothing)

    async def holders(self) -> int:
        """How many hold its slots now, in every process (0 without max_concurrency).

        Raises:
            StoreError: the server cannot be reached, or the query failed.
        """
        limit = self.limiter.max_concurrency
        if limit is None:
            return 0
        key = self._slot_key & 0xFFFFFFFF  # pg_locks shows the key as an unsigned oid

        async def count(state: _LoopState, conn: _Conn) -> int:
            cursor = await conn.execute(_HOLDERS, (key, limit))
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

        return await self._shielded(self._here(), "counting its holders", count, declare=False)

    async def aclose(self) -> None:
        """Close the gate's connection on the running event loop, after the round trips in
        flight.

        Its slots on this loop are freed with it: call it when nobody of this loop holds it.
        The gate stays usable: it opens a new connection when next used.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._loops.get(loop)
        if state is None:
            return
        try:
            async with asyncio.timeout(_CLOSE_WAIT):  # a server that never answers: close
                while state.tasks:
                    await asyncio.wait(set(state.tasks))
        except TimeoutError:
            pass
        state.drop()

    # -- connections ----------------------------------------------------------------------------

    def _here(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._loops.get(loop)
            if state is None:
                for gone in [other for other in self._loops if other.is_closed()]:
                    dead = self._loops.pop(gone)
                    self._held -= len(dead.given)  # its holders ended with it
                    dead.drop()
                state = self._loops[loop] = _LoopState(loop)
            return state

    def _spawn(
        self,
        state: _LoopState,
        what: str,
        call: Callable[[_LoopState, _Conn], Awaitable[_T]],
        *,
        declare: bool = True,
    ) -> asyncio.Task[_T]:
        """A round trip on the loop's connection, as a task of its own (which a cancelled
        caller does not cancel: a query interrupted halfway would leave the connection,
        and the slots it holds, in an unknown state)."""
        task = state.loop.create_task(self._locked(state, what, call, declare))
        state.tasks.add(task)
        task.add_done_callback(_settled(state))
        return task

    async def _shielded(
        self,
        state: _LoopState,
        what: str,
        call: Callable[[_LoopState, _Conn], Awaitable[_T]],
        *,
        declare: bool = True,
    ) -> _T:
        return await asyncio.shield(self._spawn(state, what, call, declare=declare))

    async def _locked(
        self,
        state: _LoopState,
        what: str,
        call: Callable[[_LoopState, _Conn], Awaitable[_T]],
        declare: bool,
    ) -> _T:
        error = psycopg_error("PostgresGate")
        from psycopg.pq import TransactionStatus

        async with state.lock:
            try:
                conn = state.conn or await self._connect(state)
                if declare and not self._declared:
                    await self._declare(conn)
                return await call(state, conn)
            except error as exc:
                now = state.conn
                if now is not None and (now.broken or now.closed):
                    self._lost(state)
                raise StoreError(f"limiter {self.limiter.name!r}: {what} failed: {exc}") from exc
            except BaseException:
                now = state.conn
                if now is not None and now.info.transaction_status != TransactionStatus.IDLE:
                    self._lost(state)  # left mid-query (the loop is shutting down)
                raise

    def _lost(self, state: _LoopState) -> None:
        """Drop a connection that broke: the server frees the slots it held."""
        if state.given:
            _log.warning(
                "limiter %r: lost its connection to PostgreSQL, and with it the slots of its "
                "%d holders on this event loop (they go on, uncounted)",
                self.limiter.name,
                len(state.given),
            )
        state.drop()

    async def _connect(self, state: _LoopState) -> _Conn:
        import psycopg

        name = self.limiter.name
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, application_name=f"stepgraph limiter {name}"[:63]
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"limiter {self.limiter.name!r}: cannot connect to PostgreSQL: {exc}"
            ) from exc
        state.conn = conn
        state.gen += 1
        # A machine that vanishes takes its slots along within about 15 s. A token taken
        # need not wait for the disk: a server that crashes forgets the tokens taken in its
        # last moment (under a second), which it gives again.
        await conn.execute(
            "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; "
            "SET tcp_keepalives_count = 5; SET synchronous_commit = off"
        )
        return conn

    async def _declare(self, conn: _Conn) -> None:
        """Create the table if missing, insert the limiter's row if missing, and check it."""
        async with conn.transaction():
            # one creator at a time: concurrent CREATE ... IF NOT EXISTS can collide
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (TABLES_KEY,))
            if self._create_schema:
                await conn.execute(self._create_schema)
            await conn.execute(self._table)
        limiter = self.limiter
        tokens = None if limiter.rate is None else self._token_params["cap"]
        await conn.execute(
            self._declare_sql, (limiter.name, limiter.max_concurrency, limiter.rate, tokens)
        )
        cursor = await conn.execute(self._declared_sql, (limiter.name,))
        row = await cursor.fetchone()
        if row is None:  # inserted, then deleted at once by someone else
            raise StoreError(f"limiter {limiter.name!r}: its row was deleted while declared")
        count, rate = row
        if (count, rate) != (limiter.max_concurrency, limiter.rate):
            where = "the database" if self.schema is None else f"schema {self.schema!r}"
            table = "stepgraph_limiters"
            raise StepgraphError(
                f"limiter {limiter.name!r} is declared with max_concurrency="
                f"{limiter.max_concurrency!r}, rate={limiter.rate!r}, but {where} has it declared "
                f"with max_concurrency={count!r}, rate={rate!r}: every declaration of a limiter "
                f"gives the same limits (to change them, stop every process that uses it and "
                f"delete its row from {table})"
            )
        self._declared = True


async def _nothing(state: _LoopState, conn: _Conn) -> None:
    """A round trip's body that does nothing (what goes before it still happens)."""


def _settled(state: _LoopState) -> Callable[[asyncio.Task[_T]], None]:
    def settled(task: asyncio.Task[_T]) -> None:
        state.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its caller raised it, or was cancelled

    return settled


_GATES: dict[tuple[str, str | None, str], PostgresGate] = {}
_GATES_LOCK = threading.Lock()


def postgres_gate(dsn: str, schema: str | None, limiter: Limiter) -> PostgresGate:
    """The process's gate of ``limiter`` in database ``dsn`` and ``schema`` (one per name;
    ``stepgraph.limits.gate_for`` checks first that the process declares it one way)."""
    key = (dsn, schema, limiter.name)
    with _GATES_LOCK:
        gate = _GATES.get(key)
        if gate is None or gate.limiter != limiter:
            gate = _GATES[key] = PostgresGate(dsn, limiter, schema=schema)
        return gate
