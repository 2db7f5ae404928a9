"""The run queue of :class:`~stepgraph.stores.PostgresStore` (see ``stores/queue.py``).

- A claim is one statement: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks the oldest
  claimable runs no other worker is claiming, and the ``UPDATE`` around it leases them.
  Queued runs and runs to take over are looked for apart, each part through an index
  (queued runs: in order, stopping at the limit, so a backlog costs nothing; runs to
  take over: those it may take, and the runs named in the inbox).
  Lease times are the server's (``now()``), so workers' clocks do not matter.
- ``LISTEN stepgraph_work``: a submit (a queued run's creation), a post to an inbox and
  an unclaim ``NOTIFY`` it, so an idle worker wakes at once instead of polling.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import StoreError
from .base import RunRecord, StoredCheckpoint
from .pg_common import RUN_KEY_SQL, binary_params, run_key_prefix
from .queue import Message, StoredEvent, check_postable

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow

    _Conn = AsyncConnection[TupleRow]

__all__ = ["PostgresQueue"]

# The runs to claim, oldest first: `picked` (`first_claim`: a queued run's), of the
# queued runs and, with take-over, of the runs to take over (_ORPHANS). A
# claim's commit does not wait for the disk (`quick`): a claim lost in a server crash
# leaves its runs claimable again, and the first commit of a run it took writes the log
# up to it.
_QUEUED = """quick AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true) AS v),
queued AS (
    SELECT run_id, pos, true AS first_claim FROM {p}stepgraph_runs
    WHERE status = 'queued' AND queue = ANY(%(queues)s::text[]) AND {known}
    ORDER BY pos LIMIT %(limit)s FOR UPDATE SKIP LOCKED
),
"""
# The runs to take over, in three parts that do not overlap, each found through the index
# stepgraph_runs_held (runs of a queue running or paused) or from the inbox: their cost
# grows with the runs to take over and the runs named in the inbox, not with the runs
# running or paused.
# - expired: their worker's lease ran out (it died, lost the server, or gave them up);
# - unheld: running without a lease (a submitted run resumed outside a worker, say);
# - answered: paused, given up as idle (lease NULL), with a message waiting. `waiting`
#   finds them from the inbox, each looked up by its key (a LATERAL with a LIMIT is not
#   flattened into a join the planner might turn into a scan of every run), oldest first,
#   up to the limit, without locking; `answered` locks those, skipping those locked.
# (Comments stay out of the SQL: psycopg caches the parsing of statements up to 4 KB.)
_ORPHANS = """expired AS (
    SELECT run_id, pos, false AS first_claim FROM {p}stepgraph_runs
    WHERE status IN ('running', 'paused') AND lease_until < now() AND queue IS NOT NULL
        AND queue = ANY(%(queues)s::text[]) AND {known}
    ORDER BY pos LIMIT %(limit)s FOR UPDATE SKIP LOCKED
),
unheld AS (
    SELECT run_id, pos, false AS first_claim FROM {p}stepgraph_runs
    WHERE status = 'running' AND lease_until IS NULL AND queue IS NOT NULL
        AND queue = ANY(%(queues)s::text[]) AND {known}
    ORDER BY pos LIMIT %(limit)s FOR UPDATE SKIP LOCKED
),
waiting AS MATERIALIZED (
    SELECT found.run_id, found.pos
    FROM (SELECT DISTINCT run_id FROM {p}stepgraph_inbox) AS m
    CROSS JOIN LATERAL (
        SELECT run_id, pos FROM {p}stepgraph_runs AS one
        WHERE one.run_id = m.run_id AND one.status = 'paused' AND one.lease_until IS NULL
            AND one.queue = ANY(%(queues)s::text[]) AND {known_one}
        LIMIT 1
    ) AS found
    ORDER BY found.pos LIMIT %(limit)s
),
answered AS (
    SELECT locked.run_id, locked.pos, false AS first_claim FROM waiting AS w
    CROSS JOIN LATERAL (
        SELECT run_id, pos FROM {p}stepgraph_runs AS one
        WHERE one.run_id = w.run_id AND one.status = 'paused' AND one.lease_until IS NULL
        LIMIT 1 FOR UPDATE SKIP LOCKED
    ) AS locked
),
candidates AS (
    SELECT * FROM queued UNION ALL SELECT * FROM expired
    UNION ALL SELECT * FROM unheld UNION ALL SELECT * FROM answered
),
"""
_PICKED = """picked AS (
    SELECT run_id, first_claim FROM candidates CROSS JOIN quick ORDER BY pos LIMIT %(limit)s
)"""


def _pick(take_over: bool) -> str:
    """The CTEs up to `picked`. Without take-over (queued runs only), no search for runs
    to take over (cheap as it is, it costs more than the queued runs' part)."""
    if take_over:
        return _QUEUED + _ORPHANS + _PICKED
    return _QUEUED + "candidates AS (SELECT * FROM queued),\n" + _PICKED


_LEASE = """UPDATE {p}stepgraph_runs AS r SET
    worker = %(owner)s, lease_until = now() + make_interval(secs => %(lease)s),
    updated_at = CASE WHEN r.status = 'queued' THEN now() ELSE r.updated_at END,
    status = CASE WHEN r.status = 'queued' THEN 'running' ELSE r.status END
FROM picked WHERE r.run_id = picked.run_id
RETURNING {columns}"""


def _claim(take_over: bool) -> str:
    return "WITH " + _pick(take_over) + "\n" + _LEASE


# A claim that also takes the runs' leases (advisory locks of the session running it),
# but of those the session holds already (`held`), and unlocks the leases given up since
# (`due`) but of the runs it claims again. A row with a NULL run_id: nothing was claimed.
# It reads the checkpoint of each run claimed for the first time (a queued run's: its
# start) as of the statement's start: it is the run's latest, since a run still queued
# when the claim locks its row has had no commit after it (a commit to a queued run makes
# it running: see _COMMIT). A run taken over has its checkpoint read by `take`, once its
# lease is held, so that the last owner's last commit has landed. (`first`: a queued
# run's one checkpoint and its chunks, no journal: no commit since; a run with more,
# written otherwise, is read by `take`.)
_LEASED = """, picked.first_claim),
freed AS MATERIALIZED (
    SELECT count(pg_advisory_unlock(d.k)) AS n
    FROM unnest(%(due_ids)s::text[], %(due_keys)s::bigint[]) AS d(run_id, k)
    WHERE d.run_id NOT IN (SELECT run_id FROM claimed)
),
first AS (
    SELECT c.run_id, c.seq, c.superstep, c.created_at, c.status, c.frame,
        ch.names, ch.datas
    FROM claimed AS q
    CROSS JOIN LATERAL (
        SELECT * FROM {p}stepgraph_checkpoints AS one WHERE one.run_id = q.run_id
        ORDER BY one.seq DESC LIMIT 1
    ) AS c
    LEFT JOIN LATERAL (
        SELECT array_agg(x.name) AS names, array_agg(x.data) AS datas
        FROM {p}stepgraph_chunks AS x WHERE x.run_id = c.run_id AND x.data IS NOT NULL
    ) AS ch ON true
    WHERE q.first_claim
        AND NOT EXISTS (SELECT 1 FROM {p}stepgraph_checkpoints AS other
            WHERE other.run_id = q.run_id AND other.seq <> c.seq)
        AND NOT EXISTS (SELECT 1 FROM {p}stepgraph_journal AS j WHERE j.run_id = q.run_id)
)
SELECT {claimed}, CASE WHEN claimed.run_id = ANY(%(held)s::text[]) THEN NULL
        ELSE pg_try_advisory_lock({key}) END,
    first.seq, first.superstep, first.created_at, first.status, claimed.parent_run_id,
    first.frame, first.names, first.datas, NULL::bytea[], NULL::text, NULL::bigint
FROM freed LEFT JOIN claimed ON true LEFT JOIN first ON first.run_id = claimed.run_id
"""

# A renewal (soft state, as a claim: no wait for the disk; a run given up meanwhile stays
# so), and a sweep of the messages of completed runs: a post that took its lock on the run
# before a completing commit did is stored after that commit's snapshot, which does not
# see it to delete it (see _POST). The inbox holds what waits to be delivered: small.
_RENEW = """WITH quick AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true) AS v
),
swept AS (
    DELETE FROM {p}stepgraph_inbox AS m USING {p}stepgraph_runs AS r
    WHERE r.run_id = m.run_id AND r.status = 'completed'
)
UPDATE {p}stepgraph_runs SET worker = %s, lease_until = now() + make_interval(secs => %s)
FROM quick WHERE run_id = ANY(%s) AND worker IS NOT NULL
"""

# A post: the message goes in only if the run exists and has not completed, and the
# workers are woken. `FOR SHARE` waits for a commit that is changing the run's status,
# so a post that comes second sees the run completed and is refused. One that locks the
# run first is stored once the completing commit's snapshot is taken: the next renewal
# (_RENEW) deletes it.
_POST = """WITH run AS (
    SELECT status FROM {p}stepgraph_runs WHERE run_id = %(run)s FOR SHARE
),
m AS (
    INSERT INTO {p}stepgraph_inbox (run_id, data)
    SELECT %(run)s, %(data)s FROM run WHERE run.status <> 'completed' RETURNING id
),
woken AS (SELECT pg_notify('stepgraph_work', '') FROM m)
SELECT (SELECT status FROM run), (SELECT count(*) FROM woken)
"""


def _claim_leased(take_over: bool) -> str:
    return "WITH " + _pick(take_over) + ",\nclaimed AS (" + _LEASE + _LEASED


def _template(sql: str) -> str:
    """A claim statement before the schema name goes in: its parameters in binary
    (``binary_params``) and one space for each run of white space (it holds no comment
    nor string with any), shorter, so that psycopg caches its parsing (up to 4 KB)."""
    return binary_params(" ".join(sql.split()))


class PostgresQueue:
    """``claim``, ``renew``, ``unclaim``, ``post``, ``inbox``, ``read_events`` and
    ``wait_for_work`` for :class:`~stepgraph.stores.PostgresStore` (whose lease code
    has ``take`` and ``release_taken``)."""

    _columns: ClassVar[str]
    _prefix: str
    schema: str | None

    def _connection(self, what: str) -> AbstractAsyncContextManager[_Conn]:
        raise NotImplementedError  # pragma: no cover - the store's

    def _here(self) -> Any:
        raise NotImplementedError  # pragma: no cover - the store's

    async def _connect(self) -> _Conn:
        raise NotImplementedError  # pragma: no cover - the store's

    @staticmethod
    def _record_of(row: tuple[Any, ...]) -> RunRecord:
        raise NotImplementedError  # pragma: no cover - the store's

    async def release_taken(self) -> None:
        raise NotImplementedError  # pragma: no cover - the store's

    async def _lease_rows(self, here: Any, sql: str, params: Any, what: str) -> list[Any]:
        raise NotImplementedError  # pragma: no cover - the store's

    @staticmethod
    def _stored_of(run_id: str, row: tuple[Any, ...]) -> StoredCheckpoint:
        raise NotImplementedError  # pragma: no cover - the store's

    async def claim(
        self,
        owner: str,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        lease: bool = False,
        take_over: bool = True,
        workflows: Sequence[str] | None = None,
    ) -> list[RunRecord]:
        """Take up to ``limit`` runs of ``queues`` for ``owner`` (see ``RunQueue.claim``);
        with ``lease``, their leases too, in the same statement (on the lease session)."""
        if not queues or limit < 1 or (workflows is not None and not workflows):
            return []
        params: dict[str, Any] = {
            "queues": list(queues),
            "limit": limit,
            "owner": owner,
            "lease": lease_seconds,
        }
        if workflows is not None:
            params["workflows"] = list(workflows)
        sql = self._claims[lease, take_over, workflows is not None]
        if lease:
            return await self._claim_leased(owner, sql, params)
        async with self._connection(f"claiming runs of queues {queues!r}") as conn:
            cursor = await conn.execute(sql, params, binary=True)
            rows = await cursor.fetchall()
        return sorted((self._record_of(row) for row in rows), key=lambda r: r.created_at)

    @functools.cached_property
    def _claims(self) -> dict[tuple[bool, bool, bool], str]:
        """The claim statements, by (with leases, with take-over, of some workflows
        only), made once per store."""
        columns, claimed = self._returned("r"), self._returned("claimed")
        key = RUN_KEY_SQL.format(run_id="claimed.run_id")
        statements: dict[tuple[bool, bool, bool], str] = {}
        for take_over in (True, False):
            for some in (True, False):
                known = "workflow = ANY(%(workflows)b::text[])" if some else "true"
                where = {"p": self._prefix, "known": known, "known_one": "one." + known}
                if not some:
                    where["known_one"] = "true"
                statements[False, take_over, some] = _template(_claim(take_over)).format(
                    columns=columns, **where
                )
                statements[True, take_over, some] = _template(_claim_leased(take_over)).format(
                    columns=columns, claimed=claimed, key=binary_params(key), **where
                )
        return statements

    def _returned(self, table: str) -> str:
        """The run record's columns, of ``table``."""
        return ", ".join(f"{table}.{column.strip()}" for column in self._columns.split(","))

    async def _claim_leased(self, owner: str, sql: str, params: dict[str, Any]) -> list[RunRecord]:
        here = self._here()
        width = len(self._columns.split(","))
        records: list[RunRecord] = []
        loaded: dict[str, StoredCheckpoint] = {}
        async with here.lease_lock:
            due = dict(here.due)
            params.update(
                due_ids=list(due),
                due_keys=list(due.values()),
                held=[*here.leases, *due],
                key_prefix=run_key_prefix(self.schema),
            )
            what = f"claiming runs of queues {params['queues']!r}"
            rows = await self._lease_rows(here, sql, params, what)
            claimed = {row[0] for row in rows if row[0] is not None}
            for run_id, key in due.items():
                if run_id not in claimed and here.due.get(run_id) == key:
                    del here.due[run_id]  # unlocked
            for row in rows:
                if row[0] is None:
                    continue
                record = self._record_of(row[:width])
                records.append(record)
                run_id, locked, first = record.run_id, row[width], row[width + 1 :]
                if run_id in here.leases:
                    continue  # held already (by this owner or another of this process)
                if here.due.pop(run_id, None) is not None or locked:  # still locked, or now
                    here.leases[run_id] = owner
                    here.taken.add(run_id)
                    if first[0] is not None:
                        loaded[run_id] = self._stored_of(run_id, first)
            here.loaded = loaded
        return sorted(records, key=lambda r: r.created_at)

    async def renew(self, owner: str, run_ids: Sequence[str], lease_seconds: float) -> None:
        """Extend ``owner``'s lease on ``run_ids`` (see ``RunQueue.renew``)."""
        if not run_ids:
            return
        async with self._connection("renewing leases") as conn:
            await conn.execute(  # soft state, as a claim: no wait for the disk
                _RENEW.format(p=self._prefix), (owner, lease_seconds, list(run_ids))
            )

    async def unclaim(self, owner: str, run_ids: Sequence[str], *, idle: bool = False) -> None:
        """End ``owner``'s lease on ``run_ids`` (see ``RunQueue.unclaim``)."""
        if not run_ids:
            return
        until = "NULL" if idle else "now()"
        await self.release_taken()  # their leases first: whoever claims them can take them
        async with self._connection("giving up leases") as conn:
            await conn.execute(
                f"WITH gone AS (UPDATE {self._prefix}stepgraph_runs SET worker = NULL, "
                f"lease_until = {until} WHERE worker = %s AND run_id = ANY(%s) RETURNING queue) "
                "SELECT pg_notify('stepgraph_work', queue) FROM gone",
                (owner, list(run_ids)),
            )

    async def post(self, run_id: str, data: bytes) -> None:
        """Append ``data`` to the run's inbox and wake the workers."""
        async with self._connection(f"posting to run {run_id!r}") as conn:
            cursor = await conn.execute(_POST.format(p=self._prefix), {"run": run_id, "data": data})
            row = await cursor.fetchone()
        check_postable(self, run_id, None if row is None else row[0])

    async def inbox(self, run_ids: Sequence[str]) -> list[Message]:
        """The messages waiting for ``run_ids``, in the order posted."""
        if not run_ids:
            return []
        async with self._connection("reading the inbox") as conn:
            cursor = await conn.execute(
                f"SELECT id, run_id, data FROM {self._prefix}stepgraph_inbox "
                "WHERE run_id = ANY(%s) ORDER BY id",
                (list(run_ids),),
                binary=True,
            )
            rows = await cursor.fetchall()
        return [Message(int(i), str(run), bytes(data)) for i, run, data in rows]

    async def read_events(self, run_id: str, after: int = -1) -> list[StoredEvent]:
        """The run's stored stream events after position ``after``."""
        async with self._connection(f"reading the stream of run {run_id!r}") as conn:
            cursor = await conn.execute(
                f"SELECT position, data FROM {self._prefix}stepgraph_events "
                "WHERE run_id = %s AND position > %s ORDER BY position",
                (run_id, after),
                binary=True,
            )
            rows = await cursor.fetchall()
        return [StoredEvent(int(position), bytes(data)) for position, data in rows]

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Wait for a NOTIFY on ``stepgraph_work`` (a submit, a post, an unclaim), or
        ``timeout`` seconds; whether one came."""
        import psycopg

        here = self._here()
        async with here.listen_lock:
            try:
                conn = here.listen_conn
                if conn is None:
                    conn = await self._connect()
                    here.open.add(conn)
                    here.listen_conn = conn
                    await conn.execute("LISTEN stepgraph_work")
                async for _ in conn.notifies(timeout=timeout, stop_after=1):
                    return True
                return False
            except psycopg.Error as exc:
                if here.listen_conn is not None:
                    here.discard(here.listen_conn)
                raise StoreError(f"waiting for work: {exc}") from exc
            except asyncio.CancelledError:
                if here.listen_conn is not None:  # left mid-wait: not reusable
                    here.discard(here.listen_conn)
                raise
