"""Misusing a running workflow gets a clear error naming the thing at fault, never a hang.

Covers: a step returning a non-event, an event nobody accepts, sending to an
unknown step, ``collect_events`` with nothing expected, a ``wait_for_event``
timeout, ``run()`` arguments the start event rejects, sending to a finished run,
``run()`` outside an event loop, and ``get_context()`` outside a step. Every
error is checked for its type and its message; all derive from StepgraphError.
"""

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, get_context, step
from stepgraph.errors import (
    InvalidStartEventError,
    InvalidStepResultError,
    RunFinishedError,
    StepgraphError,
    UnknownStepError,
    UnroutableEventError,
    WaitForEventTimeoutError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
)
from stepgraph.testing import FakeClock

MODES = ["superstep", "async"]
GUARD_SECONDS = 5.0


async def run_error(workflow: Workflow, **kwargs: Any) -> BaseException:
    """Run ``workflow`` to its failure and return the error (a hang fails the test)."""
    handler = workflow.run(**kwargs)
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            result = await handler
    except Exception as exc:
        if not handler.done():
            raise AssertionError(f"the run did not end within {GUARD_SECONDS}s") from exc
        return exc
    raise AssertionError(f"the run was expected to fail but returned {result!r}")


class Ping(Event):
    pass


class Orphan(Event):
    pass


class Answer(Event):
    text: str


class Question(StartEvent):
    text: str
    count: int


class ReturnsInt(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def bad_result(self, ev: Ping) -> StopEvent:
        return 42  # type: ignore[return-value]


class SyncReturnsStr(Workflow):
    @step
    def start(self, ev: StartEvent) -> StopEvent:
        return "done"  # type: ignore[return-value]


class SendsOrphan(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Ping:
        ctx.send_event(Orphan())
        return Ping()

    @step
    async def finish(self, ev: Ping) -> StopEvent:
        return StopEvent()


class SendsOrphanAndStops(Workflow):
    """Sends an unroutable event in the same step (and superstep) that emits the StopEvent."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.send_event(Orphan())
        return StopEvent()


class ReturnsEventBase(Workflow):
    """Annotated ``-> Event | StopEvent`` so validation cannot see what it returns."""

    @step
    async def vague(self, ev: StartEvent) -> Event | StopEvent:
        return Orphan()


class SendsToUnknownStep(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.send_event(Ping(), step="no_such_step")
        return StopEvent()

    @step
    async def target(self, ev: Ping) -> None:
        return None


class SendsToWrongStep(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.send_event(Orphan(), step="pings_only")
        return StopEvent()

    @step
    async def pings_only(self, ev: Ping) -> None:
        return None


class CollectsNothing(Workflow):
    @step
    async def gather(self, ctx: Context, ev: StartEvent) -> StopEvent | None:
        ctx.collect_events(ev, [])
        return StopEvent()


class CollectsTheWrongType(Workflow):
    @step
    async def gather(self, ctx: Context, ev: StartEvent) -> StopEvent | None:
        ctx.collect_events(ev, [Ping, Answer])
        return StopEvent()


class WaitsBriefly(Workflow):
    @step
    async def impatient(self, ctx: Context, ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(Answer, timeout=0.05)
        return StopEvent(result=answer.text)


class Asks(Workflow):
    @step
    async def start(self, ev: Question) -> StopEvent:
        return StopEvent(result=ev.text * ev.count)


class Quick(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="quick")


@pytest.mark.parametrize("mode", MODES)
async def test_a_step_returning_a_non_event_fails_naming_step_and_type(mode: str) -> None:
    exc = await run_error(ReturnsInt(mode=mode))
    assert isinstance(exc, InvalidStepResultError)
    assert "'bad_result'" in str(exc)
    assert "int" in str(exc)
    assert "42" in str(exc)


@pytest.mark.parametrize("mode", MODES)
async def test_a_sync_step_returning_a_non_event_fails_naming_step_and_type(mode: str) -> None:
    exc = await run_error(SyncReturnsStr(mode=mode))
    assert isinstance(exc, InvalidStepResultError)
    assert "'start'" in str(exc)
    assert "str" in str(exc)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workflow", [SendsOrphan, SendsOrphanAndStops, ReturnsEventBase])
async def test_an_event_nobody_accepts_fails_the_run_naming_type_and_sender(
    mode: str, workflow: type[Workflow]
) -> None:
    exc = await run_error(workflow(mode=mode))
    assert isinstance(exc, UnroutableEventError)
    assert "Orphan" in str(exc)
    assert workflow.__name__ in str(exc)
    sender = "vague" if workflow is ReturnsEventBase else "start"
    assert f"step '{sender}'" in str(exc)


@pytest.mark.parametrize("mode", MODES)
async def test_send_event_to_an_unknown_step_names_the_step_and_the_sender(mode: str) -> None:
    exc = await run_error(SendsToUnknownStep(mode=mode))
    assert isinstance(exc, UnknownStepError)
    assert "'no_such_step'" in str(exc)
    assert "step 'start'" in str(exc)
    assert "'target'" in str(exc)  # lists the steps that do exist


async def test_the_caller_sending_to_an_unknown_step_gets_unknown_step_error_at_once() -> None:
    handler = WaitsBriefly().run()
    with pytest.raises(UnknownStepError) as info:
        handler.send_event(Answer(text="x"), step="nowhere")
    assert "'nowhere'" in str(info.value)
    assert "the caller" in str(info.value)
    await handler.cancel()


@pytest.mark.parametrize("mode", MODES)
async def test_send_event_to_a_step_that_rejects_the_type_names_both(mode: str) -> None:
    exc = await run_error(SendsToWrongStep(mode=mode))
    assert isinstance(exc, UnroutableEventError)
    assert "'pings_only'" in str(exc)
    assert "Orphan" in str(exc)
    assert "Ping" in str(exc)


@pytest.mark.parametrize("mode", MODES)
async def test_collect_events_with_an_empty_list_names_the_step(mode: str) -> None:
    exc = await run_error(CollectsNothing(mode=mode))
    assert isinstance(exc, WorkflowRuntimeError)
    assert "'gather'" in str(exc)
    assert "collect_events" in str(exc)


@pytest.mark.parametrize("mode", MODES)
async def test_collect_events_with_an_event_of_no_expected_type_names_step_and_type(
    mode: str,
) -> None:
    exc = await run_error(CollectsTheWrongType(mode=mode))
    assert isinstance(exc, WorkflowRuntimeError)
    assert "'gather'" in str(exc)
    assert "StartEvent" in str(exc)
    assert "Answer" in str(exc) and "Ping" in str(exc)


@pytest.mark.parametrize("mode", MODES)
async def test_a_wait_for_event_timeout_raises_wait_for_event_timeout_error(mode: str) -> None:
    exc = await run_error(WaitsBriefly(mode=mode, clock=FakeClock()))
    assert isinstance(exc, WaitForEventTimeoutError)
    assert isinstance(exc, WorkflowTimeoutError)
    assert isinstance(exc, TimeoutError)
    assert "'impatient'" in str(exc)
    assert "wait_for_event" in str(exc)


async def test_a_wait_for_event_timeout_can_be_caught_in_the_step() -> None:
    class Fallback(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            try:
                await ctx.wait_for_event(Answer, timeout=0.05)
            except WaitForEventTimeoutError as exc:
                return StopEvent(result=type(exc).__name__)
            return StopEvent(result="answered")

    async with asyncio.timeout(GUARD_SECONDS):
        assert await Fallback(clock=FakeClock()).run() == "WaitForEventTimeoutError"


async def test_run_arguments_the_start_event_rejects_raise_at_run() -> None:
    with pytest.raises(InvalidStartEventError) as info:
        Asks().run(text="hi", count="many")  # raised by run() itself: nothing started
    exc = info.value
    assert "'Asks'" in str(exc) or "Asks.run()" in str(exc)
    assert "Question" in str(exc)
    assert "count" in str(exc)
    assert isinstance(exc.__cause__, ValidationError)
    assert isinstance(exc, ValueError)


async def test_missing_run_arguments_raise_invalid_start_event_error() -> None:
    with pytest.raises(InvalidStartEventError) as info:
        Asks().run(text="hi")
    assert "Asks.run()" in str(info.value)
    assert "count" in str(info.value)


async def test_a_start_event_of_the_wrong_type_raises_at_run() -> None:
    with pytest.raises(InvalidStartEventError) as info:
        Asks().run(start_event=StartEvent(text="hi", count=2))
    assert "Asks.run(start_event=...)" in str(info.value)
    assert "Question" in str(info.value)


async def test_valid_run_arguments_build_the_custom_start_event() -> None:
    async with asyncio.timeout(GUARD_SECONDS):
        assert await Asks().run(text="ab", count="2") == "abab"


async def test_sending_an_event_to_a_finished_run_raises_run_finished_error() -> None:
    handler = Quick().run()
    async with asyncio.timeout(GUARD_SECONDS):
        assert await handler == "quick"
    with pytest.raises(RunFinishedError) as info:
        handler.send_event(Ping())
    assert handler.run_id in str(info.value)
    assert "'Quick'" in str(info.value)
    assert "Ping" in str(info.value)


def test_run_without_a_running_event_loop_raises_a_clear_stepgraph_error() -> None:
    with pytest.raises(StepgraphError) as info:
        Quick().run()
    assert "Quick.run()" in str(info.value)
    assert "running event loop" in str(info.value)
    assert "run_sync" in str(info.value)


def test_run_sync_runs_without_a_running_loop() -> None:
    assert Quick().run_sync() == "quick"


def test_get_context_outside_a_step_raises_a_stepgraph_error() -> None:
    with pytest.raises(StepgraphError) as info:
        get_context()
    assert "get_context()" in str(info.value)
    assert "outside a running step" in str(info.value)


@pytest.mark.parametrize(
    "error",
    [
        InvalidStartEventError,
        InvalidStepResultError,
        RunFinishedError,
        UnknownStepError,
        UnroutableEventError,
        WaitForEventTimeoutError,
        WorkflowRuntimeError,
        WorkflowTimeoutError,
    ],
)
def test_runtime_errors_derive_from_stepgraph_error(error: type[Exception]) -> None:
    assert issubclass(error, StepgraphError)
