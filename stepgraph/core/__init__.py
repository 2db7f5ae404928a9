"""The pure run kernel: a compiled graph, a run state, ticks in, commands out.

Nothing in this package does IO, reads a clock, draws random numbers or imports
asyncio; the shell (``stepgraph.runtime``) drives it.
"""

from .commands import (
    CollectResult,
    Command,
    FailWait,
    PublishEvent,
    ResolveWait,
    RunEnded,
    RunStatus,
    StartStep,
    SuperstepEnded,
)
from .graph import EXTERNAL, FanIn, Graph, Node
from .kernel import KernelError, apply
from .state import Mode, RunState
from .ticks import (
    AttemptFailed,
    CancelRequested,
    CollectRequested,
    Emission,
    EventsSent,
    ExternalEventReceived,
    InputRequested,
    RunStarted,
    RunTimedOut,
    StepCompleted,
    StepFailed,
    Tick,
    WaitCancelled,
    WaitStarted,
    WaitTimedOut,
)

__all__ = [
    "EXTERNAL",
    "AttemptFailed",
    "CancelRequested",
    "CollectRequested",
    "CollectResult",
    "Command",
    "Emission",
    "EventsSent",
    "ExternalEventReceived",
    "FailWait",
    "FanIn",
    "Graph",
    "InputRequested",
    "KernelError",
    "Mode",
    "Node",
    "PublishEvent",
    "ResolveWait",
    "RunEnded",
    "RunStarted",
    "RunState",
    "RunStatus",
    "RunTimedOut",
    "StartStep",
    "StepCompleted",
    "StepFailed",
    "SuperstepEnded",
    "Tick",
    "WaitCancelled",
    "WaitStarted",
    "WaitTimedOut",
    "apply",
]
