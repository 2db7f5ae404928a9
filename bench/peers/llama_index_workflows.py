"""llama-index-workflows (the ``workflows`` package): steps and events, as in stepgraph."""

from __future__ import annotations

from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from bench.peers.common import Peer, PeerWorkload


class Ping(Event):
    """One hop."""

    n: int
    hops: int


class Chain(Workflow):
    """W1: ``start`` emits ``Ping(n=0)``; ``hop`` runs once per hop."""

    @step
    async def start(self, ev: StartEvent) -> Ping:
        return Ping(n=0, hops=ev.hops)

    @step
    async def hop(self, ev: Ping) -> Ping | StopEvent:
        if ev.n + 1 >= ev.hops:
            return StopEvent(result=ev.n + 1)
        return Ping(n=ev.n + 1, hops=ev.hops)


class Item(Event):
    """One unit of work."""

    i: int
    n: int


class Result(Event):
    """One worker's answer."""

    i: int
    n: int


class FanOut(Workflow):
    """W2: send ``n`` items to 8 workers, collect all answers with ``collect_events``."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Item | None:
        for i in range(ev.n):
            ctx.send_event(Item(i=i, n=ev.n))
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


class First(Event):
    """Output of the first step."""

    x: int


class Second(Event):
    """Output of the second step."""

    x: int


class ThreeSteps(Workflow):
    """W3: three steps in a row."""

    @step
    async def one(self, ev: StartEvent) -> First:
        return First(x=0)

    @step
    async def two(self, ev: First) -> Second:
        return Second(x=ev.x + 1)

    @step
    async def three(self, ev: Second) -> StopEvent:
        return StopEvent(result=ev.x + 1)


def load() -> Peer:
    """Build the workflows once and return the peer with its runners."""
    chain_wf = Chain(timeout=None)
    fan_out_wf = FanOut(timeout=None)
    three_wf = ThreeSteps(timeout=None)

    async def chain(hops: int) -> None:
        result = await chain_wf.run(hops=hops)
        assert result == hops, result

    async def fan_out(n: int) -> None:
        result = await fan_out_wf.run(n=n)
        assert result == n, result

    async def startup(runs: int) -> None:
        for _ in range(runs):
            result = await three_wf.run()
            assert result == 2, result

    return Peer(
        name="llama-index-workflows",
        dist="llama-index-workflows",
        workloads={
            "w1": PeerWorkload(chain),
            "w2": PeerWorkload(fan_out),
            "w3": PeerWorkload(startup),
        },
    )
