"""stepgraph: async workflows with written-down semantics, on one deterministic kernel.

Only re-exports live here; see the modules for the implementations.
"""

from .authoring.builder import Case, Default, WorkflowBuilder
from .authoring.executor import Executor, FunctionExecutor, executor, handler, response_handler
from .authoring.graph_workflow import GraphWorkflow
from .authoring.step import step
from .authoring.subworkflow import WorkflowExecutor
from .authoring.workflow import Workflow
from .events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from .graph_events import (
    ExecutorCompletedEvent,
    ExecutorInvokedEvent,
    RequestInfoEvent,
    RunResult,
    SuperstepCompletedEvent,
    WorkflowEvent,
    WorkflowOutputEvent,
)
from .limits import Limiter
from .runtime.context import Context, get_context
from .runtime.handler import WorkflowHandler
from .runtime.observers import RunObserver
from .runtime.retry import RetryPolicy
from .runtime.workflow_context import WorkflowContext

__all__ = [
    "Case",
    "Context",
    "Default",
    "Event",
    "Executor",
    "ExecutorCompletedEvent",
    "ExecutorInvokedEvent",
    "FunctionExecutor",
    "GraphWorkflow",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "Limiter",
    "RequestInfoEvent",
    "RetryPolicy",
    "RunObserver",
    "RunResult",
    "StartEvent",
    "StopEvent",
    "SuperstepCompletedEvent",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowContext",
    "WorkflowEvent",
    "WorkflowExecutor",
    "WorkflowHandler",
    "WorkflowOutputEvent",
    "executor",
    "get_context",
    "handler",
    "response_handler",
    "step",
]

__version__ = "0.1.0"
