"""What durability costs: ``python -m bench --only durable``.

- **W1 durable** (``w1d``): W1 (200 hops) on a store, a checkpoint per hop in superstep
  mode, a journal entry per hop in async mode. Its baseline is what a durable hop cannot
  avoid, measured in the same run: one raw ``sqlite3`` commit of the same checkpoint bytes
  (same file settings, WAL, ``synchronous=NORMAL``) plus the hop without a store. Target:
  within 1.5x. The same on ``synchronous=FULL`` and on PostgreSQL is reported beside it
  (no target).
- **Checkpoint size** (``cp-size``): a run holding 10 MB of shared state that changes one
  small key per superstep: bytes written per checkpoint (target: under 10 KB).
- **Checkpoint write** (``cp-write``): the cost of one checkpoint holding 10 pending
  messages and 10 changed state keys, on SQLite and PostgreSQL (no target).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.timing import measure, median, paired_ratio
from bench.workloads import Chain, Mode
from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step
from stepgraph.stores import PostgresStore, SqliteStore, Store

HOPS = 200
W1D_TARGET = 1.5
SIZE_TARGET = 10_000
PG_DSN = os.environ.get("STEPGRAPH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


# -- W1 durable ---------------------------------------------------------------------------------


def durable_chain(store: Store, mode: Mode) -> Callable[[int], Awaitable[Any]]:
    """W1 runs, one after another, on one long-lived store (as an application keeps one)."""
    wf = Chain(timeout=None, mode=mode, store=store)

    async def run(hops: int) -> None:
        result = await wf.run(hops=hops)
        assert result == hops, result

    return run


def _plain_chain(mode: Mode) -> Callable[[int], Awaitable[Any]]:
    wf = Chain(timeout=None, mode=mode)

    async def run(hops: int) -> None:
        assert await wf.run(hops=hops) == hops

    return run


async def _close(store: Store) -> None:
    if isinstance(store, PostgresStore):
        await store.aclose()
    elif isinstance(store, SqliteStore):
        store.close()


async def _checkpoint_bytes(directory: Path, mode: Mode) -> int:
    """The size of a mid-run checkpoint (what the raw commit writes)."""
    store = SqliteStore(directory / "size.db")
    handler = Chain(timeout=None, mode=mode, store=store).run(hops=20)
    await handler
    with sqlite3.connect(directory / "size.db") as conn:
        sizes = [n for (n,) in conn.execute("SELECT length(frame) FROM stepgraph_checkpoints")]
        entries = [n for (n,) in conn.execute("SELECT length(entry) FROM stepgraph_entries")]
    store.close()
    return int(
        median([float(n) for n in (sizes[1:-1] or sizes)] if mode == "superstep" else entries)
    )


def _raw_commits(path: Path, size: int, synchronous: str) -> Callable[[int], Awaitable[Any]]:
    """``hops`` plain sqlite3 commits of ``size`` bytes: the floor of a durable hop."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, data BLOB)")
    blob = os.urandom(size)

    async def run(hops: int) -> None:
        for _ in range(hops):
            conn.execute("INSERT INTO raw (data) VALUES (?)", (blob,))

    return run


async def postgres_missing(dsn: str = PG_DSN) -> str | None:
    """Why no PostgreSQL server answers at ``dsn`` (psycopg missing, no server), or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=3)
        await conn.close()
    except Exception as exc:
        return f"no PostgreSQL at {dsn}: {' '.join(str(exc).split())}"
    return None


async def w1_durable(modes: list[Mode], reps: int, warmup: int) -> list[dict[str, Any]]:
    """W1 on SqliteStore (NORMAL and FULL) and PostgreSQL, against raw commits + plain hops."""
    entries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        pg_missing = await postgres_missing()
        for mode in modes:
            size = await _checkpoint_bytes(directory, mode)
            stores: list[Store] = [
                SqliteStore(directory / f"w1d-{mode}.db"),
                SqliteStore(directory / f"w1d-full-{mode}.db", synchronous="full"),
            ]
            plain = _plain_chain(mode)
            # three groups, each interleaved on its own: the fsyncs of synchronous=full and
            # a server's round trips would slow what is timed beside them
            groups: list[dict[str, Callable[[int], Awaitable[Any]]]] = [
                {
                    "durable": durable_chain(stores[0], mode),
                    "plain": plain,
                    "raw": _raw_commits(directory / f"raw-{mode}.db", size, "NORMAL"),
                },
                {
                    "durable-full": durable_chain(stores[1], mode),
                    "plain-full": plain,
                    "raw-full": _raw_commits(directory / f"raw-full-{mode}.db", size, "FULL"),
                },
            ]
            if pg_missing is None:
                stores.append(PostgresStore(PG_DSN, schema=f"bench_{os.getpid()}_{mode}"))
                groups.append({"durable-pg": durable_chain(stores[-1], mode)})
            samples: dict[str, list[float]] = {}
            try:
                for runners in groups:
                    samples |= await measure(runners, HOPS, reps=reps, warmup=warmup)
            finally:
                for store in stores:
                    await _close(store)
            floor = [r + p for r, p in zip(samples["raw"], samples["plain"], strict=True)]
            full_floor = [
                r + p for r, p in zip(samples["raw-full"], samples["plain-full"], strict=True)
            ]
            ratio = paired_ratio(samples["durable"], floor)
            entries.append(
                {
                    "workload": "w1d",
                    "title": "chain, durable (SqliteStore, synchronous=normal)",
                    "mode": mode,
                    "us_per_unit": round(median(samples["durable"]), 2),
                    "baseline": "raw commit + hop",
                    "baseline_us_per_unit": round(median(floor), 2),
                    "raw_commit_us": round(median(samples["raw"]), 2),
                    "plain_hop_us": round(median(samples["plain"]), 2),
                    "record_bytes": size,
                    "ratio": round(ratio, 3),
                    "unit": "hop",
                    "target_ratio": W1D_TARGET,
                    "passed": ratio <= W1D_TARGET,
                    "size": HOPS,
                    "full_us_per_unit": round(median(samples["durable-full"]), 2),
                    "full_baseline_us_per_unit": round(median(full_floor), 2),
                    "full_ratio": round(paired_ratio(samples["durable-full"], full_floor), 3),
                    "pg_us_per_unit": (
                        round(median(samples["durable-pg"]), 2) if "durable-pg" in samples else None
                    ),
                    "pg_skipped": pg_missing,
                }
            )
            if pg_missing is None:
                await _drop_schema(f"bench_{os.getpid()}_{mode}")
    return entries


async def _drop_schema(schema: str) -> None:
    import psycopg

    conn = await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


# -- checkpoint size ----------------------------------------------------------------------------


class Tick(Event):
    n: int


class BigState(Workflow):
    """Puts 10 MB in the shared state (100 keys of 100 KB), then counts 20 supersteps."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Tick:
        async with ctx.store.edit() as state:
            for k in range(100):
                state[f"blob{k}"] = "x" * 100_000
        return Tick(n=0)

    @step
    async def count(self, ctx: Context, ev: Tick) -> Tick | StopEvent:
        await ctx.store.set("count", ev.n)
        return StopEvent(result=ev.n) if ev.n >= 20 else Tick(n=ev.n + 1)


async def checkpoint_size() -> list[dict[str, Any]]:
    """Bytes per checkpoint of a 10 MB run that changes one small key a superstep."""
    with tempfile.TemporaryDirectory() as name:
        path = Path(name) / "size.db"
        store = SqliteStore(path)
        handler = BigState(store=store).run()
        await handler
        store.close()
        with sqlite3.connect(path) as conn:
            frames = dict(conn.execute("SELECT seq, length(frame) FROM stepgraph_checkpoints"))
            chunks: dict[int, int] = {}
            for seq, size in conn.execute(
                "SELECT seq, SUM(COALESCE(length(data), 0)) FROM stepgraph_chunks GROUP BY seq"
            ):
                chunks[seq] = size
        written = [frames[seq] + chunks.get(seq, 0) for seq in sorted(frames)]
    later = written[2:]  # after the first (empty) and the one that wrote the 10 MB
    per_checkpoint = median([float(n) for n in later])
    return [
        {
            "workload": "cp-size",
            "title": "bytes per checkpoint, 10 MB of state, one small key changed",
            "mode": "superstep",
            "bytes_per_checkpoint": round(per_checkpoint),
            "largest_bytes": max(later),
            "state_bytes": 10_000_000,
            "first_bytes": written[1],
            "target_bytes": SIZE_TARGET,
            "passed": max(later) < SIZE_TARGET,
        }
    ]


# -- checkpoint write ---------------------------------------------------------------------------


class Part(Event):
    i: int
    round: int
    rounds: int


class Wide(StartEvent):
    rounds: int


class TenWide(Workflow):
    """Ten steps at a time, each writing one state key and sending one message, per round:
    each barrier's checkpoint holds 10 pending messages and 10 changed keys."""

    @step
    async def start(self, ctx: Context, ev: Wide) -> None:
        for i in range(10):
            ctx.send_event(Part(i=i, round=0, rounds=ev.rounds))

    @step(num_workers=10)
    async def part(self, ctx: Context, ev: Part) -> Part | StopEvent | None:
        await ctx.store.set(f"part{ev.i}", ev.round)
        if ev.round + 1 >= ev.rounds:
            return StopEvent(result=ev.round) if ev.i == 0 else None
        return Part(i=ev.i, round=ev.round + 1, rounds=ev.rounds)


WIDE_ROUNDS = 50


async def checkpoint_write(reps: int, warmup: int) -> list[dict[str, Any]]:
    """µs per checkpoint with 10 pending messages and 10 changed keys (durable - plain)."""
    entries = []
    with tempfile.TemporaryDirectory() as name:
        stores: dict[str, Store] = {"sqlite": SqliteStore(Path(name) / "wide.db")}
        pg_missing = await postgres_missing()
        if pg_missing is None:
            stores["postgres"] = PostgresStore(PG_DSN, schema=f"bench_w_{os.getpid()}")

        def durable(store: Store) -> Callable[[int], Awaitable[Any]]:
            wf = TenWide(store=store)

            async def run(rounds: int) -> None:
                await wf.run(rounds=rounds)

            return run

        async def plain(rounds: int) -> None:
            await TenWide().run(rounds=rounds)

        runners = {kind: durable(store) for kind, store in stores.items()}
        runners["plain"] = plain
        try:
            samples = await measure(runners, WIDE_ROUNDS, reps=reps, warmup=warmup)
        finally:
            for store in stores.values():
                await _close(store)
        for kind in stores:
            cost = [d - p for d, p in zip(samples[kind], samples["plain"], strict=True)]
            entries.append(
                {
                    "workload": "cp-write",
                    "title": f"checkpoint write, 10 messages + 10 keys ({kind})",
                    "mode": "superstep",
                    "us_per_checkpoint": round(median(cost), 1),
                    "store": kind,
                    "passed": True,
                }
            )
        if pg_missing is None:
            await _drop_schema(f"bench_w_{os.getpid()}")
    return entries


async def run(modes: list[Mode], reps: int, warmup: int) -> list[dict[str, Any]]:
    """Every durability measurement."""
    started = time.perf_counter()
    entries = await w1_durable(modes, reps, warmup)
    entries += await checkpoint_size()
    entries += await checkpoint_write(max(3, reps // 2), 1)
    del started
    return entries
