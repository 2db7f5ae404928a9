"""The stepgraph side of each workload.

Each ``*_runner(mode)`` builds its workflow once and returns a :data:`~bench.timing.Runner`
that performs ``size`` units of work with it (W1: hops, W2: items, W3: runs) and checks the
result, so that a wrong answer can never pass for a fast one.
"""

from __future__ import annotations

from typing import Literal

from bench.timing import Runner
from stepgraph import (
    Context,
    Event,
    Executor,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    step,
)

Mode = Literal["superstep", "async"]
MODES: tuple[Mode, ...] = ("superstep", "async")


# W1: a chain of sequential hops ----------------------------------------------------------------


class Ping(Event):
    """One hop; carries the chain's length so that the hop step knows when to stop."""

    n: int
    hops: int


class ChainStart(StartEvent):
    """``run(hops=...)``: the chain's length."""

    hops: int


class Chain(Workflow):
    """``start`` emits ``Ping(n=0)``; ``hop`` runs once per hop, then stops."""

    @step
    async def start(self, ctx: Context, ev: ChainStart) -> Ping:
        return Ping(n=0, hops=ev.hops)

    @step
    async def hop(self, ctx: Context, ev: Ping) -> Ping | StopEvent:
        if ev.n + 1 >= ev.hops:
            return StopEvent(result=ev.n + 1)
        return Ping(n=ev.n + 1, hops=ev.hops)


def chain_runner(mode: Mode) -> Runner:
    """W1: ``hops`` sequential hops, one event each."""
    wf = Chain(timeout=None, mode=mode)

    async def run(hops: int) -> None:
        result = await wf.run(hops=hops)
        assert result == hops, result

    return run


# W2: fan-out to 8 workers, fan-in with collect_events ------------------------------------------


class Item(Event):
    """One unit of work; carries the total so that the collector knows how many to wait for."""

    i: int
    n: int


class Result(Event):
    """One worker's answer."""

    i: int
    n: int


class FanOutStart(StartEvent):
    """``run(n=...)``: how many items to fan out."""

    n: int


class FanOut(Workflow):
    """``start`` sends ``n`` items, 8 workers answer, ``gather`` collects all ``n`` answers."""

    @step
    async def start(self, ctx: Context, ev: FanOutStart) -> Item | None:
        n = ev.n
        for i in range(n):
            ctx.send_event(Item(i=i, n=n))
        return None

    @step(num_workers=8)
    async def work(self, ev: Item) -> Result:
        return Result(i=ev.i, n=ev.n)

    @step
    async def gather(self, ctx: Context, ev: Result) -> StopEvent | None:
        got = ctx.collect_events(ev, [Result] * ev.n)
        if got is None:
            return None
        return StopEvent(result=len(got))


def fan_out_runner(mode: Mode) -> Runner:
    """W2: ``n`` items fanned out to ``num_workers=8`` and collected."""
    wf = FanOut(timeout=None, mode=mode)

    async def run(n: int) -> None:
        result = await wf.run(n=n)
        assert result == n, result

    return run


class FanOutCount(FanOut):
    """W2 with ``collect_events(ev, Result, count=n)``: no list of n built per arrival."""

    @step
    async def gather(self, ctx: Context, ev: Result) -> StopEvent | None:
        got = ctx.collect_events(ev, Result, count=ev.n)
        if got is None:
            return None
        return StopEvent(result=len(got))


def fan_out_count_runner(mode: Mode) -> Runner:
    """W2 at scale: ``n`` items fanned out and collected with ``count=n`` (O(1) per call)."""
    wf = FanOutCount(timeout=None, mode=mode)

    async def run(n: int) -> None:
        result = await wf.run(n=n)
        assert result == n, result

    return run


# W3: start-up cost of a small workflow ---------------------------------------------------------


class First(Event):
    """Output of the first step."""

    x: int


class Second(Event):
    """Output of the second step."""

    x: int


class ThreeSteps(Workflow):
    """Three steps in a row; the run's result is 2."""

    @step
    async def one(self, ctx: Context, ev: StartEvent) -> First:
        return First(x=0)

    @step
    async def two(self, ctx: Context, ev: First) -> Second:
        return Second(x=ev.x + 1)

    @step
    async def three(self, ctx: Context, ev: Second) -> StopEvent:
        return StopEvent(result=ev.x + 1)


def startup_runner(mode: Mode) -> Runner:
    """W3: ``runs`` sequential runs of one three-step workflow instance, each awaited."""
    wf = ThreeSteps(timeout=None, mode=mode)

    async def run(runs: int) -> None:
        for _ in range(runs):
            result = await wf.run()
            assert result == 2, result

    return run


# W1g / W2g: the same work as an executor graph (WorkflowBuilder) -------------------------------


class GraphHop(Executor):
    """Sends the next hop along its self-edge until the chain is done, then yields the count."""

    @handler
    async def on_ping(self, ping: Ping, ctx: WorkflowContext) -> None:
        if ping.n + 1 >= ping.hops:
            await ctx.yield_output(ping.n + 1)
        else:
            await ctx.send_message(Ping(n=ping.n + 1, hops=ping.hops))


class GraphChainStart(Executor):
    """Turns the run's input (the chain's length) into the first hop."""

    @handler
    async def on_start(self, hops: int, ctx: WorkflowContext) -> None:
        await ctx.send_message(Ping(n=0, hops=hops))


def graph_chain_runner(mode: Mode) -> Runner:
    """W1g: ``hops`` sequential hops through an executor with a self-edge."""
    start, hop = GraphChainStart(id="start"), GraphHop(id="hop")
    wf = WorkflowBuilder(start=start).add_edge(start, hop).add_edge(hop, hop).build(mode=mode)

    async def run(hops: int) -> None:
        result = await wf.run(hops)
        assert result.outputs == [hops], result.outputs

    return run


class GraphFanOutStart(Executor):
    """Sends ``n`` items to the workers."""

    @handler
    async def on_start(self, n: int, ctx: WorkflowContext) -> None:
        for i in range(n):
            await ctx.send_message(Item(i=i, n=n))


class GraphWorker(Executor):
    """Answers one item (``num_workers=8``)."""

    @handler
    async def on_item(self, item: Item, ctx: WorkflowContext) -> None:
        await ctx.send_message(Result(i=item.i, n=item.n))


class GraphGather(Executor):
    """Counts the answers in the run's shared state and yields the total once all are in."""

    @handler
    async def on_result(self, result: Result, ctx: WorkflowContext) -> None:
        got = await ctx.store.update("got", lambda held: (held or 0) + 1)
        if got == result.n:
            await ctx.yield_output(got)


def graph_fan_out_runner(mode: Mode) -> Runner:
    """W2g: ``n`` items fanned out to a ``num_workers=8`` executor and gathered."""
    start = GraphFanOutStart(id="start")
    work = GraphWorker(id="work", num_workers=8)
    gather = GraphGather(id="gather")
    wf = WorkflowBuilder(start=start).add_chain([start, work, gather]).build(mode=mode)

    async def run(n: int) -> None:
        result = await wf.run(n)
        assert result.outputs == [n], result.outputs

    return run
