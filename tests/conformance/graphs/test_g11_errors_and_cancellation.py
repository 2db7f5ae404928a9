"""G11 errors and cancellation in executor graphs: clear failures, exact retries.

A handler's exception fails the run as that same exception, with a note naming
the executor, the workflow and the message, and the run's other in-flight
handlers are cancelled. ``Executor(retry_policy=...)`` makes exactly
``max_attempts`` attempts (an executor's own stepgraph errors are not retried); in
superstep mode a failed attempt's sends and outputs are discarded. A handler
timeout (``Executor(timeout=...)``) counts as a failed attempt and ends with
StepTimeoutError; a run timeout raises WorkflowTimeoutError; ``handler.cancel()``
makes awaiting the run raise WorkflowCancelled and cancels the running handler, and
so does cancelling an ``await`` of the run; a handler that returns a value fails
with InvalidStepResultError.
"""

import asyncio
from typing import Any

from stepgraph import Executor, RetryPolicy, WorkflowBuilder, WorkflowContext, executor, handler
from stepgraph.errors import (
    InvalidStepResultError,
    StepgraphError,
    StepTimeoutError,
    UnknownStepError,
    WorkflowCancelled,
    WorkflowTimeoutError,
)
from stepgraph.testing import FakeClock

from ._helpers import both_modes, failure, finish, notes_of, wait_until


class Boom(Exception):
    """An exception of the handler author's own, not a stepgraph error."""


class Relay(Executor):
    """Sends its input on along its out-edges."""

    @handler
    async def on_any(self, message: Any, ctx: WorkflowContext) -> None:
        await ctx.send_message(message)


@both_modes
async def test_a_handler_exception_fails_the_run_with_its_own_type_and_a_note(
    mode: str,
) -> None:
    class Explode(Executor):
        @handler
        async def on_number(self, n: int, ctx: WorkflowContext) -> None:
            raise Boom(f"cannot handle {n}")

    relay, explode = Relay(id="relay"), Explode(id="explode")
    wf = WorkflowBuilder(start=relay).add_edge(relay, explode).build(mode=mode, name="failing")
    exc = await failure(wf.run(7))
    assert type(exc) is Boom
    assert not isinstance(exc, StepgraphError)
    assert str(exc) == "cannot handle 7"
    notes = notes_of(exc)
    assert "executor 'explode'" in notes
    assert "'failing'" in notes
    assert "int" in notes and "7" in notes


@both_modes
async def test_a_failing_handler_cancels_the_other_in_flight_handlers(mode: str) -> None:
    never = asyncio.Event()
    blocked = asyncio.Event()
    unwound = asyncio.Event()
    outcome: list[str] = []

    class Blocker(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            blocked.set()
            try:
                await never.wait()  # never set: only cancellation ends this
                outcome.append("resumed")
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
            finally:
                unwound.set()

    class Explode(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await blocked.wait()  # fail only once the blocker is in flight
            raise Boom("explode")

    relay = Relay(id="relay")
    wf = (
        WorkflowBuilder(start=relay)
        .add_fan_out(relay, [Blocker(id="blocker"), Explode(id="explode")])
        .build(mode=mode)
    )
    exc = await failure(wf.run("go"))
    assert isinstance(exc, Boom)
    await wait_until(unwound, "the blocked handler was cancelled")
    assert outcome == ["cancelled"]


@both_modes
async def test_retry_policy_makes_exactly_max_attempts_then_fails(mode: str) -> None:
    attempts: list[int] = []

    class Failing(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            attempts.append(len(attempts) + 1)
            raise Boom(f"attempt {len(attempts)}")

    failing = Failing(id="failing", retry_policy=RetryPolicy(max_attempts=3, backoff=0))
    exc = await failure(WorkflowBuilder(start=failing).build(mode=mode).run("go"))
    assert type(exc) is Boom
    assert str(exc) == "attempt 3"
    assert attempts == [1, 2, 3]
    assert "attempt 3" in notes_of(exc)


@both_modes
async def test_a_handler_that_succeeds_on_a_retry_succeeds(mode: str) -> None:
    attempts = 0

    @executor(id="flaky", retry_policy=RetryPolicy(max_attempts=3, backoff=0))
    async def flaky(text: str, ctx: WorkflowContext) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise Boom(f"attempt {attempts} fails")
        await ctx.yield_output(f"ok on attempt {attempts}")

    result = await finish(WorkflowBuilder(start=flaky).build(mode=mode).run("go"))
    assert result.outputs == ["ok on attempt 3"]
    assert attempts == 3


@both_modes
async def test_a_stepgraph_error_raised_in_a_handler_is_not_retried(mode: str) -> None:
    attempts = 0

    class Misdirect(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            nonlocal attempts
            attempts += 1
            await ctx.send_message(text, target="nowhere")  # a mistake, not a flaky call

    misdirect = Misdirect(id="misdirect", retry_policy=RetryPolicy(max_attempts=3, backoff=0))
    exc = await failure(WorkflowBuilder(start=misdirect).build(mode=mode).run("go"))
    assert isinstance(exc, UnknownStepError)
    assert attempts == 1


async def test_a_failed_attempts_sends_and_outputs_are_discarded_in_superstep_mode() -> None:
    attempts = 0
    received: list[int] = []

    class SendThenFail(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            nonlocal attempts
            attempts += 1
            await ctx.send_message(attempts)
            await ctx.yield_output(f"attempt {attempts}")
            if attempts == 1:
                raise Boom("the first attempt fails after sending")

    @executor(id="receive")
    async def receive(n: int, ctx: WorkflowContext) -> None:
        received.append(n)

    sender = SendThenFail(id="sender", retry_policy=RetryPolicy(max_attempts=2, backoff=0))
    wf = WorkflowBuilder(start=sender).add_edge(sender, receive).build(mode="superstep")
    result = await finish(wf.run("go"))
    assert received == [2]
    assert result.outputs == ["attempt 2"]


@both_modes
async def test_a_handler_timeout_is_a_failed_attempt_and_ends_with_step_timeout_error(
    mode: str,
) -> None:
    never = asyncio.Event()
    attempts = 0

    class Slow(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            nonlocal attempts
            attempts += 1
            await never.wait()

    slow = Slow(id="slow", timeout=0.05, retry_policy=RetryPolicy(max_attempts=2, backoff=0))
    exc = await failure(WorkflowBuilder(start=slow).build(mode=mode, clock=FakeClock()).run("go"))
    assert isinstance(exc, StepTimeoutError)
    assert isinstance(exc, WorkflowTimeoutError)
    assert isinstance(exc, TimeoutError)
    assert "executor 'slow'" in str(exc)
    assert "0.05" in str(exc)
    assert attempts == 2


@both_modes
async def test_a_run_timeout_raises_workflow_timeout_error_naming_what_still_ran(
    mode: str,
) -> None:
    never = asyncio.Event()
    started = asyncio.Event()

    class Stuck(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            started.set()
            await never.wait()

    wf = WorkflowBuilder(start=Stuck(id="stuck")).build(
        mode=mode, timeout=0.05, name="jam", clock=FakeClock()
    )
    exc = await failure(wf.run("go"))
    assert started.is_set()
    assert type(exc) is WorkflowTimeoutError
    assert isinstance(exc, TimeoutError)
    assert "'jam'" in str(exc)
    assert "stuck" in str(exc)


@both_modes
async def test_cancel_makes_awaiting_the_run_raise_workflow_cancelled(mode: str) -> None:
    never = asyncio.Event()
    started = asyncio.Event()
    unwound = asyncio.Event()

    class WaitForever(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            started.set()
            try:
                await never.wait()
            finally:
                unwound.set()

    handler_ = WorkflowBuilder(start=WaitForever(id="wait")).build(mode=mode).run("go")
    await wait_until(started, "the handler started")
    await handler_.cancel()
    exc = await failure(handler_)
    assert isinstance(exc, WorkflowCancelled)
    assert handler_.done()
    await wait_until(unwound, "the running handler was cancelled")


@both_modes
async def test_cancelling_an_await_of_the_run_cancels_the_run(mode: str) -> None:
    never = asyncio.Event()
    started = asyncio.Event()
    unwound = asyncio.Event()

    class WaitForever(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            started.set()
            try:
                await never.wait()
            finally:
                unwound.set()

    handler_ = WorkflowBuilder(start=WaitForever(id="wait")).build(mode=mode).run("go")
    await wait_until(started, "the handler started")
    waiter = asyncio.ensure_future(handler_)
    await asyncio.sleep(0)  # the waiter is now awaiting the run
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await wait_until(unwound, "the running handler was cancelled with the run")
    assert handler_.done()
    assert handler_._run.done
    events = [event async for event in handler_.stream_events()]  # closed: no hang
    assert events == []


@both_modes
async def test_a_handler_returning_a_value_fails_with_invalid_step_result(mode: str) -> None:
    class Returns(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> Any:
            return text.upper()

    exc = await failure(WorkflowBuilder(start=Returns(id="returns")).build(mode=mode).run("go"))
    assert isinstance(exc, InvalidStepResultError)
    assert "'returns'" in str(exc)
    assert "send_message" in str(exc)
