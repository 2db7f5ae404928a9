"""The observer seam: RunObserver hooks, as ``Workflow(observers=[...])`` and ``build(...)``.

Every hook is called: ``run_started`` first, every ``tick`` with the commands the kernel
produced for it, ``step_started`` / ``step_ended`` for each attempt (step name,
invocation, 1-based attempt, and the outcome tick: StepCompleted, AttemptFailed or
StepFailed), ``superstep_ended`` once per barrier in superstep mode with increasing
numbers, and ``run_ended`` last with the run's status. Retries show attempts 1, 2, 3.
Observers are called in the order given, with a RunInfo whose ``state`` is the kernel's
RunState. An observer that raises fails the run with its exception and does not hang
it; a value in ``observers=`` that is not a RunObserver is refused when the workflow is
made; ``verbose=True`` still prints each step and what it produced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest

from stepgraph import (
    Context,
    Event,
    Executor,
    RetryPolicy,
    RunObserver,
    RunResult,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    step,
)
from stepgraph.core import (
    AttemptFailed,
    Command,
    Mode,
    RunEnded,
    RunStarted,
    RunState,
    RunStatus,
    StartStep,
    StepCompleted,
    StepFailed,
    SuperstepEnded,
    Tick,
)
from stepgraph.errors import WorkflowCancelled, WorkflowValidationError
from stepgraph.runtime.observers import RunInfo

T = TypeVar("T")

GUARD_SECONDS = 10.0
"""A safety net against hangs only: no test relies on it firing."""

MODES = ["superstep", "async"]

Entry = tuple[Any, ...]


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``; a hang fails the test instead of hanging the suite."""
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            return await awaitable
    except TimeoutError as exc:
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


async def turns_until(condition: Callable[[], bool], limit: int = 200) -> None:
    """Turn the event loop until ``condition()`` holds; fail if it does not within ``limit``."""
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    assert condition(), f"the condition did not hold within {limit} loop turns"


class Recorder(RunObserver):
    """Records every hook call as a tuple, into its own log or a shared one."""

    def __init__(self, name: str = "recorder", log: list[Entry] | None = None) -> None:
        self.name = name
        self.log: list[Entry] = [] if log is None else log
        self.infos: list[RunInfo] = []

    def _note(self, run: RunInfo, *entry: Any) -> None:
        self.infos.append(run)
        self.log.append(entry)

    def run_started(self, run: RunInfo) -> None:
        self._note(run, "run_started", self.name)

    def tick(self, run: RunInfo, tick: Tick, commands: Sequence[Command]) -> None:
        self._note(run, "tick", self.name, tick, tuple(commands))

    def step_started(
        self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
    ) -> None:
        self._note(run, "step_started", self.name, step, invocation, attempt, message)

    def step_ended(
        self, run: RunInfo, step: str, invocation: int, attempt: int, outcome: Tick | None
    ) -> None:
        self._note(run, "step_ended", self.name, step, invocation, attempt, outcome)

    def superstep_ended(self, run: RunInfo, superstep: int) -> None:
        self._note(run, "superstep_ended", self.name, superstep)

    def run_ended(
        self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
    ) -> None:
        self._note(run, "run_ended", self.name, status, result, error)

    # -- reading the log ----------------------------------------------------------------------

    def hooks(self) -> list[str]:
        return [entry[0] for entry in self.log]

    def of(self, hook: str) -> list[Entry]:
        return [entry for entry in self.log if entry[0] == hook]

    def ticks(self) -> list[tuple[Tick, tuple[Command, ...]]]:
        return [(entry[2], entry[3]) for entry in self.of("tick")]

    def attempts(self) -> list[tuple[str, int, int, type]]:
        """(step, invocation, attempt, outcome type) of every step_ended, in order."""
        return [(e[2], e[3], e[4], type(e[5])) for e in self.of("step_ended")]

    def barriers(self) -> list[int]:
        return [entry[2] for entry in self.of("superstep_ended")]


class Boom(Exception):
    """An observer's own failure."""


# -- workflows ------------------------------------------------------------------------------------


class Middle(Event):
    n: int


class Last(Event):
    n: int


class Chain(Workflow):
    """start -> middle -> end: three supersteps, two barriers before the StopEvent."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Middle:
        return Middle(n=1)

    @step
    async def middle(self, ctx: Context, ev: Middle) -> Last:
        return Last(n=ev.n + 1)

    @step
    async def end(self, ctx: Context, ev: Last) -> StopEvent:
        return StopEvent(result=f"done with {ev.n}")


class Item(Event):
    n: int


class Part(Event):
    n: int


class Spread(Workflow):
    """start sends three Items; three workers make Parts (counting them); join collects."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        for n in range(3):
            ctx.send_event(Item(n=n))

    @step(num_workers=3)
    async def work(self, ctx: Context, ev: Item) -> Part:
        await ctx.store.update("worked", lambda count: (count or 0) + 1)
        return Part(n=ev.n)

    @step
    async def join(self, ctx: Context, ev: Part) -> StopEvent | None:
        parts = ctx.collect_events(ev, [Part] * 3)
        return None if parts is None else StopEvent(result=sorted(p.n for p in parts))


def flaky_workflow(fail_times: int, max_attempts: int, mode: str, **options: Any) -> Workflow:
    """A workflow whose one step fails ``fail_times`` times before it returns."""
    calls: list[int] = []

    class Flaky(Workflow):
        @step(retry_policy=RetryPolicy(max_attempts=max_attempts, backoff=0))
        async def call(self, ctx: Context, ev: StartEvent) -> StopEvent:
            calls.append(len(calls) + 1)
            if len(calls) <= fail_times:
                raise ConnectionError(f"attempt {len(calls)}")
            return StopEvent(result=f"ok on attempt {len(calls)}")

    return Flaky(mode=mode, **options)


class Upper(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext[str]) -> None:
        await ctx.send_message(text.upper())


class Shout(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"{text}!")


def shout_builder() -> WorkflowBuilder:
    upper = Upper(id="upper")
    return WorkflowBuilder(start=upper, name="shout").add_edge(upper, Shout(id="shout"))


# -- every hook, in order -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_every_hook_is_called_with_run_started_first_and_run_ended_last(mode: str) -> None:
    recorder = Recorder()
    assert await guarded(Chain(mode=mode, observers=[recorder]).run()) == "done with 2"

    hooks = recorder.hooks()
    assert hooks[0] == "run_started"
    assert hooks[-1] == "run_ended"
    assert hooks.count("run_started") == 1
    assert hooks.count("run_ended") == 1
    assert {"tick", "step_started", "step_ended"} <= set(hooks)
    assert recorder.attempts() == [
        ("start", 0, 1, StepCompleted),
        ("middle", 1, 1, StepCompleted),
        ("end", 2, 1, StepCompleted),
    ]
    (ended,) = recorder.of("run_ended")
    assert ended[2] is RunStatus.FINISHED
    assert ended[4] is None  # no error


@pytest.mark.parametrize("mode", MODES)
async def test_step_started_precedes_its_step_ended_and_gets_the_message(mode: str) -> None:
    recorder = Recorder()
    await guarded(Chain(mode=mode, observers=[recorder]).run())

    started = [(e[2], e[3], e[4]) for e in recorder.of("step_started")]
    ended = [(e[2], e[3], e[4]) for e in recorder.of("step_ended")]
    assert started == ended == [("start", 0, 1), ("middle", 1, 1), ("end", 2, 1)]
    for key in started:
        at_start = next(
            i for i, e in enumerate(recorder.log) if e[0] == "step_started" and e[2:5] == key
        )
        at_end = next(
            i for i, e in enumerate(recorder.log) if e[0] == "step_ended" and e[2:5] == key
        )
        assert at_start < at_end

    messages = {e[2]: e[5] for e in recorder.of("step_started")}
    assert isinstance(messages["start"], StartEvent)
    assert messages["middle"] == Middle(n=1)
    assert messages["end"] == Last(n=2)


@pytest.mark.parametrize("mode", MODES)
async def test_each_tick_comes_with_the_commands_the_kernel_produced_for_it(mode: str) -> None:
    recorder = Recorder()
    handler_ = Chain(mode=mode, observers=[recorder]).run()
    await guarded(handler_)
    ticks = recorder.ticks()

    first, first_commands = ticks[0]
    assert isinstance(first, RunStarted)
    assert first.run_id == handler_.run_id
    assert [type(c) for c in first_commands] == [StartStep]
    assert isinstance(first_commands[0], StartStep)
    assert first_commands[0].message is first.start

    last, last_commands = ticks[-1]
    assert isinstance(last, StepCompleted)
    assert isinstance(last_commands[-1], RunEnded)
    assert last_commands[-1].status is RunStatus.FINISHED


@pytest.mark.parametrize("mode", MODES)
async def test_each_attempt_is_started_by_a_tick_and_its_outcome_is_fed_as_a_tick(
    mode: str,
) -> None:
    recorder = Recorder()
    await guarded(flaky_workflow(2, 3, mode, observers=[recorder]).run())
    log = recorder.log

    for at_start, entry in enumerate(log):
        if entry[0] != "step_started":
            continue
        invocation, attempt = entry[3], entry[4]
        # an earlier tick produced the StartStep of this very attempt ...
        assert any(
            isinstance(c, StartStep) and (c.invocation, c.attempt) == (invocation, attempt)
            for e in log[:at_start]
            if e[0] == "tick"
            for c in e[3]
        )
        # ... and once the attempt ended, its outcome is the next tick the kernel applies
        at_end = next(
            i
            for i, e in enumerate(log)
            if e[0] == "step_ended" and (e[3], e[4]) == (invocation, attempt)
        )
        outcome = log[at_end][5]
        later_ticks = [e[2] for e in log[at_end + 1 :] if e[0] == "tick"]
        assert later_ticks[0] is outcome


async def test_superstep_ended_is_called_once_per_barrier_with_increasing_numbers() -> None:
    recorder = Recorder()
    assert await guarded(Spread(observers=[recorder]).run()) == [0, 1, 2]

    # supersteps: 0 start, 1 three work steps, 2 three joins (the last one stops the run)
    assert recorder.barriers() == [0, 1]
    steps = [name for name, *_ in recorder.attempts()]
    assert steps == ["start", "work", "work", "work", "join", "join", "join"]
    barrier_commands = [
        c.superstep
        for _, commands in recorder.ticks()
        for c in commands
        if isinstance(c, SuperstepEnded)
    ]
    assert barrier_commands == [0, 1]


async def test_at_a_barrier_nothing_is_in_flight_and_the_writes_are_merged() -> None:
    seen: list[tuple[int, int, object]] = []

    class AtBarriers(Recorder):
        def superstep_ended(self, run: RunInfo, superstep: int) -> None:
            in_flight = len(self.of("step_started")) - len(self.of("step_ended"))
            seen.append((superstep, in_flight, run.state.store.get("worked")))
            super().superstep_ended(run, superstep)

    await guarded(Spread(observers=[AtBarriers()]).run())
    assert seen == [(0, 0, None), (1, 0, 3)]


async def test_no_barrier_is_reported_in_async_mode() -> None:
    recorder = Recorder()
    assert await guarded(Chain(mode="async", observers=[recorder]).run()) == "done with 2"
    assert recorder.barriers() == []
    assert len(recorder.attempts()) == 3


async def test_a_graph_built_with_observers_reports_its_executors_and_barriers() -> None:
    recorder = Recorder()
    wf = shout_builder().build(observers=[recorder])
    result = await guarded(wf.run("hi"))
    assert isinstance(result, RunResult)
    assert result.get_outputs() == ["HI!"]

    assert recorder.hooks()[0] == "run_started"
    assert recorder.hooks()[-1] == "run_ended"
    assert recorder.attempts() == [("upper", 0, 1, StepCompleted), ("shout", 1, 1, StepCompleted)]
    assert [e[5] for e in recorder.of("step_started")] == ["hi", "HI"]
    assert recorder.barriers() == [0, 1]
    assert recorder.of("run_ended")[0][2] is RunStatus.FINISHED


# -- attempts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_retries_show_attempts_one_two_three_of_one_invocation(mode: str) -> None:
    recorder = Recorder()
    wf = flaky_workflow(2, 3, mode, observers=[recorder])
    assert await guarded(wf.run()) == "ok on attempt 3"
    assert recorder.attempts() == [
        ("call", 0, 1, AttemptFailed),
        ("call", 0, 2, AttemptFailed),
        ("call", 0, 3, StepCompleted),
    ]
    assert [e[4] for e in recorder.of("step_started")] == [1, 2, 3]


@pytest.mark.parametrize("mode", MODES)
async def test_a_step_that_fails_for_good_ends_with_step_failed_and_a_failed_run(
    mode: str,
) -> None:
    recorder = Recorder()
    exc = await failure(flaky_workflow(99, 2, mode, observers=[recorder]).run())
    assert type(exc) is ConnectionError
    assert recorder.attempts() == [("call", 0, 1, AttemptFailed), ("call", 0, 2, StepFailed)]
    (outcome,) = [e[5] for e in recorder.of("step_ended") if isinstance(e[5], StepFailed)]
    assert outcome.failure.message == "attempt 2"
    (ended,) = recorder.of("run_ended")
    assert ended[2] is RunStatus.FAILED
    assert ended[4] is exc


async def test_a_cancelled_run_ends_with_the_cancelled_status() -> None:
    started = asyncio.Event()
    recorder = Recorder()

    class Forever(Workflow):
        @step
        async def wait(self, ctx: Context, ev: StartEvent) -> StopEvent:
            started.set()
            await asyncio.Event().wait()  # never set
            return StopEvent(result="unreachable")

    handler_ = Forever(observers=[recorder]).run()
    await guarded(started.wait())
    await handler_.cancel()
    exc = await failure(handler_)
    assert isinstance(exc, WorkflowCancelled)
    assert recorder.hooks()[-2:] == ["step_ended", "run_ended"]  # the step first, then the run
    (ended,) = recorder.of("run_ended")
    assert ended[2] is RunStatus.CANCELLED
    (step_end,) = recorder.of("step_ended")
    assert step_end[2:] == ("wait", 0, 1, None)  # cut short: no outcome tick


# -- order and what an observer sees --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_observers_are_called_in_the_order_given(mode: str) -> None:
    log: list[Entry] = []
    names = ["first", "second", "third"]
    observers = [Recorder(name, log) for name in names]
    await guarded(flaky_workflow(1, 2, mode, observers=observers).run())

    assert len(log) % 3 == 0
    assert len(log) >= 3 * 6
    for k in range(0, len(log), 3):
        group = log[k : k + 3]
        assert [entry[1] for entry in group] == names
        hook, _, *rest = group[0]
        assert all(entry[0] == hook and list(entry[2:]) == rest for entry in group)


@pytest.mark.parametrize("mode", MODES)
async def test_run_info_names_the_run_and_gives_the_kernels_run_state(mode: str) -> None:
    recorder = Recorder()
    handler_ = Chain(mode=mode, observers=[recorder]).run()
    await guarded(handler_)

    infos = recorder.infos
    assert len(infos) == len(recorder.log)
    assert {info.run_id for info in infos} == {handler_.run_id}
    assert {info.name for info in infos} == {"Chain"}
    assert {info.mode for info in infos} == {Mode(mode)}
    states = {id(info.state) for info in infos}
    assert len(states) == 1  # one state, the same object all along
    assert isinstance(infos[0].state, RunState)
    assert infos[-1].state.status is RunStatus.FINISHED


async def test_an_observer_sees_the_kernel_state_as_it_changes() -> None:
    statuses: list[tuple[str, RunStatus]] = []

    class Statuses(RunObserver):
        def step_started(
            self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
        ) -> None:
            statuses.append((step, run.state.status))

        def run_ended(
            self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
        ) -> None:
            statuses.append(("end", run.state.status))

    await guarded(Chain(observers=[Statuses()]).run())
    assert statuses == [
        ("start", RunStatus.RUNNING),
        ("middle", RunStatus.RUNNING),
        ("end", RunStatus.RUNNING),
        ("end", RunStatus.FINISHED),
    ]


# -- observers that raise -------------------------------------------------------------------------


class RaisesOnTick(Recorder):
    """Raises ``error`` once, on the first tick of type ``kind``."""

    def __init__(self, kind: type, error: BaseException) -> None:
        super().__init__("raiser")
        self.kind = kind
        self.error = error
        self.raised = False

    def tick(self, run: RunInfo, tick: Tick, commands: Sequence[Command]) -> None:
        super().tick(run, tick, commands)
        if isinstance(tick, self.kind) and not self.raised:
            self.raised = True
            raise self.error


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", [RunStarted, StepCompleted])
async def test_an_observer_that_raises_in_tick_fails_the_run_with_that_exception(
    mode: str, kind: type
) -> None:
    error = Boom("the observer broke")
    watcher = Recorder()
    raiser = RaisesOnTick(kind, error)
    handler_ = Chain(mode=mode, observers=[raiser, watcher]).run()
    exc = await failure(handler_)
    assert exc is error
    assert raiser.raised
    (ended,) = watcher.of("run_ended")
    assert ended[2] is RunStatus.FAILED
    assert ended[4] is error


@pytest.mark.parametrize("mode", MODES)
async def test_an_observer_that_raises_in_tick_does_not_hang_a_run_with_a_blocked_step(
    mode: str,
) -> None:
    blocked = asyncio.Event()
    unwound = asyncio.Event()

    class Quick(Event):
        pass

    class Block(Event):
        pass

    class HalfStuck(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Block())
            ctx.send_event(Quick())

        @step
        async def blocker(self, ctx: Context, ev: Block) -> StopEvent:
            blocked.set()
            try:
                await asyncio.Event().wait()  # never set: only cancellation ends this
            finally:
                unwound.set()
            return StopEvent(result="unreachable")

        @step
        async def quick(self, ctx: Context, ev: Quick) -> None:
            await blocked.wait()  # complete only once the blocker is in flight

    class RaisesWhenQuickEnds(RunObserver):
        def __init__(self) -> None:
            self.quick_invocation = -1

        def step_started(
            self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
        ) -> None:
            if step == "quick":
                self.quick_invocation = invocation

        def tick(self, run: RunInfo, tick: Tick, commands: Sequence[Command]) -> None:
            if isinstance(tick, StepCompleted) and tick.invocation == self.quick_invocation:
                raise Boom("raised while another step is blocked")

    exc = await failure(HalfStuck(mode=mode, observers=[RaisesWhenQuickEnds()]).run())
    assert isinstance(exc, Boom)
    assert str(exc) == "raised while another step is blocked"
    await guarded(unwound.wait())  # the blocked step was cancelled: nothing lingers


async def test_an_observer_that_raises_on_several_ticks_in_a_row_still_ends_the_run() -> None:
    class RaisesThrice(RunObserver):
        """Raises on its first three ticks (a bounded stand-in for 'raises every time')."""

        def __init__(self) -> None:
            self.calls = 0

        def tick(self, run: RunInfo, tick: Tick, commands: Sequence[Command]) -> None:
            self.calls += 1
            if self.calls <= 3:
                raise Boom(f"tick {self.calls}")

    handler_ = Chain(observers=[RaisesThrice()]).run()
    await turns_until(handler_.done, limit=100)
    exc = await failure(handler_)
    assert isinstance(exc, Boom)


@pytest.mark.parametrize("barrier", [0, 1])
async def test_an_observer_that_raises_in_superstep_ended_fails_the_run(barrier: int) -> None:
    error = Boom(f"barrier {barrier}")
    watcher = Recorder()

    class RaisesAtBarrier(RunObserver):
        def superstep_ended(self, run: RunInfo, superstep: int) -> None:
            if superstep == barrier:
                raise error

    exc = await failure(Chain(observers=[RaisesAtBarrier(), watcher]).run())
    assert exc is error
    (ended,) = watcher.of("run_ended")
    assert ended[2] is RunStatus.FAILED
    assert ended[4] is error
    assert "end" not in [name for name, *_ in watcher.attempts()]  # it never finished


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hook", ["step_started", "step_ended"])
async def test_an_observer_that_raises_around_a_step_fails_the_run(mode: str, hook: str) -> None:
    error = Boom(hook)

    class RaisesAroundSteps(RunObserver):
        def step_started(
            self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
        ) -> None:
            if hook == "step_started":
                raise error

        def step_ended(
            self, run: RunInfo, step: str, invocation: int, attempt: int, outcome: Tick
        ) -> None:
            if hook == "step_ended":
                raise error

    exc = await failure(Chain(mode=mode, observers=[RaisesAroundSteps()]).run())
    assert exc is error


@pytest.mark.parametrize("mode", MODES)
async def test_an_observer_that_raises_in_run_ended_fails_a_run_that_finished(mode: str) -> None:
    boom = Boom("could not record the end")

    class RaisesAtTheEnd(RunObserver):
        def run_ended(
            self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
        ) -> None:
            raise boom

    exc = await failure(Chain(mode=mode, observers=[RaisesAtTheEnd()]).run())
    assert exc is boom


# -- option checks --------------------------------------------------------------------------------


def not_observers() -> list[object]:
    """Values that are not RunObserver instances."""
    return [object(), Recorder, "verbose", lambda run: None]


@pytest.mark.parametrize("value", not_observers(), ids=["object", "class", "str", "function"])
def test_a_workflow_refuses_an_observer_that_is_not_a_run_observer(value: object) -> None:
    with pytest.raises(WorkflowValidationError, match=r"observers") as info:
        Chain(observers=[Recorder(), value])  # type: ignore[list-item]
    assert "Chain" in str(info.value)
    assert "RunObserver" in str(info.value)


@pytest.mark.parametrize("value", not_observers(), ids=["object", "class", "str", "function"])
def test_a_builder_refuses_an_observer_that_is_not_a_run_observer(value: object) -> None:
    with pytest.raises(WorkflowValidationError, match=r"observers") as info:
        shout_builder().build(observers=[value])  # type: ignore[list-item]
    assert "RunObserver" in str(info.value)


# -- verbose --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_verbose_prints_each_step_and_what_it_produced(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await guarded(Chain(mode=mode, verbose=True).run()) == "done with 2"
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "Running step start",
        "Step start produced Middle",
        "Running step middle",
        "Step middle produced Last",
        "Running step end",
        "Step end produced StopEvent",
    ]


async def test_verbose_prints_a_retried_step_once_and_the_given_observers_still_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    recorder = Recorder()
    wf = flaky_workflow(2, 3, "superstep", verbose=True, observers=[recorder])
    assert await guarded(wf.run()) == "ok on attempt 3"
    out = capsys.readouterr().out
    assert out.count("Running step call") == 1
    assert "Step call produced StopEvent" in out
    assert [attempt for _, _, attempt, _ in recorder.attempts()] == [1, 2, 3]


async def test_verbose_works_for_a_built_graph(capsys: pytest.CaptureFixture[str]) -> None:
    wf = shout_builder().build(verbose=True)
    assert (await guarded(wf.run("hi"))).get_outputs() == ["HI!"]
    out = capsys.readouterr().out
    assert "Running step upper" in out
    assert "Step upper produced str" in out
    assert "Running step shout" in out


async def test_an_observer_that_raises_in_run_started_fails_the_run_through_its_handler() -> None:
    class Refuses(RunObserver):
        def run_started(self, run: RunInfo) -> None:
            raise LookupError("no sink for this run")

    handler = Chain(observers=[Refuses()]).run()  # returns a handler: nothing escapes here
    with pytest.raises(LookupError, match="no sink"):
        await handler


def test_a_journal_file_that_cannot_be_written_is_refused_when_the_journal_is_made(
    tmp_path: Any,
) -> None:
    from stepgraph.journal import Journal

    with pytest.raises(OSError, match="no-such-dir"):
        Journal(tmp_path / "no-such-dir" / "runs.jsonl")
