"""WorkflowExecutor: a built workflow used as one node of another."""

from __future__ import annotations

from typing import Any

from ..graph_events import RequestInfoEvent, WorkflowOutputEvent
from ..runtime.scope import current_scope
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
        scope = current_scope()
        assert scope is not None
        outer = ctx._run.name
        inner = self.workflow.run(message)  # its requests have the same ids each time this
        run = inner._run  # step runs on this message (a retry, a resume): an answer the
        # outer run stored goes to the inner run again
        try:
            async for event in inner._events():
                if isinstance(event, WorkflowOutputEvent):
                    await ctx.send_message(event.data)
                elif isinstance(event, RequestInfoEvent):
                    request = run.open_request(event.request_id)
                    assert request is not None, "a request on the stream is open"

                    def forward(value: object, request_id: str = event.request_id) -> Any:
                        return run.respond(request_id, value)

                    ctx._request(
                        scope, event.data, request.response_type, event.request_id, forward
                    )
        finally:
            if inner._run.running:  # this node was cancelled (the outer run ended): end it too
                inner._run.cancel(f"executor {self.id!r} of workflow {outer!r} stopped")
                inner.exception()  # retrieved: a cancelled inner run is not an error
        try:
            await inner
        except Exception as exc:
            exc.add_note(
                f"stepgraph: raised in sub-workflow {self.workflow.name!r}, run by executor "
                f"{self.id!r} of workflow {outer!r}"
            )
            raise
