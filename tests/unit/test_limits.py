"""Limiters within a process: concurrency caps and token-bucket rates, for steps
(``@step(limiter=...)``, ``ctx.limit``) and tasks (``function_task(limiter=...)``)."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest

from stepgraph import Context, Event, Limiter, StartEvent, StopEvent, Workflow, step
from stepgraph.backends import InlineBackend, ThreadBackend
from stepgraph.errors import StepgraphError, WorkflowValidationError
from stepgraph.limits import Gate, gate_of
from stepgraph.tasks import TaskFlow

_names = itertools.count()


def fresh(prefix: str = "lim") -> str:
    """A limiter name no other test declared (limiters are process-wide by name)."""
    return f"{prefix}-{next(_names)}"


class Overlaps:
    """Records how many hold something at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def __exit__(self, *_: object) -> None:
        self.now -= 1


def test_a_limiter_checks_its_limits_and_reads_its_rate() -> None:
    assert Limiter("a", rate="5/s").per_second == 5
    assert Limiter("a", rate="60/min").per_second == 1
    assert Limiter("a", rate="7200 / h").per_second == 2
    assert Limiter("a", rate="3/s").burst == 3
    assert Limiter("a", max_concurrency=2).per_second == math.inf
    for bad in ("5", "5/day", "0/s", "-1/s", "s/5", ""):
        with pytest.raises(WorkflowValidationError, match=r"'a'.*rate"):
            Limiter("a", rate=bad)
    for count in (0, -1, 1.5, True):
        with pytest.raises(WorkflowValidationError, match=r"'a'.*max_concurrency"):
            Limiter("a", max_concurrency=count)  # type: ignore[arg-type]
    with pytest.raises(WorkflowValidationError):
        Limiter("")


async def test_a_rate_below_one_grants_one_at_a_time_not_never() -> None:
    limiter = Limiter(fresh(), rate="0.5/s")
    assert (limiter.per_second, limiter.burst) == (0.5, 1)
    async with asyncio.timeout(5), Gate(limiter).hold():  # the first at once
        pass


def test_declarations_of_one_name_share_a_gate_and_must_agree() -> None:
    name = fresh()
    first = gate_of(Limiter(name, max_concurrency=3))
    assert gate_of(Limiter(name, max_concurrency=3)) is first
    with pytest.raises(StepgraphError, match=rf"limiter '{name}'.*max_concurrency=4"):
        gate_of(Limiter(name, max_concurrency=4))
    with pytest.raises(StepgraphError, match=f"'{name}'"):
        Workflow(limiters=[Limiter(name, max_concurrency=3, rate="1/s")])


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTime]:
    clock = FakeTime()
    monkeypatch.setattr("stepgraph.limits.time.monotonic", clock)
    yield clock


def test_the_token_bucket_allows_its_burst_then_one_per_period(fake_time: FakeTime) -> None:
    gate = Gate(Limiter("bucket", rate="4/s"))
    assert [gate._try_take() for _ in range(4)] == [None] * 4  # the burst
    assert gate._try_take() == pytest.approx(0.25)  # a token every quarter second
    fake_time.now += 0.25
    assert gate._try_take() is None
    fake_time.now += 10  # refills up to the burst, no more
    assert [gate._try_take() for _ in range(4)] == [None] * 4
    assert gate._try_take() == pytest.approx(0.25)


def test_the_concurrency_cap_says_wait_for_a_slot(fake_time: FakeTime) -> None:
    gate = Gate(Limiter("cap", max_concurrency=2))
    assert gate._try_take() is None and gate._try_take() is None
    assert gate._try_take() == math.inf
    gate.release()
    assert gate._try_take() is None


class Item(Event):
    n: int


def fan_out_flow(name: str, overlaps: Overlaps, release: asyncio.Event) -> type[Workflow]:
    class FanOut(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> Item | None:
            for n in range(6):
                ctx.send_event(Item(n=n))
            return None

        @step(num_workers=6, limiter=name)
        async def call(self, ctx: Context, ev: Item) -> StopEvent | None:
            with overlaps:
                await asyncio.sleep(0)  # others get a chance to enter while this holds
                await asyncio.sleep(0)
            if ctx.collect_events(ev, [Item] * 6) is None:
                return None
            return StopEvent(result="done")

    return FanOut


async def test_a_step_holding_a_limiter_never_exceeds_its_concurrency() -> None:
    name, overlaps = fresh(), Overlaps()
    flow = fan_out_flow(name, overlaps, asyncio.Event())
    limiter = Limiter(name, max_concurrency=2)
    results = await asyncio.gather(
        flow(limiters=[limiter], mode="async").run(), flow(limiters=[limiter]).run()
    )
    assert results == ["done", "done"]
    assert overlaps.peak == 2  # two runs, one limiter: the cap is process-wide
    assert gate_of(limiter).held == 0 and gate_of(limiter).waits > 0


class Guarded(Workflow):
    overlaps = Overlaps()

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        async with ctx.limit(ev.name):
            with Guarded.overlaps:
                await asyncio.sleep(0)
                await asyncio.sleep(0)
        return StopEvent(result="ok")


async def test_ctx_limit_holds_the_limiter_for_the_block_across_runs() -> None:
    name = fresh()
    limiter = Limiter(name, max_concurrency=1)
    wf = Guarded(limiters=[limiter])
    Guarded.overlaps = Overlaps()
    assert await asyncio.gather(*(wf.run(name=name) for _ in range(5))) == ["ok"] * 5
    assert Guarded.overlaps.peak == 1


async def test_an_undeclared_limiter_is_an_error_naming_it() -> None:
    name = fresh()
    flow = fan_out_flow(name, Overlaps(), asyncio.Event())
    with pytest.raises(WorkflowValidationError, match=rf"'call'.*'{name}'"):
        await flow().run()
    with pytest.raises(StepgraphError, match=r"'nowhere'.*not declared"):
        await Guarded().run(name="nowhere")


class Waits(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        async with ctx.limit(ev.name):
            return StopEvent(result="got it")


async def test_a_run_waiting_for_a_limiter_is_not_stalled_and_a_cancel_frees_it() -> None:
    name = fresh()
    limiter = Limiter(name, max_concurrency=1)
    gate = gate_of(limiter)
    both_wait = asyncio.Event()
    acquire = gate.acquire

    async def counted() -> float:
        if gate.held and len(gate._waiters) == 1:  # the second one is about to wait
            both_wait.set()
        return await acquire()

    gate.acquire = counted  # type: ignore[method-assign]
    try:
        async with gate.hold():  # someone else holds it
            waiting = Waits(limiters=[limiter], timeout=None).run(name=name)
            cancelled = Waits(limiters=[limiter], timeout=None).run(name=name)
            await both_wait.wait()
            await cancelled.cancel()
            assert not waiting.done()
        assert await waiting == "got it"  # not a WorkflowStalled: it was running, waiting
    finally:
        del gate.acquire
    assert gate.held == 0 and not gate._waiters


async def test_a_rate_makes_acquisitions_beyond_the_burst_wait_their_token() -> None:
    gate = Gate(Limiter(fresh(), rate="2000/s"))

    async def once() -> float:
        async with gate.hold() as waited:
            return waited

    waited = await asyncio.gather(*(once() for _ in range(2100)))
    assert sum(1 for w in waited if w == 0) >= 2000  # the burst went through at once
    assert gate.waits >= 1 and gate.held == 0


async def test_tasks_holding_a_limiter_never_exceed_it_across_flows() -> None:
    name = fresh()
    limiter = Limiter(name, max_concurrency=2)
    overlaps = Overlaps()
    seen: list[Any] = []

    async def flow_run() -> list[int]:
        async with TaskFlow(
            backends={"default": ThreadBackend(4), "inline": InlineBackend()}, limiters=[limiter]
        ) as flow:

            @flow.function_task(backend="inline", limiter=name)
            async def call(i: int) -> int:
                with overlaps:
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                return i

            @flow.function_task(backend="inline", limiter=name)
            def plain(i: int) -> int:
                seen.append(i)
                return i

            return list(await asyncio.gather(*(call(i) for i in range(6)), plain(9)))

    assert await asyncio.gather(flow_run(), flow_run()) == [[*range(6), 9]] * 2
    assert overlaps.peak == 2 and seen == [9, 9]
    async with TaskFlow(backends={"default": InlineBackend()}) as flow:
        with pytest.raises(StepgraphError, match=f"'{name}'"):
            flow.function_task(limiter=name)(lambda: None)


async def test_a_wait_for_a_limiter_is_a_log_line_and_a_span_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from stepgraph.telemetry import configure, reset

    name = fresh()
    limiter = Limiter(name, max_concurrency=1)
    exporter = InMemorySpanExporter()
    configure(span_processors=[SimpleSpanProcessor(exporter)])
    try:
        with caplog.at_level("INFO", logger="stepgraph.limits"):
            wf = Guarded(limiters=[limiter])
            Guarded.overlaps = Overlaps()
            runs = [wf.run(name=name), wf.run(name=name)]
            assert await asyncio.gather(*runs) == ["ok"] * 2
    finally:
        reset()
    said = [record.getMessage() for record in caplog.records]
    ids = {run.run_id for run in runs}
    assert any(
        line.startswith(f"waiting for limiter {name!r} (run ")
        and line.split("(run ")[1].split(",")[0] in ids
        and line.endswith(", step 'start')")
        for line in said
    ), said
    waits = [
        e
        for s in exporter.get_finished_spans()
        if s.name == "stepgraph.step"
        for e in s.events
        if e.name == "stepgraph.limiter.wait"
    ]
    assert len(waits) == 1 and waits[0].attributes["stepgraph.limiter.name"] == name


async def test_a_wait_for_a_limiter_is_said_as_it_starts_not_only_once_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = fresh()
    gate = Gate(Limiter(name, max_concurrency=1))
    await gate.acquire()
    with caplog.at_level("INFO", logger="stepgraph.limits"):
        second = asyncio.ensure_future(gate.acquire())
        while gate.waits == 0:  # noqa: ASYNC110 (until it is in line: a turn of the loop)
            await asyncio.sleep(0)
        said = [record.getMessage() for record in caplog.records]
        assert said == [f"waiting for limiter {name!r}"]  # while it waits
        gate.release()
        assert await second > 0
    gate.release()


async def test_when_the_first_in_line_is_cancelled_the_next_takes_its_turn() -> None:
    gate = Gate(Limiter(fresh(), rate="20/s"))
    for _ in range(20):  # the burst is spent: the next token comes in 50 ms
        await gate.acquire()
        gate.release()
    first = asyncio.ensure_future(gate.acquire())
    second = asyncio.ensure_future(gate.acquire())
    await asyncio.sleep(0)  # both start: the burst is spent, so both wait in line
    assert len(gate._waiters) == 2
    first.cancel()
    assert await second >= 0  # it got the token (stranded forever before the fix)
    gate.release()
    assert gate.held == 0 and not gate._waiters
