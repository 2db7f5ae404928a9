"""Acceptance tests written from the two issue texts, as literally as possible.

Issue 3 (foundation, ``@step`` workflows) and issue 4 (executor graphs) each pin a
public API block plus "Precisions"/"Errors" paragraphs. Every test below exercises
one pinned name, signature or behaviour with the exact spelling the issue uses.
"""

import asyncio
import threading
from typing import Any

import pytest

# The pinned imports of issue 3 (Workflow ... WorkflowHandler, stepgraph.errors) and of
# issue 4 (WorkflowBuilder ... RequestInfoEvent, stepgraph.state), exactly these names.
from stepgraph import (
    Case,
    Context,
    Default,
    Event,
    Executor,
    HumanResponseEvent,
    InputRequiredEvent,
    RequestInfoEvent,
    RetryPolicy,
    RunResult,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowExecutor,
    WorkflowHandler,
    executor,
    handler,
    response_handler,
    step,
)
from stepgraph.errors import (
    StepgraphError,
    SuperstepLimitExceeded,
    WorkflowCancelled,
    WorkflowStalled,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from stepgraph.state import add, append, merge
from stepgraph.testing import FakeClock


async def _loop_turns(n: int = 5) -> None:
    """Give the event loop ``n`` turns: loop turns, not wall-clock time."""
    for _ in range(n):
        await asyncio.sleep(0)


async def _read_until(handler: WorkflowHandler, kind: type) -> Any:
    """Read the handler's stream up to (and including) the first event of type ``kind``."""
    async for ev in handler.stream_events():
        if isinstance(ev, kind):
            return ev
    raise AssertionError(f"the stream ended without a {kind.__name__}")


# =================================================================================================
# Issue 3: @step workflows
# =================================================================================================


class Ping(Event):  # events are pydantic models
    n: int


class Echo(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Ping:
        return Ping(n=ev.n)  # StartEvent carries run(**kwargs) as attributes

    @step(num_workers=4, retry_policy=RetryPolicy(max_attempts=3, backoff=0.01), timeout=2.0)
    async def finish(self, ev: Ping) -> StopEvent:  # ctx parameter optional
        return StopEvent(result=ev.n * 2)


def test_errors_derive_from_stepgraph_error() -> None:
    for exc in (
        WorkflowValidationError,
        WorkflowTimeoutError,
        WorkflowStalled,
        WorkflowCancelled,
        SuperstepLimitExceeded,
    ):
        assert issubclass(exc, StepgraphError)
    assert issubclass(WorkflowTimeoutError, TimeoutError)


async def test_echo_example_run_gives_42() -> None:
    wf = Echo(timeout=30, mode="superstep")
    assert await wf.run(n=21) == 42


async def test_echo_options_mode_async_max_supersteps_max_concurrency() -> None:
    assert await Echo(mode="async").run(n=21) == 42
    assert await Echo(max_supersteps=10_000, max_concurrency=None).run(n=5) == 10
    assert await Echo().run(n=1) == 2  # mode defaults to "superstep"


def test_echo_run_sync_runs_its_own_loop() -> None:
    assert Echo().run_sync(n=1) == 2


_started: list[str] = []


class Starts(Workflow):
    started: asyncio.Event  # set by the test

    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        _started.append(ev.tag)
        self.started.set()
        return StopEvent(result=ev.tag)


async def test_run_returns_handler_at_once_and_starts_without_await() -> None:
    _started.clear()
    wf = Starts()
    wf.started = asyncio.Event()
    handler = wf.run(tag="never-awaited")
    assert isinstance(handler, WorkflowHandler)
    await asyncio.wait_for(wf.started.wait(), 5)  # the handler itself is not awaited
    assert _started == ["never-awaited"]  # the run went ahead although nobody awaited it
    assert await handler == "never-awaited"


class MyStop(StopEvent):
    total: int


class StopsWithSubclass(Workflow):
    @step
    async def go(self, ev: StartEvent) -> MyStop:
        return MyStop(total=ev.a + ev.b)


async def test_stop_event_subclass_is_returned_as_the_event_itself() -> None:
    result = await StopsWithSubclass().run(a=1, b=2)
    assert isinstance(result, MyStop)
    assert result.total == 3


class MyStart(StartEvent):
    topic: str
    times: int = 1


class CustomStart(Workflow):
    @step
    async def go(self, ev: MyStart) -> StopEvent:
        return StopEvent(result=(type(ev).__name__, ev.topic * ev.times))


async def test_custom_start_event_subclass_built_from_run_kwargs() -> None:
    assert await CustomStart().run(topic="ab", times=2) == ("MyStart", "abab")


async def test_custom_start_event_passed_as_start_event() -> None:
    handler = CustomStart().run(start_event=MyStart(topic="x"))
    assert await handler == ("MyStart", "x")


def test_invalid_run_arguments_raise_at_run_naming_the_workflow() -> None:
    async def main() -> None:
        with pytest.raises(StepgraphError) as info:
            CustomStart().run(times="not a number")  # no await: raises at run()
        assert "CustomStart" in str(info.value)

    asyncio.run(main())


_attempts: dict[str, int] = {}


class Flaky(Workflow):
    @step(retry_policy=RetryPolicy(max_attempts=3, backoff=0.001))
    async def call(self, ev: StartEvent) -> StopEvent:
        _attempts["flaky"] = _attempts.get("flaky", 0) + 1
        if _attempts["flaky"] < ev.succeed_on:
            raise ConnectionError(f"attempt {_attempts['flaky']}")
        return StopEvent(result=_attempts["flaky"])


async def test_retry_policy_max_attempts_3_means_three_attempts_in_total() -> None:
    _attempts.clear()
    assert await Flaky(clock=FakeClock()).run(succeed_on=3) == 3
    _attempts.clear()
    with pytest.raises(ConnectionError) as info:  # the step's own exception
        await Flaky(clock=FakeClock()).run(succeed_on=99)
    assert _attempts["flaky"] == 3
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "call" in notes and "StartEvent" in notes  # note names the step and the event


class SlowStep(Workflow):
    @step(retry_policy=RetryPolicy(max_attempts=2, backoff=0.001), timeout=0.05)
    async def sluggish(self, ev: StartEvent) -> StopEvent:
        _attempts["slow"] = _attempts.get("slow", 0) + 1
        await asyncio.Event().wait()  # never set: only the 0.05 s step timeout ends it
        return StopEvent(result="late")


async def test_step_timeout_counts_as_attempt_then_timeout_error_naming_the_step() -> None:
    _attempts.clear()
    clock = FakeClock()
    with pytest.raises(TimeoutError) as info:
        await SlowStep(clock=clock).run()
    assert _attempts["slow"] == 2
    assert clock.monotonic() == pytest.approx(0.05 + 0.001 + 0.05)  # two timeouts, a backoff
    assert "sluggish" in str(info.value)


class Waiting(Event):
    pass


class Forever(Workflow):
    @step
    async def wait(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Waiting())  # the step is running now
        await asyncio.Event().wait()  # never set: the step never finishes
        return StopEvent(result="never")


async def test_run_timeout_raises_workflow_timeout_error_also_timeout_error() -> None:
    with pytest.raises(WorkflowTimeoutError) as info:
        await Forever(timeout=0.05, clock=FakeClock()).run()
    assert isinstance(info.value, TimeoutError)


async def test_cancel_makes_awaiting_the_handler_raise_workflow_cancelled() -> None:
    handler = Forever().run()
    await _read_until(handler, Waiting)  # the step is running
    await handler.cancel()
    with pytest.raises(WorkflowCancelled):
        await handler


class Item(Event):
    n: int


class HalfJoin(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Item:
        return Item(n=1)

    @step
    async def join(self, ctx: Context, ev: Item) -> StopEvent | None:
        items = ctx.collect_events(ev, [Item, Item])
        return None if items is None else StopEvent(result=len(items))


async def test_stall_raises_workflow_stalled_naming_collectors_and_last_events() -> None:
    with pytest.raises(WorkflowStalled) as info:
        await HalfJoin().run()
    message = str(info.value)
    assert "join" in message and "Item" in message  # the waiting collector
    assert "StartEvent" in message  # the last events


class Tick(Event):
    n: int


class Runaway(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Tick:
        return Tick(n=0)

    @step
    async def loop(self, ev: Tick) -> Tick | StopEvent:
        return Tick(n=ev.n + 1)


async def test_more_than_max_supersteps_raises_superstep_limit_exceeded() -> None:
    with pytest.raises(SuperstepLimitExceeded):
        await Runaway(max_supersteps=20).run()


class Boom(Event):
    pass


class Other(Event):
    pass


_cancelled: list[str] = []


class FailsWhileOtherRuns(Workflow):
    # Set by the async-mode test: ``fan`` fails only once ``long`` runs. (In superstep mode
    # Other is delivered after ``fan`` returns, so ``long`` never starts there.)
    long_started: asyncio.Event | None = None

    @step
    async def start(self, ev: StartEvent) -> Boom | Other:
        return Boom()

    @step
    async def fan(self, ctx: Context, ev: Boom) -> None:
        ctx.send_event(Other())
        if self.long_started is not None:
            await self.long_started.wait()
        raise ValueError("bad input")

    @step
    async def long(self, ev: Other) -> StopEvent:
        if self.long_started is not None:
            self.long_started.set()
        try:
            await asyncio.Event().wait()  # never set: only cancellation ends it
        except asyncio.CancelledError:
            _cancelled.append("long")
            raise
        return StopEvent(result="never")


async def test_failed_run_reraises_step_exception_with_note_and_cancels_others() -> None:
    _cancelled.clear()
    wf = FailsWhileOtherRuns(mode="async", timeout=5)
    wf.long_started = asyncio.Event()
    with pytest.raises(ValueError, match="bad input") as info:
        await wf.run()
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "fan" in notes and "Boom" in notes
    await asyncio.sleep(0)  # a loop turn for the cancelled step to unwind
    assert _cancelled == ["long"]


# -- validation: at wf.validate() and at the latest when the run starts --------------------------


class Orphan(Event):
    pass


def _no_annotation() -> type[Workflow]:
    class NoAnnotation(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

        @step
        async def bare(self, ev):  # type: ignore[no-untyped-def]
            return None

    return NoAnnotation


def _unaccepted_return() -> type[Workflow]:
    class Unaccepted(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Orphan | StopEvent:
            return StopEvent()

    return Unaccepted


def _no_start_step() -> type[Workflow]:
    class NoStart(Workflow):
        @step
        async def only(self, ev: Item) -> StopEvent:
            return StopEvent()

    return NoStart


def _no_stop_step() -> type[Workflow]:
    class NoStop(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Item:
            return Item(n=1)

        @step
        async def sink(self, ev: Item) -> None:
            return None

    return NoStop


INVALID = {
    "step without an event annotation": (_no_annotation, ["bare"]),
    "returned event no step accepts": (_unaccepted_return, ["start", "Orphan"]),
    "no step accepting StartEvent": (_no_start_step, ["StartEvent"]),
    "no step producing StopEvent": (_no_stop_step, ["StopEvent"]),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_definition_raises_at_validate_naming_step_and_event(case: str) -> None:
    make, names = INVALID[case]
    with pytest.raises(WorkflowValidationError) as info:
        make()().validate()
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_definition_raises_at_the_latest_when_the_run_starts(case: str) -> None:
    make, names = INVALID[case]
    with pytest.raises(WorkflowValidationError) as info:
        await make()().run()
    for name in names:
        assert name in str(info.value)


# -- run-time misuse: a StepgraphError subclass naming the thing at fault --------------------------


class Unwanted(Event):
    pass


class ReturnsNonEvent(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return "not an event"  # type: ignore[return-value]


class SendsUnaccepted(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.send_event(Unwanted())
        await asyncio.sleep(0)  # suspend between the send and the StopEvent (a loop turn)
        return StopEvent()


class SendsToUnknownStep(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.send_event(Item(n=1), step="nowhere")
        return StopEvent()


class CollectsNothing(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.collect_events(ev, [])
        return StopEvent()


@pytest.mark.parametrize(
    ("wf_cls", "named"),
    [
        (ReturnsNonEvent, "start"),
        (SendsUnaccepted, "Unwanted"),
        (SendsToUnknownStep, "nowhere"),
        (CollectsNothing, "start"),
    ],
)
async def test_run_time_misuse_raises_stepgraph_error_naming_the_fault(
    wf_cls: type[Workflow], named: str
) -> None:
    with pytest.raises(StepgraphError) as info:
        await wf_cls().run()
    assert named in str(info.value)


async def test_sending_to_a_finished_run_raises_stepgraph_error() -> None:
    handler = Echo().run(n=1)
    assert await handler == 2
    with pytest.raises(StepgraphError):
        handler.send_event(Ping(n=1))


# -- human in the loop, streaming, handler and context ---------------------------------------------


class Approval(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="Approve? ")

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"answered {ev.response}")


async def test_input_required_and_human_response_flow_and_stream_ends_with_stop_event() -> None:
    handler = Approval().run()
    seen: list[Event] = []
    async for ev in handler.stream_events():
        seen.append(ev)
        if isinstance(ev, InputRequiredEvent):
            assert ev.prefix == "Approve? "
            await _loop_turns()  # waiting for outside input is never a stall
            assert not handler.done(), handler.exception()
            handler.send_event(HumanResponseEvent(response="yes"))
    assert await handler == "answered yes"
    assert any(isinstance(ev, InputRequiredEvent) for ev in seen)
    assert isinstance(seen[-1], StopEvent)


class Progress(Event):
    pct: int


class Streams(Workflow):
    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for pct in (10, 50, 100):
            ctx.write_event_to_stream(Progress(pct=pct))
        return StopEvent(result=(ctx.run_id, ctx))


async def test_stream_in_order_last_event_stop_and_run_id_and_ctx() -> None:
    handler = Streams().run()
    events = [ev async for ev in handler.stream_events()]
    assert [ev.pct for ev in events if isinstance(ev, Progress)] == [10, 50, 100]
    assert isinstance(events[-1], StopEvent)
    run_id, ctx = await handler
    assert handler.run_id == run_id
    assert isinstance(handler.ctx, Context)
    assert handler.ctx is ctx


async def test_stream_ends_and_await_raises_when_the_run_fails() -> None:
    handler = FailsWhileOtherRuns().run()
    events = [ev async for ev in handler.stream_events()]
    assert not any(isinstance(ev, StopEvent) for ev in events)
    with pytest.raises(ValueError):
        await handler


class Store(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        seen: list[Any] = []

        def bump(old: Any) -> int:
            seen.append(old)
            return (old or 0) + 1

        assert await ctx.store.update("missing", bump) == 1
        await ctx.store.set("key", "value")
        async with ctx.store.edit() as state:
            state["a"] = state.get("a", 0) + 1
            state["b"] = "x"
        return StopEvent(
            result=(
                seen,
                await ctx.store.get("key"),
                await ctx.store.get("nope", default="dflt"),
                await ctx.store.get("a"),
                await ctx.store.get("b"),
            )
        )


async def test_store_update_missing_key_passes_none_and_get_set_edit() -> None:
    assert await Store().run() == ([None], "value", "dflt", 1, "x")


class Targeted(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(Item(n=1), step="second")

    @step
    async def first(self, ev: Item) -> StopEvent:
        return StopEvent(result="first")

    @step
    async def second(self, ev: Item) -> StopEvent:
        return StopEvent(result="second")


async def test_send_event_with_step_targets_one_step() -> None:
    assert await Targeted().run() == "second"


class A(Event):
    pass


class B(Event):
    pass


class CollectOrder(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(B())  # B arrives first
        ctx.send_event(A())

    @step
    async def join(self, ctx: Context, ev: A | B) -> StopEvent | None:
        held = ctx.collect_events(ev, [A, B])
        if held is None:
            await ctx.store.update("nones", lambda n: (n or 0) + 1)
            return None
        return StopEvent(result=([type(e).__name__ for e in held], await ctx.store.get("nones")))


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_collect_events_none_until_all_then_in_declared_order(mode: str) -> None:
    assert await CollectOrder(mode=mode).run() == (["A", "B"], 1)


class Signal(Event):
    key: str
    value: int


class Ready(Event):
    pass


class Waits(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Ready())
        got = await ctx.wait_for_event(Signal, requirements={"key": "yes"}, timeout=5.0)
        return StopEvent(result=got.value)


async def test_wait_for_event_with_requirements_and_timeout() -> None:
    handler = Waits().run()
    async for ev in handler.stream_events():
        if isinstance(ev, Ready):
            await _loop_turns()  # waiting is not a stall
            assert not handler.done(), handler.exception()
            handler.send_event(Signal(key="yes", value=7))
    assert await handler == 7


class WaitsInVain(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.wait_for_event(Signal, requirements={"key": "yes"}, timeout=0.05)
        return StopEvent(result="never")


async def test_wait_for_event_timeout_is_a_clear_error() -> None:
    with pytest.raises(TimeoutError) as info:
        await WaitsInVain(clock=FakeClock()).run()
    assert isinstance(info.value, StepgraphError)
    assert "Signal" in str(info.value) or "go" in str(info.value)


def _helper_reads_context() -> str:
    from stepgraph import get_context

    return get_context().run_id


class UsesGetContext(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=(_helper_reads_context(), ctx.run_id))


async def test_get_context_returns_the_current_runs_context() -> None:
    import stepgraph

    assert callable(stepgraph.get_context)
    from_helper, from_ctx = await UsesGetContext().run()
    assert from_helper == from_ctx


class SyncStep(Workflow):
    @step
    def go(self, ev: StartEvent) -> StopEvent:  # sync `def` steps run in a thread
        return StopEvent(result=threading.current_thread() is threading.main_thread())


async def test_sync_def_step_runs_in_a_thread() -> None:
    assert await SyncStep().run() is False


_in_flight = {"now": 0, "peak": 0}


class Workers(Workflow):
    four_running: asyncio.Event  # set by the test

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        for n in range(8):
            ctx.send_event(Item(n=n))

    @step(num_workers=4)
    async def work(self, ev: Item) -> Ping:
        _in_flight["now"] += 1
        _in_flight["peak"] = max(_in_flight["peak"], _in_flight["now"])
        if _in_flight["now"] == 4:
            self.four_running.set()
        await self.four_running.wait()  # hold the first four until all four run at once
        await _loop_turns()  # a fifth invocation, were one started, would run meanwhile
        _in_flight["now"] -= 1
        return Ping(n=ev.n)

    @step
    async def join(self, ctx: Context, ev: Ping) -> StopEvent | None:
        done = ctx.collect_events(ev, [Ping] * 8)
        return None if done is None else StopEvent(result=len(done))


async def test_num_workers_4_runs_four_at_once() -> None:
    _in_flight.update(now=0, peak=0)
    wf = Workers(timeout=5)  # the timeout only guards against hanging if fewer than 4 run
    wf.four_running = asyncio.Event()
    assert await wf.run() == 8
    assert _in_flight["peak"] == 4


# =================================================================================================
# Issue 4: executor graphs
# =================================================================================================


def test_reducers_append_add_merge() -> None:
    assert append(None, 1) == [1]
    assert append([1], 2) == [1, 2]
    assert add(None, 2) == 2
    assert add(3, 4) == 7
    assert merge(None, {"a": 1}) == {"a": 1}
    assert merge({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}


class Upper(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(text.upper())  # along every out-edge whose condition holds
        await ctx.send_message(f"direct:{text}", target="rev")  # to one node by id
        await ctx.yield_output(text)  # a workflow output


@executor(id="rev")  # a function as a node
async def rev(text: str, ctx: WorkflowContext) -> None:
    await ctx.store.set("log", text)
    await ctx.yield_output(text[::-1])


@executor(id="other")
async def other(text: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output(f"other got {text}")


def _upper_graph(mode: str = "superstep") -> Any:
    upper = Upper(id="upper")
    return (
        WorkflowBuilder(start=upper, reducers={"log": append})
        .add_edge(upper, other, condition=lambda msg: msg.startswith("H"))
        .add_edge(upper, rev)
        .build(mode=mode)
    )


async def test_executor_send_message_target_yield_output_and_reducer_state() -> None:
    result: RunResult = await _upper_graph().run("hello")
    assert isinstance(result, RunResult)
    assert result.outputs == ["hello", "other got HELLO", "OLLEH", "olleh:tcerid"]
    assert result.state["log"] == ["HELLO", "direct:hello"]


async def test_condition_false_skips_the_edge() -> None:
    result = await _upper_graph().run("abc")
    assert "other got ABC" not in result.outputs
    assert "CBA" in result.outputs


def _collector(node_id: str) -> Any:
    async def collect(msg: Any, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"{node_id}:{msg}")

    return executor(collect, id=node_id)


@executor(id="a")
async def src(text: str, ctx: WorkflowContext) -> None:
    await ctx.send_message(text)


async def test_add_fan_out_selector_gets_msg_and_target_ids() -> None:
    b, c = _collector("b"), _collector("c")
    calls: list[Any] = []

    def pick(msg: str, target_ids: list[str]) -> list[str]:
        calls.append((msg, list(target_ids)))
        return [target_ids[1]]

    wf = WorkflowBuilder(start=src).add_fan_out(src, [b, c], selector=pick).build()
    assert (await wf.run("x")).outputs == ["c:x"]
    assert calls == [("x", ["b", "c"])]
    wf2 = (
        WorkflowBuilder(start=src)
        .add_fan_out(src, [b, c], selector=lambda msg, target_ids: [*target_ids])
        .build()
    )
    assert (await wf2.run("y")).outputs == ["b:y", "c:y"]


async def test_add_fan_out_without_selector_goes_to_all() -> None:
    b, c = _collector("b"), _collector("c")
    wf = WorkflowBuilder(start=src).add_fan_out(src, [b, c]).build()
    assert (await wf.run("x")).outputs == ["b:x", "c:x"]


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_add_fan_in_gives_list_one_per_source_in_source_order(mode: str) -> None:
    c_sent = asyncio.Event()

    @executor(id="b")
    async def b(text: str, ctx: WorkflowContext) -> None:
        await c_sent.wait()  # b finishes last ...
        await ctx.send_message(f"b-{text}")

    @executor(id="c")
    async def c(text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(f"c-{text}")  # ... c first
        c_sent.set()

    @executor(id="join")
    async def join(parts: list[str], ctx: WorkflowContext) -> None:
        await ctx.yield_output(parts)

    wf = (
        WorkflowBuilder(start=src)
        .add_fan_out(src, [b, c])
        .add_fan_in([b, c], join)
        .build(mode=mode, timeout=5)  # the timeout only guards against hanging
    )
    assert (await wf.run("x")).outputs == [["b-x", "c-x"]]


@executor(id="num")
async def num_src(n: int, ctx: WorkflowContext) -> None:
    await ctx.send_message(n)


async def test_add_switch_case_and_default() -> None:
    b, c = _collector("b"), _collector("c")
    wf = (
        WorkflowBuilder(start=num_src)
        .add_switch(num_src, [Case(lambda m: m > 10, b), Default(c)])
        .build()
    )
    assert (await wf.run(50)).outputs == ["b:50"]
    assert (await wf.run(5)).outputs == ["c:5"]


async def test_add_chain_and_build_options() -> None:
    @executor(id="a")
    async def a(text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(text + "a")

    @executor(id="b")
    async def b(text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(text + "b")

    @executor(id="c")
    async def c(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(text + "c")

    for mode in ("superstep", "async"):
        wf = (
            WorkflowBuilder(start=a)
            .add_chain([a, b, c])
            .build(mode=mode, timeout=10, max_supersteps=100, max_concurrency=None)
        )
        assert (await wf.run(">")).outputs == [">abc"]


async def test_graph_run_returns_handler_and_lifecycle_stream() -> None:
    from stepgraph import (
        ExecutorCompletedEvent,
        ExecutorInvokedEvent,
        SuperstepCompletedEvent,
        WorkflowOutputEvent,
    )

    wf = _upper_graph()
    handler = wf.run("hello")
    assert isinstance(handler, WorkflowHandler)
    kinds = [type(ev) async for ev in handler.stream_events()]
    await handler
    for kind in (
        ExecutorInvokedEvent,
        ExecutorCompletedEvent,
        SuperstepCompletedEvent,
        WorkflowOutputEvent,
    ):
        assert kind in kinds
    seen = [type(ev).__name__ async for ev in wf.run("hello").stream_events()]
    assert seen.count("WorkflowOutputEvent") == 4


async def test_graph_max_supersteps_and_timeout_like_workflow() -> None:
    @executor(id="spin")
    async def spin(n: int, ctx: WorkflowContext) -> None:
        await ctx.send_message(n + 1)

    loop = WorkflowBuilder(start=spin).add_edge(spin, spin).build(max_supersteps=10)
    with pytest.raises(SuperstepLimitExceeded):
        await loop.run(0)

    @executor(id="sleepy")
    async def sleepy(n: int, ctx: WorkflowContext) -> None:
        await asyncio.Event().wait()  # never set: only the 0.05 s run timeout ends it

    with pytest.raises(WorkflowTimeoutError):
        await WorkflowBuilder(start=sleepy).build(timeout=0.05, clock=FakeClock()).run(0)


class Base:
    pass


class Derived(Base):
    pass


class Picky(Executor):
    @handler
    async def on_base(self, msg: Base, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"base:{type(msg).__name__}")

    @handler
    async def on_either(self, msg: int | str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"union:{msg}")


async def test_handlers_chosen_by_type_unions_and_subclasses() -> None:
    wf = WorkflowBuilder(start=Picky(id="picky")).build()
    assert (await wf.run(Derived())).outputs == ["base:Derived"]
    assert (await wf.run(3)).outputs == ["union:3"]
    assert (await wf.run("s")).outputs == ["union:s"]


def test_build_time_type_mismatch_is_validation_error() -> None:
    @executor(id="counts")
    async def counts(text: str, ctx: WorkflowContext[int]) -> None:
        await ctx.send_message(len(text))

    @executor(id="texts")
    async def texts(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(text)

    with pytest.raises(WorkflowValidationError) as info:
        WorkflowBuilder(start=counts).add_edge(counts, texts).build()
    assert "counts" in str(info.value) and "texts" in str(info.value)
    assert "int" in str(info.value)


async def test_run_time_type_mismatch_names_sender_target_and_type() -> None:
    @executor(id="sender")
    async def sender(text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(len(text))

    @executor(id="receiver")
    async def receiver(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(text)

    with pytest.raises(StepgraphError) as info:
        await WorkflowBuilder(start=sender).add_edge(sender, receiver).build().run("abc")
    message = str(info.value)
    assert "sender" in message and "receiver" in message and "int" in message


def test_build_validation_errors() -> None:
    b, c = _collector("b"), _collector("c")
    with pytest.raises(WorkflowValidationError, match="nowhere"):  # unknown node in an edge
        WorkflowBuilder(start=src).add_edge(src, "nowhere").build()
    with pytest.raises(WorkflowValidationError, match="'b'"):  # duplicate ids
        WorkflowBuilder(start=src).add_edge(src, b).add_edge(src, _collector("b")).build()
    with pytest.raises(WorkflowValidationError):  # no start node
        WorkflowBuilder().add_edge(src, b).build()
    with pytest.raises(WorkflowValidationError, match="'c'"):  # unreachable node
        WorkflowBuilder(start=src).add_edge(src, b).add_edge(c, b).build()


async def test_reducer_100_nodes_appending_concurrently_lose_nothing_in_node_order() -> None:
    finished: dict[int, asyncio.Event] = {}

    class Writer(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            i = int(self.id[1:])
            if i < 99:  # finish in reverse node order: w99 first, w0 last
                await finished[i + 1].wait()
            await ctx.store.set("log", self.id)
            finished[i].set()

    writers = [Writer(id=f"w{i}") for i in range(100)]
    finished.update({i: asyncio.Event() for i in range(100)})
    wf = (
        WorkflowBuilder(start=src, reducers={"log": append})
        .add_fan_out(src, writers)
        .build(timeout=5)  # the timeout only guards against hanging
    )
    result = await wf.run("go")
    assert result.state["log"] == [w.id for w in writers]  # node order, nothing lost
    wf_async = (
        WorkflowBuilder(start=src, reducers={"log": append})
        .add_fan_out(src, writers)
        .build(mode="async", timeout=5)
    )
    finished.update({i: asyncio.Event() for i in range(100)})
    assert sorted((await wf_async.run("go")).state["log"]) == sorted(w.id for w in writers)


class ReducerSteps(Workflow):
    reducers = {"log": append}
    finished: dict[int, asyncio.Event]  # set by the test

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        for n in range(20):
            ctx.send_event(Item(n=n))

    @step(num_workers=20)
    async def work(self, ctx: Context, ev: Item) -> Ping:
        if ev.n < 19:  # finish in reverse order: 19 first, 0 last
            await self.finished[ev.n + 1].wait()
        await ctx.store.set("log", ev.n)
        self.finished[ev.n].set()
        return Ping(n=ev.n)

    @step
    async def join(self, ctx: Context, ev: Ping) -> StopEvent | None:
        if ctx.collect_events(ev, [Ping] * 20) is None:
            return None
        return StopEvent(result=await ctx.store.get("log"))


async def test_reducers_class_attribute_on_step_workflow() -> None:
    wf = ReducerSteps(timeout=5)  # the timeout only guards against hanging
    wf.finished = {n: asyncio.Event() for n in range(20)}
    assert await wf.run() == list(range(20))


class Asker(Executor):
    @handler
    async def on_plan(self, plan: str, ctx: WorkflowContext) -> None:
        await ctx.request_info(plan, response_type=int)

    @response_handler
    async def on_answer(self, request: str, response: int, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"{request}={response}")


async def test_request_info_response_handler_and_send_response_wrong_type_stays_open() -> None:
    from stepgraph.errors import InvalidResponseError

    wf = WorkflowBuilder(start=Asker(id="asker")).build()
    handler = wf.run("budget")
    requests: list[RequestInfoEvent] = []
    async for ev in handler.stream_events():
        if isinstance(ev, RequestInfoEvent):
            requests.append(ev)
            assert ev.data == "budget"
            await _loop_turns()
            assert not handler.done()  # paused, not stalled
            with pytest.raises(InvalidResponseError) as info:
                await handler.send_response(ev.request_id, "not an int")
            assert isinstance(info.value, StepgraphError)
            assert "int" in str(info.value)
            await handler.send_response(ev.request_id, 42)  # still open: answer again
    result = await handler
    assert len(requests) == 1
    assert result.outputs == ["budget=42"]


def _inner_graph(name: str = "inner") -> Any:
    return WorkflowBuilder(start=Asker(id="asker"), name=name).build()


async def test_workflow_executor_outputs_become_messages_and_requests_surface() -> None:
    gate = WorkflowExecutor(_inner_graph(), id="gate")
    after = _collector("after")
    outer = WorkflowBuilder(start=gate, name="outer").add_edge(gate, after).build()
    handler = outer.run("q")
    async for ev in handler.stream_events():
        if isinstance(ev, RequestInfoEvent):
            await handler.send_response(ev.request_id, 7)
    assert (await handler).outputs == ["after:q=7"]


async def test_workflow_executor_errors_name_both_workflows() -> None:
    @executor(id="breaks")
    async def breaks(text: str, ctx: WorkflowContext) -> None:
        raise RuntimeError("inner failure")

    inner = WorkflowBuilder(start=breaks, name="inner_wf").build()
    gate = WorkflowExecutor(inner, id="gate")
    outer = WorkflowBuilder(start=gate, name="outer_wf").build()
    with pytest.raises(RuntimeError, match="inner failure") as info:
        await outer.run("x")
    text = str(info.value) + " ".join(getattr(info.value, "__notes__", []))
    assert "inner_wf" in text and "outer_wf" in text


def test_to_mermaid_and_to_dot_on_graphs() -> None:
    def is_big(m: int) -> bool:
        return m > 10

    b, c, d = _collector("b"), _collector("c"), _collector("d")

    @executor(id="join")
    async def join(parts: list[Any], ctx: WorkflowContext) -> None:
        await ctx.yield_output(parts)

    wf = (
        WorkflowBuilder(start=num_src)
        .add_edge(num_src, d, condition=is_big)
        .add_fan_out(num_src, [b, c])
        .add_fan_in([b, c], join)
        .build()
    )
    mermaid = wf.to_mermaid()
    assert mermaid.startswith("flowchart")
    assert "is_big" in mermaid and "fan-out" in mermaid and "fan-in" in mermaid
    dot = wf.to_dot()
    assert "digraph" in dot
    assert "is_big" in dot and "fan-out" in dot and "fan-in" in dot
    switch = (
        WorkflowBuilder(start=num_src).add_switch(num_src, [Case(is_big, b), Default(c)]).build()
    )
    assert switch.to_mermaid() == (
        "flowchart TD\n"
        '    __start__(["start"])\n'
        '    num["num"]\n'
        '    b["b"]\n'
        '    c["c"]\n'
        "    __start__ --> num\n"
        "    num -->|is_big| b\n"
        "    num -->|default| c\n"
    )


def test_to_mermaid_and_to_dot_on_step_workflows() -> None:
    mermaid = Echo().to_mermaid()
    assert mermaid.startswith("flowchart")
    assert "start" in mermaid and "finish" in mermaid and "Ping" in mermaid
    dot = Echo().to_dot()
    assert "digraph" in dot and "finish" in dot and "Ping" in dot
    assert "caller" in Approval().to_mermaid()


# =================================================================================================
# More of the pinned precisions
# =================================================================================================


class StreamedAsk(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> None:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="name? "))  # streamed, not returned

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_streamed_input_required_event_waits_for_human_response(mode: str) -> None:
    handler = StreamedAsk(mode=mode, timeout=5).run()
    try:
        async for ev in handler.stream_events():
            if isinstance(ev, InputRequiredEvent):
                await _loop_turns()  # waiting for outside input is never a stall
                assert not handler.done(), handler.exception()
                handler.send_event(HumanResponseEvent(response="bob"))
    except StepgraphError:
        if handler.done():
            handler.exception()  # mark the stalled run's error as retrieved
        raise
    assert await handler == "bob"


class SentAsk(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(InputRequiredEvent(prefix="name? "))

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_sent_input_required_event_waits_for_human_response(mode: str) -> None:
    handler = SentAsk(mode=mode, timeout=5).run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            await _loop_turns()  # waiting for outside input is never a stall
            assert not handler.done(), handler.exception()
            handler.send_event(HumanResponseEvent(response="bob"))
    assert await handler == "bob"


class Awaited(Event):
    v: int


class ReturnsAwaited(Workflow):
    waiting: asyncio.Event  # set by the test

    @step
    async def start(self, ev: StartEvent) -> Progress:
        return Progress(pct=0)

    @step
    async def waiter(self, ctx: Context, ev: StartEvent) -> StopEvent:
        self.waiting.set()  # the wait below registers before the sender can resume
        got = await ctx.wait_for_event(Awaited, timeout=5.0)
        return StopEvent(result=got.v)

    @step
    async def sender(self, ev: Progress) -> Awaited:  # no step accepts Awaited: it is awaited
        await self.waiting.wait()  # send only once the waiter waits
        return Awaited(v=3)


async def test_type_awaited_by_wait_for_event_is_valid_without_accepting_step() -> None:
    ReturnsAwaited().validate()
    wf = ReturnsAwaited(timeout=5)
    wf.waiting = asyncio.Event()
    assert await wf.run() == 3


class SendsAwaited(Workflow):
    @step
    async def waiter(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.send_event(Awaited(v=4))  # sent, not declared: no step accepts it
        got = await ctx.wait_for_event(Awaited, timeout=5.0)
        return StopEvent(result=got.v)


async def test_sent_type_awaited_by_wait_for_event_needs_no_accepting_step() -> None:
    assert await SendsAwaited(timeout=5).run() == 4


async def test_cancel_ends_the_stream_and_awaiting_raises() -> None:
    handler = Forever().run()
    seen: list[Event] = []
    step_running = asyncio.Event()

    async def consume() -> None:
        async for ev in handler.stream_events():
            seen.append(ev)
            if isinstance(ev, Waiting):
                step_running.set()

    task = asyncio.create_task(consume())
    await step_running.wait()
    await handler.cancel()
    await asyncio.wait_for(task, 2)  # the stream ended
    with pytest.raises(WorkflowCancelled):
        await handler


async def test_stream_last_event_is_the_stop_event_subclass() -> None:
    handler = StopsWithSubclass().run(a=2, b=3)
    events = [ev async for ev in handler.stream_events()]
    assert isinstance(events[-1], MyStop)
    assert (await handler).total == 5


async def test_one_workflow_object_runs_many_runs_concurrently_isolated() -> None:
    wf = Echo()
    assert await asyncio.gather(*(wf.run(n=i) for i in range(200))) == [2 * i for i in range(200)]


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_fan_in_extras_wait_for_the_next_batch(mode: str) -> None:
    b_sent = asyncio.Event()

    @executor(id="b")
    async def b(text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message("b1")
        await ctx.send_message("b2")
        b_sent.set()

    @executor(id="c")
    async def c(text: str, ctx: WorkflowContext) -> None:
        await b_sent.wait()  # both of b's messages come first
        await ctx.send_message("c1")
        await ctx.send_message("c2")

    @executor(id="join")
    async def join(parts: list[str], ctx: WorkflowContext) -> None:
        await ctx.yield_output(parts)

    wf = (
        WorkflowBuilder(start=src)
        .add_fan_out(src, [b, c])
        .add_fan_in([b, c], join)
        .build(mode=mode, timeout=5)  # the timeout only guards against hanging
    )
    assert (await wf.run("x")).outputs == [["b1", "c1"], ["b2", "c2"]]


async def test_async_mode_reducer_write_applies_at_once() -> None:
    @executor(id="w")
    async def w(text: str, ctx: WorkflowContext) -> None:
        await ctx.store.set("log", 1)
        await ctx.store.set("log", 2)
        await ctx.yield_output(await ctx.store.get("log"))

    wf = WorkflowBuilder(start=w, reducers={"log": append}).build(mode="async")
    assert (await wf.run("x")).outputs == [[1, 2]]


async def test_graph_send_response_after_the_run_and_cancel() -> None:
    wf = WorkflowBuilder(start=Asker(id="asker")).build()
    handler = wf.run("q")
    request_id = ""
    async for ev in handler.stream_events():
        if isinstance(ev, RequestInfoEvent):
            request_id = ev.request_id
            await handler.send_response(request_id, 1)
    assert (await handler).outputs == ["q=1"]
    with pytest.raises(StepgraphError):
        await handler.send_response(request_id, 2)
    waiting = wf.run("q")
    await _read_until(waiting, RequestInfoEvent)  # paused on its open request
    await waiting.cancel()
    with pytest.raises(WorkflowCancelled):
        await waiting


async def test_sub_workflow_request_rejects_wrong_type_and_answers_route_back() -> None:
    from stepgraph.errors import InvalidResponseError

    gate = WorkflowExecutor(_inner_graph(), id="gate")
    after = _collector("after")
    outer = WorkflowBuilder(start=gate).add_edge(gate, after).build()
    handler = outer.run("q")
    async for ev in handler.stream_events():
        if isinstance(ev, RequestInfoEvent):
            with pytest.raises(InvalidResponseError):
                await handler.send_response(ev.request_id, "wrong")
            await handler.send_response(ev.request_id, 9)
    assert (await handler).outputs == ["after:q=9"]


async def test_graph_partial_fan_in_is_a_stall_naming_the_fan_in() -> None:
    @executor(id="b")
    async def b(text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message("b")

    @executor(id="c")
    async def c(text: str, ctx: WorkflowContext) -> None:
        return None  # never sends: the fan-in stays partial

    @executor(id="join")
    async def join(parts: list[str], ctx: WorkflowContext) -> None:
        await ctx.yield_output(parts)

    wf = WorkflowBuilder(start=src).add_fan_out(src, [b, c]).add_fan_in([b, c], join).build()
    with pytest.raises(WorkflowStalled, match="join"):
        await wf.run("x")
