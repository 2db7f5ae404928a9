"""The global tracer provider :func:`~stepgraph.telemetry.configure` installs when the
application has set none, so that the spans any code opens through OpenTelemetry's API
(``trace.get_tracer(...)``: an LLM client's, an HTTP client's, the user's own) go where
stepgraph's spans go, nested under the step or task that opened them.

OpenTelemetry lets a process set its global tracer provider once; ``configure`` may be
called again, and ``reset`` undoes it. So the provider installed is a forwarder: each
span goes to the provider the latest call made, or nowhere (the API's no-op tracer) when
that call asked for no global provider, or after ``reset``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace

__all__ = ["install"]

Current = Callable[[], Any | None]  # the SDK tracer provider to forward to (None: none)


class _Forwarding(trace.TracerProvider):
    """A tracer provider whose tracers forward to the current one (see the module)."""

    def __init__(self, current: Current) -> None:
        self._current = current

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return _ForwardingTracer(
            self._current,
            (instrumenting_module_name, instrumenting_library_version, schema_url, attributes),
        )


class _ForwardingTracer(trace.Tracer):
    """A tracer of ``_Forwarding``: each span goes to the tracer of the current provider
    for the same instrumentation (made when that provider is first seen)."""

    def __init__(self, current: Current, args: tuple[Any, ...]) -> None:
        self._current = current
        self._args = args
        self._provider: Any = None
        self._tracer: trace.Tracer = trace.NoOpTracer()

    def _target(self) -> trace.Tracer:
        provider = self._current()
        if provider is not self._provider:
            tracer = trace.NoOpTracer() if provider is None else provider.get_tracer(*self._args)
            self._provider, self._tracer = provider, tracer
        return self._tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._target().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().start_as_current_span(*args, **kwargs)


def install(current: Current) -> trace.TracerProvider | None:
    """Make a forwarder to ``current()`` the global tracer provider, if the application
    has not set one (nor named one in ``OTEL_PYTHON_TRACER_PROVIDER``); the forwarder, or
    None when the application's own provider is the global one."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    forwarder = _Forwarding(current)
    trace.set_tracer_provider(forwarder)
    return forwarder if trace.get_tracer_provider() is forwarder else None
