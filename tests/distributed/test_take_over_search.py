"""A worker's search for runs to take over visits the runs it may take, not every run.

Workers claim with take-over every fraction of a second. With thousands of runs running
(their leases alive) or paused (idle, waiting for an answer) that search must not walk
them all: each of its parts is found through an index (or from the inbox). Checked on
the plans of the stores' own claim statements over a table of such runs (statistics
gathered), not on timings: on PostgreSQL, the rows of ``stepgraph_runs`` the executed plan
reads; on SQLite, that no part of the query scans ``stepgraph_runs``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stepgraph.stores import PostgresStore, SqliteStore
from stepgraph.stores.pg_common import run_key_prefix
from tests.pg import PG_DSN, pg_schema, require_pg

RUNS = 4000  # of each: paused and idle, running with a live lease
MESSAGES = 50  # waiting in the inbox of running runs (their workers read them soon)


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
            "now() + interval '1 hour' FROM generate_series(1, %(n)s) AS g",
            {"n": RUNS},
        )
        conn.execute(
            f"INSERT INTO {s}.stepgraph_inbox (run_id, data) "
            "SELECT 'r' || g, 'x' FROM generate_series(1, %s) AS g",
            (MESSAGES,),
        )
        conn.execute(f"ANALYZE {s}.stepgraph_runs")
        conn.execute(f"ANALYZE {s}.stepgraph_inbox")
        conn.execute("SET plan_cache_mode = force_generic_plan")  # as the store runs it
        params = {
            "queues": ["default"],
            "limit": 8,
            "owner": "w2",
            "lease": 10.0,
            "due_ids": [],
            "due_keys": [],
            "held": [],
            "key_prefix": run_key_prefix(schema),
        }
        for sql in (PostgresStore(PG_DSN, schema=schema)._claims[True, True],):
            ((explained,),) = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params
            ).fetchall()
            plan = explained[0]["Plan"]
            read = _rows_read(plan, "stepgraph_runs")
            assert read <= 4 * MESSAGES, (read, explained)  # not ~2 * RUNS: no scan
        row = conn.execute(f"SELECT count(*) FROM {s}.stepgraph_runs WHERE worker = 'w2'")
        assert row.fetchone() == (0,)  # nothing to take over: nothing was taken


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
            "queue, worker, lease_until) VALUES (?, 'Flow', ?, ?, ?, 'default', ?, ?)",
            [(f"p{i}", "paused", now, now, None, None) for i in range(RUNS)]
            + [(f"r{i}", "running", now, now, "w", now + 3600) for i in range(RUNS)],
        )
        conn.executemany(
            "INSERT INTO stepgraph_inbox (run_id, data) VALUES (?, x'00')",
            [(f"r{i}",) for i in range(MESSAGES)],
        )
        conn.execute("ANALYZE")
        sql = f"SELECT run_id FROM ({queue._CLAIMABLE.format(queues=':q0')}) LIMIT 8"
        steps = [
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + sql, {"q0": "default", "now": now, "limit": 8}
            )
        ]
    runs = [step for step in steps if step.split()[1:2] in (["r"], ["stepgraph_runs"])]
    assert len(runs) == 4, steps  # each part of the search reads the runs once
    assert all(step.startswith("SEARCH ") for step in runs), steps  # ... through an index
