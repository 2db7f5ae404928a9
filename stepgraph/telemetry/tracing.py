"""OpenTelemetry spans for runs, supersteps, steps, workflows, blocks and tasks.

Tracing is on when :func:`configure` was called, or when the application set a global
tracer provider (``opentelemetry.trace.set_tracer_provider``); otherwise a run or a
flow pays one check when it starts, and nothing more. Span names and attributes follow
docs/observability.md; errors follow the OpenTelemetry conventions (status ERROR, an
``exception`` event, ``error.type``).

A step's span is the current span while its body runs (its own task, and the thread
of a ``def`` step), so spans the body opens (an LLM client's, an HTTP client's) nest
under it; the same holds for a task's span and a block's.
"""

from __future__ import annotations

import atexit
import functools
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..backends.base import call_to_end
from ..core import AttemptFailed, Command, RunStatus, StepCompleted, StepFailed, Tick
from ..core.text import error_text
from ..errors import ConfigurationError
from ..runtime.observers import RunInfo, RunObserver, step_backend
from ..runtime.scope import WORKER
from ..tasks.observers import TaskObserver
from .reported import body_error, error_type

if TYPE_CHECKING:
    from ..tasks.flow import TaskFlow
    from ..tasks.futures import TaskFuture

__all__ = [
    "Instruments",
    "RunTracer",
    "TaskTracer",
    "carry_trace",
    "configure",
    "instruments",
    "reset",
    "run_in_trace",
    "run_tracer",
    "task_tracer",
    "tracer",
]

_INSTRUMENTATION = "stepgraph"

_state: dict[str, Any] = {
    "tracer_provider": None,
    "meter_provider": None,
    "tracers": {},
    "instruments": {},
    "span_processors": (),  # what the last configure() was given
    "metric_readers": (),
    "resource": None,
    "shut_readers": (),  # the metric readers shut down, the latest (to name, if given again)
    "forwarder": None,  # the global tracer provider configure() installed, if it did
    "forwarding": False,  # whether the forwarder forwards (the last call's set_global)
    "exit_hook": False,  # whether the providers are shut down at exit
    "install_tried": False,  # whether configure() tried to install the forwarder
}
_SHUT_KEPT = 64


def configure(
    span_processors: Sequence[Any] = (),
    metric_readers: Sequence[Any] = (),
    resource: Any = None,
    *,
    set_global: bool = True,
) -> None:
    """Send stepgraph's spans to ``span_processors`` and its metrics to ``metric_readers``
    (OpenTelemetry SDK objects: the extra ``otel``).

    ``resource`` describes the process (None: ``service.name`` "stepgraph"). Calling it
    again replaces what the last call set: what it was given and is not given again is
    flushed and shut down; a processor, exporter or metric reader given again goes on
    (flushed, not shut down). Metric readers given again, all of them and no other, with
    the same resource, keep their totals (their provider is kept); a reader given with
    others, or another resource, starts them over (OpenTelemetry gives a provider its
    readers when it is made). Without any call, the global providers of the application
    are used.

    ``set_global``: when ``span_processors`` are given and the application has set no
    global tracer provider, install one that sends the spans any code of this process
    opens through OpenTelemetry's API (an LLM client's, an HTTP client's, yours:
    ``trace.get_tracer(...)``) to ``span_processors`` too, nested under the step or task
    that opened them. OpenTelemetry sets a global provider once per process, for good:
    an application (or a library) that sets its own does so before the first such call,
    or every call gives False (then only stepgraph's spans go to ``span_processors``).
    Once installed, it stays; a later call with False, or :func:`reset`, makes it send
    nothing.

    Raises:
        ConfigurationError: a metric reader that was shut down (by :func:`reset`, or by a
            call that did not give it again) is given: it reads nothing any more.
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError as exc:
        from ..errors import MissingExtraError

        raise MissingExtraError(
            "stepgraph.telemetry.configure", "opentelemetry-sdk", "otel"
        ) from exc
    for reader in metric_readers:
        if _among(reader, _state["shut_readers"]):
            raise ConfigurationError(
                f"configure(metric_readers=...): {reader!r} was shut down (by reset(), or by "
                f"a configure() call that did not give it again) and reads nothing any "
                f"more: give a new reader"
            )
    chosen = resource if resource is not None else Resource.create({"service.name": "stepgraph"})
    old_meters = _state["meter_provider"]
    readers = tuple(metric_readers)
    same = _state["metric_readers"]
    if (
        old_meters is not None
        and len(readers) == len(same)
        and all(_among(reader, same) for reader in readers)  # (in any order)
        and (
            resource is _state["resource"]
            or (resource is not None and resource == _state["resource"])
        )
    ):
        meters = old_meters  # the same readers: their totals go on
    else:
        again = [reader for reader in readers if _among(reader, same)]
        remove = getattr(old_meters, "remove_metric_reader", None)  # (SDK 1.24 and later)
        if remove is not None:
            for reader in again:  # taken off the old provider, to be registered anew
                remove(reader)
        meters = MeterProvider(
            metric_readers=list(readers), resource=chosen, shutdown_on_exit=False
        )
    # (shut down at exit by one hook for the latest: a provider's own hook would keep
    # every provider a configure() made, with its exporter, until the process ends)
    tracers = TracerProvider(resource=chosen, shutdown_on_exit=False)
    if not _state["exit_hook"]:
        _state["exit_hook"] = True
        atexit.register(_shut_down_at_exit)
    for processor in span_processors:
        tracers.add_span_processor(processor)
    _retire(
        tracer_provider=tracers,
        meter_provider=meters,
        span_processors=span_processors,
        metric_readers=readers,
    )
    _state.update(span_processors=tuple(span_processors), metric_readers=readers, resource=resource)
    _state["forwarding"] = forwarding = set_global and bool(span_processors)
    if forwarding and not _state["install_tried"]:  # (once: OpenTelemetry's global is set
        from .global_tracer import install  # once, and a provider that does not load is

        _state["install_tried"] = True  # reported once)
        _state["forwarder"] = install(_forwarded)


def _shut_down_at_exit() -> None:
    """What the latest configure() set, flushed and shut down as the process ends (each
    on its own: one whose exporter raises leaves the other to finish), and forgotten (a
    reset() of the application's at exit finds nothing to shut down again)."""
    providers = (_state["tracer_provider"], _state["meter_provider"])
    _state.update(
        tracer_provider=None,
        meter_provider=None,
        tracers={},
        instruments={},
        span_processors=(),
        metric_readers=(),
        forwarding=False,
    )
    for provider in providers:
        if provider is not None:
            try:
                provider.shutdown()
            except Exception:
                logging.getLogger(__name__).exception("shutting down %r at exit failed", provider)


def _forwarded() -> Any | None:
    """The provider the global forwarder sends spans to (None: nowhere)."""
    return _state["tracer_provider"] if _state["forwarding"] else None


def _among(item: object, items: Sequence[object]) -> bool:
    """Whether ``item`` itself (not an equal object) is in ``items``."""
    return any(item is other for other in items)


def _retire(**new: Any) -> None:
    """Install ``new`` providers; flush the old ones and shut down what they were given
    that is not given again (an exporter shut down refuses every later span)."""
    old_tracers, old_meters = _state["tracer_provider"], _state["meter_provider"]
    processors = new.pop("span_processors", ())
    readers = new.pop("metric_readers", ())
    kept = {id(p) for p in processors}
    kept |= {id(getattr(p, "span_exporter", None)) for p in processors}
    if new["meter_provider"] is not old_meters:
        _state["instruments"] = {}
    _state.update(tracers={}, **new)
    if _state["forwarder"] is not None:  # (its tracers hold the old provider's)
        _state["forwarder"].forget()
    if old_tracers is not None:
        old_tracers.force_flush()
        for processor in _state["span_processors"]:
            exporter = getattr(processor, "span_exporter", None)
            if id(processor) not in kept and (exporter is None or id(exporter) not in kept):
                processor.shutdown()
    if old_meters is not None and new["meter_provider"] is not old_meters:
        shut = [r for r in _state["metric_readers"] if not _among(r, readers)]
        _state["shut_readers"] = (*_state["shut_readers"], *shut)[-_SHUT_KEPT:]
        old_meters.shutdown()  # (the readers given again were taken off it)


def reset() -> None:
    """Forget what :func:`configure` set (its providers are shut down, which flushes them):
    stepgraph goes back to the application's global providers, if any. (A global tracer
    provider ``configure`` installed stays installed, sending nothing: OpenTelemetry
    sets one once per process.)"""
    _retire(tracer_provider=None, meter_provider=None)
    _state.update(span_processors=(), metric_readers=(), resource=None, forwarding=False)


def tracer() -> Any | None:
    """The tracer stepgraph's spans go to, or None when tracing is off."""
    provider = _state["tracer_provider"]
    if provider is None:
        if "opentelemetry.trace" not in sys.modules:  # nobody set anything up
            return None
        from opentelemetry import trace

        try:
            provider = trace.get_tracer_provider()
        except Exception:  # OTEL_PYTHON_TRACER_PROVIDER names one that does not load (as
            return None  # OpenTelemetry has logged): no tracing, the run goes on
        if (
            isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
            or provider is _state["forwarder"]  # (configure's, forwarding to nothing now)
        ):
            return None
    found = _state["tracers"].get(id(provider))
    if found is None:
        found = _state["tracers"][id(provider)] = provider.get_tracer(_INSTRUMENTATION)
    return found


class Instruments:
    """stepgraph's metrics, made once per meter (names and units are pinned)."""

    def __init__(self, meter: Any) -> None:
        self.step_duration = meter.create_histogram(
            "stepgraph.step.duration", unit="s", description="time an attempt of a step took"
        )
        self.task_duration = meter.create_histogram(
            "stepgraph.task.duration", unit="s", description="time a task's body took"
        )
        self.step_retries = meter.create_counter(
            "stepgraph.step.retries", unit="{retry}", description="failed attempts retried"
        )
        self.messages = meter.create_counter(
            "stepgraph.messages", unit="{message}", description="messages steps sent"
        )
        self.in_flight = meter.create_up_down_counter(
            "stepgraph.steps.in_flight", unit="{step}", description="step attempts running"
        )
        self.checkpoint_duration = meter.create_histogram(
            "stepgraph.checkpoint.duration", unit="s", description="time to commit a checkpoint"
        )
        self.checkpoint_size = meter.create_histogram(
            "stepgraph.checkpoint.size", unit="By", description="bytes a checkpoint wrote"
        )


def instruments() -> Instruments | None:
    """stepgraph's metric instruments, or None when metrics are off."""
    provider = _state["meter_provider"]
    if provider is None:
        if "opentelemetry.metrics" not in sys.modules:
            return None
        from opentelemetry import metrics
        from opentelemetry.metrics import NoOpMeterProvider

        try:
            provider = metrics.get_meter_provider()
        except Exception:  # (OTEL_PYTHON_METER_PROVIDER names one that does not load)
            return None
        if isinstance(provider, NoOpMeterProvider) or type(provider).__name__.startswith("_Proxy"):
            return None
    found: Instruments | None = _state["instruments"].get(id(provider))
    if found is None:
        found = _state["instruments"][id(provider)] = Instruments(
            provider.get_meter(_INSTRUMENTATION)
        )
    return found


class _Api:
    """The functions of OpenTelemetry's API a tracer calls on every step or task, looked
    up once (the API is imported only once tracing is on)."""

    def __init__(self) -> None:
        from opentelemetry import context, trace

        self.attach = context.attach
        self.detach = context.detach
        self.current_context = context.get_current
        self.current_span = trace.get_current_span
        self.in_context = trace.set_span_in_context


@functools.cache
def _api() -> _Api:
    return _Api()


def _detach(span: Any, token: Any) -> None:
    """Make the span no longer current, where it is (a task cancelled from elsewhere ends
    in another context: its own context ends with its task)."""
    api = _api()
    if api.current_span() is span:
        api.detach(token)


def span_failed(span: Any, error: BaseException) -> None:
    """Mark ``span`` failed with ``error``, as the OpenTelemetry conventions say."""
    _fail(span, error, error_type(error), error_text(error))


def _fail(span: Any, error: BaseException | None, type_name: str, message: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    recorded = False
    if error is not None:
        try:
            span.record_exception(error)
            recorded = True
        except Exception:  # its str() (or its traceback's) raises: the safe text below
            pass
    if not recorded:
        span.add_event("exception", {"exception.type": type_name, "exception.message": message})
    span.set_attribute("error.type", type_name.rsplit(".", 1)[-1])
    span.set_status(Status(StatusCode.ERROR, message))


# -- step runs ----------------------------------------------------------------------------------


def run_tracer(run: RunInfo) -> RunTracer | None:
    """An observer giving ``run`` its spans and metrics, or None when both are off."""
    found, meters = tracer(), instruments()
    return None if found is None and meters is None else RunTracer(found, meters)


class RunTracer(RunObserver):
    """The spans of one run: ``stepgraph.run`` > ``stepgraph.superstep`` > ``stepgraph.step``."""

    def __init__(self, tracer: Any | None, meters: Instruments | None = None) -> None:
        self.tracer = tracer
        self.meters = meters
        self.api = _api()
        self.run_span: Any = None
        self.run_context: Any = None  # the context of the run span (async mode's steps' parent)
        self.superstep: tuple[int, Any, Any] | None = None  # index, span, context
        self.steps: dict[tuple[int, int], tuple[Any, Any]] = {}
        self.started: dict[tuple[int, int], tuple[float, dict[str, str]]] = {}

    def run_started(self, run: RunInfo) -> None:
        if self.tracer is None:
            return
        from opentelemetry import trace

        attributes: dict[str, Any] = {
            "stepgraph.workflow.name": run.telemetry_name,
            "stepgraph.run.id": run.run_id,
            "stepgraph.run.mode": run.mode.value,
        }
        if run.parent_run_id is not None:  # a sub-workflow's run
            attributes["stepgraph.run.parent_id"] = run.parent_run_id
        forked = getattr(run, "forked_from", None)
        if forked:
            attributes["stepgraph.run.forked_from"] = forked
        self.run_span = self.tracer.start_span(
            "stepgraph.run", attributes=attributes, kind=trace.SpanKind.INTERNAL
        )
        self.run_context = self.api.in_context(self.run_span)

    def _parent(self, run: RunInfo) -> Any:
        assert self.tracer is not None
        if run.mode.value != "superstep":
            return self.run_context
        index = run.state.superstep
        if self.superstep is None or self.superstep[0] != index:
            if self.superstep is not None:
                self.superstep[1].end()
            span = self.tracer.start_span(
                "stepgraph.superstep",
                context=self.run_context,
                attributes={"stepgraph.superstep.index": index, "stepgraph.run.id": run.run_id},
            )
            self.superstep = (index, span, self.api.in_context(span))
        return self.superstep[2]

    def step_started(
        self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
    ) -> None:
        if self.meters is not None:
            where = {
                "stepgraph.step.name": step,
                "stepgraph.workflow.name": run.telemetry_name,
                "stepgraph.backend": step_backend(run, invocation, message),
            }
            self.started[invocation, attempt] = (run.clock.monotonic(), where)
            self.meters.in_flight.add(1, where)
        if self.tracer is None:
            return
        if self.run_span is None:  # a resumed run: its span starts with its first step
            self.run_started(run)
        span = self.tracer.start_span(
            "stepgraph.step",
            context=self._parent(run),
            attributes={
                "stepgraph.step.name": step,
                "stepgraph.event.type": type(message).__name__,
                "stepgraph.step.attempt": attempt,
                "stepgraph.step.worker": WORKER.get(),
                "stepgraph.backend": step_backend(run, invocation, message),
                "stepgraph.run.id": run.run_id,
                "stepgraph.workflow.name": run.telemetry_name,
            },
        )
        api = self.api
        token = api.attach(api.in_context(span))  # the body's current span
        self.steps[invocation, attempt] = (span, token)

    def step_ended(
        self, run: RunInfo, step: str, invocation: int, attempt: int, outcome: Tick | None
    ) -> None:
        timed = self.started.pop((invocation, attempt), None)
        if timed is not None and self.meters is not None:
            began, where = timed
            self.meters.in_flight.add(-1, where)
            self.meters.step_duration.record(run.clock.monotonic() - began, where)
            if isinstance(outcome, AttemptFailed):
                self.meters.step_retries.add(1, where)
            elif isinstance(outcome, StepCompleted) and outcome.emitted:
                self.meters.messages.add(len(outcome.emitted), where)
        found = self.steps.pop((invocation, attempt), None)
        if found is None:
            return
        span, token = found
        _detach(span, token)
        if isinstance(outcome, AttemptFailed):
            failure = outcome.failure
            span.add_event(
                "stepgraph.retry",
                {
                    "stepgraph.step.attempt": attempt,
                    "stepgraph.retry.delay": outcome.retry_in,
                    "error.type": failure.type_name,
                },
            )
            _fail(span, failure.exception, failure.type_name, failure.message)
        elif isinstance(outcome, StepFailed) and outcome.failure is not None:
            failure = outcome.failure
            _fail(span, failure.exception, failure.type_name, failure.message)
        elif not isinstance(outcome, StepCompleted):
            span.set_attribute("stepgraph.step.cancelled", True)
        span.end()

    def superstep_ended(self, run: RunInfo, superstep: int) -> None:
        if self.superstep is not None and self.superstep[0] == superstep:
            self.superstep[1].end()
            self.superstep = None

    def tick(self, run: RunInfo, tick: Tick, commands: Sequence[Command]) -> None:
        return None

    def checkpoint_written(
        self, run: RunInfo, superstep: int, seq: int, size: int, seconds: float
    ) -> None:
        if self.meters is not None:
            where = {"stepgraph.workflow.name": run.telemetry_name}
            self.meters.checkpoint_duration.record(seconds, where)
            self.meters.checkpoint_size.record(size, where)

    def run_ended(
        self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
    ) -> None:
        if self.run_span is None:
            return
        for span, _ in self.steps.values():
            span.end()
        self.steps.clear()
        if self.superstep is not None:
            self.superstep[1].end()
            self.superstep = None
        span = self.run_span
        detached = status is RunStatus.CANCELLED and run.detached  # goes on in its store
        span.set_attribute("stepgraph.run.status", "detached" if detached else status.value)
        if status is RunStatus.FAILED:
            name = error_type(error) if error is not None else "Error"
            _fail(span, error, name, error_text(error) if error is not None else "")
        span.end()


# -- task flows ---------------------------------------------------------------------------------


def task_tracer() -> TaskTracer | None:
    """An observer giving a flow's tasks and blocks their spans and metrics, or None
    when both are off."""
    found, meters = tracer(), instruments()
    return None if found is None and meters is None else TaskTracer(found, meters)


class TaskTracer(TaskObserver):
    """``stepgraph.block`` and ``stepgraph.task`` spans, under the span current where the
    task was called (a block's, a workflow scope's, the caller's)."""

    def __init__(self, tracer: Any | None, meters: Instruments | None = None) -> None:
        self.tracer = tracer
        self.meters = meters
        self.api = _api()
        self.parents: dict[int, Any] = {}
        self.spans: dict[int, tuple[Any, Any]] = {}
        self.started: dict[int, float] = {}

    def task_created(self, flow: TaskFlow, future: TaskFuture, dependencies: Sequence[str]) -> None:
        if self.tracer is None:
            return
        self.parents[future._task] = self.api.current_context()

    def task_started(self, flow: TaskFlow, future: TaskFuture) -> None:
        if self.meters is not None:
            self.started[future._task] = flow.clock.monotonic()
        if self.tracer is None:
            return
        spec = future._spec
        block = spec.kind == "block"
        attributes: dict[str, Any] = {
            "stepgraph.block.name" if block else "stepgraph.task.name": spec.name,
            "stepgraph.task.id": future.uid,
            "stepgraph.backend": spec.backend,
        }
        if future.workflow_id is not None:
            attributes["stepgraph.workflow.id"] = future.workflow_id
        for name, count in spec.resources.items():
            attributes[f"stepgraph.resources.{name}"] = count
        span = self.tracer.start_span(
            "stepgraph.block" if block else "stepgraph.task",
            context=self.parents.pop(future._task, None),
            attributes=attributes,
        )
        api = self.api
        token = api.attach(api.in_context(span))  # the body's current span
        self.spans[future._task] = (span, token)

    def _end(self, future: TaskFuture, error: BaseException | None = None) -> None:
        began = self.started.pop(future._task, None)
        if began is not None and self.meters is not None and future._spec.kind != "block":
            self.meters.task_duration.record(
                future._flow.clock.monotonic() - began,
                {"stepgraph.task.name": future.name, "stepgraph.backend": future.backend},
            )
        self.parents.pop(future._task, None)
        found = self.spans.pop(future._task, None)
        if found is None:
            return
        span, token = found
        _detach(span, token)
        if error is not None:  # what the body raised (a TaskFailed's cause), as the log says
            cause = body_error(error)
            _fail(span, cause, error_type(cause), error_text(error))
        span.end()

    def task_resolved(self, flow: TaskFlow, future: TaskFuture) -> None:
        self._end(future)

    def task_failed(self, flow: TaskFlow, future: TaskFuture, error: BaseException) -> None:
        self._end(future, error)

    def task_cancelled(self, flow: TaskFlow, future: TaskFuture) -> None:
        found = self.spans.get(future._task)
        if found is not None:
            found[0].set_attribute("stepgraph.task.cancelled", True)
        self._end(future)


def workflow_span(workflow_id: str) -> Any | None:
    """A ``stepgraph.workflow`` span for a workflow scope (None when tracing is off)."""
    found = tracer()
    if found is None:
        return None
    return found.start_span("stepgraph.workflow", attributes={"stepgraph.workflow.id": workflow_id})


# -- across processes ---------------------------------------------------------------------------


def carry_trace(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, made to run under the current span wherever it runs (another process, a
    Dask worker): the trace context travels with it as a W3C ``traceparent``."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return fn
    return InTrace(carrier, fn)


class InTrace:
    """``fn`` made to run under a caller's span (:func:`carry_trace`): picklable with it,
    and named as it is (a backend's messages, a Dask task's key, name the body, not this)."""

    __slots__ = ("carrier", "fn")

    def __init__(self, carrier: dict[str, str], fn: Callable[..., Any]) -> None:
        self.carrier = carrier
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return run_in_trace(self.carrier, self.fn, *args, **kwargs)

    @property
    def __name__(self) -> str:
        return str(getattr(self.fn, "__name__", repr(self.fn)))

    def __getattr__(self, name: str) -> Any:
        if name == "__qualname__":  # (a class body cannot hold one of its own)
            return str(getattr(self.fn, "__qualname__", self.__name__))
        raise AttributeError(name)

    def __repr__(self) -> str:
        return repr(self.fn)

    def __reduce__(self) -> tuple[Any, ...]:
        return (InTrace, (self.carrier, self.fn))


def run_in_trace(carrier: dict[str, str], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Where a body runs: ``fn(*args, **kwargs)`` (to its end) under the caller's span."""
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(carrier))
    try:
        return call_to_end(fn, args, kwargs)
    finally:
        context.detach(token)
