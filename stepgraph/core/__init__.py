"""The pure run kernel: a compiled graph, a run state, ticks in, commands out.

Nothing in this package does IO, reads a clock, draws random numbers, imports asyncio or
runs user code; the shell (``stepgraph.runtime``) drives it. It is an internal package:
its names may change between releases (docs/architecture.md describes it).
"""

from ..errors import KernelError
from .collector import Repeat
from .commands import (
    COMMAND_TYPES,
    ArmTimer,
    CancelTimer,
    CollectResult,
    Command,
    FailWait,
    ForwardResponse,
    MergeState,
    PublishEvent,
    ResolveWait,
    RunEnded,
    RunStatus,
    StartStep,
    SuperstepEnded,
)
from .failure import Failure
from .graph import EXTERNAL, FanIn, Graph, Node
from .kernel import apply
from .messages import ResponseMessage
from .state import Mode, OpenRequest, RunState
from .ticks import (
    TICK_TYPES,
    AttemptFailed,
    CancelRequested,
    CollectRequested,
    Emission,
    EventsSent,
    ExternalEventReceived,
    InputRequested,
    RequestOpened,
    ResponseReceived,
    RunAborted,
    RunResumed,
    RunStarted,
    StateMerged,
    StateWritten,
    StepCompleted,
    StepFailed,
    Targets,
    Tick,
    TimerFired,
    WaitCancelled,
    WaitStarted,
)

__all__ = [
    "COMMAND_TYPES",
    "EXTERNAL",
    "TICK_TYPES",
    "ArmTimer",
    "AttemptFailed",
    "CancelRequested",
    "CancelTimer",
    "CollectRequested",
    "CollectResult",
    "Command",
    "Emission",
    "EventsSent",
    "ExternalEventReceived",
    "FailWait",
    "Failure",
    "FanIn",
    "ForwardResponse",
    "Graph",
    "InputRequested",
    "KernelError",
    "MergeState",
    "Mode",
    "Node",
    "OpenRequest",
    "PublishEvent",
    "Repeat",
    "RequestOpened",
    "ResolveWait",
    "ResponseMessage",
    "ResponseReceived",
    "RunAborted",
    "RunEnded",
    "RunResumed",
    "RunStarted",
    "RunState",
    "RunStatus",
    "StartStep",
    "StateMerged",
    "StateWritten",
    "StepCompleted",
    "StepFailed",
    "SuperstepEnded",
    "Targets",
    "Tick",
    "TimerFired",
    "WaitCancelled",
    "WaitStarted",
    "apply",
]
