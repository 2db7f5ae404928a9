"""stepgraph.testing.FakeClock: virtual time that moves only when told to, or when idle.

The clock on its own: time stands still while nothing is armed, ``monotonic()`` starts at
0.0 and ``wall()`` is ``start`` plus it; ``advance`` fires the timers that fall due in due
order (ties in arming order), never cancelled ones, and refuses to go back; with
``autojump`` an idle event loop makes the clock jump to the next timer, while any
activity on the clock holds time still; one clock serves two event loops in turn.

The clock under workflows: a run's timeout, a ``wait_for_event`` timeout, a step's
``timeout=`` and a retry policy's backoff all elapse in virtual time, and the ticks of a
run carry the fake clock's wall time. Every assertion is on virtual time and outcomes;
loop turns are counted with ``asyncio.sleep(0)``, never measured in real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from stepgraph import (
    Context,
    Event,
    Executor,
    RetryPolicy,
    RunResult,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    step,
)
from stepgraph.core import AttemptFailed, RunStarted, StepCompleted, TimerFired
from stepgraph.errors import StepTimeoutError, WaitForEventTimeoutError, WorkflowTimeoutError
from stepgraph.journal import Journal
from stepgraph.runtime.clock import TimerHandle
from stepgraph.telemetry import read_events
from stepgraph.testing import FakeClock

T = TypeVar("T")

GUARD_SECONDS = 10.0
"""A safety net against hangs only: no test relies on it firing."""

MODES = ["superstep", "async"]


async def turns_until(condition: Callable[[], bool], limit: int = 200) -> int:
    """Turn the event loop until ``condition()`` holds; return how many turns it took.

    Checking the condition must not touch the clock (that would count as activity).
    """
    for turn in range(limit + 1):
        if condition():
            return turn
        await asyncio.sleep(0)
    raise AssertionError(f"the condition did not hold within {limit} loop turns")


async def idle_turns(count: int) -> None:
    """Let the event loop turn ``count`` times, touching nothing."""
    for _ in range(count):
        await asyncio.sleep(0)


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``; a hang fails the test instead of hanging the suite."""
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            return await awaitable
    except TimeoutError as exc:
        if isinstance(exc, WorkflowTimeoutError):
            raise
        raise AssertionError(f"did not finish within {GUARD_SECONDS}s (a hang)") from exc


async def failure(awaitable: Awaitable[Any]) -> BaseException:
    """The exception ``awaitable`` raises; fails the test if it returns."""
    try:
        value = await guarded(awaitable)
    except AssertionError:
        raise
    except Exception as exc:
        return exc
    raise AssertionError(f"expected the run to fail, it returned {value!r}")


# -- the clock on its own -------------------------------------------------------------------------


def test_monotonic_starts_at_zero_and_wall_is_start_plus_monotonic() -> None:
    clock = FakeClock(start=1_234.5)
    assert clock.monotonic() == 0.0
    assert clock.wall() == 1_234.5
    clock.advance(2.25)
    assert clock.monotonic() == 2.25
    assert clock.wall() == 1_234.5 + 2.25


def test_the_default_start_is_a_plausible_unix_time() -> None:
    clock = FakeClock()
    assert clock.start == 1_700_000_000.0
    assert clock.wall() == clock.start


async def test_time_stands_still_while_nothing_is_armed() -> None:
    clock = FakeClock(idle_turns=2)
    await idle_turns(100)
    assert clock.monotonic() == 0.0
    assert clock.wall() == clock.start
    assert clock.pending == 0


async def test_time_stands_still_once_the_last_timer_has_fired() -> None:
    clock = FakeClock(idle_turns=2)
    fired: list[str] = []
    clock.call_later(5.0, lambda: fired.append("five"))
    await turns_until(lambda: bool(fired))
    await idle_turns(100)
    assert fired == ["five"]
    assert clock.monotonic() == 5.0
    assert clock.pending == 0


async def test_advance_fires_due_timers_in_due_order_with_ties_in_arming_order() -> None:
    clock = FakeClock(autojump=False)
    fired: list[str] = []
    clock.call_later(3.0, lambda: fired.append("c@3"))
    clock.call_later(1.0, lambda: fired.append("a@1"))
    clock.call_later(2.0, lambda: fired.append("b1@2"))
    clock.call_later(2.0, lambda: fired.append("b2@2"))
    clock.call_later(2.0, lambda: fired.append("b3@2"))
    clock.call_later(9.0, lambda: fired.append("late@9"))
    assert clock.pending == 6

    clock.advance(3.0)
    await idle_turns(1)
    assert fired == ["a@1", "b1@2", "b2@2", "b3@2", "c@3"]
    assert clock.monotonic() == 3.0
    assert clock.pending == 1


async def test_advance_runs_the_callbacks_on_the_loop_soon_not_inside_advance() -> None:
    clock = FakeClock(autojump=False)
    fired: list[float] = []
    clock.call_later(1.0, lambda: fired.append(clock.monotonic()))
    clock.advance(1.0)
    assert fired == []  # not called from inside advance()
    await idle_turns(1)
    assert fired == [1.0]


async def test_advance_never_fires_a_cancelled_timer() -> None:
    clock = FakeClock(autojump=False)
    fired: list[str] = []
    clock.call_later(1.0, lambda: fired.append("kept"))
    dropped = clock.call_later(1.0, lambda: fired.append("cancelled"))
    clock.call_later(2.0, lambda: fired.append("kept too"))
    dropped.cancel()
    assert clock.pending == 2

    clock.advance(10.0)
    await idle_turns(3)
    assert fired == ["kept", "kept too"]
    assert clock.pending == 0


async def test_advance_moves_time_by_exactly_the_seconds_given_and_fires_only_what_is_due() -> None:
    clock = FakeClock(autojump=False)
    fired: list[str] = []
    clock.call_later(5.0, lambda: fired.append("five"))
    clock.advance(4.5)
    await idle_turns(3)
    assert fired == []
    assert clock.monotonic() == 4.5
    clock.advance(0.5)  # due exactly now: fires
    await idle_turns(1)
    assert fired == ["five"]
    assert clock.monotonic() == 5.0


async def test_a_timer_armed_after_an_advance_is_due_relative_to_the_new_time() -> None:
    clock = FakeClock(autojump=False)
    fired: list[str] = []
    clock.advance(100.0)
    clock.call_later(1.0, lambda: fired.append("one more"))
    clock.advance(0.5)
    await idle_turns(2)
    assert fired == []
    clock.advance(0.5)
    await idle_turns(1)
    assert fired == ["one more"]
    assert clock.monotonic() == 101.0


def test_advance_refuses_negative_seconds() -> None:
    clock = FakeClock(autojump=False)
    clock.advance(2.0)
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-0.5)
    assert clock.monotonic() == 2.0


async def test_a_timer_due_in_an_hour_fires_as_soon_as_the_loop_is_idle() -> None:
    clock = FakeClock()
    fired: list[str] = []
    clock.call_later(3600.0, lambda: fired.append("an hour later"))
    await turns_until(lambda: bool(fired), limit=50)  # a few turns: no real hour passes
    assert fired == ["an hour later"]
    assert clock.monotonic() == 3600.0
    assert clock.wall() == clock.start + 3600.0


async def test_autojump_waits_for_idle_turns_quiet_loop_turns_before_jumping() -> None:
    clock = FakeClock(idle_turns=10)
    fired: list[str] = []
    clock.call_later(1.0, lambda: fired.append("fired"))
    await idle_turns(10)  # not yet ten quiet turns of the clock's own
    assert fired == []
    await turns_until(lambda: bool(fired), limit=50)
    assert clock.monotonic() == 1.0


async def test_autojump_fires_several_timers_one_jump_at_a_time_in_due_order() -> None:
    clock = FakeClock(idle_turns=3)
    fired: list[tuple[str, float]] = []
    clock.call_later(30.0, lambda: fired.append(("thirty", clock.monotonic())))
    clock.call_later(10.0, lambda: fired.append(("ten", clock.monotonic())))
    clock.call_later(20.0, lambda: fired.append(("twenty", clock.monotonic())))
    await turns_until(lambda: len(fired) == 3)
    assert fired == [("ten", 10.0), ("twenty", 20.0), ("thirty", 30.0)]


async def test_autojump_skips_a_cancelled_timer() -> None:
    clock = FakeClock(idle_turns=3)
    fired: list[tuple[str, float]] = []
    dropped = clock.call_later(10.0, lambda: fired.append(("cancelled", clock.monotonic())))
    clock.call_later(20.0, lambda: fired.append(("kept", clock.monotonic())))
    dropped.cancel()
    await turns_until(lambda: bool(fired))
    await idle_turns(30)
    assert fired == [("kept", 20.0)]
    assert clock.monotonic() == 20.0


async def test_without_autojump_nothing_fires_until_advance() -> None:
    clock = FakeClock(autojump=False, idle_turns=2)
    fired: list[str] = []
    clock.call_later(1.0, lambda: fired.append("fired"))
    await idle_turns(200)
    assert fired == []
    assert clock.monotonic() == 0.0
    assert clock.pending == 1

    clock.advance(1.0)
    await idle_turns(1)
    assert fired == ["fired"]


async def test_the_clock_does_not_jump_while_something_reads_it_every_loop_turn() -> None:
    clock = FakeClock(idle_turns=3)
    fired: list[str] = []
    clock.call_later(1.0, lambda: fired.append("fired"))

    async def busy(turns: int) -> None:
        for _ in range(turns):
            clock.wall()  # activity: the clock is in use
            await asyncio.sleep(0)

    await busy(200)
    assert fired == []
    assert clock.monotonic() == 0.0

    await turns_until(lambda: bool(fired))  # the activity stopped: the loop is idle
    assert fired == ["fired"]
    assert clock.monotonic() == 1.0


async def test_arming_timers_counts_as_activity_and_holds_time_still() -> None:
    clock = FakeClock(idle_turns=3)
    fired: list[str] = []
    clock.call_later(1.0, lambda: fired.append("first"))
    handles: list[TimerHandle] = []
    for _ in range(100):
        handles.append(clock.call_later(50.0, lambda: fired.append("later")))
        await asyncio.sleep(0)
    assert fired == []
    for handle in handles:
        handle.cancel()
    await turns_until(lambda: bool(fired))
    assert fired == ["first"]
    assert clock.monotonic() == 1.0


def test_one_clock_works_in_two_event_loops_in_turn() -> None:
    clock = FakeClock(idle_turns=3)

    async def sleep_on_the_clock(seconds: float) -> float:
        woke = asyncio.Event()
        clock.call_later(seconds, woke.set)
        await guarded(woke.wait())
        return clock.monotonic()

    assert asyncio.run(sleep_on_the_clock(10.0)) == 10.0
    assert asyncio.run(sleep_on_the_clock(5.0)) == 15.0
    assert clock.pending == 0


def test_a_timer_left_armed_by_a_closed_loop_does_not_move_time_in_the_next_loop() -> None:
    clock = FakeClock(idle_turns=3)

    async def arm_and_leave() -> None:
        clock.call_later(100.0, lambda: None)  # never cancelled; its loop closes

    async def sleep_then_idle() -> float:
        woke = asyncio.Event()
        clock.call_later(5.0, woke.set)
        await guarded(woke.wait())
        await idle_turns(50)
        return clock.monotonic()

    asyncio.run(arm_and_leave())
    assert asyncio.run(sleep_then_idle()) == 5.0
    assert clock.pending == 0


# -- the clock under workflows --------------------------------------------------------------------


class Answer(Event):
    text: str = ""


class Asking(Event):
    """Streamed by a step just before it waits for an Answer."""


class Stuck(Workflow):
    """Its only step never returns: only the run's timeout ends the run."""

    @step
    async def stuck(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await asyncio.Event().wait()  # never set
        return StopEvent(result="unreachable")


class Patient(Workflow):
    """Waits 30 s for an answer, and says whether it got one."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Asking())
        try:
            answer = await ctx.wait_for_event(Answer, timeout=30.0)
        except WaitForEventTimeoutError:
            return StopEvent(result="gave up")
        return StopEvent(result=f"answered {answer.text}")


class Sluggish(Workflow):
    """Each attempt hangs until its 120 s step timeout; one retry after 5 s."""

    @step(timeout=120.0, retry_policy=RetryPolicy(max_attempts=2, backoff=5.0))
    async def sluggish(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await asyncio.Event().wait()  # never set
        return StopEvent(result="unreachable")


def flaky_workflow(
    clock: FakeClock, attempted_at: list[float], mode: str, journal: Journal | None = None
) -> Workflow:
    """A step that fails twice, then succeeds; backoff 10 s, doubling (10 s, then 20 s)."""

    class Flaky(Workflow):
        @step(retry_policy=RetryPolicy(max_attempts=3, backoff=10.0, backoff_factor=2.0))
        async def call(self, ctx: Context, ev: StartEvent) -> StopEvent:
            attempted_at.append(clock.monotonic())
            if len(attempted_at) < 3:
                raise ConnectionError(f"attempt {len(attempted_at)}")
            return StopEvent(result=f"ok on attempt {len(attempted_at)}")

    return Flaky(mode=mode, clock=clock, journal=journal)


@pytest.mark.parametrize("mode", MODES)
async def test_a_run_timeout_of_an_hour_elapses_in_virtual_time(mode: str) -> None:
    clock = FakeClock()
    exc = await failure(Stuck(mode=mode, timeout=3600.0, clock=clock).run())
    assert type(exc) is WorkflowTimeoutError
    assert clock.monotonic() == 3600.0


@pytest.mark.parametrize("mode", MODES)
async def test_a_wait_for_event_timeout_elapses_in_virtual_time(mode: str) -> None:
    clock = FakeClock()
    assert await guarded(Patient(mode=mode, clock=clock).run()) == "gave up"
    assert clock.monotonic() == 30.0


@pytest.mark.parametrize("mode", MODES)
async def test_an_answer_that_comes_in_time_cancels_the_wait_timer_and_no_time_passes(
    mode: str,
) -> None:
    clock = FakeClock()
    handler_ = Patient(mode=mode, clock=clock).run()
    async with asyncio.timeout(GUARD_SECONDS):
        async for ev in handler_.stream_events():
            if isinstance(ev, Asking):
                handler_.send_event(Answer(text="at once"))
    assert await guarded(handler_) == "answered at once"
    assert clock.monotonic() == 0.0
    assert clock.pending == 0


@pytest.mark.parametrize("mode", MODES)
async def test_a_step_timeout_and_its_retry_backoff_elapse_in_virtual_time(
    mode: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    log = tmp_path / "events.jsonl"
    exc = await failure(Sluggish(mode=mode, clock=clock, event_log=log).run())
    assert isinstance(exc, StepTimeoutError)
    assert "'sluggish'" in str(exc)
    assert "attempt 2" in str(exc)
    assert clock.monotonic() == 120.0 + 5.0 + 120.0  # a timeout, the backoff, a timeout
    errors = [(r["kind"], r["error"]) for r in read_events(log) if "error" in r]
    assert [(kind, error["type"]) for kind, error in errors] == [
        ("step_retried", "StepTimeoutError"),  # the retried attempt says so too
        ("step_failed", "StepTimeoutError"),
        ("run_failed", "StepTimeoutError"),
    ]
    assert "timed out after 120.0s on attempt 1" in errors[0][1]["message"]


@pytest.mark.parametrize("mode", MODES)
async def test_retry_backoff_elapses_in_virtual_time(mode: str) -> None:
    clock = FakeClock()
    attempted_at: list[float] = []
    wf = flaky_workflow(clock, attempted_at, mode)
    assert await guarded(wf.run()) == "ok on attempt 3"
    assert attempted_at == [0.0, 10.0, 30.0]
    assert clock.monotonic() == 30.0


class FlakyFetch(Executor):
    """Fails twice, then yields an output; notes the virtual time of each attempt."""

    def __init__(self, id: str, clock: FakeClock, attempted_at: list[float]) -> None:
        super().__init__(
            id, retry_policy=RetryPolicy(max_attempts=3, backoff=7.0, backoff_factor=3.0)
        )
        self.clock = clock
        self.attempted_at = attempted_at

    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        self.attempted_at.append(self.clock.monotonic())
        if len(self.attempted_at) < 3:
            raise ConnectionError(f"attempt {len(self.attempted_at)}")
        await ctx.yield_output(f"{text} on attempt {len(self.attempted_at)}")


class Hangs(Executor):
    """Never finishes handling its message."""

    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        await asyncio.Event().wait()  # never set


@pytest.mark.parametrize("mode", MODES)
async def test_a_graph_built_with_a_fake_clock_backs_off_in_virtual_time(mode: str) -> None:
    clock = FakeClock()
    attempted_at: list[float] = []
    fetch = FlakyFetch("fetch", clock, attempted_at)
    wf = WorkflowBuilder(start=fetch).build(mode=mode, clock=clock)
    result = await guarded(wf.run("hello"))
    assert isinstance(result, RunResult)
    assert result.get_outputs() == ["hello on attempt 3"]
    assert attempted_at == [0.0, 7.0, 28.0]  # backoff 7 s, then 7 * 3 = 21 s
    assert clock.monotonic() == 28.0


@pytest.mark.parametrize("mode", MODES)
async def test_a_graph_step_timeout_elapses_in_virtual_time(mode: str) -> None:
    clock = FakeClock()
    wf = WorkflowBuilder(start=Hangs(id="hangs", timeout=90.0)).build(mode=mode, clock=clock)
    exc = await failure(wf.run("go"))
    assert isinstance(exc, StepTimeoutError)
    assert "'hangs'" in str(exc)
    assert clock.monotonic() == 90.0


@pytest.mark.parametrize("mode", MODES)
async def test_a_graph_run_timeout_elapses_in_virtual_time(mode: str) -> None:
    clock = FakeClock()
    wf = WorkflowBuilder(start=Hangs(id="hangs")).build(mode=mode, timeout=600.0, clock=clock)
    exc = await failure(wf.run("go"))
    assert type(exc) is WorkflowTimeoutError
    assert clock.monotonic() == 600.0


@pytest.mark.parametrize("mode", MODES)
async def test_the_ticks_of_a_run_carry_the_fake_clocks_wall_time(mode: str) -> None:
    clock = FakeClock(start=1_000.0)
    journal = Journal()
    attempted_at: list[float] = []
    wf = flaky_workflow(clock, attempted_at, mode, journal=journal)
    handler_ = wf.run()
    assert await guarded(handler_) == "ok on attempt 3"

    ticks = journal.ticks(handler_.run_id)
    assert isinstance(ticks[0], RunStarted)
    assert ticks[0].at == 1_000.0
    assert [t.at for t in ticks] == sorted(t.at for t in ticks)  # never goes back
    assert {t.at for t in ticks} == {1_000.0, 1_010.0, 1_030.0}
    assert [t.at for t in ticks if isinstance(t, AttemptFailed)] == [1_000.0, 1_010.0]
    assert [t.at for t in ticks if isinstance(t, TimerFired)] == [1_010.0, 1_030.0]
    assert isinstance(ticks[-1], StepCompleted)
    assert ticks[-1].at == 1_030.0


def test_one_fake_clock_serves_runs_in_two_event_loops_in_turn() -> None:
    clock = FakeClock()
    wf = Patient(clock=clock)

    async def one_run() -> object:
        return await guarded(wf.run())

    assert asyncio.run(one_run()) == "gave up"
    assert clock.monotonic() == 30.0
    assert asyncio.run(one_run()) == "gave up"
    assert clock.monotonic() == 60.0
    assert clock.pending == 0
