"""Hard cases: waits that are abandoned or resumed under bounds, retries, odd failures.

Each test pins a case where an engine could hang silently, lose or duplicate a message,
or fail unclearly: waits cancelled by the step itself, waits behind a busy serial step,
resumption under ``max_concurrency``, retries after collecting or sending, a step that
raises ``CancelledError``, raising reducers and edge conditions. A run that would hang
gets a short ``timeout=`` so the test fails fast; no test relies on a timeout firing
when the engine behaves.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest

from stepgraph import (
    Context,
    Event,
    Executor,
    HumanResponseEvent,
    InputRequiredEvent,
    RequestInfoEvent,
    RetryPolicy,
    RunObserver,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowExecutor,
    executor,
    handler,
    response_handler,
    step,
)
from stepgraph.core import RunState, RunStatus, StepFailed
from stepgraph.errors import (
    StepTimeoutError,
    WaitForEventTimeoutError,
    WorkflowCancelled,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
)
from stepgraph.journal import Journal
from stepgraph.runtime.observers import RunInfo
from stepgraph.state import add, append
from stepgraph.testing import FakeClock

MODES = ["superstep", "async"]
HANG_GUARD = 0.2  # seconds a buggy run may hang before its test fails


class Ask(Event):
    n: int


class Question(Event):
    n: int


class Answer(Event):
    n: int = 0


class Item(Event):
    n: int


class Late(Event):
    attempt: int


class Go(Event):
    pass


class Other(Event):
    pass


# -- wait_for_event ------------------------------------------------------------------------------


class WaitWithQueueBehind(Workflow):
    """A serial step waits for an answer while a second message queues behind it."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(Ask(n=1))
        ctx.send_event(Ask(n=2))

    @step
    async def ask(self, ctx: Context, ev: Ask) -> StopEvent | None:
        ctx.send_event(Question(n=ev.n))
        answer = await ctx.wait_for_event(Answer, requirements={"n": ev.n}, timeout=None)
        got = await ctx.store.update("got", lambda g: [*(g or []), answer.n])
        return StopEvent(result=got) if len(got) == 2 else None

    @step
    async def answer(self, ctx: Context, ev: Question) -> None:
        ctx.send_event(Answer(n=ev.n))


async def test_waiting_step_with_a_queued_message_does_not_hold_the_barrier() -> None:
    assert await WaitWithQueueBehind(timeout=HANG_GUARD).run() == [1, 2]


async def test_waiting_step_with_a_queued_message_gets_its_answer_in_async_mode() -> None:
    assert await WaitWithQueueBehind(mode="async", timeout=5).run() == [1, 2]


class SerialHumanQuestions(Workflow):
    """The LlamaIndex human-in-the-loop idiom on a serial step with two questions."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(Ask(n=1))
        ctx.send_event(Ask(n=2))

    @step
    async def ask(self, ctx: Context, ev: Ask) -> StopEvent | None:
        ctx.send_event(InputRequiredEvent(prefix=str(ev.n)))
        reply = await ctx.wait_for_event(
            HumanResponseEvent, requirements={"response": str(ev.n)}, timeout=None
        )
        got = await ctx.store.update("got", lambda g: [*(g or []), reply.response])
        return StopEvent(result=got) if len(got) == 2 else None


async def test_input_requests_of_a_serial_waiting_step_reach_the_caller() -> None:
    h = SerialHumanQuestions(timeout=HANG_GUARD).run()
    async for ev in h.stream_events():
        if isinstance(ev, InputRequiredEvent):
            h.send_event(HumanResponseEvent(response=ev.prefix))
    assert await h == ["1", "2"]


class GiveUpWaiting(Workflow):
    """The step bounds its own wait with asyncio.wait_for and carries on without it."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        try:
            await asyncio.wait_for(ctx.wait_for_event(Answer, timeout=None), 0.01)
        except TimeoutError:
            return StopEvent(result="fallback")
        return StopEvent(result="answered")


@pytest.mark.parametrize("mode", MODES)
async def test_step_may_abandon_a_wait_for_event_it_bounded_itself(mode: str) -> None:
    assert await GiveUpWaiting(mode=mode, timeout=5).run() == "fallback"


class RetryAfterWaitTimeout(Workflow):
    """The first attempt times out inside wait_for_event; the retry needs no wait."""

    @step(timeout=0.02, retry_policy=RetryPolicy(max_attempts=2))
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        attempt = await ctx.store.update("attempt", lambda a: (a or 0) + 1)
        if attempt == 1:
            await ctx.wait_for_event(Answer, timeout=None)
        return StopEvent(result=attempt)


@pytest.mark.parametrize("mode", MODES)
async def test_step_timed_out_in_wait_for_event_is_retried(mode: str) -> None:
    clock = FakeClock()
    assert await RetryAfterWaitTimeout(mode=mode, timeout=5, clock=clock).run() == 2
    assert clock.monotonic() == 0.02  # one step timeout, on virtual time


@pytest.mark.parametrize("mode", MODES)
async def test_step_timed_out_in_wait_for_event_fails_with_step_timeout_error(
    mode: str,
) -> None:
    class TimesOutWaiting(Workflow):
        @step(timeout=0.02)
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.wait_for_event(Answer, timeout=None)
            return StopEvent(result="answered")

    with pytest.raises(StepTimeoutError, match="step 'start'"):
        await TimesOutWaiting(mode=mode, timeout=5, clock=FakeClock()).run()


@pytest.mark.parametrize("mode", MODES)
async def test_event_for_an_abandoned_wait_does_not_raise_at_the_caller(mode: str) -> None:
    gave_up = asyncio.Event()
    release = asyncio.Event()

    class AbandonsAndLingers(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            try:
                await asyncio.wait_for(ctx.wait_for_event(Answer, timeout=None), 0.01)
            except TimeoutError:
                gave_up.set()
            await release.wait()
            return StopEvent(result="done")

    h = AbandonsAndLingers(mode=mode, timeout=5).run()
    await gave_up.wait()
    try:
        h.send_event(Answer())
    finally:
        release.set()
    assert await h == "done"


async def test_a_second_concurrent_wait_in_one_step_raises_a_clear_error() -> None:
    class TwoWaitsAtOnce(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await asyncio.gather(
                ctx.wait_for_event(Go, timeout=None),
                ctx.wait_for_event(Other, timeout=None),
            )
            return StopEvent(result="both")

    with pytest.raises(WorkflowRuntimeError, match="already waiting"):
        await TwoWaitsAtOnce(mode="async", timeout=HANG_GUARD).run()


@pytest.mark.parametrize("mode", MODES)
async def test_each_waiting_worker_gets_the_answer_matching_its_requirements(mode: str) -> None:
    class Waiters(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for n in range(3):
                ctx.send_event(Ask(n=n))

        @step(num_workers=3)
        async def ask(self, ctx: Context, ev: Ask) -> StopEvent | None:
            ctx.write_event_to_stream(InputRequiredEvent(prefix=str(ev.n)))
            reply = await ctx.wait_for_event(
                HumanResponseEvent, requirements={"response": str(ev.n)}, timeout=None
            )
            got = await ctx.store.update("got", lambda g: sorted([*(g or []), reply.response]))
            return StopEvent(result=got) if len(got) == 3 else None

    h = Waiters(mode=mode, timeout=5).run()
    async for ev in h.stream_events():
        if isinstance(ev, InputRequiredEvent):
            h.send_event(HumanResponseEvent(response=ev.prefix))
    assert await h == ["0", "1", "2"]


@pytest.mark.parametrize("mode", MODES)
async def test_wait_for_event_timeout_is_raised_in_the_step_and_can_be_handled(mode: str) -> None:
    class Patient(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            try:
                await ctx.wait_for_event(Answer, timeout=0.01)
            except WaitForEventTimeoutError:
                return StopEvent(result="gave up")
            return StopEvent(result="answered")

    clock = FakeClock()
    assert await Patient(mode=mode, timeout=5, clock=clock).run() == "gave up"
    assert clock.monotonic() == 0.01


@pytest.mark.parametrize("mode", MODES)
async def test_caller_stop_event_ends_a_run_paused_in_wait_for_event(mode: str) -> None:
    waiting = asyncio.Event()

    class Paused(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            waiting.set()
            await ctx.wait_for_event(Answer, timeout=None)
            return StopEvent(result="answered")

    h = Paused(mode=mode, timeout=5).run()
    await waiting.wait()
    h.send_event(StopEvent(result="stopped by caller"))
    assert await h == "stopped by caller"


# -- max_concurrency -----------------------------------------------------------------------------


async def test_max_concurrency_bounds_a_step_resumed_from_wait_for_event() -> None:
    live = {"now": 0, "most": 0}

    def enter() -> None:
        live["now"] += 1
        live["most"] = max(live["most"], live["now"])

    class ResumeWhileBusy(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Go:
            return Go()

        @step
        async def waiter(self, ctx: Context, ev: Go) -> StopEvent:
            await ctx.wait_for_event(Answer, timeout=None)
            enter()
            for _ in range(10):
                await asyncio.sleep(0)  # a yield, so an overlapping body would show
            live["now"] -= 1
            return StopEvent(result=live["most"])

        @step
        async def other(self, ctx: Context, ev: Go) -> None:
            enter()
            ctx.send_event(Answer())
            for _ in range(10):
                await asyncio.sleep(0)
            live["now"] -= 1

    assert await ResumeWhileBusy(mode="async", max_concurrency=1, timeout=5).run() == 1


@pytest.mark.parametrize("mode", MODES)
async def test_step_held_back_by_max_concurrency_starts_when_the_running_one_waits(
    mode: str,
) -> None:
    class Handshake(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Go:
            return Go()

        @step
        async def waiter(self, ctx: Context, ev: Go) -> StopEvent:
            answer = await ctx.wait_for_event(Answer, timeout=None)
            return StopEvent(result=answer.n)

        @step
        async def helper(self, ctx: Context, ev: Go) -> None:
            ctx.send_event(Answer(n=7))

    assert await Handshake(mode=mode, max_concurrency=1, timeout=5).run() == 7


# -- step failures, retries, cancellation --------------------------------------------------------


class RaisesCancelledError(Workflow):
    """A step awaits a task that was cancelled, so CancelledError escapes its body."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        task = asyncio.ensure_future(asyncio.Event().wait())
        task.cancel()
        await task
        return StopEvent(result="unreachable")


@pytest.mark.parametrize("mode", MODES)
async def test_step_raising_cancelled_error_fails_the_run_naming_the_step(mode: str) -> None:
    with pytest.raises(BaseException) as info:
        await RaisesCancelledError(mode=mode, timeout=HANG_GUARD).run()
    assert not isinstance(info.value, WorkflowTimeoutError)
    assert "start" in " ".join([str(info.value), *getattr(info.value, "__notes__", [])])


class CollectsThenFlakes(Workflow):
    """The join step collects its event, then fails once for the first Item."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(Item(n=1))
        ctx.send_event(Item(n=2))

    @step(retry_policy=RetryPolicy(max_attempts=2))
    async def join(self, ctx: Context, ev: Item) -> StopEvent | None:
        batch = ctx.collect_events(ev, [Item, Item])
        attempt = await ctx.store.update(f"attempt{ev.n}", lambda a: (a or 0) + 1)
        if ev.n == 1 and attempt == 1:
            raise ConnectionError("flaky")
        if batch is None:
            return None
        return StopEvent(result=[item.n for item in batch])


@pytest.mark.parametrize("mode", MODES)
async def test_retried_step_does_not_collect_its_event_twice(mode: str) -> None:
    assert await CollectsThenFlakes(mode=mode, timeout=5).run() == [1, 2]


async def test_sync_step_attempt_abandoned_by_its_timeout_cannot_send() -> None:
    attempts = itertools.count(1)
    second_started = threading.Event()
    first_sent = threading.Event()

    class SlowSync(Workflow):
        @step(timeout=0.05, retry_policy=RetryPolicy(max_attempts=2))
        def start(self, ctx: Context, ev: StartEvent) -> None:
            attempt = next(attempts)
            if attempt == 1:
                try:
                    second_started.wait(5)  # outlives its 0.05 s timeout
                    ctx.send_event(Late(attempt=1))
                finally:
                    first_sent.set()
                return None
            second_started.set()
            first_sent.wait(5)
            ctx.send_event(Late(attempt=2))
            return None

        @step
        async def sink(self, ev: Late) -> StopEvent:
            return StopEvent(result=ev.attempt)

    assert await SlowSync(timeout=5).run() == 2


@pytest.mark.parametrize("mode", MODES)
async def test_failed_attempt_sends_and_reducer_writes_are_discarded_before_retry(
    mode: str,
) -> None:
    class Flaky(Workflow):
        reducers = {"log": append}

        @step(retry_policy=RetryPolicy(max_attempts=2))
        async def start(self, ctx: Context, ev: StartEvent) -> Item:
            attempt = await ctx.store.update("attempt", lambda a: (a or 0) + 1)
            await ctx.store.set("log", attempt)
            ctx.send_event(Late(attempt=attempt))  # no suspension after it: discarded
            if attempt == 1:
                raise ConnectionError("flaky")
            return Item(n=attempt)

        @step
        async def late(self, ctx: Context, ev: Late) -> None:
            await ctx.store.update("late", lambda seen: [*(seen or []), ev.attempt])

        @step
        async def finish(self, ctx: Context, ev: Item) -> StopEvent:
            return StopEvent(result=(await ctx.store.get("log"), await ctx.store.get("late"), ev.n))

    result = await Flaky(mode=mode, timeout=5).run()
    # Reducer writes are buffered (and so discarded) in superstep mode only; async mode
    # merges each write at once, like any other side effect of the failed attempt.
    assert result == ([2] if mode == "superstep" else [1, 2], [2], 2)


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_releases_the_store_lock_of_an_interrupted_edit_block(mode: str) -> None:
    inside = asyncio.Event()

    class HoldsLock(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            async with ctx.store.edit() as state:
                state["a"] = 1
                inside.set()
                await asyncio.Event().wait()
            return StopEvent(result="unreachable")

    h = HoldsLock(mode=mode).run()
    await inside.wait()
    await h.cancel()
    with pytest.raises(WorkflowCancelled):
        await h
    async with asyncio.timeout(1):  # a leaked lock would block here
        assert await h.ctx.store.get("a") is None  # the edit did not commit


# -- shared state --------------------------------------------------------------------------------


def _retrieve_worker_errors(workers: set[asyncio.Task[None]]) -> None:
    """Mark the errors of worker tasks killed by a bug as retrieved (no GC-time log)."""
    for task in workers:
        if task.done() and not task.cancelled():
            task.exception()


class ReducerClashAtBarrier(Workflow):
    reducers = {"n": add}

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Item:
        await ctx.store.set("n", 1)
        await ctx.store.set("n", "x")  # add(1, "x") raises TypeError at the barrier
        return Item(n=1)

    @step
    async def finish(self, ctx: Context, ev: Item) -> StopEvent:
        return StopEvent(result=await ctx.store.get("n"))


async def test_reducer_error_at_the_barrier_fails_the_run() -> None:
    h = ReducerClashAtBarrier(timeout=HANG_GUARD).run()
    workers = set(h._run.workers.tasks)
    try:
        with pytest.raises(TypeError):
            await h
    finally:
        _retrieve_worker_errors(workers)


class ReducerClashAtEnd(Workflow):
    reducers = {"n": add}

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("n", 1)
        await ctx.store.set("n", "x")  # merged when the run ends
        return StopEvent(result="done")


async def test_reducer_error_when_the_run_ends_fails_the_run() -> None:
    h = ReducerClashAtEnd(timeout=HANG_GUARD).run()
    workers = set(h._run.workers.tasks)
    try:
        with pytest.raises(TypeError):
            await asyncio.wait_for(h, HANG_GUARD * 2)
    finally:
        _retrieve_worker_errors(workers)


async def _bump(old: int | None) -> int:
    return (old or 0) + 1


async def test_update_with_a_function_returning_a_coroutine_stores_its_result() -> None:
    class Bumps(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            value = await ctx.store.update("k", lambda old: _bump(old))
            return StopEvent(result=value)

    result = await Bumps(timeout=5).run()
    if asyncio.iscoroutine(result):
        result.close()  # no "never awaited" warning from the buggy path
    assert result == 1


async def test_concurrent_runs_of_one_object_merge_reducer_writes_separately() -> None:
    class Tally(Workflow):
        reducers = {"log": append}

        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for n in range(3):
                ctx.send_event(Item(n=ev.base + n))

        @step(num_workers=3)
        async def work(self, ctx: Context, ev: Item) -> Go:
            await ctx.store.set("log", ev.n)
            return Go()

        @step
        async def join(self, ctx: Context, ev: Go) -> StopEvent | None:
            if ctx.collect_events(ev, [Go] * 3) is None:
                return None
            return StopEvent(result=await ctx.store.get("log"))

    wf = Tally(timeout=5)
    results = await asyncio.gather(*(wf.run(base=10 * k) for k in range(4)))
    assert results == [[10 * k, 10 * k + 1, 10 * k + 2] for k in range(4)]


# -- streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_sync_step_stream_events_come_before_its_stop_event(mode: str) -> None:
    class Progress(Workflow):
        @step
        def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            for n in range(3):
                ctx.write_event_to_stream(Item(n=n))
            return StopEvent(result="ok")

    h = Progress(mode=mode, timeout=5).run()
    seen = [ev async for ev in h.stream_events()]
    assert await h == "ok"
    assert [type(ev).__name__ for ev in seen] == ["Item", "Item", "Item", "StopEvent"]
    assert [ev.n for ev in seen[:3]] == [0, 1, 2]


# -- executor graphs -----------------------------------------------------------------------------


def explodes(message: Any) -> bool:
    raise ZeroDivisionError("condition failed")


@executor(id="source")
async def source(n: int, ctx: WorkflowContext) -> None:
    await ctx.send_message(n)


@executor(id="sink")
async def sink(n: int, ctx: WorkflowContext) -> None:
    await ctx.yield_output(n)


@pytest.mark.parametrize("mode", MODES)
async def test_edge_condition_error_names_the_edge(mode: str) -> None:
    wf = WorkflowBuilder(start=source).add_edge(source, sink, condition=explodes).build(mode=mode)
    with pytest.raises(ZeroDivisionError) as info:
        await wf.run(1)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "'source'" in notes and "explodes" in notes


class FinalState(RunObserver):
    """Keeps the kernel state of the run it watched, as it was when the run ended."""

    state: RunState | None = None

    def run_ended(
        self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
    ) -> None:
        self.state = run.state


@pytest.mark.parametrize("mode", MODES)
async def test_a_raising_edge_condition_fails_the_run_as_data_in_the_kernel(mode: str) -> None:
    journal, final = Journal(), FinalState()
    wf = (
        WorkflowBuilder(start=source)
        .add_edge(source, sink, condition=explodes)
        .build(mode=mode, journal=journal, observers=[final])
    )
    handler_ = wf.run(1)
    with pytest.raises(ZeroDivisionError):
        await handler_
    ticks = journal.ticks(handler_.run_id)
    failed = [tick for tick in ticks if isinstance(tick, StepFailed)]
    assert len(failed) == 1  # the sender's step failed: the condition ran next to it
    failure = failed[0].failure
    assert failure.type == "builtins.ZeroDivisionError"
    assert failure.message == "condition failed"
    assert any("'source' -> 'sink'" in note for note in failure.notes)  # names the edge
    assert final.state is not None
    assert final.state.status is RunStatus.FAILED  # the kernel knows, not only the shell
    assert final.state.failure == failure
    assert not final.state.outbox  # nothing half delivered


@pytest.mark.parametrize("mode", MODES)
async def test_cancelling_the_outer_run_cancels_the_running_sub_workflow(mode: str) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    class Forever(Executor):
        @handler
        async def on_any(self, message: object, ctx: WorkflowContext) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                stopped.set()

    inner = WorkflowBuilder(start=Forever(id="forever"), name="inner").build(mode=mode)
    outer = WorkflowBuilder(start=WorkflowExecutor(inner, id="gate"), name="outer").build(mode=mode)
    h = outer.run("go")
    await started.wait()
    await h.cancel()
    with pytest.raises(WorkflowCancelled):
        await h
    async with asyncio.timeout(1):  # guard only: the inner handler is cancelled at once
        await stopped.wait()


@pytest.mark.parametrize("mode", MODES)
async def test_sub_workflow_request_is_answered_through_the_outer_handler(mode: str) -> None:
    class Approver(Executor):
        @handler
        async def on_plan(self, plan: str, ctx: WorkflowContext) -> None:
            await ctx.request_info(plan, response_type=bool)

        @response_handler
        async def on_answer(self, plan: str, ok: bool, ctx: WorkflowContext) -> None:
            await ctx.yield_output(f"{plan}: {ok}")

    @executor(id="announce")
    async def announce(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"announced {text}")

    inner = WorkflowBuilder(start=Approver(id="approver"), name="inner").build(mode=mode)
    gate = WorkflowExecutor(inner, id="gate")
    outer = (
        WorkflowBuilder(start=gate, name="outer")
        .add_edge(gate, announce)
        .build(mode=mode, timeout=5)
    )
    h = outer.run("ship")
    asked = []
    async for ev in h.stream_events():
        if isinstance(ev, RequestInfoEvent):
            asked.append(ev.data)
            await h.send_response(ev.request_id, True)
    assert (await h).outputs == ["announced ship: True"]
    assert asked == ["ship"]
