"""Plain-asyncio baselines: the same logical work as each workload, with no engine.

Each baseline builds the same pydantic messages as the stepgraph workload, so that the ratio
measures what the engine adds (routing, scheduling, bookkeeping), not model construction.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    """Like a stepgraph event: a pydantic model that keeps extra attributes."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)


class Ping(Message):
    """One hop of the chain."""

    n: int
    hops: int


class Item(Message):
    """One item of the fan-out."""

    i: int
    n: int


class Result(Message):
    """One worker's answer."""

    i: int
    n: int


class First(Message):
    """Output of the first of three steps."""

    x: int


class Second(Message):
    """Output of the second of three steps."""

    x: int


# W1: one asyncio Task per hop ----------------------------------------------------------------


async def _next_ping(ev: Ping) -> Ping:
    return Ping(n=ev.n + 1, hops=ev.hops)


async def chain_task_per_hop(hops: int) -> None:
    """``asyncio_task``: each hop awaits a new Task whose coroutine builds the next message."""
    ev = Ping(n=0, hops=hops)
    for _ in range(hops):
        ev = await asyncio.create_task(_next_ping(ev))
    assert ev.n == hops, ev


# W2: asyncio.gather of one coroutine per item --------------------------------------------------


async def _work(ev: Item) -> Result:
    return Result(i=ev.i, n=ev.n)


async def fan_out_gather(n: int) -> None:
    """``asyncio_gather``: build ``n`` items, gather one coroutine per item, keep all results."""
    items = [Item(i=i, n=n) for i in range(n)]
    results = await asyncio.gather(*(_work(item) for item in items))
    assert len(results) == n, len(results)


# W3: one Task per run of three steps -----------------------------------------------------------


async def _step_one() -> First:
    return First(x=0)


async def _step_two(ev: First) -> Second:
    return Second(x=ev.x + 1)


async def _step_three(ev: Second) -> int:
    return ev.x + 1


async def _three_steps() -> int:
    return await _step_three(await _step_two(await _step_one()))


async def startup_task_per_run(runs: int) -> None:
    """``asyncio_task``: ``runs`` sequential Tasks, each awaiting the three steps' coroutines."""
    for _ in range(runs):
        result = await asyncio.create_task(_three_steps())
        assert result == 2, result
