"""WorkflowContext: what an executor's handler can do in its run. It forwards to the port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import WorkflowRuntimeError
from ..graph_events import RequestInfoEvent, WorkflowOutputEvent
from ..state.store import StateStore
from .scope import IdempotencyKey, Scope, current_scope

if TYPE_CHECKING:
    from .ports import StepPort

__all__ = ["Ready", "WorkflowContext"]

T_Out = TypeVar("T_Out")
T = TypeVar("T")


class WorkflowContext(IdempotencyKey, Generic[T_Out]):
    """One per run of an executor graph: send messages, yield outputs, ask for input.

    ``WorkflowContext[T]`` in a handler's annotation declares that it sends messages
    of type ``T``; ``build()`` then checks that the targets of its edges handle ``T``.

    Example::

        @handler
        async def on_text(self, text: str, ctx: WorkflowContext[str]) -> None:
            await ctx.send_message(text.upper())
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
        """The run's shared state (``get``, ``set``, ``update``, ``edit()``; reducer keys)."""
        return self._run.store

    def _scope(self, what: str) -> Scope:
        scope = current_scope()
        if scope is None or scope.run is not self._run:
            raise WorkflowRuntimeError(
                f"ctx.{what}() can only be called from a handler of this run"
            )
        return scope

    def send_message(self, message: Any, target: str | None = None) -> Ready[None]:
        """Send ``message`` along every out-edge whose condition holds, or to node ``target``.

        The send happens when called; the result may be awaited (``await
        ctx.send_message(x)``) or not (in a sync ``def`` handler). In superstep mode the
        message is delivered in the next superstep.

        Raises:
            UnknownStepError: ``target`` names no executor of the graph.
            UnroutableEventError: ``target`` has no handler for the message's type.
        """
        run = self._run
        scope = current_scope()
        if scope is None or scope.run is not run:
            scope = self._scope("send_message")  # raises
        if target is None:
            run.emit(scope, message)
        else:
            run.send(scope, message, target)
        return _DONE

    def yield_output(self, data: Any) -> Ready[None]:
        """Add ``data`` to the run's outputs (``RunResult.outputs``) and to the stream.

        Like ``send_message``, it acts when called; awaiting the result is optional.
        """
        scope = self._scope("yield_output")
        name = self._run.graph.nodes[scope.node].name
        self._run.emit(scope, WorkflowOutputEvent(data=data, executor_id=name))
        return _DONE

    def limit(self, name: str) -> AbstractAsyncContextManager[float]:
        """``async with ctx.limit("llm"):`` holds the workflow's limiter ``name`` for the
        block (waiting for it first); it gives the seconds it waited."""
        return self._run.limit(current_scope(), name)

    def request_info(self, data: Any, response_type: type) -> Ready[str]:
        """Ask the caller for information; returns the request id at once.

        A ``RequestInfoEvent`` appears on the stream. When the caller answers with
        ``await handler.send_response(request_id, value)``, this executor's
        ``@response_handler`` for ``response_type`` receives ``(data, value)``. While
        requests are open the run is paused, not stalled.
        """
        scope = self._scope("request_info")
        request_id = self._run.request_id(scope)  # the same when the executor runs again
        return Ready(self._request(scope, data, response_type, request_id, None))

    def _request(
        self,
        scope: Scope,
        data: object,
        response_type: Any,
        request_id: str,
        forward: Callable[[object], Awaitable[None] | None] | None,
    ) -> str:
        """Open a request; a sub-workflow's (``forward``) is answered by its own run."""
        event = RequestInfoEvent(
            request_id=request_id,
            data=data,
            source_executor_id=self._run.graph.nodes[scope.node].name,
            response_type=getattr(response_type, "__name__", str(response_type)),
        )
        return self._run.request(scope, request_id, data, response_type, event, forward)

    def add_event(self, event: Any) -> Ready[None]:
        """Put ``event`` on the run's stream (awaiting the result is optional)."""
        self.write_event_to_stream(event)
        return _DONE

    def write_event_to_stream(self, event: Any) -> None:
        """Put ``event`` on the run's stream.

        Unlike ``Context.write_event_to_stream`` with an ``InputRequiredEvent``, nothing
        written here pauses the run: executor graphs ask the caller with ``request_info``.
        """
        run = self._run
        scope = current_scope()
        run.publish(scope if scope is not None and scope.run is run else None, event)


class Ready(Generic[T]):
    """An already-completed awaitable: ``await`` gives ``value`` at once, without a loop turn.

    WorkflowContext methods act when called and return one of these, so they work
    both with ``await`` in async handlers and without it in sync handlers.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, T]:
        return self.value
        yield  # a generator: `await` finishes at once with `value`


class _Done(Ready[None]):
    """The completed awaitable of ``None`` (no generator to create per ``await``)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_DONE: Ready[None] = _Done(None)
