"""A worker's search for runs to take over visits the runs it may take, not every run.

Workers claim with take-over every fraction of a second. With thousands of runs running
(their leases alive) or paused (idle, waiting for an answer) that search must not walk
them all: each of its parts is found through an index (or from the inbox). Checked on
the plans of the stores' own claim statements over a table of such runs (statistics
gathered), not on timings: on PostgreSQL, the rows of ``stepgraph_runs`` the executed plan
reads; on SQLite, that no part of the query scans ``stepgraph_runs``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stepgraph.stores import PostgresStore, SqliteStore
from stepgraph.stores.pg_common import run_key_prefix
from tests.distributed.flows import Three
from tests.pg import PG_DSN, pg_schema, require_pg

RUNS = 4000  # of each: paused and idle, running with a live lease, running in-process
MESSAGES = 50  # waiting in the inbox of running runs (their workers read them soon)
ANSWERED = 20  # idle paused runs with a message waiting: the claim takes some
LIMIT = 8


@pytest.fixture
def schema() -> Iterator[str]:
    require_pg()
    with pg_schema() as name:
        yield name


def _rows_read(plan: dict[str, Any], table: str) -> int:
    """The rows of ``table`` the executed plan read (returned or filtered out), in total."""
    read = 0
    if plan.get("Relation Name") == table:
        per_loop = (
            plan.get("Actual Rows", 0)
            + plan.get("Rows Removed by Filter", 0)
            + plan.get("Rows Removed by Index Recheck", 0)
        )
        read += per_loop * plan.get("Actual Loops", 1)
    for child in plan.get("Plans", []):
        read += _rows_read(child, table)
    return read


def _positional(sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """``sql`` with ``$1, $2, ...`` for its named parameters, and their values in order."""
    names: list[str] = []
    for name in re.findall(r"%\((\w+)\)[sb]", sql):
        if name not in names:
            names.append(name)
    for position, name in enumerate(names, 1):
        sql = re.sub(rf"%\({name}\)[sb]", f"${position}", sql)
    return sql, [params[name] for name in names]


async def test_on_postgres_the_take_over_search_reads_few_of_the_runs_running_or_paused(
    schema: str,
) -> None:
    import psycopg

    store = PostgresStore(PG_DSN, schema=schema)
    await store.get_run("")  # the tables
    await store.aclose()
    s = f'"{schema}"'
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {s}.stepgraph_runs (run_id, workflow, status, created_at, "
            "updated_at, queue, worker, lease_until) "
            "SELECT 'p' || g, 'Flow', 'paused', now(), now(), 'default', NULL, NULL "
            "FROM generate_series(1, %(n)s) AS g UNION ALL "
            "SELECT 'r' || g, 'Flow', 'running', now(), now(), 'default', 'w', "
            "now() + interval '1 hour' FROM generate_series(1, %(n)s) AS g UNION ALL "
            "SELECT 'i' || g, 'Flow', 'running', now(), now(), NULL, NULL, NULL "
            "FROM generate_series(1, %(n)s) AS g",  # in-process runs: no queue, no lease
            {"n": RUNS},
        )
        conn.execute(
            f"INSERT INTO {s}.stepgraph_inbox (run_id, data) "
            "SELECT 'r' || g, 'x'::bytea FROM generate_series(1, %s) AS g "
            "UNION ALL SELECT 'p' || g, 'x'::bytea FROM generate_series(1, %s) AS g",
            (MESSAGES, ANSWERED),
        )
        conn.execute(f"ANALYZE {s}.stepgraph_runs")
        conn.execute(f"ANALYZE {s}.stepgraph_inbox")
        params = {
            "queues": ["default"],
            "limit": LIMIT,
            "owner": "w2",
            "lease": 10.0,
            "due_ids": [],
            "due_keys": [],
            "held": [],
            "key_prefix": run_key_prefix(schema),
            "workflows": ["Flow"],
        }
        claims = PostgresStore(PG_DSN, schema=schema)._claims
        sql, values = _positional(claims[True, True, True], params)  # (as a worker claims)
        conn.execute("SET plan_cache_mode = force_generic_plan")  # as the store runs it
        conn.execute(f"PREPARE claim AS {sql}")
        marks = ", ".join(["%s"] * len(values))
        with psycopg.ClientCursor(conn) as cursor:  # the values as literals, in EXECUTE
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim({marks})", values)
            ((explained,),) = cursor.fetchall()
        read = _rows_read(explained[0]["Plan"], "stepgraph_runs")
        assert read <= 4 * (MESSAGES + ANSWERED), (read, explained)  # not ~3 * RUNS
        row = conn.execute(f"SELECT count(*) FROM {s}.stepgraph_runs WHERE worker = 'w2'")
        assert row.fetchone() == (LIMIT,)  # the oldest answered runs, as many as asked


def test_on_sqlite_no_part_of_the_take_over_search_scans_the_runs(tmp_path: Path) -> None:
    import stepgraph.stores.sqlite_queue as queue

    path = tmp_path / "runs.db"
    store = SqliteStore(path)
    store._connect()  # the tables and indexes
    store.close()
    now = time.time()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO stepgraph_runs (run_id, workflow, status, created_at, updated_at, "
            "queue, worker, lease_until) VALUES (?, 'Flow', ?, ?, ?, ?, ?, ?)",
            [(f"p{i}", "paused", now, now, "default", None, None) for i in range(RUNS)]
            + [(f"r{i}", "running", now, now, "default", "w", now + 3600) for i in range(RUNS)]
            + [(f"i{i}", "running", now, now, None, None, None) for i in range(RUNS)],
        )
        conn.executemany(
            "INSERT INTO stepgraph_inbox (run_id, data) VALUES (?, x'00')",
            [(f"r{i}",) for i in range(MESSAGES)] + [(f"p{i}",) for i in range(ANSWERED)],
        )
        conn.execute("ANALYZE")
        found = queue._CLAIMABLE.format(queues=":q0", workflows=" AND r.workflow IN (:w0)")
        sql = f"SELECT run_id FROM ({found}) LIMIT 8"
        values = {"q0": "default", "w0": "Flow", "now": now, "limit": LIMIT}
        steps = [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, values)]
    # "SCAN r" / "SEARCH r USING ..." (older SQLite: "SCAN TABLE stepgraph_runs AS r")
    runs = [step for step in steps if {"r", "stepgraph_runs"} & set(step.split()[1:3])]
    assert len(runs) == 4, steps  # each part of the search reads the runs once
    assert all(step.startswith("SEARCH ") for step in runs), steps  # ... through an index


async def test_a_schema_name_with_white_space_in_it_is_kept_as_it_is_by_the_claims() -> None:
    import psycopg

    require_pg()
    schema = "take  over\tsearch"  # folding the statements' white space must not touch it
    store = PostgresStore(PG_DSN, schema=schema)
    try:
        run_id = await Three(store=store).submit()
        for lease in (False, True):
            for take_over in (False, True):
                for workflows in (None, ["Three"]):
                    await store.claim(
                        "w", ["default"], 1, 30.0, lease=lease, take_over=take_over,
                        workflows=workflows,
                    )  # fmt: skip
        record = await store.get_run(run_id)
        assert record is not None and record.worker == "w", record
    finally:
        await store.aclose()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "take  over\tsearch" CASCADE')
