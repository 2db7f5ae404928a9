"""Task DAGs: functions, executables and prompts as tasks, futures as dependencies.

See docs/tasks.md. The backends tasks run on are in :mod:`stepgraph.backends`.
"""

from __future__ import annotations

from ..errors import DependencyFailed, TaskFailed
from .flow import Task, TaskFlow
from .futures import TaskFuture, current_workflow_id, workflow_scope
from .observers import TaskObserver, observing_tasks

__all__ = [
    "DependencyFailed",
    "Task",
    "TaskFailed",
    "TaskFlow",
    "TaskFuture",
    "TaskObserver",
    "current_workflow_id",
    "observing_tasks",
    "workflow_scope",
]
