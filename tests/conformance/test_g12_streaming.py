"""G12 streaming: stream events arrive in emission order per step, none lost, then it closes.

``ctx.write_event_to_stream`` feeds ``handler.stream_events()``: each step's events
arrive in the order it wrote them (also from sync steps running in a thread), the
last event is the StopEvent, InputRequiredEvent appears on it, and the stream ends,
without hanging, when the run fails or is cancelled.
"""

import asyncio

from _helpers_b import both_modes, drain, failure, finish, wait_until

from stepgraph import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from stepgraph.errors import WorkflowCancelled


class Go(Event):
    pass


class Written(Event):
    pass


class Progress(Event):
    source: str
    i: int


class Boom(Exception):
    """The step author's own failure."""


PER_STEP = 500


class TwoWriters(Workflow):
    """Two steps write PER_STEP progress events each, interleaving, then the run stops."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(Go(), step="alpha")
        ctx.send_event(Go(), step="beta")

    @step
    async def alpha(self, ctx: Context, ev: Go) -> Written:
        for i in range(PER_STEP):
            ctx.write_event_to_stream(Progress(source="alpha", i=i))
            if i % 10 == 0:
                await asyncio.sleep(0)  # yield so the two writers interleave
        return Written()

    @step
    async def beta(self, ctx: Context, ev: Go) -> Written:
        for i in range(PER_STEP):
            ctx.write_event_to_stream(Progress(source="beta", i=i))
            if i % 7 == 0:
                await asyncio.sleep(0)
        return Written()

    @step
    async def done(self, ctx: Context, ev: Written) -> StopEvent | None:
        if ctx.collect_events(ev, [Written, Written]) is None:
            return None
        return StopEvent(result="written")


@both_modes
async def test_stream_events_arrive_in_emission_order_per_step_none_lost(mode: str) -> None:
    handler = TwoWriters(mode=mode).run()
    events = await drain(handler)
    assert await finish(handler) == "written"
    assert len(events) == 2 * PER_STEP + 1
    assert isinstance(events[-1], StopEvent)
    assert events[-1].result == "written"
    progress = events[:-1]
    for source in ("alpha", "beta"):
        assert [e.i for e in progress if e.source == source] == list(range(PER_STEP))
    sources = [e.source for e in progress]
    assert sources != sorted(sources), "the two writers should interleave on the stream"


@both_modes
async def test_sync_thread_steps_stream_in_emission_order(mode: str) -> None:
    count = 300

    class SyncWriter(Workflow):
        @step
        def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
            for i in range(count):
                ctx.write_event_to_stream(Progress(source="thread", i=i))
            return StopEvent(result="from a thread")

    handler = SyncWriter(mode=mode).run()
    events = await drain(handler)
    assert await finish(handler) == "from a thread"
    assert [e.i for e in events[:-1]] == list(range(count))
    assert isinstance(events[-1], StopEvent)


@both_modes
async def test_stream_closes_when_the_run_fails(mode: str) -> None:
    class FailsMidway(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            for i in range(3):
                ctx.write_event_to_stream(Progress(source="start", i=i))
            raise Boom("midway")

    handler = FailsMidway(mode=mode).run()
    events = await drain(handler)  # ends without raising, and without hanging
    assert [e.i for e in events] == [0, 1, 2]
    exc = await failure(handler)
    assert isinstance(exc, Boom)


@both_modes
async def test_stream_closes_when_the_run_is_cancelled(mode: str) -> None:
    never = asyncio.Event()

    class Blocks(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Progress(source="start", i=0))
            await never.wait()
            return StopEvent(result="unreachable")

    handler = Blocks(mode=mode).run()
    seen: list[Event] = []
    async with asyncio.timeout(5):
        async for event in handler.stream_events():
            seen.append(event)
            await handler.cancel()  # cancel from inside the consumer loop
    assert [type(e) for e in seen] == [Progress]
    assert isinstance(await failure(handler), WorkflowCancelled)


@both_modes
async def test_input_required_event_appears_on_the_stream(mode: str) -> None:
    class Ask(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
            ctx.write_event_to_stream(Progress(source="ask", i=0))
            return InputRequiredEvent(prefix="colour?")

        @step
        async def answer(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent(result=ev.response)

    handler = Ask(mode=mode).run()
    seen: list[Event] = []
    async with asyncio.timeout(5):
        async for event in handler.stream_events():
            seen.append(event)
            if isinstance(event, InputRequiredEvent):
                handler.send_event(HumanResponseEvent(response="blue"))
    assert await finish(handler) == "blue"
    assert [type(e) for e in seen] == [Progress, InputRequiredEvent, StopEvent]
    assert seen[1].prefix == "colour?"


@both_modes
async def test_events_written_before_anyone_listens_are_kept(mode: str) -> None:
    wrote = asyncio.Event()

    class Early(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            for i in range(5):
                ctx.write_event_to_stream(Progress(source="early", i=i))
            wrote.set()
            return StopEvent(result="early")

    handler = Early(mode=mode).run()
    await wait_until(wrote, "the step wrote its events")
    assert await finish(handler) == "early"  # the run has ended before we start reading
    events = await drain(handler)
    assert [e.i for e in events[:-1]] == list(range(5))
    assert isinstance(events[-1], StopEvent)
