"""WorkflowExecutor: a built workflow used as one node of another."""

from __future__ import annotations

from typing import Any

from ..graph_events import RequestInfoEvent, WorkflowOutputEvent
from ..runtime._scope import current_scope
from ..runtime.workflow_context import WorkflowContext
from .executor import Executor, handler
from .graph_workflow import GraphWorkflow

__all__ = ["WorkflowExecutor"]


class WorkflowExecutor(Executor):
    """Run ``workflow`` for each message this node receives.

    The inner run's outputs are sent on along this node's out-edges; its requests
    for information surface on the outer run's stream with the same request id,
    and the outer caller's answers go back to the inner run; an inner error fails
    the outer run with a note naming both workflows.

    Args:
        workflow: a built executor graph.
        id: this node's id (default: the inner workflow's name).
    """

    def __init__(self, workflow: GraphWorkflow, id: str | None = None, **options: Any) -> None:
        super().__init__(id or workflow.name, **options)
        self.workflow = workflow

    @handler
    async def run_workflow(self, message: object, ctx: WorkflowContext[Any]) -> None:
        outer = ctx._run
        scope = current_scope()
        assert scope is not None
        inner = self.workflow.run(message)
        inner_run = inner._run
        try:
            async for event in inner_run.stream.events(inner_run.run_id):
                if isinstance(event, WorkflowOutputEvent):
                    await ctx.send_message(event.data)
                elif isinstance(event, RequestInfoEvent):
                    request = inner_run.requests[event.request_id]

                    def forward(value: object, request_id: str = event.request_id) -> Any:
                        return inner.send_response(request_id, value)

                    outer.request(
                        scope, event.data, request.response_type, forward, event.request_id
                    )
        finally:
            if not inner_run.done:  # this node was cancelled (the outer run ended): end it too
                inner_run.cancel(f"executor {self.id!r} of workflow {outer.name!r} stopped")
                inner_run.future.exception()  # retrieved: a cancelled inner run is not an error
        try:
            await inner
        except Exception as exc:
            exc.add_note(
                f"stepgraph: raised in sub-workflow {self.workflow.name!r}, run by executor "
                f"{self.id!r} of workflow {outer.name!r}"
            )
            raise
