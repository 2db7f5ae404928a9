"""Ticks: everything that happens to a run, as data.

A run is a fold of :func:`stepgraph.core.kernel.apply` over its ticks. Ticks carry
every outside fact the kernel needs (run ids, errors, events from the caller), so
replaying the tick log rebuilds the run state exactly, without a clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

# Ticks are slotted, keyword-only dataclasses, treated as immutable: nothing mutates one
# after construction. They are not frozen=True because a frozen dataclass costs twice as
# much to construct (object.__setattr__ per field) and these are built on every hop.

__all__ = [
    "AttemptFailed",
    "CancelRequested",
    "CollectRequested",
    "Emission",
    "EventsSent",
    "ExternalEventReceived",
    "InputRequested",
    "RunStarted",
    "RunTimedOut",
    "StepCompleted",
    "StepFailed",
    "Tick",
    "WaitCancelled",
    "WaitStarted",
    "WaitTimedOut",
]

Emission = tuple[object, int | None]
"""A message a step emitted, with the index of its one target node (``None``: route it)."""


@dataclass(slots=True, kw_only=True)
class RunStarted:
    """The run starts with ``start`` as its first message."""

    kind: ClassVar[str] = "run_started"
    run_id: str
    start: object


@dataclass(slots=True, kw_only=True)
class StepCompleted:
    """Invocation ``invocation`` returned; ``emitted`` is what it sent, in order."""

    kind: ClassVar[str] = "step_completed"
    invocation: int
    emitted: tuple[Emission, ...] = ()


@dataclass(slots=True, kw_only=True)
class EventsSent:
    """Invocation ``invocation`` sent messages before completing (async mode, or before a wait)."""

    kind: ClassVar[str] = "events_sent"
    invocation: int
    emitted: tuple[Emission, ...]


@dataclass(slots=True, kw_only=True)
class StepFailed:
    """Invocation ``invocation`` raised ``error`` after its retry policy was exhausted."""

    kind: ClassVar[str] = "step_failed"
    invocation: int
    error: BaseException


@dataclass(slots=True, kw_only=True)
class ExternalEventReceived:
    """The caller sent ``event`` into the run (``handler.send_event``)."""

    kind: ClassVar[str] = "external_event_received"
    event: object
    target: int | None = None


@dataclass(slots=True, kw_only=True)
class WaitStarted:
    """Invocation ``invocation`` waits for a message of ``types`` matching ``requirements``."""

    kind: ClassVar[str] = "wait_started"
    invocation: int
    types: tuple[type, ...]
    requirements: Mapping[str, object]


@dataclass(slots=True, kw_only=True)
class WaitCancelled:
    """Invocation ``invocation`` stopped waiting on its own (its own timeout, a cancel)."""

    kind: ClassVar[str] = "wait_cancelled"
    invocation: int


@dataclass(slots=True, kw_only=True)
class AttemptFailed:
    """An attempt of ``invocation`` failed and will be retried: undo what it left behind."""

    kind: ClassVar[str] = "attempt_failed"
    invocation: int


@dataclass(slots=True, kw_only=True)
class InputRequested:
    """A step put an input request on the stream itself: the run waits for an answer."""

    kind: ClassVar[str] = "input_requested"
    invocation: int


@dataclass(slots=True, kw_only=True)
class WaitTimedOut:
    """The wait of invocation ``invocation`` reached its timeout."""

    kind: ClassVar[str] = "wait_timed_out"
    invocation: int


@dataclass(slots=True, kw_only=True)
class CollectRequested:
    """Invocation ``invocation`` asks its collector to hold ``message`` until ``expected`` fill."""

    kind: ClassVar[str] = "collect_requested"
    invocation: int
    message: object
    expected: Sequence[type]
    undoable: bool = False  # the step may be retried: remember the message to take it back


@dataclass(slots=True, kw_only=True)
class CancelRequested:
    """The caller cancelled the run."""

    kind: ClassVar[str] = "cancel_requested"
    reason: str = "cancelled by the caller"


@dataclass(slots=True, kw_only=True)
class RunTimedOut:
    """The run's own timeout of ``seconds`` elapsed."""

    kind: ClassVar[str] = "run_timed_out"
    seconds: float


Tick = (
    RunStarted
    | StepCompleted
    | EventsSent
    | StepFailed
    | ExternalEventReceived
    | WaitStarted
    | InputRequested
    | WaitTimedOut
    | WaitCancelled
    | AttemptFailed
    | CollectRequested
    | CancelRequested
    | RunTimedOut
)
