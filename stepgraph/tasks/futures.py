"""Task futures, and the workflow scope they carry."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .flow import Task, TaskFlow

__all__ = ["TaskFuture", "current_workflow_id", "workflow_scope"]

_WORKFLOW_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stepgraph_workflow_id", default=None
)
_BLOCK_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stepgraph_block_id", default=None
)


def current_workflow_id() -> str | None:
    """The id of the innermost :func:`workflow_scope` around this code (None: none)."""
    return _WORKFLOW_ID.get()


@contextlib.asynccontextmanager
async def workflow_scope(workflow_id: str) -> AsyncIterator[str]:
    """Everything created inside carries ``workflow_id`` (``future.workflow_id``).

    The id lives in a context variable: nested scopes restore the outer id when they
    end, sibling asyncio tasks each keep their own, and it is gone after the scope,
    also when the scope ends with an exception.
    """
    if not isinstance(workflow_id, str) or not workflow_id:
        raise ValueError(f"a workflow id is a non-empty string, got {workflow_id!r}")
    from ..telemetry.tracing import workflow_span

    span = workflow_span(workflow_id)  # None unless tracing is set up
    token = _WORKFLOW_ID.set(workflow_id)
    if span is None:
        try:
            yield workflow_id
        finally:
            _WORKFLOW_ID.reset(token)
        return
    from opentelemetry import trace

    from ..telemetry.tracing import span_failed

    try:
        with trace.use_span(span, end_on_exit=True, record_exception=False):
            try:
                yield workflow_id
            except Exception as exc:  # (the conventions: status, exception event, error.type)
                span_failed(span, exc)
                raise
    finally:
        _WORKFLOW_ID.reset(token)


class TaskFuture(asyncio.Future[Any]):
    """What calling a task or a block returns at once: an asyncio future of its result.

    Await it, pass it to ``asyncio.gather``, or pass it to another task as an argument
    (a dependency). ``cancel()`` cancels the task and every task that depends on it.

    Attributes:
        name: the task's (or block's) name: its function's ``__name__``.
        uid: unique in its flow (``task.000042``, ``block.000007``).
        backend: the name of the backend it goes to.
        workflow_id: the id of the :func:`workflow_scope` it was created in (or None).
        block_id: the uid of the block whose body created it (or None).
    """

    workflow_id: str | None
    block_id: str | None  # the uid of the block whose body called it (None: none)
    _flow: TaskFlow
    _task: int  # its number in the flow
    _spec: Task  # what was called

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def backend(self) -> str:
        return self._spec.backend

    @property
    def uid(self) -> str:
        return f"{'block' if self._spec.kind == 'block' else 'task'}.{self._task:06d}"

    def cancel(self, msg: Any | None = None) -> bool:
        if self.done():
            return False
        return self._flow._cancelled(self, msg)

    def __repr__(self) -> str:
        if not self.done():
            state = "pending"
        elif self.cancelled():
            state = "cancelled"
        elif self.exception() is not None:
            state = f"failed: {type(self.exception()).__name__}"
        else:
            state = "done"
        return f"<TaskFuture {self.name} {self.uid} on {self.backend!r} {state}>"
