"""The global tracer provider :func:`~stepgraph.telemetry.configure` installs when the
application has set none, so that the spans any code opens through OpenTelemetry's API
(``trace.get_tracer(...)``: an LLM client's, an HTTP client's, the user's own) go where
stepgraph's spans go, nested under the step or task that opened them.

OpenTelemetry lets a process set its global tracer provider once, for good; ``configure``
may be called again, and ``reset`` undoes it. So the provider installed is a forwarder:
each span goes to the provider the latest call made, looked up when the span starts, or
nowhere (the API's no-op tracer) when that call asked for no global provider, or after
``reset``.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

__all__ = ["Forwarding", "install"]

Current = Callable[[], Any | None]  # the SDK tracer provider to forward to (None: none)


class Forwarding(trace.TracerProvider):
    """A tracer provider whose tracers forward to the current one (see the module)."""

    def __init__(self, current: Current) -> None:
        self._current = current
        self._lock = threading.Lock()
        # the SDK tracer of each forwarding tracer, of the provider they were made by
        self._made: weakref.WeakKeyDictionary[_ForwardingTracer, trace.Tracer] = (
            weakref.WeakKeyDictionary()
        )
        self._made_by: Any = None

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return _ForwardingTracer(
            self,
            (instrumenting_module_name, instrumenting_library_version, schema_url, attributes),
        )

    def target(self, tracer: _ForwardingTracer) -> trace.Tracer:
        """The tracer of the current provider for ``tracer``'s instrumentation."""
        with self._lock:  # (read with the provider: a forget() is never undone after it)
            provider = self._current()
            if provider is None:
                return _NO_OP
            if provider is not self._made_by:
                self._made.clear()
                self._made_by = provider
            found = self._made.get(tracer)
            if found is None:
                found = self._made[tracer] = provider.get_tracer(*tracer.args)
            return found

    def forget(self) -> None:
        """Let go of the tracers of the providers forwarded to so far (``configure`` or
        ``reset`` replaced them: they, their processors and exporters may be freed)."""
        with self._lock:
            self._made.clear()
            self._made_by = None


class _ForwardingTracer(trace.Tracer):
    """A tracer of ``Forwarding``: each span goes to the tracer of the current provider
    for the same instrumentation, looked up when the span starts."""

    def __init__(self, forwarding: Forwarding, args: tuple[Any, ...]) -> None:
        self.forwarding = forwarding
        self.args = args

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self.forwarding.target(self).start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return _CurrentSpan(self, args, kwargs)


class _CurrentSpan:
    """What ``start_as_current_span`` gives: a context manager (entered once at a time,
    as OpenTelemetry's), or a decorator of a function or coroutine function, that starts
    the span in the provider current when the ``with`` block (or the call) starts."""

    def __init__(self, tracer: _ForwardingTracer, args: tuple[Any, ...], kwargs: Any) -> None:
        self._tracer = tracer
        self._args = args
        self._kwargs = kwargs
        self._open: Any = None  # the manager entered, while it is

    @contextmanager
    def _started(self) -> Iterator[trace.Span]:
        target = self._tracer.forwarding.target(self._tracer)
        with target.start_as_current_span(*self._args, **self._kwargs) as span:
            yield span

    def __enter__(self) -> trace.Span:
        if self._open is not None:
            raise RuntimeError(
                "a span's start_as_current_span(...) is entered once at a time: call it again "
                "for another span"
            )
        manager = self._started()
        span = manager.__enter__()
        self._open = manager
        return span

    def __exit__(self, *exc_info: Any) -> bool:
        manager, self._open = self._open, None
        return bool(manager.__exit__(*exc_info))

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                with self._started():
                    return await function(*args, **kwargs)

            return traced_async

        @functools.wraps(function)
        def traced(*args: Any, **kwargs: Any) -> Any:
            with self._started():
                return function(*args, **kwargs)

        return traced


_NO_OP = trace.NoOpTracer()


def install(current: Current) -> Forwarding | None:
    """Make a forwarder to ``current()`` the global tracer provider, if the application
    has not set one (nor named one in ``OTEL_PYTHON_TRACER_PROVIDER``); the forwarder, or
    None when the application's own provider is the global one (or the one it names
    cannot be loaded: OpenTelemetry has logged why)."""
    try:
        found = trace.get_tracer_provider()
    except Exception:
        return None
    if not isinstance(found, trace.ProxyTracerProvider):
        return None
    forwarder = Forwarding(current)
    trace.set_tracer_provider(forwarder)
    return forwarder if trace.get_tracer_provider() is forwarder else None
