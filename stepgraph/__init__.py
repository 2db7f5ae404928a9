"""stepgraph: async workflows with written-down semantics, on one deterministic kernel.

Only re-exports live here; see the modules for the implementations.
"""

from .authoring.step import step
from .authoring.workflow import Workflow
from .events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from .runtime.context import Context, get_context
from .runtime.handler import WorkflowHandler
from .runtime.retry import RetryPolicy

__all__ = [
    "Context",
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "RetryPolicy",
    "StartEvent",
    "StopEvent",
    "Workflow",
    "WorkflowHandler",
    "get_context",
    "step",
]

__version__ = "0.1.0"
