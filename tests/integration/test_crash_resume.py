"""Durable runs survive kill -9: a run killed anywhere resumes to the same result.

Each seed starts a child process (``tests.crash.child``) that runs a 20-superstep flow on
a store, kills it with SIGKILL at a point the seed picks (reading the child's lines is
the only synchronization), resumes the run in this process and classifies the outcome
(``tests.crash.harness``). 30 seeds here, split over both modes and SQLite/PostgreSQL;
``make crash`` runs 1000. The PostgreSQL cases need a server (``tests/pg.py``) and are
skipped, with the reason, without one.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepgraph.stores import MemoryStore, SqliteStore
from tests.crash.flows import FLOWS, LAST_SUPERSTEP
from tests.crash.harness import (
    Killed,
    Plan,
    Tally,
    Where,
    check,
    kill_child,
    plan_seed,
    run_seeds,
)
from tests.pg import pg_schema, require_pg

MODES = ("superstep", "async")


@pytest.fixture
def sqlite_where(tmp_path: Path) -> Where:
    return Where(sqlite_dir=tmp_path)


@pytest.fixture
def pg_where() -> Iterator[Where]:
    require_pg()
    with pg_schema() as schema:
        yield Where(pg_schema=schema)


def _explain(tally: Tally) -> str:
    failures = "\n".join(f"{o.plan.describe()}: {o.detail}" for o in tally.failures)
    return f"{tally.table()}\n{failures}"


# 30 seeds: 9 + 9 on SQLite, 6 + 6 on PostgreSQL (a child costs ~0.4 s of start-up).
CASES = [
    pytest.param("sqlite", "superstep", range(0, 9), id="sqlite-superstep"),
    pytest.param("sqlite", "async", range(100, 109), id="sqlite-async"),
    pytest.param("postgres", "superstep", range(200, 206), id="postgres-superstep"),
    pytest.param("postgres", "async", range(300, 306), id="postgres-async"),
]


@pytest.mark.parametrize(("store", "mode", "seeds"), CASES)
def test_a_run_killed_at_any_superstep_resumes_to_the_same_result(
    store: str, mode: str, seeds: range, request: pytest.FixtureRequest
) -> None:
    where: Where = request.getfixturevalue(f"{'pg' if store == 'postgres' else 'sqlite'}_where")
    tally = run_seeds(seeds, where, stores=[store], modes=[mode], jobs=2)
    resumed, same, lost, corrupt = Tally.counts(tally.outcomes)[1:]
    assert (resumed, same, lost, corrupt) == (len(seeds), len(seeds), 0, 0), _explain(tally)


@pytest.mark.parametrize("mode", MODES)
def test_a_kill_inside_a_large_checkpoint_write_leaves_a_readable_store_and_the_same_result(
    mode: str, sqlite_where: Where
) -> None:
    # `held`: the child stops inside the SQLite transaction of a commit of several MB,
    # its rows written (pages spilled to the WAL) and not committed, and is killed there
    plan = plan_seed(7, stores=["sqlite"], modes=[mode], flow_names=["big"], kills=["held"])
    child = kill_child(plan, sqlite_where)
    assert child.killed and any(line.startswith("held ") for line in child.lines), child

    path = sqlite_where.location(plan)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    async def read() -> None:
        store = SqliteStore(path)
        [record] = await store.list_runs()
        assert (record.run_id, record.status) == (plan.run_id, "running")
        checkpoints = await store.list_checkpoints(plan.run_id)
        assert [cp.seq for cp in checkpoints] == list(range(len(checkpoints)))
        assert await store.load(plan.run_id) is not None

    asyncio.run(read())
    outcome = asyncio.run(check(plan, sqlite_where, child))
    assert outcome.in_large_write
    assert outcome.ok, f"{plan.describe()}: {outcome.detail}"


@pytest.mark.parametrize("flow", sorted(FLOWS))
@pytest.mark.parametrize("mode", MODES)
def test_the_expected_results_are_those_of_uninterrupted_runs(
    flow: str, mode: str, tmp_path: Path
) -> None:
    # the harness compares with results computed without stepgraph: they must be right
    spec = FLOWS[flow]

    async def scenario() -> None:
        for seed in (1, 2):
            store = SqliteStore(tmp_path / f"{seed}.db")
            value = await spec.start(spec.build(store, mode), "r", seed)
            assert spec.outcome(value) == spec.expected(seed)
            checkpoints = await store.list_checkpoints("r")
            if mode == "superstep":  # one as the run starts, one per barrier but the last
                assert [cp.superstep for cp in checkpoints] == list(range(LAST_SUPERSTEP + 1))
            value = await spec.start(spec.build(MemoryStore(), mode), "r", seed + 1)
            assert spec.outcome(value) != spec.expected(seed)  # the seed matters

    asyncio.run(scenario())


# -- the harness notices what it is there to notice ------------------------------------------------


def _killed_mid_run(where: Where) -> tuple[Plan, Killed]:
    # held inside its first large commit: mid-run, whatever the machine's speed
    plan = Plan(seed=5, store="sqlite", mode="superstep", flow="big", kill="held", at=1)
    return plan, kill_child(plan, where)


def test_the_harness_counts_a_lost_checkpoint_as_lost(sqlite_where: Where) -> None:
    plan, child = _killed_mid_run(sqlite_where)
    with sqlite3.connect(sqlite_where.location(plan)) as conn:  # forget the latest checkpoint
        conn.execute(
            "DELETE FROM stepgraph_checkpoints WHERE key = "
            "(SELECT MAX(key) FROM stepgraph_checkpoints)"
        )
    outcome = asyncio.run(check(plan, sqlite_where, child))
    assert outcome.lost and not outcome.ok, outcome


def test_the_harness_counts_a_damaged_checkpoint_as_corrupt(sqlite_where: Where) -> None:
    plan, child = _killed_mid_run(sqlite_where)
    with sqlite3.connect(sqlite_where.location(plan)) as conn:  # flip a bit of the latest frame
        key, frame = conn.execute(
            "SELECT key, frame FROM stepgraph_checkpoints ORDER BY key DESC LIMIT 1"
        ).fetchone()
        damaged = bytes(frame[:-1]) + bytes([frame[-1] ^ 1])
        conn.execute("UPDATE stepgraph_checkpoints SET frame = ? WHERE key = ?", (damaged, key))
    outcome = asyncio.run(check(plan, sqlite_where, child))
    assert outcome.corrupt and not outcome.resumed, outcome
    assert "CheckpointError" in outcome.detail
