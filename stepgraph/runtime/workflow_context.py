"""WorkflowContext: what an executor's handler can do in its run. It only forwards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import WorkflowRuntimeError
from ..graph_events import WorkflowOutputEvent
from ..state.store import StateStore
from ._scope import Scope, current_scope

if TYPE_CHECKING:
    from .run import Run

__all__ = ["WorkflowContext"]

T_Out = TypeVar("T_Out")


class WorkflowContext(Generic[T_Out]):
    """One per run of an executor graph: send messages, yield outputs, ask for input.

    ``WorkflowContext[T]`` in a handler's annotation declares that it sends messages
    of type ``T``; ``build()`` then checks that the targets of its edges handle ``T``.

    Example::

        @handler
        async def on_text(self, text: str, ctx: WorkflowContext[str]) -> None:
            await ctx.send_message(text.upper())
    """

    __slots__ = ("_run",)

    def __init__(self, run: Run) -> None:
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

    async def send_message(self, message: Any, target: str | None = None) -> None:
        """Send ``message`` along every out-edge whose condition holds, or to node ``target``.

        In superstep mode the message is delivered in the next superstep.

        Raises:
            UnknownStepError: ``target`` names no executor of the graph.
            UnroutableEventError: ``target`` has no handler for the message's type.
        """
        self._run.send(self._scope("send_message"), message, target)

    async def yield_output(self, data: Any) -> None:
        """Add ``data`` to the run's outputs (``RunResult.outputs``) and to the stream."""
        scope = self._scope("yield_output")
        name = self._run.graph.nodes[scope.node].name
        self._run.emit(scope, WorkflowOutputEvent(data=data, executor_id=name))

    async def request_info(self, data: Any, response_type: type) -> str:
        """Ask the caller for information; returns the request id at once.

        A ``RequestInfoEvent`` appears on the stream. When the caller answers with
        ``await handler.send_response(request_id, value)``, this executor's
        ``@response_handler`` for ``response_type`` receives ``(data, value)``. While
        requests are open the run is paused, not stalled.
        """
        scope = self._scope("request_info")
        run = self._run
        program = run.plan.programs[scope.node]
        responses = getattr(program, "responses", ())
        if not any(issubclass(response_type, h.types) for h in responses):
            raise WorkflowRuntimeError(
                f"executor {program.name!r} asked for a {response_type.__name__} with "
                f"request_info but has no @response_handler taking {response_type.__name__}"
            )
        return run.request(scope, data, response_type)

    async def add_event(self, event: Any) -> None:
        """Put ``event`` on the run's stream."""
        self.write_event_to_stream(event)

    def write_event_to_stream(self, event: Any) -> None:
        """Put ``event`` on the run's stream (same as ``add_event``, synchronous)."""
        self._run.stream.push(event)
