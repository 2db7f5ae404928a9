"""Workflows of the durability tests (module level: stored events name their classes).

A run can be held at a chosen hop (``stop_at``): that step waits on a gate the test opens
only after it has crashed the run, so "crash at superstep k" needs no timing. ``CALLS``
counts how often each step ran on each message, to see what ran again after a resume.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from typing import Any, TypeVar

import pytest

from stepgraph import (
    Context,
    Event,
    Executor,
    HumanResponseEvent,
    InputRequiredEvent,
    RetryPolicy,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowExecutor,
    handler,
    response_handler,
    step,
)
from stepgraph.errors import WorkflowCancelled
from stepgraph.testing import crash

GATES: dict[str, asyncio.Event] = {}
"""Gates by run tag: a step held at ``stop_at`` waits for its tag's gate."""

CALLS: Counter[str] = Counter()
"""How often each step ran, by ``"<tag>:<step>:<what>"``."""

ACTIVE: Counter[str] = Counter()
"""How many of a run's ``Limited.work`` bodies are running now, by tag."""

STARTS: dict[str, list[str]] = {}
"""The steps of a ``Mixed`` run in the order they started, by tag."""


Asked = TypeVar("Asked")


async def asked(handler: Any, kind: type[Asked] = InputRequiredEvent) -> Asked:  # type: ignore[assignment]
    """The first ``kind`` (a request for input) the run of ``handler`` streams."""
    async with asyncio.timeout(10):  # (a guard against a hang only)
        async for event in handler.stream_events():
            if isinstance(event, kind):
                return event
    raise AssertionError(f"the run ended before it streamed a {kind.__name__}")


async def crashed_once(handler: Any, kind: type, n: int | None = None) -> object:
    """Crash the run of ``handler`` once it has streamed a ``kind`` (with ``n``, if given);
    return that event."""
    async for event in handler.stream_events():
        if isinstance(event, kind) and (n is None or getattr(event, "n", None) == n):
            break
    else:
        raise AssertionError(f"the run ended before it streamed a {kind.__name__}")
    await crash(handler)
    with pytest.raises(WorkflowCancelled):
        await handler
    return event


def gate(tag: str) -> asyncio.Event:
    """A new, closed gate for ``tag`` (in the running loop)."""
    GATES[tag] = asyncio.Event()
    return GATES[tag]


class Go(StartEvent):
    tag: str
    hops: int = 5
    stop_at: int = -1


class Hop(Event):
    n: int


class Reached(Event):
    """Streamed by each hop as it starts (the test crashes the run when it sees one)."""

    n: int


class Chain(Workflow):
    """Hops 0..hops, one a superstep; the result is the sum of the hop numbers."""

    @step
    async def start(self, ctx: Context, ev: Go) -> Hop:
        CALLS[f"{ev.tag}:start"] += 1
        await ctx.store.set("plan", {"tag": ev.tag, "hops": ev.hops, "stop_at": ev.stop_at})
        return Hop(n=0)

    @step
    async def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:
        plan = await ctx.store.get("plan")
        CALLS[f"{plan['tag']}:hop:{ev.n}"] += 1
        ctx.write_event_to_stream(Reached(n=ev.n))
        if ev.n == plan["stop_at"]:
            await GATES[plan["tag"]].wait()
        total = await ctx.store.update("total", lambda t: (t or 0) + ev.n)
        if ev.n >= plan["hops"]:
            return StopEvent(result=total)
        return Hop(n=ev.n + 1)


class Interview(Workflow):
    """Asks for a name (the run pauses for input), then greets."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        CALLS[f"{ctx.run_id}:ask"] += 1
        return InputRequiredEvent(prefix="name?")

    @step
    async def greet(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        CALLS[f"{ctx.run_id}:greet"] += 1
        return StopEvent(result=f"hello {ev.response}")


class Waiting(Workflow):
    """One step asks and waits for the answer inside the step (``wait_for_event``)."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        CALLS[f"{ctx.run_id}:ask"] += 1
        await ctx.store.set("asked", True)
        ctx.write_event_to_stream(InputRequiredEvent(prefix="name?"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=f"hello {answer.response}")


class NumberedQuestion(Workflow):
    """Asks a question whose id is an integer of its own, and waits for the answer."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="name?", request_id=7))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=f"hello {answer.response}")


class Held(Workflow):
    """One step, which returns the id of its process; in a process with
    ``STEPGRAPH_TEST_HOLD=1`` (``race_child``), it prints ``began`` and returns once a line
    comes on stdin."""

    @step
    async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
        CALLS[f"{ctx.run_id}:only"] += 1
        if os.environ.get("STEPGRAPH_TEST_HOLD") == "1":
            print("began", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        return StopEvent(result=f"from {os.getpid()}")


class Item(Event):
    i: int


class Done(Event):
    i: int


class Fan(Workflow):
    """One superstep of four parallel workers between a fan-out and a fan-in."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        for i in range(4):
            ctx.send_event(Item(i=i))

    @step(num_workers=4)
    async def work(self, ctx: Context, ev: Item) -> Done:
        await ctx.store.set(f"worked:{ev.i}", ev.i * ev.i)
        return Done(i=ev.i)

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        batch = ctx.collect_events(ev, [Done] * 4)
        if batch is None:
            return None
        return StopEvent(result=sorted(d.i for d in batch))


class Joined(Event):
    """Streamed by ``Limited.join`` as it takes a worker's result."""

    n: int


class Limited(Workflow):
    """Four workers for a run under ``max_concurrency`` (give it): the one on item ``i``
    waits while the gate ``"<tag>:<i>"`` is closed (``gate(f"{tag}:{i}")``); ``join``
    gathers the four and streams a ``Joined`` for each."""

    @step
    async def start(self, ctx: Context, ev: Go) -> None:
        await ctx.store.set("tag", ev.tag)
        for i in range(4):
            ctx.send_event(Item(i=i))

    @step(num_workers=4)
    async def work(self, ctx: Context, ev: Item) -> Done:
        tag = await ctx.store.get("tag")
        CALLS[f"{tag}:work:{ev.i}"] += 1
        ACTIVE[tag] += 1
        try:
            ctx.write_event_to_stream(Reached(n=ev.i))
            held = GATES.get(f"{tag}:{ev.i}")
            if held is not None:
                await held.wait()
        finally:
            ACTIVE[tag] -= 1
        return Done(i=ev.i)

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        ctx.write_event_to_stream(Joined(n=ev.i))
        batch = ctx.collect_events(ev, [Done] * 4)
        return None if batch is None else StopEvent(result=sorted(d.i for d in batch))


class Keys(Workflow):
    """Records each attempt's idempotency key; the first attempt of ``flaky`` fails."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Item:
        await ctx.store.set("start_key", ctx.idempotency_key)
        return Item(i=1)

    @step(retry_policy=None)
    async def flaky(self, ctx: Context, ev: Item) -> StopEvent:
        keys = await ctx.store.update("flaky_keys", lambda k: [*(k or []), ctx.idempotency_key])
        return StopEvent(result=keys)


class Asker(Executor):
    """Asks the caller for a number, then yields the question with the answer."""

    @handler
    async def on_question(self, question: str, ctx: WorkflowContext[str]) -> None:
        await ctx.store.set("asked", question)
        await ctx.request_info(question, int)

    @response_handler
    async def on_answer(self, question: str, answer: int, ctx: WorkflowContext[str]) -> None:
        await ctx.yield_output((question, answer))


def asker_graph(**options: object) -> object:
    """A one-executor graph that pauses on a request for information."""
    return WorkflowBuilder(start=Asker(id="asker"), name="asker").build(**options)  # type: ignore[arg-type]


class Show(Executor):
    """Yields what the sub-workflow sent on."""

    @handler
    async def show(self, pair: tuple[str, int], ctx: WorkflowContext[object]) -> None:
        CALLS[f"{ctx.run_id}:show"] += 1
        await ctx.yield_output(pair)


def nested_asker_graph(**options: object) -> object:
    """``asker_graph`` as a sub-workflow (its requests go to the outer caller), then
    ``show``."""
    inner = WorkflowBuilder(start=Asker(id="asker"), name="inner").build()
    sub = WorkflowExecutor(inner, id="sub")
    builder = WorkflowBuilder(start=sub, name="outer").add_edge(sub, Show(id="show"))
    return builder.build(**options)  # type: ignore[arg-type]


class TwoQuestions(Workflow):
    """One step asks twice, waiting for each answer; the result joins them."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="first?"))
        first = await ctx.wait_for_event(HumanResponseEvent)
        ctx.write_event_to_stream(InputRequiredEvent(prefix="second?"))
        second = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=f"{first.response}+{second.response}")


class TwoAskers(Workflow):
    """Two steps each ask and wait, in one superstep; the result is the first answer taken."""

    @step
    async def ask_a(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="a?"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=answer.response)

    @step
    async def ask_b(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="b?"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=answer.response)


class ApproveBatch(Fan):
    """Fan, whose ``join``, once it has the batch, asks the caller to approve it."""

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        batch = ctx.collect_events(ev, [Done] * 4)
        if batch is None:
            return None
        ctx.write_event_to_stream(InputRequiredEvent(prefix="approve?"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=[sorted(d.i for d in batch), answer.response])


class AskFirst(Fan):
    """Fan, whose ``join`` asks the caller once it has collected ``Done(0)``."""

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        batch = ctx.collect_events(ev, [Done] * 4)
        if ev.i == 0:
            ctx.write_event_to_stream(InputRequiredEvent(prefix="go on?"))
            await ctx.wait_for_event(HumanResponseEvent)
        return None if batch is None else StopEvent(result=sorted(d.i for d in batch))


class Side(Event):
    pass


async def _count(ctx: Context, ev: Hop) -> Hop | StopEvent:
    """A hop of ``Counter``: adds its number to ``total`` first, then holds while the
    gate ``"<tag>:<n>"`` is closed (a write the interrupted attempt made: undone on
    resume)."""
    plan = await ctx.store.get("plan")
    total = await ctx.store.update("total", lambda t: (t or 0) + ev.n)
    held = GATES.get(f"{plan['tag']}:{ev.n}")
    if held is not None:
        ctx.send_event(Side())  # (async mode: the start of ``side`` commits the write)
        ctx.write_event_to_stream(Reached(n=ev.n))
        await held.wait()
    return StopEvent(result=total) if ev.n >= plan["hops"] else Hop(n=ev.n + 1)


class Counter(Workflow):
    """Hops 0..hops adding up their numbers in the shared state."""

    @step
    async def start(self, ctx: Context, ev: Go) -> Hop:
        await ctx.store.set("plan", {"tag": ev.tag, "hops": ev.hops})
        return Hop(n=0)

    @step
    async def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:
        return await _count(ctx, ev)

    @step
    async def side(self, ctx: Context, ev: Side) -> None:
        return None


class CounterWide(Counter):
    """Counter, its ``hop`` with two workers (resume a Counter run with ``name="Counter"``)."""

    @step(num_workers=2)
    async def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:
        return await _count(ctx, ev)


class Fill(Event):
    pass


class Slow(Event):
    pass


class WithoutSlow(Workflow):
    """WithSlow without ``slow`` (resume a WithSlow run with ``name="WithSlow"``)."""

    @step
    async def start(self, ctx: Context, ev: Go) -> None:
        await ctx.store.set("tag", ev.tag)
        ctx.send_event(Slow())
        ctx.send_event(Fill())

    @step
    async def fill(self, ctx: Context, ev: Fill) -> StopEvent:
        return StopEvent(result="filled")


class WithSlow(WithoutSlow):
    """Under ``max_concurrency=1``: ``slow`` holds at its tag's gate, ``fill`` waits for
    the slot."""

    @step
    async def slow(self, ctx: Context, ev: Slow) -> None:
        ctx.write_event_to_stream(Reached(n=0))
        await GATES[await ctx.store.get("tag")].wait()


class Flaky(Workflow):
    """``flaky`` fails its first ``stop_at`` attempts, counted across crashes (three at
    most: its policy's)."""

    @step
    async def start(self, ctx: Context, ev: Go) -> Hop:
        await ctx.store.set("plan", {"tag": ev.tag, "fails": ev.stop_at})
        return Hop(n=0)

    @step(retry_policy=RetryPolicy(max_attempts=3, backoff=0.2))
    async def flaky(self, ctx: Context, ev: Hop) -> StopEvent:
        plan = await ctx.store.get("plan")
        CALLS[f"{plan['tag']}:flaky"] += 1
        attempt = CALLS[f"{plan['tag']}:flaky"]
        ctx.write_event_to_stream(Reached(n=attempt))
        if attempt <= plan["fails"]:
            raise ConnectionError(f"attempt {attempt} fails")
        return StopEvent(result=attempt)


class AddThenAsk(Workflow):
    """``work`` adds 10 to ``total`` (0 at the start), then asks the caller and waits."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Hop:
        await ctx.store.set("total", 0)
        return Hop(n=0)

    @step
    async def work(self, ctx: Context, ev: Hop) -> StopEvent:
        total = await ctx.store.update("total", lambda t: t + 10)
        ctx.write_event_to_stream(InputRequiredEvent(prefix="ok?"))
        await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=total)


class Mixed(Workflow):
    """A chain of hops beside three workers that ``join`` gathers; each step, as it
    starts, notes itself in ``STARTS[tag]`` and waits for its tag's gate."""

    @step
    async def start(self, ctx: Context, ev: Go) -> None:
        await ctx.store.set("tag", ev.tag)
        ctx.send_event(Hop(n=0))
        for i in range(3):
            ctx.send_event(Item(i=i))

    async def _held(self, ctx: Context, name: str) -> None:
        tag = await ctx.store.get("tag")
        STARTS.setdefault(tag, []).append(name)
        ctx.write_event_to_stream(Joined(n=len(STARTS[tag])))
        await GATES[tag].wait()

    @step(num_workers=3)
    async def work(self, ctx: Context, ev: Item) -> Done:
        await self._held(ctx, f"w{ev.i}")
        return Done(i=ev.i)

    @step
    async def hop(self, ctx: Context, ev: Hop) -> Hop | None:
        await self._held(ctx, f"h{ev.n}")
        return Hop(n=ev.n + 1) if ev.n < 3 else None

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        batch = ctx.collect_events(ev, [Done] * 3)
        return None if batch is None else StopEvent(result=sorted(d.i for d in batch))
