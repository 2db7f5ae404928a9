"""G11 errors and cancellation: failures are clear, retries are exact, nothing lingers.

A step's exception fails the run as that same exception, with a note naming the
step and the event, and the run's other in-flight steps are cancelled. A
RetryPolicy makes exactly ``max_attempts`` attempts; a step timeout counts as a
failed attempt and ends with StepTimeoutError; a run timeout raises
WorkflowTimeoutError; ``handler.cancel()`` makes awaiting the run raise
WorkflowCancelled; in superstep mode a failed attempt's sends are discarded.
"""

import asyncio

from _helpers_b import both_modes, failure, finish, notes_of, wait_until

from stepgraph import Context, Event, RetryPolicy, StartEvent, StopEvent, Workflow, step
from stepgraph.errors import (
    StepgraphError,
    StepTimeoutError,
    WorkflowCancelled,
    WorkflowTimeoutError,
)
from stepgraph.testing import FakeClock


class Ping(Event):
    n: int = 0


class Block(Event):
    pass


class Note(Event):
    attempt: int


class Boom(Exception):
    """An exception of the step author's own, not a stepgraph error."""


@both_modes
async def test_a_step_exception_fails_the_run_with_its_own_type_and_a_note(mode: str) -> None:
    class Failing(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Ping:
            return Ping(n=7)

        @step
        async def explode(self, ev: Ping) -> StopEvent:
            raise Boom(f"cannot handle {ev.n}")

    exc = await failure(Failing(mode=mode).run())
    assert type(exc) is Boom
    assert not isinstance(exc, StepgraphError)
    assert str(exc) == "cannot handle 7"
    notes = notes_of(exc)
    assert "'explode'" in notes
    assert "'Failing'" in notes
    assert "Ping" in notes


@both_modes
async def test_a_failing_step_cancels_the_other_in_flight_steps(mode: str) -> None:
    never = asyncio.Event()
    blocked = asyncio.Event()
    unwound = asyncio.Event()
    outcome: list[str] = []

    class Cancels(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Block())
            ctx.send_event(Ping())

        @step
        async def blocker(self, ev: Block) -> StopEvent:
            blocked.set()
            try:
                await never.wait()  # never set: only cancellation ends this
                outcome.append("resumed")
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
            finally:
                unwound.set()
            return StopEvent(result="unreachable")

        @step
        async def explode(self, ev: Ping) -> StopEvent:
            await blocked.wait()  # fail only once the blocker is in flight
            raise Boom("explode")

    exc = await failure(Cancels(mode=mode).run())
    assert isinstance(exc, Boom)
    await wait_until(unwound, "the blocked step was cancelled")
    assert outcome == ["cancelled"]


@both_modes
async def test_retry_policy_makes_exactly_max_attempts_then_fails(mode: str) -> None:
    attempts: list[int] = []

    class Retries(Workflow):
        @step(retry_policy=RetryPolicy(max_attempts=3, backoff=0))
        async def start(self, ev: StartEvent) -> StopEvent:
            attempts.append(len(attempts) + 1)
            raise Boom(f"attempt {len(attempts)}")

    exc = await failure(Retries(mode=mode).run())
    assert type(exc) is Boom
    assert str(exc) == "attempt 3"
    assert attempts == [1, 2, 3]
    assert "attempt 3" in notes_of(exc)


@both_modes
async def test_a_step_that_succeeds_on_its_second_attempt_succeeds(mode: str) -> None:
    attempts = 0

    class Flaky(Workflow):
        @step(retry_policy=RetryPolicy(max_attempts=3, backoff=0))
        async def start(self, ev: StartEvent) -> StopEvent:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise Boom("first attempt fails")
            return StopEvent(result=f"ok on attempt {attempts}")

    assert await finish(Flaky(mode=mode).run()) == "ok on attempt 2"
    assert attempts == 2


@both_modes
async def test_a_step_timeout_is_a_failed_attempt_and_ends_with_step_timeout_error(
    mode: str,
) -> None:
    never = asyncio.Event()
    attempts = 0

    class Slow(Workflow):
        @step(timeout=0.05, retry_policy=RetryPolicy(max_attempts=2, backoff=0))
        async def slow_step(self, ev: StartEvent) -> StopEvent:
            nonlocal attempts
            attempts += 1
            await never.wait()
            return StopEvent(result="unreachable")

    exc = await failure(Slow(mode=mode, clock=FakeClock()).run())
    assert isinstance(exc, StepTimeoutError)
    assert isinstance(exc, WorkflowTimeoutError)
    assert isinstance(exc, TimeoutError)
    assert "'slow_step'" in str(exc)
    assert "0.05" in str(exc)
    assert attempts == 2


@both_modes
async def test_a_run_timeout_raises_workflow_timeout_error(mode: str) -> None:
    never = asyncio.Event()
    started = asyncio.Event()

    class Stuck(Workflow):
        @step
        async def stuck(self, ev: StartEvent) -> StopEvent:
            started.set()
            await never.wait()
            return StopEvent(result="unreachable")

    handler = Stuck(mode=mode, timeout=0.05, clock=FakeClock()).run()
    exc = await failure(handler)
    assert started.is_set()
    assert type(exc) is WorkflowTimeoutError
    assert isinstance(exc, TimeoutError)
    assert "'Stuck'" in str(exc)
    assert "stuck" in str(exc)  # names the step that was still running


@both_modes
async def test_cancel_makes_awaiting_the_run_raise_workflow_cancelled(mode: str) -> None:
    never = asyncio.Event()
    started = asyncio.Event()
    unwound = asyncio.Event()

    class Cancellable(Workflow):
        @step
        async def wait_forever(self, ev: StartEvent) -> StopEvent:
            started.set()
            try:
                await never.wait()
            finally:
                unwound.set()
            return StopEvent(result="unreachable")

    handler = Cancellable(mode=mode).run()
    await wait_until(started, "the step started")
    await handler.cancel()
    exc = await failure(handler)
    assert isinstance(exc, WorkflowCancelled)
    assert handler.done()
    await wait_until(unwound, "the running step was cancelled")


async def test_a_failed_attempts_sends_are_discarded_before_the_retry_in_superstep_mode() -> None:
    attempts = 0
    received: list[int] = []

    class SendThenFail(Workflow):
        @step(retry_policy=RetryPolicy(max_attempts=2, backoff=0))
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            nonlocal attempts
            attempts += 1
            ctx.send_event(Note(attempt=attempts))
            if attempts == 1:
                raise Boom("the first attempt fails after sending")

        @step
        async def receive(self, ev: Note) -> StopEvent:
            received.append(ev.attempt)
            return StopEvent(result=ev.attempt)

    assert await finish(SendThenFail(mode="superstep").run()) == 2
    assert received == [2]
