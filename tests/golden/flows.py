"""The workflows behind the golden journals, and how each one is played.

Every flow is defined at module level (a journal names its classes by module path) and
runs on a ``FakeClock`` with a fixed start, so its ticks carry reproducible times. Each
``FLOWS`` entry gives the workflow object to build and a coroutine that plays one run
of it (starting it, answering it, awaiting it) and returns its handler.

Together they cover both delivery modes, both authoring styles, retries with backoff,
waits (answered and timed out), requests for information, fan-out and fan-in, reducers,
a run timeout, a stall and a step failure: everything the kernel folds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from stepgraph import (
    Case,
    Context,
    Default,
    Event,
    Executor,
    GraphWorkflow,
    HumanResponseEvent,
    InputRequiredEvent,
    RequestInfoEvent,
    RetryPolicy,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowHandler,
    handler,
    response_handler,
    step,
)
from stepgraph.journal import Journal
from stepgraph.state import add, append
from stepgraph.stores import MemoryStore
from stepgraph.testing import FakeClock, crash

CLOCK_START = 1_800_000_000.0
"""The wall time every golden run starts at (virtual time 0 of its FakeClock)."""


# -- @step: fan-out, a thread step, fan-in -------------------------------------------------------


class Fan(StartEvent):
    n: int


class Item(Event):
    i: int


class Squared(Event):
    value: int


class FanOutFanIn(Workflow):
    """Fan out ``n`` items to a 3-worker step, square them in a thread, collect them all."""

    @step
    async def fan_out(self, ctx: Context, ev: Fan) -> None:
        for i in range(ev.n):
            ctx.send_event(Item(i=i))

    @step(num_workers=3)
    def square(self, ev: Item) -> Squared:  # a plain def: runs in a thread
        return Squared(value=ev.i * ev.i)

    @step
    async def gather(self, ctx: Context, ev: Squared) -> StopEvent | None:
        batch = ctx.collect_events(ev, [Squared] * 4)
        if batch is None:
            return None
        return StopEvent(result=sorted(e.value for e in batch))


# -- @step: retries with backoff ----------------------------------------------------------------


class Fetched(Event):
    attempt: int


class Flaky(Workflow):
    """``fetch`` fails twice (backing off 0.5 s, then 1 s), then succeeds."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Item:
        return Item(i=7)

    @step(retry_policy=RetryPolicy(max_attempts=3, backoff=0.5), timeout=10)
    async def fetch(self, ctx: Context, ev: Item) -> StopEvent:
        attempt = await ctx.store.update("attempts", lambda n: (n or 0) + 1)
        if attempt < 3:
            raise ConnectionError(f"attempt {attempt}")
        return StopEvent(result=(ev.i, attempt))


# -- @step: waits, answered and timed out -------------------------------------------------------


class Noted(Event):
    text: str


class AskTheCaller(Workflow):
    """Asks for a name and waits for it, while ``note`` times out once waiting in vain.

    ``ask`` sends a Noted before it waits (delivered before the wait begins), then waits
    for a second answer that never comes (its wait times out after 5 s). ``note``'s first
    attempt waits for an event that never comes until its own 3 s timeout abandons the
    wait; its retry records the note.
    """

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.send_event(Noted(text="asking"))
        ctx.write_event_to_stream(InputRequiredEvent(prefix="name?"))
        answer = await ctx.wait_for_event(HumanResponseEvent, timeout=60)
        try:
            await ctx.wait_for_event(Item, timeout=5)
        except TimeoutError:
            noted = await ctx.store.get("noted")
            return StopEvent(result=f"hello {answer.response}, nobody else; noted {noted}")
        return StopEvent(result="unexpected")

    @step(timeout=3, retry_policy=RetryPolicy(max_attempts=2))
    async def note(self, ctx: Context, ev: Noted) -> None:
        attempt = await ctx.store.update("note_attempts", lambda n: (n or 0) + 1)
        if attempt == 1:
            await ctx.wait_for_event(Fetched, timeout=None)  # abandoned by the step timeout
        await ctx.store.set("noted", ev.text)


# -- @step: reducers, plain writes and deletes --------------------------------------------------


class Note(Event):
    text: str


class Ledger(Workflow):
    """Three writers append to ``log`` and add to ``total`` in one superstep; then it reads."""

    reducers = {"log": append, "total": add}

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        await ctx.store.set("scratch", 1)
        for text in ("a", "b", "c"):
            ctx.send_event(Note(text=text))

    @step(num_workers=3)
    async def write(self, ctx: Context, ev: Note) -> Item:
        await ctx.store.set("log", ev.text)
        await ctx.store.set("total", len(ev.text))
        async with ctx.store.edit() as state:
            state["last"] = ev.text
        return Item(i=ord(ev.text))

    @step
    async def read(self, ctx: Context, ev: Item) -> StopEvent | None:
        if ctx.collect_events(ev, [Item, Item, Item]) is None:
            return None
        await ctx.store.delete("scratch")
        return StopEvent(result=(await ctx.store.get("log"), await ctx.store.get("total")))


# -- @step: a stall, a failure, a timeout -------------------------------------------------------


class Stuck(Workflow):
    """The collector waits for two items and gets one: the run stalls."""

    @step
    async def start(self, ev: StartEvent) -> Item:
        return Item(i=1)

    @step
    async def gather(self, ctx: Context, ev: Item) -> StopEvent | None:
        if ctx.collect_events(ev, [Item, Item]) is None:
            return None
        return StopEvent(result="never")


class Broken(Workflow):
    """A step raises: the run fails with the step's own error."""

    @step
    async def start(self, ev: StartEvent) -> Item:
        return Item(i=1)

    @step
    async def explode(self, ev: Item) -> StopEvent:
        raise ValueError(f"bad item {ev.i}")


class Slow(Workflow):
    """A step that never finishes: the run's own timeout, or the caller, ends it."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Item(i=0))
        await asyncio.Event().wait()
        return StopEvent(result="never")


# -- executor graphs: a switch, fan-out/fan-in, a request, reducers -----------------------------


@dataclass(frozen=True)
class Ticket:
    """A support ticket: where it goes depends on its kind."""

    kind: str
    text: str


class Classify(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext[Ticket]) -> None:
        kind = "billing" if "refund" in text else "general"
        await ctx.send_message(Ticket(kind=kind, text=text))
        await ctx.store.set("seen", text)


class Billing(Executor):
    @handler
    async def on_ticket(self, ticket: Ticket, ctx: WorkflowContext[str]) -> None:
        await ctx.request_info(ticket.text, response_type=int)

    @response_handler
    async def on_amount(self, text: str, amount: int, ctx: WorkflowContext[str]) -> None:
        await ctx.send_message(f"refund {amount}")


class General(Executor):
    @handler
    async def on_ticket(self, ticket: Ticket, ctx: WorkflowContext[str]) -> None:
        await ctx.send_message(f"answered {ticket.text}")


class Reply(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext[Any]) -> None:
        await ctx.yield_output(text)


def _is_billing(ticket: Ticket) -> bool:
    return ticket.kind == "billing"


def triage(mode: str, journal: Journal) -> GraphWorkflow:
    """classify -> switch(billing | general) -> reply; billing asks the caller for an amount."""
    classify, billing, general, reply = (
        Classify(id="classify"),
        Billing(id="billing"),
        General(id="general"),
        Reply(id="reply"),
    )
    return (
        WorkflowBuilder(start=classify, name="triage")
        .add_switch(classify, [Case(condition=_is_billing, target=billing), Default(general)])
        .add_edge(billing, reply)
        .add_edge(general, reply)
        .build(mode=mode, journal=journal, clock=FakeClock(start=CLOCK_START))
    )


class Split(Executor):
    @handler
    async def on_words(self, words: list[str], ctx: WorkflowContext[str]) -> None:
        for word in words:
            await ctx.send_message(word)


class Count(Executor):
    @handler
    async def on_word(self, word: str, ctx: WorkflowContext[int]) -> None:
        await ctx.store.set("lengths", len(word))
        await ctx.send_message(len(word))


class Total(Executor):
    @handler
    async def on_counts(self, counts: list[int], ctx: WorkflowContext[Any]) -> None:
        await ctx.yield_output(sum(counts))


def map_reduce(mode: str, journal: Journal) -> GraphWorkflow:
    """split -> two counters (fan-out) -> total (fan-in), lengths kept with a reducer."""
    split, total = Split(id="split"), Total(id="total")
    counters = [Count(id="count_a"), Count(id="count_b")]
    return (
        WorkflowBuilder(start=split, name="map-reduce", reducers={"lengths": append})
        .add_fan_out(split, counters)
        .add_fan_in(counters, total)
        .build(mode=mode, journal=journal, clock=FakeClock(start=CLOCK_START))
    )


# -- @step, durable: a pause, a crash, a resume ---------------------------------------------------


class Interview(Workflow):
    """Asks for a name (the run pauses), then greets; its process dies while it waits."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        await ctx.store.set("asked", "name?")
        return InputRequiredEvent(prefix="name?")

    @step
    async def greet(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hello {ev.response}")


# -- how each flow is played --------------------------------------------------------------------


async def _plain(wf: Any, start: Any) -> WorkflowHandler:
    handler = wf.run(start) if isinstance(wf, GraphWorkflow) else wf.run(start_event=start)
    with contextlib.suppress(Exception):  # a failing flow fails on purpose: its journal counts
        await handler
    return handler


async def _cancel_once_running(wf: Any, start: Any) -> WorkflowHandler:
    handler = wf.run(start_event=start)
    async for event in handler.stream_events():
        if isinstance(event, Item):  # the step is running: cancel the run
            await handler.cancel()
    with contextlib.suppress(Exception):
        await handler
    return handler


async def _answer_the_caller(wf: Any, start: Any) -> WorkflowHandler:
    handler = wf.run(start_event=start)
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.send_event(HumanResponseEvent(response="Ada"))
    await handler
    return handler


async def _crash_while_paused_and_resume(wf: Any, start: Any) -> WorkflowHandler:
    handler = wf.run(start_event=start)
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            break
    await crash(handler)  # the process dies while the run waits for its answer
    resumed = wf.resume(handler.run_id)
    async for event in resumed.stream_events():
        if isinstance(event, InputRequiredEvent):  # announced again to the new process
            resumed.send_event(HumanResponseEvent(response="Ada", request_id=event.request_id))
    await resumed
    return resumed


async def _answer_requests(wf: Any, start: Any) -> WorkflowHandler:
    handler = wf.run(start)
    async for event in handler.stream_events():
        if isinstance(event, RequestInfoEvent):
            await handler.send_response(event.request_id, 42)
    await handler
    return handler


@dataclass(frozen=True)
class Flow:
    """One golden flow: the workflow it runs, its first message, and how a run is played."""

    make: Callable[[Journal], Any]
    start: Callable[[], Any]
    play: Callable[[Any, Any], Awaitable[WorkflowHandler]]


def _steps(cls: type[Workflow], **options: Any) -> Callable[[Journal], Workflow]:
    def make(journal: Journal) -> Workflow:
        return cls(journal=journal, clock=FakeClock(start=CLOCK_START), **options)

    return make


def _graph(
    build: Callable[[str, Journal], GraphWorkflow], mode: str
) -> Callable[[Journal], GraphWorkflow]:
    return lambda journal: build(mode, journal)


FLOWS: dict[str, Flow] = {
    "steps_fan_in_superstep": Flow(_steps(FanOutFanIn), lambda: Fan(n=4), _plain),
    "steps_fan_in_async": Flow(
        _steps(FanOutFanIn, mode="async", max_concurrency=3), lambda: Fan(n=4), _plain
    ),
    "steps_retry_backoff": Flow(_steps(Flaky), StartEvent, _plain),
    "steps_waits_async": Flow(_steps(AskTheCaller, mode="async"), StartEvent, _answer_the_caller),
    "steps_reducers": Flow(_steps(Ledger), StartEvent, _plain),
    "steps_stall": Flow(_steps(Stuck), StartEvent, _plain),
    "steps_failure_async": Flow(_steps(Broken, mode="async"), StartEvent, _plain),
    "steps_run_timeout": Flow(_steps(Slow, timeout=30), StartEvent, _plain),
    "steps_cancelled_async": Flow(_steps(Slow, mode="async"), StartEvent, _cancel_once_running),
    "steps_resumed_after_crash": Flow(
        _steps(Interview, store=MemoryStore()), StartEvent, _crash_while_paused_and_resume
    ),
    "graph_requests_superstep": Flow(
        _graph(triage, "superstep"), lambda: "please refund me", _answer_requests
    ),
    "graph_fan_in_reducers_async": Flow(
        _graph(map_reduce, "async"), lambda: ["stepgraph", "folds", "ticks"], _plain
    ),
}
"""The golden flows, by the name of their journal file (``tests/golden/<name>.jsonl``)."""
