"""Events and results of executor graphs (``WorkflowBuilder``).

The stream of an executor-graph run carries lifecycle events (an executor was
invoked or completed, a superstep completed), every output, and every request
for information. Outputs and requests are never dropped. Lifecycle events are
recorded from the moment ``stream_events()`` is called (which is before the
first executor runs when it is called right after ``run()``), so runs that
nobody streams do not pay for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import Event

__all__ = [
    "ExecutorCompletedEvent",
    "ExecutorInvokedEvent",
    "RequestInfoEvent",
    "RunResult",
    "SuperstepCompletedEvent",
    "WorkflowEvent",
    "WorkflowOutputEvent",
]


class WorkflowEvent(Event):
    """Base class of the lifecycle events of executor graphs."""


class ExecutorInvokedEvent(WorkflowEvent):
    """Executor ``executor_id`` started processing a message."""

    executor_id: str


class ExecutorCompletedEvent(WorkflowEvent):
    """Executor ``executor_id`` finished processing a message."""

    executor_id: str


class SuperstepCompletedEvent(WorkflowEvent):
    """Superstep ``superstep`` passed its barrier."""

    superstep: int


class WorkflowOutputEvent(WorkflowEvent):
    """Executor ``executor_id`` yielded ``data`` as a workflow output."""

    data: Any = None
    executor_id: str = ""


class RequestInfoEvent(WorkflowEvent):
    """An executor asks the caller for information; answer with ``handler.send_response``.

    Attributes:
        request_id: pass it back to ``send_response(request_id, value)``.
        data: what the executor asks about.
        source_executor_id: the executor that asked.
        response_type: the name of the type the answer must have.
    """

    request_id: str
    data: Any = None
    source_executor_id: str = ""
    response_type: str = ""


@dataclass(slots=True)
class RunResult:
    """What awaiting an executor-graph run gives.

    Attributes:
        outputs: the values yielded with ``ctx.yield_output``, in order (in superstep
            mode: by superstep, then by executor order, then by yield order).
        run_id: the run's id.
        state: the shared state at the end of the run.
    """

    outputs: list[Any] = field(default_factory=list)
    run_id: str = ""
    state: dict[str, Any] = field(default_factory=dict)

    def get_outputs(self) -> list[Any]:
        """The outputs, in order."""
        return list(self.outputs)
