"""PostgresGate: a limiter's slots and tokens in PostgreSQL hold across processes.

The processes are real ones (``python -c CHILD``), started together: each says ``ready``
and waits for a line on its standard input. Every test has a schema of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stepgraph.errors import StepgraphError, StoreError
from stepgraph.limits import Limiter
from stepgraph.stores.pg_limits import PostgresGate
from tests.pg import PG_DSN, pg_schema, require_pg

ROOT = Path(__file__).resolve().parents[1]
SAFETY = 20.0  # seconds before a test that hangs fails (never reached when all is well)

# argv: dsn schema name max_concurrency|- rate|- mode tasks rounds work_seconds
# mode "run": `tasks` tasks hold the limiter `rounds` times each for `work_seconds`, then it
# prints {"spans": [[start, end], ...], "waits": n} (times of time.monotonic, which is the
# machine's, so the processes' spans compare). Mode "keep": it acquires, prints "held" and
# keeps it until it is killed.
CHILD = r"""
import asyncio, json, sys, time
from stepgraph.limits import Limiter
from stepgraph.stores.pg_limits import PostgresGate

dsn, schema, name, count, rate, mode, tasks, rounds, work = sys.argv[1:]
limiter = Limiter(
    name, max_concurrency=None if count == "-" else int(count), rate=None if rate == "-" else rate
)

async def main():
    gate = PostgresGate(dsn, limiter, schema=schema)
    if mode == "keep":
        await gate.acquire()
        print("held", flush=True)
        await asyncio.Event().wait()
    spans = []

    async def worker():
        for _ in range(int(rounds)):
            async with gate.hold():
                start = time.monotonic()
                await asyncio.sleep(float(work))
                spans.append((start, time.monotonic()))

    await asyncio.gather(*(worker() for _ in range(int(tasks))))
    await gate.aclose()
    print(json.dumps({"spans": spans, "waits": gate.waits}), flush=True)

print("ready", flush=True)
sys.stdin.readline()
asyncio.run(main())
"""


@pytest.fixture
def schema() -> Iterator[str]:
    require_pg()
    with pg_schema() as name:
        yield name


@pytest.fixture
async def make_gate(schema: str) -> AsyncIterator[Callable[[Limiter], PostgresGate]]:
    made: list[PostgresGate] = []

    def make(limiter: Limiter) -> PostgresGate:
        gate = PostgresGate(PG_DSN, limiter, schema=schema)
        made.append(gate)
        return gate

    yield make
    for gate in made:
        await gate.aclose()


def start_children(
    schema: str,
    limiter: Limiter,
    count: int,
    mode: str,
    *,
    tasks: int = 1,
    rounds: int = 1,
    work: float = 0.0,
) -> list[subprocess.Popen[str]]:
    """``count`` child processes, each ready (imported) and waiting for its go."""
    args = [
        PG_DSN,
        schema,
        limiter.name,
        "-" if limiter.max_concurrency is None else str(limiter.max_concurrency),
        limiter.rate or "-",
        mode,
        str(tasks),
        str(rounds),
        str(work),
    ]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line == "ready\n", f"{line!r}: {child.communicate(timeout=SAFETY)[1]}"
    except BaseException:
        for child in children:
            child.kill()
            child.communicate()
        raise
    return children


def go_and_collect(children: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Let the children go at once; what each printed last."""
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    reports = []
    for child in children:
        out, err = child.communicate(timeout=SAFETY)
        assert child.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of spans that overlap (an end before a start at the same time)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


async def until(condition: Callable[[], Any], what: str) -> None:
    """Poll ``condition`` (sync or async) until it is true."""
    try:
        async with asyncio.timeout(SAFETY):
            while True:
                value = condition()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    return
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"still not so after {SAFETY} s: {what}") from None


# -- across processes ---------------------------------------------------------------------------


def test_at_most_max_concurrency_hold_at_once_across_processes(schema: str) -> None:
    limiter = Limiter("pool", max_concurrency=2, rate="1000/s")  # a rate that never binds
    children = start_children(schema, limiter, 3, "run", tasks=3, rounds=4, work=0.01)
    reports = go_and_collect(children)
    spans = [(start, end) for report in reports for start, end in report["spans"]]
    assert len(spans) == 3 * 3 * 4
    # every span lies within its holder's hold, so more overlapping spans would mean
    # more holders at once; and the limit is reached, not just respected
    assert most_at_once(spans) == 2
    assert sum(report["waits"] for report in reports) > 0


@pytest.mark.parametrize(
    "limiter",
    [Limiter("api", rate="30/s"), Limiter("api", max_concurrency=2, rate="30/s")],
    ids=["rate", "rate-and-slots"],
)
def test_a_rate_holds_across_processes_as_a_token_bucket(schema: str, limiter: Limiter) -> None:
    children = start_children(schema, limiter, 3, "run", tasks=2, rounds=8)
    reports = go_and_collect(children)
    times = sorted(start for report in reports for start, _ in report["spans"])
    assert len(times) == 48  # the burst (30) at once, then 18 more at 30 per second
    # a time is taken after the token, late by a round trip and the scheduling of its task:
    # a window may look shorter than it was by that much
    slack = 0.05
    for i, first in enumerate(times):
        for j in range(i, len(times)):
            count = j - i + 1
            assert count <= limiter.burst + limiter.per_second * (times[j] - first + slack), (
                f"{count} acquisitions within {times[j] - first:.3f} s"
            )
    assert sum(report["waits"] for report in reports) > 0


async def test_a_killed_holder_frees_its_slot(
    schema: str, make_gate: Callable[[Limiter], PostgresGate]
) -> None:
    limiter = Limiter("solo", max_concurrency=1)
    (child,) = start_children(schema, limiter, 1, "keep")
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert await asyncio.to_thread(child.stdout.readline) == "held\n"
        gate = make_gate(limiter)
        assert await gate.holders() == 1
        waiter = asyncio.create_task(gate.acquire())
        await until(lambda: gate.waits == 1, "the acquisition waits")
        assert not waiter.done()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=SAFETY)
    async with asyncio.timeout(SAFETY):  # the gate polls until the server frees the slot
        waited = await waiter
    assert waited > 0
    assert (gate.held, await gate.holders()) == (1, 1)
    gate.release()


# -- in one process -----------------------------------------------------------------------------


async def test_holders_of_one_loop_take_distinct_slots_and_waits_are_told(
    make_gate: Callable[[Limiter], PostgresGate], caplog: pytest.LogCaptureFixture
) -> None:
    gate = make_gate(Limiter("three", max_concurrency=3))
    inside = asyncio.Event()
    done = asyncio.Event()
    entered: list[float] = []

    async def holder() -> None:
        async with gate.hold() as waited:
            entered.append(waited)
            if len(entered) == 3:
                inside.set()
            await done.wait()

    holders = [asyncio.create_task(holder()) for _ in range(3)]
    await inside.wait()
    # a session's advisory locks are re-entrant: the same slot taken twice would count once
    assert (gate.held, await gate.holders()) == (3, 3)
    caplog.set_level(logging.INFO, logger="stepgraph.limits")
    fourth = asyncio.create_task(holder())
    await until(lambda: gate.waits == 1, "the fourth waits")
    done.set()
    await asyncio.gather(*holders, fourth)
    assert entered[:3] == [0.0, 0.0, 0.0] and entered[3] > 0
    assert "for limiter 'three'" in caplog.text
    # hold() ends when the slot is free on the server
    assert (gate.held, await gate.holders()) == (0, 0)


async def test_a_contradicting_declaration_raises_naming_the_limiter(
    make_gate: Callable[[Limiter], PostgresGate],
) -> None:
    first = make_gate(Limiter("api", max_concurrency=2, rate="5/s"))
    async with first.hold():
        pass
    same = make_gate(Limiter("api", max_concurrency=2, rate="5/s"))
    async with same.hold():
        pass
    for other in (Limiter("api", max_concurrency=3, rate="5/s"), Limiter("api", 2, "6/s")):
        gate = make_gate(other)
        for _ in range(2):  # and every time it is used
            with pytest.raises(StepgraphError) as caught:
                await gate.acquire()
            message = str(caught.value)
            assert "limiter 'api'" in message
            assert f"max_concurrency={other.max_concurrency}, rate={other.rate!r}" in message
            assert "max_concurrency=2, rate='5/s'" in message
            assert gate.held == 0


async def test_store_errors_name_the_limiter() -> None:
    pytest.importorskip("psycopg")
    gate = PostgresGate("postgresql://postgres@127.0.0.1:1/test", Limiter("far", 1))
    with pytest.raises(StoreError, match="limiter 'far'"):
        await gate.acquire()


def test_event_loops_in_threads_share_the_limit_and_a_closed_loop_frees_its_slots(
    schema: str,
) -> None:
    gate = PostgresGate(PG_DSN, Limiter("loops", max_concurrency=2), schema=schema)
    lock = threading.Lock()
    now, most = 0, 0

    async def work() -> None:
        nonlocal now, most
        for _ in range(10):
            async with gate.hold():
                with lock:
                    now += 1
                    most = max(most, now)
                await asyncio.sleep(0.001)
                with lock:
                    now -= 1

    async def two() -> None:
        await asyncio.gather(work(), work())

    threads = [threading.Thread(target=asyncio.run, args=(two(),)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (most, gate.held) == (2, 0)

    async def leave_holding() -> None:
        await gate.acquire()

    asyncio.run(leave_holding())  # its loop closes with a slot held on its connection

    async def after() -> tuple[int, int]:
        try:
            return await gate.holders(), gate.held  # a new loop: the closed one's are closed
        finally:
            await gate.aclose()

    assert asyncio.run(after()) == (0, 0)


# -- cancellation -------------------------------------------------------------------------------


async def test_cancelled_waiters_leak_no_slot(
    make_gate: Callable[[Limiter], PostgresGate],
) -> None:
    limiter = Limiter("busy", max_concurrency=2)
    gate, elsewhere = make_gate(limiter), make_gate(limiter)  # two sessions, as two processes
    done = asyncio.Event()

    async def holder() -> None:
        async with gate.hold():
            await done.wait()

    holders = [asyncio.create_task(holder()) for _ in range(2)]
    await until(lambda: gate.held == 2, "two hold it")
    waiters = [asyncio.create_task(g.acquire()) for g in (gate, gate, elsewhere)]
    await until(lambda: (gate.waits, elsewhere.waits) == (2, 1), "three wait")
    for waiter in waiters:
        waiter.cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)
    done.set()
    await asyncio.gather(*holders)
    assert (gate.held, elsewhere.held) == (0, 0)
    # a poll in flight when it was cancelled may take a slot freed meanwhile, then give it back
    await until(lambda: _no_holder(elsewhere), "every slot is given back")
    # both slots are free: a new session takes them without waiting
    fresh = make_gate(limiter)
    assert [await fresh.acquire(), await fresh.acquire()] == [0.0, 0.0]
    assert fresh.waits == 0


async def test_an_acquisition_cancelled_at_any_point_gives_its_slot_back(
    make_gate: Callable[[Limiter], PostgresGate],
) -> None:
    limiter = Limiter("flaky", max_concurrency=1)
    gate = make_gate(limiter)
    async with gate.hold():  # connected and declared: what follows is the slot's round trip
        pass
    outcomes: list[str] = []
    # cancelled after 0, 1, 2, ... turns of the event loop, until it is late enough that
    # the acquisition is done: in between, it is cancelled during its round trip
    async with asyncio.timeout(SAFETY):
        while outcomes.count("acquired") < 3:
            acquiring = asyncio.create_task(gate.acquire())
            for _ in range(len(outcomes)):
                await asyncio.sleep(0)
            acquiring.cancel()
            try:
                await acquiring
            except asyncio.CancelledError:
                outcomes.append("cancelled")
            else:  # it had its slot before the cancellation came
                outcomes.append("acquired")
                gate.release()
    assert outcomes[0] == "cancelled"
    assert gate.held == 0
    # a slot taken by a cancelled round trip is given back once that round trip ends
    await until(lambda: _no_holder(gate), "every slot is given back")
    checker = make_gate(limiter)
    assert await checker.acquire() == 0.0


async def test_cancelled_while_waiting_for_a_token_gives_the_slot_back(
    make_gate: Callable[[Limiter], PostgresGate],
) -> None:
    limiter = Limiter("slow", max_concurrency=1, rate="2/min")
    gate = make_gate(limiter)
    for _ in range(2):  # the burst
        assert await gate.acquire() == 0.0
        gate.release()
    waiter = asyncio.create_task(gate.acquire())
    await until(lambda: gate.waits == 1, "it waits for a token")
    assert await gate.holders() == 1  # the slot it took first
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await until(lambda: _no_holder(gate), "the slot is given back")
    assert gate.held == 0


async def _no_holder(gate: PostgresGate) -> bool:
    return await gate.holders() == 0
