"""Commands: everything a run asks its shell to do, as data.

The shell carries commands out in list order. Ordering matters: a
:class:`SuperstepEnded` comes before the :class:`StartStep` commands of the next
superstep, so a checkpoint taken there sees nothing in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from .failure import Failure

# Commands are slotted, keyword-only dataclasses, treated as immutable: nothing mutates one
# after construction. They are not frozen=True because a frozen dataclass costs twice as
# much to construct (object.__setattr__ per field) and these are built on every hop.

__all__ = [
    "COMMAND_TYPES",
    "ArmTimer",
    "CancelTimer",
    "CollectResult",
    "Command",
    "FailWait",
    "ForwardResponse",
    "MergeState",
    "PublishEvent",
    "ResolveWait",
    "RunEnded",
    "RunStatus",
    "StartStep",
    "SuperstepEnded",
]


class RunStatus(Enum):
    """Where a run is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(slots=True, kw_only=True)
class StartStep:
    """Run attempt ``attempt`` (1-based) of node ``node`` on ``message`` as ``invocation``."""

    kind: ClassVar[str] = "start_step"
    invocation: int
    node: int
    message: object
    attempt: int = 1


@dataclass(slots=True, kw_only=True)
class ResolveWait:
    """Wake the waiting invocation ``invocation`` with ``event``."""

    kind: ClassVar[str] = "resolve_wait"
    invocation: int
    event: object


@dataclass(slots=True, kw_only=True)
class FailWait:
    """The wait of invocation ``invocation`` timed out: raise in the step."""

    kind: ClassVar[str] = "fail_wait"
    invocation: int


@dataclass(slots=True, kw_only=True)
class PublishEvent:
    """Put ``event`` on the run's stream (an input request nobody accepts, an output)."""

    kind: ClassVar[str] = "publish_event"
    event: object


@dataclass(slots=True, kw_only=True)
class CollectResult:
    """The answer to a collect request: the full batch, or ``None`` while incomplete."""

    kind: ClassVar[str] = "collect_result"
    batch: list[object] | None
    accepted: bool = True  # False: the message is of none of the expected types
    conflict: bool = False  # True: the list differs from the one the batch was made with


@dataclass(slots=True, kw_only=True)
class SuperstepEnded:
    """Superstep ``superstep`` passed its barrier: every step of it finished.

    Nothing runs at a barrier, but a step suspended in ``wait_for_event`` stays in flight
    across it. The ``StartStep`` commands after this one belong to the next superstep.
    """

    kind: ClassVar[str] = "superstep_ended"
    superstep: int
    snapshot: dict[str, object] | None = None  # the state at the barrier, when captured


@dataclass(slots=True, kw_only=True)
class RunEnded:
    """The run ended with ``status``; ``result`` is the stop message.

    On failure, ``failure`` is the error as data and ``error`` the exception to raise: the
    live one where there is one, else one rebuilt from the record.
    """

    kind: ClassVar[str] = "run_ended"
    status: RunStatus
    result: object = None
    error: BaseException | None = None
    failure: Failure | None = None


@dataclass(slots=True, kw_only=True)
class ArmTimer:
    """Fire ``TimerFired(timer=timer)`` in ``delay`` seconds (due at wall time ``due``).

    The shell measures ``delay`` on its monotonic clock; ``due`` is kept so that a run
    restored elsewhere can arm what is left of it.
    """

    kind: ClassVar[str] = "arm_timer"
    timer: str
    delay: float
    due: float


@dataclass(slots=True, kw_only=True)
class CancelTimer:
    """Forget the timer ``timer``: it must not fire any more."""

    kind: ClassVar[str] = "cancel_timer"
    timer: str


@dataclass(slots=True, kw_only=True)
class MergeState:
    """Run the reducers on ``writes`` (key, value), in this order; answer with ``StateMerged``.

    Until the answer comes the barrier waits, so nothing of the next superstep starts.
    """

    kind: ClassVar[str] = "merge_state"
    writes: tuple[tuple[str, object], ...]


@dataclass(slots=True, kw_only=True)
class ForwardResponse:
    """Pass the caller's ``response`` to the sub-workflow run whose request it answers."""

    kind: ClassVar[str] = "forward_response"
    request_id: str
    response: object


Command = (
    StartStep
    | ResolveWait
    | FailWait
    | PublishEvent
    | CollectResult
    | SuperstepEnded
    | RunEnded
    | ArmTimer
    | CancelTimer
    | MergeState
    | ForwardResponse
)

COMMAND_TYPES: tuple[type, ...] = (
    StartStep,
    ResolveWait,
    FailWait,
    PublishEvent,
    CollectResult,
    SuperstepEnded,
    RunEnded,
    ArmTimer,
    CancelTimer,
    MergeState,
    ForwardResponse,
)
"""Every command class, in the order of the table in docs/architecture.md."""
