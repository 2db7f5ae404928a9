"""Context: the step author's view of the run. It forwards to the run's port; no logic."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.collector import Repeat
from ..core.text import short_repr
from ..errors import StepgraphError, WorkflowRuntimeError
from ..events import Event
from ..state.store import StateStore
from .scope import IdempotencyKey, Scope, current_scope

if TYPE_CHECKING:
    from .ports import StepPort

__all__ = ["Context", "get_context", "set_current_context"]

E = TypeVar("E", bound=Event)

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("stepgraph_context")


def get_context() -> Context:
    """The Context of the run whose step is calling, so helpers need no ``ctx`` parameter.

    Raises:
        StepgraphError: when called outside a running step.
    """
    try:
        context: Context = _current.get()
        return context
    except LookupError:
        raise StepgraphError(
            "get_context() was called outside a running step; call it from a step "
            "(or from code a step calls)"
        ) from None


def set_current_context(ctx: Any) -> None:
    _current.set(ctx)


class Context(IdempotencyKey):
    """One per run: send events, stream progress, collect, wait, and share state.

    Example::

        @step
        async def fan_out(self, ctx: Context, ev: StartEvent) -> None:
            for item in ev.items:
                ctx.send_event(Item(value=item))
    """

    __slots__ = ("__weakref__", "_run")

    def __init__(self, run: StepPort) -> None:
        self._run = run

    @property
    def run_id(self) -> str:
        """The run's unique id."""
        return self._run.run_id

    @property
    def store(self) -> StateStore:
        """The run's shared state (``get``, ``set``, ``update``, ``edit()``)."""
        return self._run.store

    @property
    def is_running(self) -> bool:
        """Whether the run has not ended yet."""
        return self._run.running

    def _scope(self, what: str) -> Scope:
        scope = current_scope()
        if scope is None or scope.run is not self._run:
            raise WorkflowRuntimeError(f"ctx.{what}() can only be called from a step of this run")
        return scope

    def limit(self, name: str) -> AbstractAsyncContextManager[float]:
        """``async with ctx.limit("llm"):`` holds the workflow's limiter ``name`` for the
        block (waiting for it first); it gives the seconds it waited."""
        return self._run.limit(current_scope(), name)

    def send_event(self, event: Event, step: str | None = None) -> None:
        """Emit ``event`` in addition to what the step returns.

        Args:
            event: the event; it goes to every step that accepts its type.
            step: the name of one step to send it to instead.

        Raises:
            UnknownStepError: ``step`` names no step of the workflow.
            UnroutableEventError: ``step`` does not accept the event's type.
        """
        run = self._run
        scope = current_scope()
        if scope is not None and scope.run is not run:
            scope = None
        if not isinstance(event, Event):
            raise WorkflowRuntimeError(
                f"{run.where(scope)} sent {short_repr(event, 200)} ({type(event).__name__}); "
                f"send_event takes an Event"
            )
        if step is None and scope is not None:
            run.emit(scope, event)
        else:
            run.send(scope, event, step)

    def write_event_to_stream(self, event: Event) -> None:
        """Put ``event`` on the run's stream (``handler.stream_events()``), in order.

        An ``InputRequiredEvent`` written by a step pauses the run until the caller
        answers with a ``HumanResponseEvent`` (a pause, not a stall).
        """
        run = self._run
        scope = current_scope()
        run.publish(scope if scope is not None and scope.run is run else None, event)

    def collect_events(
        self,
        event: Event,
        expected: Sequence[type[Event]] | type[Event],
        count: int | None = None,
    ) -> list[Any] | None:
        """Hold ``event`` until one event of each type in ``expected`` is held.

        Returns ``None`` until then; then the events, in the order of ``expected``.
        Extra events wait for the next batch; none are lost (G9). Each call costs the
        same whatever the length of ``expected``.

        Args:
            event: the event to hold.
            expected: the event types a batch holds, in order (``[Result] * n``); or one
                type, with ``count``.
            count: with one type as ``expected``, how many of it a batch holds:
                ``collect_events(ev, Result, count=n)`` is ``[Result] * n`` without
                building that list on every call.

        Example::

            results = ctx.collect_events(ev, [Result] * n)
            if results is None:
                return None
        """
        scope = self._scope("collect_events")
        if count is not None or isinstance(expected, type):
            expected = self._repeat(scope, event, expected, count)
        if not expected:
            raise WorkflowRuntimeError(
                f"{self._run.where(scope)} called collect_events("
                f"{type(event).__name__}, []) with no expected types; pass the list of "
                f"event types to wait for, e.g. [Result] * n"
            )
        return self._run.collect(scope, event, expected)

    def _repeat(self, scope: Scope, event: Event, kind: object, count: int | None) -> Repeat:
        if (
            not isinstance(kind, type)
            or isinstance(count, bool)
            or not isinstance(count, int)
            or count < 1
        ):
            raise WorkflowRuntimeError(
                f"{self._run.where(scope)} called collect_events({type(event).__name__}, "
                f"{short_repr(kind)}, count={count!r}); pass a list of event types, or one "
                f"event type with count= a whole number >= 1"
            )
        return Repeat(kind, count)

    async def wait_for_event(
        self,
        event_type: type[E] | tuple[type[E], ...],
        requirements: Mapping[str, Any] | None = None,
        timeout: float | None = 2000.0,
    ) -> E:
        """Suspend the step until an event of ``event_type`` matching ``requirements`` arrives.

        While it waits, the step does not hold up the superstep barrier, and the run
        counts as waiting for input (a pause, not a stall).

        Raises:
            WaitForEventTimeoutError: nothing matching arrived within ``timeout`` seconds.
        """
        scope = self._scope("wait_for_event")
        types = event_type if isinstance(event_type, tuple) else (event_type,)
        result: E = await self._run.wait_for(scope, types, dict(requirements or {}), timeout)
        return result
