"""agent-framework-core (``agent_framework``): executors joined by edges, run in supersteps.

Messages are plain dataclasses; an executor's ``@handler`` receives one and sends the next
with ``ctx.send_message`` or ends with ``ctx.yield_output``. The chain is a self-loop edge.
W1d is the chain with ``checkpoint_storage=FileCheckpointStorage(folder)``: a checkpoint per
superstep, a JSON file each.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass

from agent_framework import (
    Executor,
    FileCheckpointStorage,
    WorkflowBuilder,
    WorkflowContext,
    handler,
)

from bench.peers.common import Peer, PeerWorkload

# The chain's self-loop is intended; keep the builder's warning about it out of the output.
logging.getLogger("agent_framework._workflows._validation").setLevel(logging.ERROR)

MAX_SUPERSTEPS = 1_000_000


@dataclass
class Ping:
    """One hop."""

    n: int
    hops: int


@dataclass
class Item:
    """One unit of work."""

    i: int
    n: int


@dataclass
class Result:
    """One worker's answer."""

    i: int
    n: int


class ChainStart(Executor):
    """W1: turns the hop count into the first Ping."""

    @handler
    async def start(self, hops: int, ctx: WorkflowContext[Ping]) -> None:
        await ctx.send_message(Ping(n=0, hops=hops))


class Hop(Executor):
    """W1: one hop; sends the next Ping to itself, or yields the count."""

    @handler
    async def hop(self, ev: Ping, ctx: WorkflowContext[Ping, int]) -> None:
        if ev.n + 1 >= ev.hops:
            await ctx.yield_output(ev.n + 1)
        else:
            await ctx.send_message(Ping(n=ev.n + 1, hops=ev.hops))


class FanStart(Executor):
    """W2: sends ``n`` items."""

    @handler
    async def start(self, n: int, ctx: WorkflowContext[Item]) -> None:
        for i in range(n):
            await ctx.send_message(Item(i=i, n=n))


class Work(Executor):
    """W2: answers one item."""

    @handler
    async def work(self, ev: Item, ctx: WorkflowContext[Result]) -> None:
        await ctx.send_message(Result(i=ev.i, n=ev.n))


class Gather(Executor):
    """W2: holds answers until all ``n`` arrived, then yields how many."""

    def __init__(self, id: str) -> None:
        super().__init__(id=id)
        self.held: list[Result] = []

    @handler
    async def gather(self, ev: Result, ctx: WorkflowContext[None, int]) -> None:
        self.held.append(ev)
        if len(self.held) == ev.n:
            got, self.held = self.held, []
            await ctx.yield_output(len(got))


class StepOne(Executor):
    """W3: the first of three steps."""

    @handler
    async def one(self, x: int, ctx: WorkflowContext[int]) -> None:
        await ctx.send_message(x)


class StepTwo(Executor):
    """W3: the second of three steps."""

    @handler
    async def two(self, x: int, ctx: WorkflowContext[int]) -> None:
        await ctx.send_message(x + 1)


class StepThree(Executor):
    """W3: the third of three steps."""

    @handler
    async def three(self, x: int, ctx: WorkflowContext[None, int]) -> None:
        await ctx.yield_output(x + 1)


def load() -> Peer:
    """Build the workflows once and return the peer with its runners."""
    start, hop = ChainStart(id="start"), Hop(id="hop")
    chain_wf = (
        WorkflowBuilder(max_iterations=MAX_SUPERSTEPS, start_executor=start)
        .add_edge(start, hop)
        .add_edge(hop, hop)
        .build()
    )
    folder = tempfile.mkdtemp(prefix="bench-agent-framework-")
    durable_start, durable_hop = ChainStart(id="start"), Hop(id="hop")
    durable_wf = (
        WorkflowBuilder(
            max_iterations=MAX_SUPERSTEPS,
            start_executor=durable_start,
            checkpoint_storage=FileCheckpointStorage(
                folder, allowed_checkpoint_types=[f"{Ping.__module__}:{Ping.__qualname__}"]
            ),
        )
        .add_edge(durable_start, durable_hop)
        .add_edge(durable_hop, durable_hop)
        .build()
    )
    fan, work, gather = FanStart(id="start"), Work(id="work"), Gather(id="gather")
    fan_wf = WorkflowBuilder(start_executor=fan).add_edge(fan, work).add_edge(work, gather).build()
    one, two, three = StepOne(id="one"), StepTwo(id="two"), StepThree(id="three")
    three_wf = WorkflowBuilder(start_executor=one).add_chain([one, two, three]).build()

    async def chain(hops: int) -> None:
        outputs = (await chain_wf.run(hops)).get_outputs()
        assert outputs == [hops], outputs

    async def durable_chain(hops: int) -> None:
        outputs = (await durable_wf.run(hops)).get_outputs()
        assert outputs == [hops], outputs

    async def close() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    async def fan_out(n: int) -> None:
        outputs = (await fan_wf.run(n)).get_outputs()
        assert outputs == [n], outputs

    async def startup(runs: int) -> None:
        for _ in range(runs):
            outputs = (await three_wf.run(0)).get_outputs()
            assert outputs == [2], outputs

    return Peer(
        name="agent-framework-core",
        dist="agent-framework-core",
        workloads={
            "w1": PeerWorkload(chain),
            "w2": PeerWorkload(fan_out),
            "w3": PeerWorkload(startup),
            "w1d": PeerWorkload(durable_chain, note="FileCheckpointStorage", reps=5),
        },
        close=close,
    )
