"""The observer seam of task flows: watching tasks without changing them.

A :class:`TaskObserver` is told when a task (or block) is created, submitted (its
dependencies are done and its slots taken: its body goes to its backend), started (its
body begins), and when it ends: resolved, failed or cancelled. Observers run on the
flow's event loop thread, in the order given; a flow without observers pays nothing.
The event log (``stepgraph.telemetry.EventLog``) is one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .flow import TaskFlow
    from .futures import TaskFuture

__all__ = ["TaskObserver", "ambient_observers", "observing_tasks"]


class TaskObserver:
    """Base class of task observers: override the methods you need."""

    follows_task_flows = False
    """When it observes a run too (``observers=`` of a workflow): the task flows that
    run's steps make are told to it as well."""

    def task_created(self, flow: TaskFlow, future: TaskFuture, dependencies: Sequence[str]) -> None:
        """A task or block was called; ``dependencies`` are the uids of its futures."""

    def task_submitted(self, flow: TaskFlow, future: TaskFuture) -> None:
        """Its dependencies are done and its slots taken: its body goes to its backend."""

    def task_started(self, flow: TaskFlow, future: TaskFuture) -> None:
        """Its body begins: its backend is handed the body with a worker free for it (a
        pool's; on the event loop or a cluster, as it is handed over); a limited task,
        once its limiter lets it."""

    def task_resolved(self, flow: TaskFlow, future: TaskFuture) -> None:
        """It returned: ``future.result()`` is its result."""

    def task_failed(self, flow: TaskFlow, future: TaskFuture, error: BaseException) -> None:
        """It failed with ``error`` (``TaskFailed``, ``DependencyFailed``, a block's own)."""

    def task_cancelled(self, flow: TaskFlow, future: TaskFuture) -> None:
        """It was cancelled (before or while its body ran)."""

    def flow_closed(self, flow: TaskFlow) -> None:
        """The flow ended: its tasks are done, its backends shut down."""


_AMBIENT: ContextVar[tuple[TaskObserver, ...]] = ContextVar("stepgraph_task_observers", default=())


@contextmanager
def observing_tasks(*observers: TaskObserver) -> Iterator[None]:
    """Every ``TaskFlow`` made in this context, and in the asyncio tasks and threads
    started from it (a run started here: its steps), gets ``observers`` too. The
    ``stepgraph run`` progress display sees the tasks of a run's steps so."""
    token = _AMBIENT.set(_AMBIENT.get() + observers)
    try:
        yield
    finally:
        _AMBIENT.reset(token)


def ambient_observers() -> tuple[TaskObserver, ...]:
    """The observers :func:`observing_tasks` set for this context."""
    return _AMBIENT.get()
