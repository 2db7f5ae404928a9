"""OpenTelemetry spans of runs, supersteps, steps, workflow scopes, blocks and tasks,
against the real SDK (InMemorySpanExporter): names, parentage and attributes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from stepgraph import (
    Context,
    Event,
    Executor,
    RetryPolicy,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowExecutor,
    handler,
    step,
)
from stepgraph.backends import DaskBackend, InlineBackend, ProcessBackend, ThreadBackend
from stepgraph.errors import ConfigurationError
from stepgraph.stores import SqliteStore
from stepgraph.tasks import TaskFailed, TaskFlow
from stepgraph.telemetry import configure, read_events, reset
from stepgraph.telemetry.tracing import InTrace


class _UserTracer:
    """The user's own tracer, as an instrumented client gets one: from OpenTelemetry's
    global API (configure() installed a global provider that sends to its processors)."""

    def start_as_current_span(self, name: str) -> Any:
        from opentelemetry import trace

        return trace.get_tracer("user-code").start_as_current_span(name)


USER = _UserTracer()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure(span_processors=[SimpleSpanProcessor(exporter)])
    yield exporter
    reset()


def named(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def parent_of(span: Any, exporter: InMemorySpanExporter) -> Any:
    by_id = {s.context.span_id: s for s in exporter.get_finished_spans()}
    return by_id.get(span.parent.span_id) if span.parent is not None else None


class Hop(Event):
    n: int


class Chain(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Hop:
        with USER.start_as_current_span("user.async"):
            return Hop(n=0)

    @step
    def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:  # a def step: on a thread
        with USER.start_as_current_span("user.thread"):
            return StopEvent(result=ev.n) if ev.n == 1 else Hop(n=ev.n + 1)


async def test_a_superstep_run_nests_steps_in_supersteps_in_the_run(
    spans: InMemorySpanExporter,
) -> None:
    handler = Chain().run()
    assert await handler == 1
    (run,) = named(spans, "stepgraph.run")
    assert run.attributes["stepgraph.run.id"] == handler.run_id
    assert run.attributes["stepgraph.workflow.name"] == "Chain"
    assert run.attributes["stepgraph.run.mode"] == "superstep"
    assert "stepgraph.run.parent_id" not in run.attributes
    supersteps = named(spans, "stepgraph.superstep")
    assert sorted(s.attributes["stepgraph.superstep.index"] for s in supersteps) == [0, 1, 2]
    assert all(parent_of(s, spans) is run for s in supersteps)
    steps = named(spans, "stepgraph.step")
    assert [s.attributes["stepgraph.step.name"] for s in steps] == ["start", "hop", "hop"]
    assert [s.attributes["stepgraph.event.type"] for s in steps] == ["StartEvent", "Hop", "Hop"]
    for step_span in steps:
        superstep = parent_of(step_span, spans)
        assert superstep.name == "stepgraph.superstep" and parent_of(superstep, spans) is run
        assert step_span.attributes["stepgraph.step.attempt"] == 1
        assert step_span.attributes["stepgraph.step.worker"] >= 1
    assert [s.attributes["stepgraph.backend"] for s in steps] == ["inline", "thread", "thread"]
    # the user's own spans nest under the step that ran them, in the loop and on a thread
    (mine,) = named(spans, "user.async")
    assert parent_of(mine, spans) is steps[0]
    threaded = named(spans, "user.thread")
    assert [parent_of(s, spans) for s in threaded] == steps[1:]
    assert all(s.status.status_code is not StatusCode.ERROR for s in spans.get_finished_spans())


async def test_an_async_run_nests_steps_directly_in_the_run(spans: InMemorySpanExporter) -> None:
    assert await Chain(mode="async").run() == 1
    (run,) = named(spans, "stepgraph.run")
    assert run.attributes["stepgraph.run.mode"] == "async"
    assert not named(spans, "stepgraph.superstep")
    assert all(parent_of(s, spans) is run for s in named(spans, "stepgraph.step"))


async def test_a_run_started_under_a_span_of_the_caller_is_its_child(
    spans: InMemorySpanExporter,
) -> None:
    with USER.start_as_current_span("request") as request:
        assert await Chain().run() == 1
    (run,) = named(spans, "stepgraph.run")
    assert run.parent is not None and run.parent.span_id == request.get_span_context().span_id


class Flaky(Workflow):
    attempts = 0

    @step(retry_policy=RetryPolicy(max_attempts=2))
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        Flaky.attempts += 1
        raise KeyError(f"attempt {Flaky.attempts}")


async def test_retries_and_failures_follow_the_conventions(spans: InMemorySpanExporter) -> None:
    with pytest.raises(KeyError):
        await Flaky().run()
    first, second = named(spans, "stepgraph.step")
    assert [
        first.attributes["stepgraph.step.attempt"],
        second.attributes["stepgraph.step.attempt"],
    ] == [1, 2]
    assert [e.name for e in first.events if e.name == "stepgraph.retry"] == ["stepgraph.retry"]
    for span in (first, second):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "KeyError"
        assert any(e.name == "exception" for e in span.events)
    (run,) = named(spans, "stepgraph.run")
    assert run.status.status_code is StatusCode.ERROR and run.attributes["error.type"] == "KeyError"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class RaisesUnprintable(Workflow):
    @step
    async def a(self, ctx: Context, ev: StartEvent) -> StopEvent:
        raise Unprintable()


def unprintable() -> None:
    raise Unprintable()


async def test_an_error_whose_str_raises_fails_its_span_and_nothing_else(
    spans: InMemorySpanExporter,
) -> None:
    with pytest.raises(Unprintable):  # the step's own error, as with tracing off
        await RaisesUnprintable().run()
    async with TaskFlow(backends={"default": InlineBackend()}) as flow:
        with pytest.raises(TaskFailed):
            await flow.function_task(unprintable)()
    for name in ("stepgraph.run", "stepgraph.step", "stepgraph.task"):
        (span,) = named(spans, name)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "Unprintable"
        (event,) = [e for e in span.events if e.name == "exception"]
        assert "str() raised RuntimeError" in event.attributes["exception.message"]


class Print(Executor):
    @handler
    async def show(self, text: str, ctx: WorkflowContext[Any]) -> None:
        await ctx.yield_output(text + "!")


class Shout(Executor):
    @handler
    async def shout(self, text: str, ctx: WorkflowContext[Any]) -> None:
        await ctx.yield_output(text.upper())


async def test_a_sub_workflow_run_is_a_run_of_its_own_under_the_outer_step(
    spans: InMemorySpanExporter,
) -> None:
    inner_graph = WorkflowBuilder(start=Shout("shout")).build(name="inner")
    sub = WorkflowExecutor(inner_graph, id="sub")
    outer = WorkflowBuilder(start=sub).add_edge(sub, Print("print")).build(name="outer")
    assert (await outer.run("hi")).get_outputs() == ["HI!"]
    runs = {s.attributes["stepgraph.workflow.name"]: s for s in named(spans, "stepgraph.run")}
    assert set(runs) == {"outer", "inner"}
    inner, outer_run = runs["inner"], runs["outer"]
    assert inner.attributes["stepgraph.run.parent_id"] == outer_run.attributes["stepgraph.run.id"]
    assert inner.attributes["stepgraph.run.id"] != outer_run.attributes["stepgraph.run.id"]
    assert "stepgraph.run.parent_id" not in outer_run.attributes
    holder = parent_of(inner, spans)
    assert holder.name == "stepgraph.step" and holder.attributes["stepgraph.step.name"] == "sub"


class Either(Executor):
    """A plain-function handler (run in a thread) and an async one (on the loop)."""

    @handler
    def count(self, n: int, ctx: WorkflowContext[Any]) -> None:
        ctx.send_message(str(n))

    @handler
    async def text(self, text: str, ctx: WorkflowContext[Any]) -> None:
        await ctx.yield_output(text)


async def test_an_executor_is_labelled_by_where_the_handler_of_each_message_runs(
    spans: InMemorySpanExporter,
) -> None:
    either = Either("either")
    graph = WorkflowBuilder(start=either).add_edge(either, either).build(name="either")
    assert (await graph.run(7)).get_outputs() == ["7"]
    steps = named(spans, "stepgraph.step")
    where = [
        (s.attributes["stepgraph.event.type"], s.attributes["stepgraph.backend"]) for s in steps
    ]
    assert where == [("int", "thread"), ("str", "inline")]


class TwoNames(Workflow):
    """Two steps on one backend object, which the workflow gives two names."""

    @step(backend="cpu")
    def first(self, ev: StartEvent) -> Hop:
        return Hop(n=1)

    @step(backend="fast")
    def second(self, ev: Hop) -> StopEvent:
        return StopEvent(result=ev.n)


async def test_a_step_span_names_its_backend_as_its_workflow_does(
    spans: InMemorySpanExporter,
) -> None:
    """``stepgraph.backend`` is the name the step gives its backend (its key in
    ``backends=``), whatever else the backend object goes by: two names in one workflow,
    another name in another workflow built since."""
    shared = ThreadBackend(2)
    try:
        flow = TwoNames(backends={"cpu": shared, "fast": shared})
        Chain(backends={"heavy": shared})  # the same object, named otherwise elsewhere
        assert await flow.run() == 1
    finally:
        await shared.shutdown()
    steps = named(spans, "stepgraph.step")
    assert {
        s.attributes["stepgraph.step.name"]: s.attributes["stepgraph.backend"] for s in steps
    } == {
        "first": "cpu",
        "second": "fast",
    }


async def test_task_spans_nest_in_blocks_in_workflow_scopes(spans: InMemorySpanExporter) -> None:
    async with TaskFlow(
        backends={"default": ThreadBackend(2), "inline": InlineBackend()}, resources={"gpu": 1}
    ) as flow:

        @flow.function_task(resources={"gpu": 1})
        def simulate(i: int) -> int:
            with USER.start_as_current_span("user.task"):
                return i

        @flow.function_task(backend="inline")
        def direct(x: int) -> int:
            return x + 1

        @flow.function_task(backend="inline")
        async def broken() -> None:
            raise ValueError("no")

        @flow.block
        async def member(i: int) -> int:
            return await direct(simulate(i))

        async with flow.workflow_scope("campaign-1"):
            assert await asyncio.gather(member(1), member(2)) == [2, 3]
        with pytest.raises(TaskFailed):
            await broken()
    (scope,) = named(spans, "stepgraph.workflow")
    assert scope.attributes["stepgraph.workflow.id"] == "campaign-1"
    blocks = named(spans, "stepgraph.block")
    assert len(blocks) == 2 and all(parent_of(b, spans) is scope for b in blocks)
    assert all(b.attributes["stepgraph.workflow.id"] == "campaign-1" for b in blocks)
    tasks = [
        t for t in named(spans, "stepgraph.task") if t.attributes["stepgraph.task.name"] != "broken"
    ]
    assert len(tasks) == 4
    assert all(parent_of(t, spans) in blocks for t in tasks)
    sims = [t for t in tasks if t.attributes["stepgraph.task.name"] == "simulate"]
    assert all(t.attributes["stepgraph.backend"] == "default" for t in sims)
    assert all(t.attributes["stepgraph.resources.gpu"] == 1 for t in sims)
    assert sorted(
        parent_of(u, spans).attributes["stepgraph.task.name"] for u in named(spans, "user.task")
    ) == ["simulate", "simulate"]
    (failed,) = [
        t for t in named(spans, "stepgraph.task") if t.attributes["stepgraph.task.name"] == "broken"
    ]
    assert (
        failed.status.status_code is StatusCode.ERROR
        and failed.attributes["error.type"] == "ValueError"
    )
    (event,) = [e for e in failed.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError"  # the same exception as error.type
    assert parent_of(failed, spans) is None  # called outside any scope or block


async def test_a_workflow_scope_that_fails_follows_the_conventions(
    spans: InMemorySpanExporter,
) -> None:
    async with TaskFlow(backends={"default": InlineBackend()}) as flow:
        with pytest.raises(KeyError):
            async with flow.workflow_scope("failing"):
                raise KeyError("gone")
    (scope,) = named(spans, "stepgraph.workflow")
    assert scope.status.status_code is StatusCode.ERROR
    assert scope.attributes["error.type"] == "KeyError"
    (event,) = [e for e in scope.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "KeyError"


async def test_a_block_raising_an_error_with_a_cause_is_named_by_its_error_not_its_cause(
    spans: InMemorySpanExporter,
) -> None:
    async with TaskFlow(backends={"default": InlineBackend()}) as flow:

        @flow.block
        async def parse(text: str) -> int:
            try:
                return int(text)
            except ValueError as exc:
                raise RuntimeError(f"cannot parse {text!r}") from exc

        with pytest.raises(RuntimeError):
            await parse("x")
    (block,) = named(spans, "stepgraph.block")
    assert block.attributes["error.type"] == "RuntimeError"
    assert [e.attributes["exception.type"] for e in block.events] == ["RuntimeError"]


class DiskFull(Exception):
    """An exception that can neither be pickled nor rebuilt (a lock in its args): it
    reaches the caller as a RecordedError."""

    def __init__(self, message: str) -> None:
        super().__init__(message, threading.Lock())

    def __str__(self) -> str:
        return str(self.args[0])


def disk_full() -> None:
    raise DiskFull("the disk is full")


async def test_an_error_known_by_its_record_is_named_by_the_class_it_records(
    spans: InMemorySpanExporter,
) -> None:
    async with TaskFlow(backends={"default": ProcessBackend(1)}) as flow:
        with pytest.raises(TaskFailed) as failed:
            await flow.function_task(disk_full)()
    assert type(failed.value.__cause__).__name__ == "RecordedError"
    (task,) = named(spans, "stepgraph.task")
    assert task.attributes["error.type"] == "DiskFull"


class FullDisk(Workflow):
    @step(backend="cpu")
    def write(self, ctx: Context, ev: StartEvent) -> StopEvent:
        disk_full()
        return StopEvent()


async def test_a_stored_failure_known_by_its_record_keeps_the_traceback_where_it_was_raised(
    tmp_path: Any,
) -> None:
    pool = ProcessBackend(1)
    store = SqliteStore(tmp_path / "runs.db")
    try:
        handler = FullDisk(backends={"cpu": pool}, store=store).run()
        with pytest.raises(Exception, match="the disk is full"):
            await handler
        with pytest.raises(Exception, match="the disk is full") as stored:
            await store.result(handler.run_id)
    finally:
        await pool.shutdown()
        store.close()
    assert stored.value.type.endswith(".DiskFull")  # type: ignore[attr-defined]
    assert "in disk_full" in stored.value.traceback  # type: ignore[attr-defined]


async def test_a_step_whose_error_is_known_by_its_record_is_named_by_the_class_it_records(
    spans: InMemorySpanExporter, tmp_path: Any
) -> None:
    pool = ProcessBackend(1)
    log = tmp_path / "events.jsonl"
    try:
        with pytest.raises(Exception, match="the disk is full") as failed:
            await FullDisk(backends={"cpu": pool}, event_log=log).run()
    finally:
        await pool.shutdown()
    assert type(failed.value).__name__ == "RecordedError"
    (step_span,) = named(spans, "stepgraph.step")
    (run_span,) = named(spans, "stepgraph.run")
    assert step_span.attributes["error.type"] == run_span.attributes["error.type"] == "DiskFull"
    kinds = {r["kind"]: r for r in read_events(log)}
    assert (
        kinds["step_failed"]["error"]["type"] == kinds["run_failed"]["error"]["type"] == "DiskFull"
    )


async def test_configure_again_replaces_what_the_last_call_set() -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    try:
        configure(span_processors=[SimpleSpanProcessor(first)])
        assert await Chain().run() == 1
        configure(span_processors=[SimpleSpanProcessor(second)])
        assert await Chain().run() == 1
    finally:
        reset()
    assert len(named(first, "stepgraph.run")) == 1 and len(named(second, "stepgraph.run")) == 1


async def test_configure_again_with_the_same_exporter_and_reader_keeps_them_working() -> None:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    try:
        configure(span_processors=[SimpleSpanProcessor(exporter)], metric_readers=[reader])
        assert await Chain().run() == 1
        assert len(named(exporter, "stepgraph.run")) == 1
        exporter.clear()
        configure(span_processors=[SimpleSpanProcessor(exporter)], metric_readers=[reader])
        assert await Chain().run() == 1
        assert len(named(exporter, "stepgraph.run")) == 1  # not shut down by the second call
        data = reader.get_metrics_data()
        assert data is not None and data.resource_metrics  # the reader reads on
    finally:
        reset()


def step_durations(reader: InMemoryMetricReader, step_name: str) -> int:
    """How many durations of step ``step_name`` ``reader`` counts in total."""
    data = reader.get_metrics_data()
    assert data is not None
    return sum(
        p.count
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "stepgraph.step.duration"
        for p in m.data.data_points
        if p.attributes.get("stepgraph.step.name") == step_name
    )


async def test_configure_again_with_the_same_readers_keeps_their_totals() -> None:
    reader = InMemoryMetricReader()
    try:
        configure(metric_readers=[reader])
        assert await Chain().run() == 1
        assert step_durations(reader, "start") == 1
        configure(
            span_processors=[SimpleSpanProcessor(InMemorySpanExporter())], metric_readers=[reader]
        )
        assert await Chain().run() == 1
        assert step_durations(reader, "start") == 2  # cumulative, as before the second call
    finally:
        reset()


def test_a_metric_reader_shut_down_by_reset_is_refused_by_name_when_given_again() -> None:
    reader = InMemoryMetricReader()
    configure(metric_readers=[reader])
    reset()
    with pytest.raises(ConfigurationError, match=r"InMemoryMetricReader.* was shut down"):
        configure(metric_readers=[reader])
    configure(metric_readers=[InMemoryMetricReader()])  # a new one is taken
    reset()


_ONE_STEP = (  # a workflow W of one step, for the code run in a new process
    "from stepgraph import StartEvent, StopEvent, Workflow, step\n"
    "class W(Workflow):\n"
    "    @step\n"
    "    async def s(self, ev: StartEvent) -> StopEvent:\n"
    "        return StopEvent(result=1)\n"
)


def _printed(code: str, **env: str) -> str:
    """What ``code`` prints in a new process (with ``env`` added to the environment)."""
    command = [sys.executable, "-c", code]
    environment = {**os.environ, **env}
    return subprocess.run(
        command, capture_output=True, text=True, check=True, env=environment
    ).stdout.strip()


def test_with_tracing_off_a_run_does_not_even_import_opentelemetry() -> None:
    code = (
        "import asyncio, sys\n"
        f"{_ONE_STEP}"
        "async def main():\n"
        "    return await W().run()\n"
        "assert asyncio.run(main()) == 1\n"
        "print('opentelemetry' in ' '.join(sys.modules))\n"
    )
    assert _printed(code) == "False"


class Traced(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        with USER.start_as_current_span("user.span"):
            return StopEvent(result=1)


async def test_the_spans_of_any_code_go_where_configure_sends_stepgraphs_unless_told_not_to() -> (
    None
):
    exporter = InMemorySpanExporter()
    configure(span_processors=[SimpleSpanProcessor(exporter)])
    try:
        assert await Traced().run() == 1
        (mine,) = named(exporter, "user.span")
        assert parent_of(mine, exporter) is named(exporter, "stepgraph.step")[0]
        exporter.clear()
        configure(span_processors=[SimpleSpanProcessor(exporter)], set_global=False)
        assert await Traced().run() == 1
        assert not named(exporter, "user.span") and named(exporter, "stepgraph.step")
        configure(span_processors=[SimpleSpanProcessor(exporter)])
        reset()
        exporter.clear()
        assert await Traced().run() == 1  # tracing off again: nothing goes anywhere
        assert not named(exporter, "user.span") and not named(exporter, "stepgraph.step")
    finally:
        reset()


async def test_a_span_decorator_made_once_follows_each_later_configure() -> None:
    from opentelemetry import trace

    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    configure(span_processors=[SimpleSpanProcessor(first)])
    try:
        tracer = trace.get_tracer("library")

        @tracer.start_as_current_span("library.sync")
        def call() -> int:
            return 1

        @tracer.start_as_current_span("library.async")
        async def call_async() -> int:
            return 2

        assert call() == 1 and await call_async() == 2
        assert [s.name for s in first.get_finished_spans()] == ["library.sync", "library.async"]
        reset()
        configure(span_processors=[SimpleSpanProcessor(second)])
        with tracer.start_as_current_span("library.with") as outer:
            assert call() == 1 and await call_async() == 2
        names = [s.name for s in second.get_finished_spans()]
        assert names == ["library.sync", "library.async", "library.with"]
        assert parent_of(named(second, "library.sync")[0], second).name == "library.with"
        assert outer.is_recording() is False  # (ended)
        assert len(first.get_finished_spans()) == 2  # nothing went to the provider reset
        second.clear()
        configure(span_processors=[SimpleSpanProcessor(second)], set_global=False)
        assert call() == 1 and await call_async() == 2
        assert not second.get_finished_spans()
    finally:
        reset()


def test_a_span_context_manager_of_the_global_provider_is_entered_once_at_a_time() -> None:
    from opentelemetry import trace

    exporter = InMemorySpanExporter()
    configure(span_processors=[SimpleSpanProcessor(exporter)])
    try:
        manager = trace.get_tracer("library").start_as_current_span("once")
        with manager, pytest.raises(RuntimeError, match="entered once at a time"):
            manager.__enter__()
        with manager:  # (again, once it was left)
            pass
        assert [s.name for s in exporter.get_finished_spans()] == ["once", "once"]
    finally:
        reset()


def test_the_global_forwarder_lets_go_of_a_provider_reset() -> None:
    import gc
    import weakref

    from opentelemetry import trace

    from stepgraph.telemetry.global_tracer import Forwarding

    exporter = InMemorySpanExporter()
    configure(span_processors=[SimpleSpanProcessor(exporter)])
    assert isinstance(trace.get_tracer_provider(), Forwarding)  # (no test sets its own)
    tracer = trace.get_tracer("library")
    with tracer.start_as_current_span("library.span"):
        pass
    assert len(exporter.get_finished_spans()) == 1
    gone = weakref.ref(exporter)
    reset()
    del exporter
    gc.collect()
    assert gone() is None
    with tracer.start_as_current_span("after reset") as span:
        assert not span.is_recording()


_APP_PROVIDER = (
    "from opentelemetry import trace\n"
    "from opentelemetry.sdk.trace import TracerProvider\n"
    "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
    "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
    "app = InMemorySpanExporter(); provider = TracerProvider()\n"
    "provider.add_span_processor(SimpleSpanProcessor(app))\n"
    "trace.set_tracer_provider(provider)\n"
    "from stepgraph import StartEvent, StopEvent, Workflow, step\n"
)


def _printed_under_an_app_provider(code: str) -> str:
    """What ``code`` prints in a new process whose application set a global tracer
    provider exporting to ``app`` (an in-memory exporter)."""
    return _printed(_APP_PROVIDER + code)


def test_configure_leaves_the_applications_own_global_tracer_provider_alone() -> None:
    printed = _printed_under_an_app_provider(
        "from stepgraph.telemetry import configure\n"
        "ours = InMemorySpanExporter()\n"
        "configure(span_processors=[SimpleSpanProcessor(ours)])\n"
        "assert trace.get_tracer_provider() is provider\n"
        "class W(Workflow):\n"
        "    @step\n"
        "    async def s(self, ev: StartEvent) -> StopEvent:\n"
        "        with trace.get_tracer('app').start_as_current_span('app.span'):\n"
        "            return StopEvent(result=1)\n"
        "assert W().run_sync() == 1\n"
        "(mine,) = app.get_finished_spans()\n"
        "step = [s for s in ours.get_finished_spans() if s.name == 'stepgraph.step'][0]\n"
        "print(mine.name, mine.parent.span_id == step.context.span_id)\n"
    )
    assert printed == "app.span True"


def test_configure_takes_no_global_provider_for_metrics_alone_nor_from_a_broken_setting() -> None:
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from stepgraph.telemetry import configure\n"
        "configure(metric_readers=[InMemoryMetricReader()])\n"
        "app = TracerProvider(); trace.set_tracer_provider(app)\n"
        "print(trace.get_tracer_provider() is app)\n"
    )
    assert _printed(code) == "True"
    code = (
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import (\n"
        "    InMemorySpanExporter)\n"
        "from stepgraph.telemetry import configure, reset\n"
        "ours = InMemorySpanExporter()\n"
        "configure(span_processors=[SimpleSpanProcessor(ours)])\n"
        "configure(span_processors=[SimpleSpanProcessor(ours)])\n"
        f"{_ONE_STEP}"
        "assert W().run_sync() == 1\n"
        "print(sorted({s.name for s in ours.get_finished_spans()}))\n"
        "reset()\n"
        "print(W().run_sync())\n"  # (tracing off: the global provider is not loadable)
    )
    printed = _printed(code, OTEL_PYTHON_TRACER_PROVIDER="no_such_provider")
    assert printed.splitlines() == [
        "['stepgraph.run', 'stepgraph.step', 'stepgraph.superstep']",
        "1",
    ]


def test_spans_batched_by_configure_are_exported_when_the_process_ends() -> None:
    code = (
        "from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter\n"
        "from opentelemetry.sdk.trace.export import SpanExportResult\n"
        "from stepgraph.telemetry import configure\n"
        "class Printed(SpanExporter):\n"
        "    def export(self, spans):\n"
        "        print(*sorted(s.name for s in spans), flush=True)\n"
        "        return SpanExportResult.SUCCESS\n"
        "configure(span_processors=[BatchSpanProcessor(Printed(), schedule_delay_millis=60000)])\n"
        f"{_ONE_STEP}"
        "assert W().run_sync() == 1\n"
        "print('ran', flush=True)\n"
    )
    assert _printed(code).split() == [
        "ran",
        "stepgraph.run",
        "stepgraph.step",
        "stepgraph.superstep",
    ]


def test_an_exporter_failing_at_exit_leaves_the_metrics_exported() -> None:
    code = (
        "from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult\n"
        "from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter\n"
        "from opentelemetry.sdk.trace.export import SpanExportResult\n"
        "from stepgraph.telemetry import configure, reset\n"
        "class Gone(SpanExporter):\n"
        "    def export(self, spans):\n"
        "        return SpanExportResult.SUCCESS\n"
        "    def shutdown(self):\n"
        "        raise ConnectionError('collector gone')\n"
        "class Printed(MetricExporter):\n"
        "    def export(self, data, timeout_millis=0, **kwargs):\n"
        "        print('metrics exported', flush=True)\n"
        "        return MetricExportResult.SUCCESS\n"
        "    def force_flush(self, timeout_millis=0):\n"
        "        return True\n"
        "    def shutdown(self, timeout_millis=0, **kwargs):\n"
        "        pass\n"
        "import atexit\n"
        "atexit.register(reset)\n"  # (an application's own, run after stepgraph's hook)
        "reader = PeriodicExportingMetricReader(Printed(), export_interval_millis=600000)\n"
        "configure(span_processors=[SimpleSpanProcessor(Gone())], metric_readers=[reader])\n"
        f"{_ONE_STEP}"
        "assert W().run_sync() == 1\n"
        "print('ran', flush=True)\n"
    )
    assert _printed(code).splitlines() == ["ran", "metrics exported"]


def test_a_global_tracer_provider_is_used_without_configure() -> None:
    printed = _printed_under_an_app_provider(
        f"{_ONE_STEP}"
        "assert W().run_sync() == 1\n"
        "print(sorted(s.name for s in app.get_finished_spans()))\n"
    )
    assert printed == "['stepgraph.run', 'stepgraph.step', 'stepgraph.superstep']"


async def test_metrics_have_the_pinned_names_units_and_attributes() -> None:
    reader = InMemoryMetricReader()
    configure(metric_readers=[reader])
    try:
        assert await Chain().run() == 1
        with pytest.raises(KeyError):
            await Flaky().run()
        store = SqliteStore(":memory:")
        try:
            assert await Chain(store=store).run() == 1
        finally:
            store.close()
        async with TaskFlow(backends={"default": InlineBackend()}) as flow:
            double = flow.function_task(lambda x: 2 * x)
            assert await double(2) == 4
        data = reader.get_metrics_data()
    finally:
        reset()
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {name: metrics[name].unit for name in metrics if name.startswith("stepgraph.")} == {
        "stepgraph.step.duration": "s",
        "stepgraph.task.duration": "s",
        "stepgraph.step.retries": "{retry}",
        "stepgraph.messages": "{message}",
        "stepgraph.steps.in_flight": "{step}",
        "stepgraph.checkpoint.duration": "s",
        "stepgraph.checkpoint.size": "By",
    }

    def points(name: str) -> dict[tuple[Any, Any], Any]:
        return {
            (
                p.attributes.get("stepgraph.workflow.name"),
                p.attributes.get("stepgraph.step.name") or p.attributes.get("stepgraph.task.name"),
            ): p
            for p in metrics[name].data.data_points
        }

    durations = points("stepgraph.step.duration")
    assert durations["Chain", "hop"].count == 4 and durations["Chain", "start"].count == 2
    assert durations["Flaky", "start"].count == 2  # each attempt
    assert points("stepgraph.step.retries")["Flaky", "start"].value == 1
    in_flight = metrics["stepgraph.steps.in_flight"].data.data_points
    assert all(p.value == 0 for p in in_flight)
    assert {p.attributes["stepgraph.backend"] for p in in_flight} == {"inline", "thread"}
    assert points("stepgraph.messages")["Chain", "start"].value == 2  # a Hop in each run
    assert points("stepgraph.task.duration")[None, "<lambda>"].count == 1
    (sizes,) = metrics["stepgraph.checkpoint.size"].data.data_points
    assert sizes.count == 3 and sizes.min > 100


async def test_a_workflow_is_named_by_name_else_by_its_qualified_class_name(
    spans: InMemorySpanExporter, tmp_path: Any
) -> None:
    class Local(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="ok")

    log = tmp_path / "events.jsonl"
    assert await Local(event_log=log).run() == "ok"
    assert await Local(name="billing", event_log=log).run() == "ok"
    names = [s.attributes["stepgraph.workflow.name"] for s in named(spans, "stepgraph.run")]
    assert names == [Local.__qualname__, "billing"]
    assert Local.__qualname__.endswith("<locals>.Local")
    logged = {r["workflow"] for r in read_events(log)}
    assert logged == {Local.__qualname__, "billing"}


async def test_a_built_graph_is_named_by_name_else_by_its_qualified_class_name(
    spans: InMemorySpanExporter, tmp_path: Any
) -> None:
    log = tmp_path / "events.jsonl"
    unnamed = WorkflowBuilder(start=Print("print")).build(event_log=log)
    named_graphs = [
        WorkflowBuilder(start=Print("print")).build(name="billing", event_log=log),
        WorkflowBuilder(start=Print("print"), name="shipping").build(event_log=log),
    ]
    for graph in (unnamed, *named_graphs):
        assert (await graph.run("hi")).get_outputs() == ["hi!"]
    names = [s.attributes["stepgraph.workflow.name"] for s in named(spans, "stepgraph.run")]
    assert names == [type(unnamed).__qualname__, "billing", "shipping"]
    assert names[0] == "GraphWorkflow"
    assert [r["workflow"] for r in read_events(log) if r["kind"] == "run_started"] == names
    steps = {s.attributes["stepgraph.workflow.name"] for s in named(spans, "stepgraph.step")}
    assert steps == set(names)
    # in messages and stores, an unnamed graph goes by its start executor (graphs keep apart)
    assert unnamed.name == "print-graph"


def _current_ids() -> tuple[int, int]:
    """In a worker: the trace and span ids of the span current there."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return context.trace_id, context.span_id


@pytest.mark.parametrize("kind", ["process", "dask"])
async def test_the_trace_context_crosses_to_process_and_dask_workers(
    spans: InMemorySpanExporter, kind: str
) -> None:
    remote = (
        ProcessBackend(1)
        if kind == "process"
        else DaskBackend(processes=False, n_workers=1, threads_per_worker=1)
    )
    async with TaskFlow(backends={"default": remote}) as flow:
        where = flow.function_task(_current_ids)

        @flow.block
        async def group() -> tuple[int, int]:
            return await where()

        trace_id, span_id = await group()
    (task,) = named(spans, "stepgraph.task")
    (block,) = named(spans, "stepgraph.block")
    assert parent_of(task, spans) is block  # the task's span is the block's child
    assert (trace_id, span_id) == (task.context.trace_id, task.context.span_id)


def _dies() -> None:
    os._exit(3)  # as a worker killed by the system, out of memory, would


async def test_a_body_on_another_process_is_named_as_itself_with_spans_on(
    spans: InMemorySpanExporter,
) -> None:
    import pickle

    carried = InTrace({"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}, _current_ids)
    assert (carried.__name__, carried.__qualname__) == ("_current_ids", "_current_ids")
    assert repr(carried) == repr(_current_ids) and "traceparent" not in repr(carried)
    again = pickle.loads(pickle.dumps(carried))
    assert again.fn is _current_ids and again.carrier == carried.carrier
    async with TaskFlow(backends={"default": ProcessBackend(1)}) as flow:
        dying = flow.function_task(_dies)
        with pytest.raises(TaskFailed) as failed:
            await dying()
    message = str(failed.value.__cause__)
    assert "the worker process running _dies on backend" in message, message
    (task,) = named(spans, "stepgraph.task")
    assert "traceparent" not in str(task.events[0].attributes), task.events


class Remote(Workflow):
    @step(backend="cpu")
    def far(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=_current_ids())


async def test_a_step_on_a_process_backend_runs_under_its_step_span(
    spans: InMemorySpanExporter,
) -> None:
    pool = ProcessBackend(1)
    try:
        trace_id, span_id = await Remote(backends={"cpu": pool}).run()
    finally:
        await pool.shutdown()
    (step_span,) = named(spans, "stepgraph.step")
    assert (trace_id, span_id) == (step_span.context.trace_id, step_span.context.span_id)


async def test_a_fork_names_the_run_it_came_from(
    spans: InMemorySpanExporter, tmp_path: Any
) -> None:
    store = SqliteStore(tmp_path / "runs.db")
    try:
        first = Chain(store=store).run()
        assert await first == 1
        checkpoint = (await store.list_checkpoints(first.run_id))[1]
        fork = Chain(store=store).resume(first.run_id, checkpoint_id=checkpoint.id)
        assert await fork == 1
    finally:
        store.close()
    runs = {s.attributes["stepgraph.run.id"]: s for s in named(spans, "stepgraph.run")}
    assert runs[fork.run_id].attributes["stepgraph.run.forked_from"] == first.run_id
    assert "stepgraph.run.forked_from" not in runs[first.run_id].attributes


class Gated(Workflow):
    """Waits in its step until the test lets it go (the test detaches it there)."""

    @step
    async def wait(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Hop(n=0))
        await ctx.wait_for_event(Hop)
        return StopEvent(result="done")


async def test_a_detached_run_is_not_a_cancelled_one_and_a_completed_one_makes_no_span(
    spans: InMemorySpanExporter, tmp_path: Any
) -> None:
    store = SqliteStore(tmp_path / "runs.db")
    try:
        handler = Gated(store=store).run()
        async for event in handler.stream_events():
            if isinstance(event, Hop):
                break
        await handler.detach()
        (left,) = named(spans, "stepgraph.run")
        assert left.attributes["stepgraph.run.status"] == "detached"
        assert left.status.status_code is not StatusCode.ERROR
        again = Gated(store=store).resume(handler.run_id)
        again.send_event(Hop(n=1))
        assert await again == "done"
        assert await Gated(store=store).resume(handler.run_id) == "done"  # nothing runs
    finally:
        store.close()
    statuses = [s.attributes["stepgraph.run.status"] for s in named(spans, "stepgraph.run")]
    assert statuses == ["detached", "finished"]
