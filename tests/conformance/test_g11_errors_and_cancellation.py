"""G11 errors and cancellation: failures are clear, retries are exact, nothing lingers.

A step's exception fails the run as that same exception, with a note naming the
step and the event, and the run's other in-flight steps are cancelled. A
RetryPolicy makes exactly ``max_attempts`` attempts; a step timeout counts as a
failed attempt and ends with StepTimeoutError; a run timeout raises
WorkflowTimeoutError; ``handler.cancel()`` makes awaiting the run raise
WorkflowCancelled; in superstep mode a failed attempt's sends are discarded.
"""

import asyncio
import threading

import pytest
from _helpers_b import GUARD_SECONDS, both_modes, failure, finish, notes_of, wait_until

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
    assert ".Failing'" in notes  # the workflow's name: its class's qualified name
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
    assert ".Stuck'" in str(exc)
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


@both_modes
async def test_a_step_that_cancels_its_own_task_cancels_the_run_at_once_naming_the_step(
    mode: str,
) -> None:
    class CancelsItself(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # code the step calls may do this too
            await asyncio.sleep(0)
            return StopEvent(result="unreachable")

    exc = await failure(CancelsItself(mode=mode).run())  # no timeout: it must end by itself
    assert isinstance(exc, WorkflowCancelled)  # a cancelled task: a cancelled run
    assert "step 'start'" in str(exc) and "its task was cancelled" in str(exc)


@both_modes
async def test_a_def_step_that_lets_stop_iteration_escape_fails_the_run_instead_of_hanging(
    mode: str,
) -> None:
    class Exhausted(Workflow):
        @step
        def start(self, ev: StartEvent) -> StopEvent:
            return next(iter(()))  # StopIteration, in the step's thread

    exc = await failure(Exhausted(mode=mode).run())  # no timeout: it must end by itself
    assert isinstance(exc, RuntimeError)
    assert "StopIteration" in str(exc)
    assert "step 'start'" in notes_of(exc)


class Blocking(Event):
    pass


@pytest.mark.parametrize("mode", ["superstep", "async"])
def test_run_sync_reports_a_def_step_s_timeout_on_time_while_its_thread_still_runs(
    mode: str,
) -> None:
    entered, release, done = threading.Event(), threading.Event(), threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []
    clock = FakeClock(autojump=False)  # time moves once the def step is surely running

    class Blocks(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Blocking:
            loops.append(asyncio.get_running_loop())
            return Blocking()

        @step(timeout=1.0)
        def block(self, ev: Blocking) -> StopEvent:
            entered.set()
            try:
                release.wait(GUARD_SECONDS)  # blocks far beyond its timeout
            finally:
                done.set()
            return StopEvent(result="late")

    def pace() -> None:  # once the step's thread runs, one virtual second passes
        if entered.wait(GUARD_SECONDS):
            loops[0].call_soon_threadsafe(clock.advance, 1.0)

    pacer = threading.Thread(target=pace)
    pacer.start()
    try:
        with pytest.raises(StepTimeoutError, match="step 'block'"):
            Blocks(mode=mode, clock=clock).run_sync()
        assert not done.is_set()  # the caller got its error while the thread still ran
    finally:
        release.set()
        pacer.join(GUARD_SECONDS)
    assert done.wait(GUARD_SECONDS)  # and the thread then finished in the background


@both_modes
async def test_one_cancelled_await_cancels_the_run_and_every_other_await_gets_workflow_cancelled(
    mode: str,
) -> None:
    started = asyncio.Event()

    class Forever(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            started.set()
            await asyncio.Event().wait()
            return StopEvent(result="never")

    handler = Forever(mode=mode).run()
    await wait_until(started, "the step started")
    impatient = asyncio.ensure_future(handler)
    patient = asyncio.ensure_future(handler)
    await asyncio.sleep(0)  # both await the run now
    impatient.cancel()  # as asyncio.wait_for does when it times out
    results = await asyncio.gather(impatient, patient, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)  # the cancelled await itself
    assert isinstance(results[1], WorkflowCancelled)  # the others: the run was cancelled
    later = await failure(handler)
    assert isinstance(later, WorkflowCancelled)  # and every later await too


async def test_asyncio_wait_for_timing_out_on_a_run_raises_timeout_error_and_cancels_it() -> None:
    started = asyncio.Event()

    class Forever(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            started.set()
            await asyncio.Event().wait()
            return StopEvent(result="never")

    handler = Forever().run()
    await wait_until(started, "the step started")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handler, 0.001)
    assert isinstance(await failure(handler), WorkflowCancelled)


class BadRepr(Event):
    """An event whose repr raises: error messages must not lose the step's error to it."""

    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str exploded")


@both_modes
async def test_an_event_whose_repr_raises_never_replaces_the_step_s_own_error(
    mode: str,
) -> None:
    class Fails(Workflow):
        @step
        async def start(self, ev: StartEvent) -> BadRepr:
            return BadRepr()

        @step
        async def explode(self, ev: BadRepr) -> StopEvent:
            raise ValueError("the step's own error")

    exc = await failure(Fails(mode=mode).run())
    assert isinstance(exc, ValueError) and str(exc) == "the step's own error"
    assert "step 'explode'" in notes_of(exc) and "BadRepr" in notes_of(exc)


@both_modes
async def test_an_exception_whose_str_raises_reaches_the_caller_as_itself_even_verbose(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    class Fails(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            raise BadStr()

    exc = await failure(Fails(mode=mode, verbose=True).run())
    assert isinstance(exc, BadStr)
    assert "Step start failed: BadStr" in capsys.readouterr().out


@both_modes
@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, GeneratorExit])
async def test_keyboard_interrupt_system_exit_and_generator_exit_reach_the_caller_noted(
    mode: str, kind: type[BaseException]
) -> None:
    class Exits(Workflow):
        @step(retry_policy=RetryPolicy(max_attempts=3))
        async def start(self, ev: StartEvent) -> StopEvent:
            raise kind()

    handler = Exits(mode=mode).run()
    with pytest.raises(kind) as info:  # as itself, not wrapped, and not retried
        async with asyncio.timeout(GUARD_SECONDS):
            await handler
    assert "step 'start'" in notes_of(info.value) and "attempt 1" in notes_of(info.value)


@both_modes
async def test_a_def_steps_keyboard_interrupt_reaches_the_caller_as_itself(mode: str) -> None:
    attempts: list[int] = []

    class Interrupted(Workflow):
        @step(retry_policy=RetryPolicy(max_attempts=3))
        def start(self, ev: StartEvent) -> StopEvent:
            attempts.append(1)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        async with asyncio.timeout(GUARD_SECONDS):
            await Interrupted(mode=mode).run()
    assert len(attempts) == 1


@both_modes
@pytest.mark.parametrize("kind", [SystemExit, GeneratorExit])
async def test_a_def_steps_system_exit_or_generator_exit_fails_the_run_as_a_runtime_error(
    mode: str, kind: type[BaseException]
) -> None:
    """A thread cannot carry them back as themselves: they fail the run, named, as their cause."""

    attempts: list[int] = []

    class Exits(Workflow):
        @step(retry_policy=RetryPolicy(max_attempts=3))
        def start(self, ev: StartEvent) -> StopEvent:
            attempts.append(1)
            raise kind("mine")

    exc = await failure(Exits(mode=mode).run())
    assert len(attempts) == 1  # never retried, as the exit itself is not
    assert isinstance(exc, RuntimeError)
    assert ("sys.exit('mine')" if kind is SystemExit else "GeneratorExit") in str(exc)
    assert "Exits.start " in str(exc)  # the step's function, not a wrapper of it
    assert type(exc.__cause__) is kind and "step 'start'" in notes_of(exc)


PAUSED_SCRIPT = """
import asyncio
from stepgraph import Context, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from stepgraph import Workflow, step

class Asks(Workflow):
    @step(timeout=100)
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="name?"))
        answer = await ctx.wait_for_event(HumanResponseEvent, timeout=1000)
        return StopEvent(result=answer.response)

KEEP = []

async def main() -> None:
    handler = Asks(timeout=500).run()
    KEEP.append(handler)
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            return  # the run is paused, waiting for an answer nobody will give

if "{how}" == "asyncio.run":
    asyncio.run(main())
else:
    asyncio.new_event_loop().run_until_complete(main())  # the loop is dropped, not closed
print("done")
"""


@pytest.mark.parametrize("how", ["asyncio.run", "dropped loop"])
def test_a_paused_run_left_behind_at_interpreter_shutdown_ends_silently(how: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", PAUSED_SCRIPT.replace("{how}", how)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    assert "Exception ignored" not in done.stderr
    assert "Error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    if how == "asyncio.run":
        assert done.stderr == ""  # asyncio.run cancels the run's tasks: nothing to say
