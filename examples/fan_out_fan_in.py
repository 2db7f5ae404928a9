"""Fan out N work items to a pool of 4 workers, then fan in their results.

``ctx.send_event`` emits one ``Job`` per item; the ``square`` step takes up to
four jobs at once (``num_workers=4``); ``gather`` holds the results with
``ctx.collect_events(ev, [Result] * n)`` until all ``n`` have arrived, and only
then ends the run.

Run it with ``python examples/fan_out_fan_in.py``.
"""

from __future__ import annotations

import asyncio

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step


class Numbers(StartEvent):
    """The run's arguments: the numbers to square."""

    values: list[int]


class Job(Event):
    """One work item."""

    index: int
    value: int


class Result(Event):
    """One finished work item."""

    index: int
    square: int


class FanOutFanIn(Workflow):
    """split -> square (x4 in parallel) -> gather."""

    @step
    async def split(self, ctx: Context, ev: Numbers) -> None:
        await ctx.store.set("expected", len(ev.values))
        for index, value in enumerate(ev.values):
            ctx.send_event(Job(index=index, value=value))

    @step(num_workers=4)
    async def square(self, ctx: Context, ev: Job) -> Result:
        running = await ctx.store.update("running", lambda n: (n or 0) + 1)
        await ctx.store.update("peak", lambda peak: max(peak or 0, running))
        await asyncio.sleep(0)  # stand-in for real work: let the other workers start
        await ctx.store.update("running", lambda n: n - 1)
        return Result(index=ev.index, square=ev.value * ev.value)

    @step
    async def gather(self, ctx: Context, ev: Result) -> StopEvent | None:
        n = await ctx.store.get("expected")
        results = ctx.collect_events(ev, [Result] * n)
        if results is None:
            return None  # not all results yet
        squares = [r.square for r in sorted(results, key=lambda r: r.index)]
        return StopEvent(result={"squares": squares, "peak_workers": await ctx.store.get("peak")})


async def fan_out_fan_in(values: list[int]) -> dict[str, object]:
    """Square ``values`` in parallel; return the squares (in input order) and peak parallelism."""
    result: dict[str, object] = await FanOutFanIn(timeout=10).run(values=values)
    return result


def main() -> None:
    values = list(range(1, 11))
    result = asyncio.run(fan_out_fan_in(values))
    print(f"inputs:       {values}")
    print(f"squares:      {result['squares']}")
    print(f"peak workers: {result['peak_workers']} (num_workers=4)")


if __name__ == "__main__":
    main()
