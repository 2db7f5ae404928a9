"""Workflows of the distributed tests (module level: workers import them by name).

``LOG`` (the environment variable ``STEPGRAPH_TEST_EXEC_LOG``) is an execution log: each
step appends ``<run id> <step>`` to it, one line per execution (O_APPEND: lines of
several processes never mix), so a test counts what ran, where and how often.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

from stepgraph import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    Limiter,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)

CALLS: Counter[str] = Counter()
"""In-process executions, by ``"<tag>:<step>"``."""

GATES: dict[str, asyncio.Event] = {}
"""Gates a step waits on, by tag (in-process tests)."""

_REACHED: dict[str, asyncio.Event] = {}


def reached(key: str) -> asyncio.Event:
    """Set once ``CALLS[key]`` has counted an execution (in-process tests)."""
    return _REACHED.setdefault(key, asyncio.Event())


def _count(key: str) -> None:
    CALLS[key] += 1
    reached(key).set()


def _append(line: str) -> None:
    """Append ``line`` to the execution log, if there is one (one write: lines never mix)."""
    path = os.environ.get("STEPGRAPH_TEST_EXEC_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)


def _log(ctx: Context, name: str) -> None:
    _append(f"{ctx.run_id} {name} {os.getpid()}")


class Go(StartEvent):
    n: int = 0
    tag: str = ""
    pause: float = 0.0  # seconds each step takes (multi-process tests)


class Hop(Event):
    n: int


class Progress(Event):
    n: int


class Three(Workflow):
    """Three supersteps (a -> b -> c); streams a Progress per step; the result is n + 3."""

    @step
    async def a(self, ctx: Context, ev: Go) -> Hop:
        _log(ctx, "a")
        CALLS[f"{ev.tag}:a"] += 1
        ctx.write_event_to_stream(Progress(n=1))
        await ctx.store.set("pause", ev.pause)
        if ev.pause:
            await asyncio.sleep(ev.pause)
        return Hop(n=ev.n + 1)

    @step
    async def b(self, ctx: Context, ev: Hop) -> Progress:
        _log(ctx, "b")
        ctx.write_event_to_stream(Progress(n=2))
        pause = await ctx.store.get("pause", 0.0)
        if pause:
            await asyncio.sleep(pause)
        return Progress(n=ev.n + 1)

    @step
    async def c(self, ctx: Context, ev: Progress) -> StopEvent:
        _log(ctx, "c")
        ctx.write_event_to_stream(Progress(n=3))
        return StopEvent(result=ev.n + 1)


class Asks(Workflow):
    """Asks the caller a question and returns the answer."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="name?")

    @step
    async def answer(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hello {ev.response}")


class Gated(Workflow):
    """Superstep 0: ``quick`` ends at once, ``slow`` waits on the tag's gate; superstep 1:
    ``last``. For graceful shutdown: the superstep in flight completes and commits."""

    @step
    async def start(self, ctx: Context, ev: Go) -> Hop | None:
        CALLS[f"{ev.tag}:start"] += 1
        ctx.send_event(Hop(n=0))
        ctx.send_event(Hop(n=1))
        await ctx.store.set("tag", ev.tag)
        return None

    @step(num_workers=2)
    async def work(self, ctx: Context, ev: Hop) -> Progress:
        tag = await ctx.store.get("tag")
        _count(f"{tag}:work{ev.n}")
        if ev.n == 1:
            gate = GATES.get(tag)
            if gate is not None:
                await gate.wait()
        return Progress(n=ev.n)

    @step
    async def last(self, ctx: Context, ev: Progress) -> StopEvent | None:
        done = ctx.collect_events(ev, [Progress, Progress])
        if done is None:
            return None
        tag = await ctx.store.get("tag")
        CALLS[f"{tag}:last"] += 1
        return StopEvent(result=sorted(e.n for e in done))


class Renamed(Workflow):
    """Runs stored under Three's name by code whose steps differ (a deploy changed it)."""

    @step
    async def other(self, ctx: Context, ev: Go) -> StopEvent:
        return StopEvent(result="changed")


class Limited(Workflow):
    """One step holding the limiter "shared-llm"; logs ``<run> hold <pid> <start> <end>``."""

    @step(limiter="shared-llm")
    async def call(self, ctx: Context, ev: Go) -> StopEvent:
        import time

        started = time.time()
        await asyncio.sleep(ev.pause)
        _append(f"{ctx.run_id} hold {os.getpid()} {started} {time.time()}")
        return StopEvent(result=ev.n)


LLM = Limiter("shared-llm", max_concurrency=3, rate="10/s")
limited = Limited(limiters=[LLM])
"""What the limiter tests' workers run: bound to their store, the limit holds across them."""


class Opaque(Event):
    """An event JSON cannot hold (a function in it)."""

    model_config = {"arbitrary_types_allowed": True}
    thing: object


class StreamsOpaque(Workflow):
    @step
    async def leak(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Opaque(thing=lambda: 1))
        return StopEvent(result="never stored")


class Stranger(Workflow):
    """One step; served by some workers only."""

    @step
    async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result="stranger")


SAME_NAME_TWICE = {"x": Three(name="dup"), "y": Stranger(name="dup")}
"""A registry naming two different workflows alike: a worker refuses it."""
