"""G10 no silent hang: a run ends with a result or an error, never by waiting forever.

A run that can make no progress fails with ``WorkflowStalled`` naming the waiting
collectors and the last events; waiting for outside input (an InputRequiredEvent,
or a step in ``wait_for_event``) is a pause, not a stall; cycles are allowed, and
``max_supersteps`` turns a loop that never ends into ``SuperstepLimitExceeded``.
"""

import asyncio

from _helpers_b import both_modes, failure, finish

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
from stepgraph.errors import SuperstepLimitExceeded, WorkflowStalled


class Part(Event):
    n: int


class Loop(Event):
    n: int


class Answer(Event):
    text: str


class Waiting(Event):
    pass


class Aside(Event):
    pass


class AsideDone(Event):
    pass


class HalfJoin(Workflow):
    """Sends one Part to a collector that needs two: it can never fill."""

    @step
    async def start(self, ev: StartEvent) -> Part:
        return Part(n=1)

    @step
    async def join(self, ctx: Context, ev: Part) -> StopEvent | None:
        batch = ctx.collect_events(ev, [Part, Part])
        if batch is None:
            return None
        return StopEvent(result=[p.n for p in batch])


class Ask(Workflow):
    """Asks the caller for a name and answers with a greeting."""

    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="name?")

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hello {ev.response}")


class WaitInStep(Workflow):
    """One step waits for an Answer from the caller, with nothing else running."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Waiting())
        answer = await ctx.wait_for_event(Answer, timeout=None)
        return StopEvent(result=answer.text)


class Cycle(Workflow):
    """A loop of 50 rounds that then stops."""

    @step
    async def start(self, ev: StartEvent) -> Loop:
        return Loop(n=0)

    @step
    async def spin(self, ev: Loop) -> Loop | StopEvent:
        return StopEvent(result=ev.n) if ev.n == 50 else Loop(n=ev.n + 1)


class Endless(Workflow):
    """A loop that never stops."""

    @step
    async def start(self, ev: StartEvent) -> Loop:
        return Loop(n=0)

    @step
    async def spin(self, ev: Loop) -> Loop | StopEvent:
        return Loop(n=ev.n + 1)


@both_modes
async def test_a_collector_that_never_fills_raises_stalled_naming_step_and_holdings(
    mode: str,
) -> None:
    exc = await failure(HalfJoin(mode=mode).run())
    assert isinstance(exc, WorkflowStalled)
    assert "'join'" in str(exc)
    assert "1/2" in str(exc)
    assert len(exc.collectors) == 1
    assert "'join'" in exc.collectors[0]
    assert "Part 1/2" in exc.collectors[0]
    assert exc.last_events, "the stall should name the last events processed"
    assert any("Part" in text for text in exc.last_events)


@both_modes
async def test_a_run_waiting_for_an_input_answer_is_paused_not_stalled(mode: str) -> None:
    handler = Ask(mode=mode).run()
    seen: list[object] = []
    async with asyncio.timeout(5):
        async for event in handler.stream_events():
            seen.append(event)
            if isinstance(event, InputRequiredEvent):
                # a stall would have been decided when the request was published
                assert not handler.done(), "the run ended while waiting for input"
                handler.send_event(HumanResponseEvent(response="Ada"))
    assert await finish(handler) == "hello Ada"
    assert isinstance(seen[0], InputRequiredEvent)
    assert seen[0].prefix == "name?"
    assert isinstance(seen[-1], StopEvent)


@both_modes
async def test_a_step_waiting_in_wait_for_event_is_not_a_stall(mode: str) -> None:
    handler = WaitInStep(mode=mode).run()
    async with asyncio.timeout(5):
        async for event in handler.stream_events():
            if isinstance(event, Waiting):
                # the step is suspended in wait_for_event and nothing else runs
                assert not handler.done(), "the run ended while a step waited for an event"
                handler.send_event(Answer(text="here"))
    assert await finish(handler) == "here"


class AskWithSideChannel(Workflow):
    """Asks for input; meanwhile the caller may send Aside events, which a step handles."""

    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="name?")

    @step
    async def aside(self, ctx: Context, ev: Aside) -> None:
        ctx.write_event_to_stream(AsideDone())

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hello {ev.response}")


@both_modes
async def test_an_unrelated_event_from_the_caller_does_not_end_the_pause_for_input(
    mode: str,
) -> None:
    handler = AskWithSideChannel(mode=mode).run()
    async with asyncio.timeout(5):
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                handler.send_event(Aside())  # not an answer: the run must keep waiting
            elif isinstance(event, AsideDone):
                assert not handler.done(), "the run ended while its input request was open"
                handler.send_event(HumanResponseEvent(response="Ada"))
    assert await finish(handler) == "hello Ada"


@both_modes
async def test_cycles_are_allowed_and_end_when_the_loop_stops(mode: str) -> None:
    assert await finish(Cycle(mode=mode).run()) == 50


@both_modes
async def test_an_endless_loop_raises_superstep_limit_naming_the_steps(mode: str) -> None:
    exc = await failure(Endless(mode=mode, max_supersteps=20).run())
    assert isinstance(exc, SuperstepLimitExceeded)
    assert "max_supersteps=20" in str(exc)
    assert "spin" in str(exc)
    assert "'Endless'" in str(exc)


class LeavesItsWait(Workflow):
    """Starts a wait in a task of its own, then returns without awaiting it (cancelled, or
    still pending): the wait ends with the step."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        cancelled = asyncio.ensure_future(ctx.wait_for_event(Answer, timeout=5))
        await asyncio.sleep(0)
        cancelled.cancel()  # given up, not awaited
        return StopEvent(result="done")

    @step
    async def answer(self, ev: Answer) -> None:
        return None


class LeavesItsWaitPending(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        pending = asyncio.ensure_future(ctx.wait_for_event(Answer, timeout=5))
        await asyncio.sleep(0)
        assert not pending.done()
        return StopEvent(result="done")

    @step
    async def answer(self, ev: Answer) -> None:
        return None


@both_modes
async def test_a_step_that_returns_leaving_a_wait_behind_ends_as_it_returned(mode: str) -> None:
    async with asyncio.timeout(10):
        assert await LeavesItsWait(mode=mode).run() == "done"
        assert await LeavesItsWaitPending(mode=mode).run() == "done"
