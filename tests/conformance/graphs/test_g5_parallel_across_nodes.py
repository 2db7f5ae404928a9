"""G5 parallel across nodes in executor graphs: distinct ready executors run at once.

Checks, in both modes, that two executors ready at the same time overlap in time
(a rendezvous: each waits for the other to be inside, so their time windows
overlap for certain, and an engine that ran them in turn fails the wait); the
combined case of two parallel sources feeding one executor, whose invocations do
not overlap each other while the sources did; that a fan-out to many executors
runs them all at once; that an executor blocked on something does not stop
another from processing its messages; and that ``max_concurrency`` bounds how many
run at once (1 serializes everything; N lets exactly N in).
"""

import asyncio
from typing import Any

from stepgraph import Executor, WorkflowBuilder, WorkflowContext, handler

from ._helpers import Windows, both_modes, finish, reached, rendezvous, spin


class Go(Executor):
    """The start executor: sends its input on along its out-edges."""

    @handler
    async def on_any(self, message: Any, ctx: WorkflowContext) -> None:
        await ctx.send_message(message)


@both_modes
async def test_two_ready_executors_run_at_the_same_time(mode: str) -> None:
    windows = Windows()
    inside = {"a": asyncio.Event(), "b": asyncio.Event()}

    class Meet(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            windows.start(self.id)
            other = "b" if self.id == "a" else "a"
            await rendezvous(inside[self.id], inside[other], f"{other} runs beside {self.id}")
            windows.end(self.id)
            await ctx.yield_output(self.id)

    go = Go(id="go")
    wf = WorkflowBuilder(start=go).add_fan_out(go, [Meet(id="a"), Meet(id="b")]).build(mode=mode)
    result = await finish(wf.run("x"))
    assert sorted(result.outputs) == ["a", "b"]
    assert windows.overlap("a", "b")


@both_modes
async def test_parallel_sources_overlap_while_their_shared_target_runs_serially(
    mode: str,
) -> None:
    windows = Windows()
    inside = {"s1": asyncio.Event(), "s2": asyncio.Event()}

    class Source(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            windows.start(self.id)
            other = "s2" if self.id == "s1" else "s1"
            await rendezvous(inside[self.id], inside[other], f"{other} runs beside {self.id}")
            for n in range(3):
                await ctx.send_message(f"{self.id}.{n}")
            windows.end(self.id)

    class Sink(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            windows.start(text)
            for _ in range(10):
                await asyncio.sleep(0)  # real suspensions: a parallel invocation would enter
            windows.end(text)
            await ctx.yield_output(text)

    go, s1, s2, sink = Go(id="go"), Source(id="s1"), Source(id="s2"), Sink(id="sink")
    wf = (
        WorkflowBuilder(start=go)
        .add_fan_out(go, [s1, s2])
        .add_edge(s1, sink)
        .add_edge(s2, sink)
        .build(mode=mode)
    )
    result = await finish(wf.run("x"))

    sunk = [f"{s}.{n}" for s in ("s1", "s2") for n in range(3)]
    assert sorted(result.outputs) == sunk
    assert windows.overlap("s1", "s2"), "distinct executors did not run in parallel"
    windows.assert_disjoint(sunk)  # one executor: its invocations never overlap


@both_modes
async def test_a_fan_out_to_many_executors_runs_them_all_at_once(mode: str) -> None:
    count = 6
    inside = 0
    all_in = asyncio.Event()

    class Member(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            nonlocal inside
            inside += 1
            if inside == count:
                all_in.set()
            await reached(all_in, f"all {count} executors inside at once")
            await ctx.yield_output(self.id)

    go = Go(id="go")
    members = [Member(id=f"m{i}") for i in range(count)]
    wf = WorkflowBuilder(start=go).add_fan_out(go, members).build(mode=mode)
    result = await finish(wf.run("x"))
    assert sorted(result.outputs) == sorted(m.id for m in members)


@both_modes
async def test_a_blocked_executor_does_not_block_another_executors_progress(mode: str) -> None:
    gate = asyncio.Event()
    blocked_in = asyncio.Event()
    busy_done = asyncio.Event()
    processed: list[int] = []

    class Start(Executor):
        @handler
        async def on_count(self, count: int, ctx: WorkflowContext) -> None:
            await ctx.send_message("wait", target="blocked")
            for n in range(count):
                await ctx.send_message(n, target="busy")

    class Blocked(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            blocked_in.set()
            await gate.wait()  # held until the test has seen `busy` finish all its work

    class Busy(Executor):
        @handler
        async def on_number(self, n: int, ctx: WorkflowContext) -> None:
            await asyncio.sleep(0)
            processed.append(n)
            if len(processed) == 5:
                busy_done.set()

    start = Start(id="start")
    wf = (
        WorkflowBuilder(start=start)
        .add_edge(start, Blocked(id="blocked"))
        .add_edge(start, Busy(id="busy"))
        .build(mode=mode)
    )
    handler_ = wf.run(5)
    await reached(blocked_in, "the blocked executor started")
    await reached(busy_done, "the busy executor processed its five messages meanwhile")
    assert processed == [0, 1, 2, 3, 4]
    assert not handler_.done()

    gate.set()
    await finish(handler_)


class Hold(Executor):
    """Counts how many holders are inside at once; holds them at a gate."""

    def __init__(self, id: str, gauge: dict[str, Any]) -> None:
        super().__init__(id)
        self.gauge = gauge

    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        gauge = self.gauge
        gauge["inside"] += 1
        gauge["most"] = max(gauge["most"], gauge["inside"])
        gauge["entered"].append(self.id)
        if gauge["inside"] == gauge["full_at"]:
            gauge["full"].set()
        await gauge["gate"].wait()
        gauge["inside"] -= 1


def gauge_for(full_at: int) -> dict[str, Any]:
    return {
        "inside": 0,
        "most": 0,
        "entered": [],
        "full_at": full_at,
        "full": asyncio.Event(),
        "gate": asyncio.Event(),
    }


@both_modes
async def test_max_concurrency_1_serializes_all_executors(mode: str) -> None:
    gauge = gauge_for(1)
    go = Go(id="go")
    wf = (
        WorkflowBuilder(start=go)
        .add_fan_out(go, [Hold("a", gauge), Hold("b", gauge)])
        .build(mode=mode, max_concurrency=1)
    )
    handler_ = wf.run("x")
    await reached(gauge["full"], "one of the two executors started")
    await spin()  # the other executor would have started by now, were it allowed to
    assert gauge["entered"] in (["a"], ["b"])
    assert handler_._run.state.running == 1

    gauge["gate"].set()
    await finish(handler_)
    assert sorted(gauge["entered"]) == ["a", "b"]
    assert gauge["most"] == 1


@both_modes
async def test_max_concurrency_n_lets_exactly_n_executors_run_at_once(mode: str) -> None:
    gauge = gauge_for(2)
    go = Go(id="go")
    holders = [Hold(f"h{i}", gauge) for i in range(4)]
    wf = WorkflowBuilder(start=go).add_fan_out(go, holders).build(mode=mode, max_concurrency=2)
    handler_ = wf.run("x")
    await reached(gauge["full"], "two executors inside at once")
    await spin()
    assert gauge["inside"] == 2

    gauge["gate"].set()
    await finish(handler_)
    assert gauge["most"] == 2
    assert sorted(gauge["entered"]) == [h.id for h in holders]
