"""Ticks: everything that happens to a run, as data.

A run is a fold of :func:`stepgraph.core.kernel.apply` over its ticks. Ticks carry
every outside fact the kernel needs: run ids, the time (``at``, wall-clock seconds read
by the shell), failures, the targets the shell resolved for a step's messages, shared
state writes and the values reducers merged. Replaying the tick log therefore rebuilds
the run state exactly, without a clock and without running any user code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .failure import Failure

# Ticks are slotted, keyword-only dataclasses, treated as immutable: nothing mutates one
# after construction, except that the shell stamps ``at`` once, as it feeds the tick. They
# are not frozen=True because a frozen dataclass costs twice as much to construct
# (object.__setattr__ per field) and these are built on every hop.

__all__ = [
    "AttemptFailed",
    "CancelRequested",
    "CollectRequested",
    "Emission",
    "EventsSent",
    "ExternalEventReceived",
    "InputRequested",
    "RequestOpened",
    "ResponseReceived",
    "RunAborted",
    "RunResumed",
    "RunStarted",
    "StateMerged",
    "StateWritten",
    "StepCompleted",
    "StepFailed",
    "Tick",
    "TimerFired",
    "WaitCancelled",
    "WaitStarted",
]

Targets = tuple[int, ...] | None
"""Where a message goes: ``None`` routes it by type (or, from the caller, to an edge graph's
entry); a tuple names the nodes: the step given to ``send_event(..., step=...)``, or the
targets of the edges whose conditions the shell evaluated."""

Emission = tuple[object, Targets]
"""A message a step emitted, with its targets (see :data:`Targets`)."""


@dataclass(slots=True, kw_only=True)
class _Tick:
    at: float = 0.0  # wall-clock seconds, read from the shell's clock when it fed the tick


@dataclass(slots=True, kw_only=True)
class RunStarted(_Tick):
    """The run starts with ``start`` as its first message."""

    kind: ClassVar[str] = "run_started"
    run_id: str
    start: object


@dataclass(slots=True, kw_only=True)
class StepCompleted(_Tick):
    """Invocation ``invocation`` returned; ``emitted`` is what it sent, in order."""

    kind: ClassVar[str] = "step_completed"
    invocation: int
    emitted: tuple[Emission, ...] = ()


@dataclass(slots=True, kw_only=True)
class EventsSent(_Tick):
    """Invocation ``invocation`` sent messages before completing (async mode, or before a wait)."""

    kind: ClassVar[str] = "events_sent"
    invocation: int
    emitted: tuple[Emission, ...]


@dataclass(slots=True, kw_only=True)
class StepFailed(_Tick):
    """Invocation ``invocation`` failed for good (its retry policy gave up, or routing failed)."""

    kind: ClassVar[str] = "step_failed"
    invocation: int
    failure: Failure


@dataclass(slots=True, kw_only=True)
class AttemptFailed(_Tick):
    """An attempt of ``invocation`` failed and will be retried after ``retry_in`` seconds.

    The kernel undoes what the attempt left behind and starts the next attempt, at once
    or when its backoff timer fires.
    """

    kind: ClassVar[str] = "attempt_failed"
    invocation: int
    failure: Failure
    retry_in: float = 0.0


@dataclass(slots=True, kw_only=True)
class ExternalEventReceived(_Tick):
    """The caller sent ``event`` into the run (``handler.send_event``), to node ``target``."""

    kind: ClassVar[str] = "external_event_received"
    event: object
    target: int | None = None


@dataclass(slots=True, kw_only=True)
class WaitStarted(_Tick):
    """Invocation ``invocation`` waits for a message of ``types`` matching ``requirements``.

    With a ``timeout`` (seconds), the wait fails when its timer fires first.
    """

    kind: ClassVar[str] = "wait_started"
    invocation: int
    types: tuple[type, ...]
    requirements: Mapping[str, object]
    timeout: float | None = None


@dataclass(slots=True, kw_only=True)
class WaitCancelled(_Tick):
    """Invocation ``invocation`` stopped waiting on its own (its own timeout, a cancel)."""

    kind: ClassVar[str] = "wait_cancelled"
    invocation: int


@dataclass(slots=True, kw_only=True)
class InputRequested(_Tick):
    """A step put the input request ``event`` on the stream itself: the run waits for an answer.

    The kernel announces it (``PublishEvent``) unless a request with its id is open or
    answered already (a step run again after a resume asks again with the same id).
    """

    kind: ClassVar[str] = "input_requested"
    invocation: int
    event: object = None


@dataclass(slots=True, kw_only=True)
class CollectRequested(_Tick):
    """Invocation ``invocation`` asks its collector to hold ``message`` until ``expected`` fill."""

    kind: ClassVar[str] = "collect_requested"
    invocation: int
    message: object
    expected: Sequence[type]
    undoable: bool = False  # the step may be retried: remember the message to take it back


@dataclass(slots=True, kw_only=True)
class CancelRequested(_Tick):
    """The caller cancelled the run."""

    kind: ClassVar[str] = "cancel_requested"
    reason: str = "cancelled by the caller"


@dataclass(slots=True, kw_only=True)
class TimerFired(_Tick):
    """The timer ``timer`` (armed by an ``ArmTimer`` command) reached its due time."""

    kind: ClassVar[str] = "timer_fired"
    timer: str


@dataclass(slots=True, kw_only=True)
class RequestOpened(_Tick):
    """Invocation ``invocation`` asked the caller for information (``request_info``).

    The request stays open until a :class:`ResponseReceived` answers it. A ``forwarded``
    request belongs to a sub-workflow run: its answer goes back to that run (the shell's
    ``ForwardResponse``) instead of to a node of this one.
    """

    kind: ClassVar[str] = "request_opened"
    invocation: int
    request_id: str
    data: object
    response_type: Any
    forwarded: bool = False


@dataclass(slots=True, kw_only=True)
class ResponseReceived(_Tick):
    """The caller answered the open request ``request_id`` with ``response``."""

    kind: ClassVar[str] = "response_received"
    request_id: str
    response: object


@dataclass(slots=True, kw_only=True)
class StateWritten(_Tick):
    """Shared state changed: ``writes`` set keys, ``deletes`` removed keys, ``merges`` wait.

    ``merges`` are writes to keys with a reducer made by invocation ``invocation`` in
    superstep mode: they are merged at the barrier, in order of writer position (the shell
    runs the reducers when the kernel asks, with a ``MergeState`` command). Everywhere else
    the shell has already merged, and the tick carries the merged value in ``writes``.
    """

    kind: ClassVar[str] = "state_written"
    invocation: int | None = None
    writes: tuple[tuple[str, object], ...] = ()
    deletes: tuple[str, ...] = ()
    merges: tuple[tuple[str, object], ...] = ()


@dataclass(slots=True, kw_only=True)
class StateMerged(_Tick):
    """The shell ran the reducers a ``MergeState`` asked for: ``values`` to set, in order.

    A reducer that raised gives ``failure`` instead, which fails the run.
    """

    kind: ClassVar[str] = "state_merged"
    values: tuple[tuple[str, object], ...] = ()
    failure: Failure | None = None


@dataclass(slots=True, kw_only=True)
class RunResumed(_Tick):
    """The run goes on in a new process, from its restored state.

    Every invocation in flight starts again from its beginning (what its interrupted
    attempt collected is taken back), a step that was waiting included; its wait then
    finds the answer if one came. Under ``max_concurrency``, those over the bound wait for
    a slot (``restarts``), ahead of anything else. Backoff timers stay armed.

    ``timeout``: the seconds the run may take from now on (the resuming workflow's
    ``timeout``; None: no limit). The run's timer counts from the resume, as it counted
    from the start: the time between a crash, or a process that left a paused run, and the
    resume is not the run's.
    """

    kind: ClassVar[str] = "run_resumed"
    timeout: float | None = None


@dataclass(slots=True, kw_only=True)
class RunAborted(_Tick):
    """The shell could not go on (an observer or the shell itself raised): the run fails."""

    kind: ClassVar[str] = "run_aborted"
    failure: Failure


Tick = (
    RunStarted
    | StepCompleted
    | EventsSent
    | StepFailed
    | AttemptFailed
    | ExternalEventReceived
    | WaitStarted
    | WaitCancelled
    | InputRequested
    | CollectRequested
    | CancelRequested
    | TimerFired
    | RequestOpened
    | ResponseReceived
    | StateWritten
    | StateMerged
    | RunAborted
    | RunResumed
)

TICK_TYPES: tuple[type, ...] = (
    RunStarted,
    StepCompleted,
    EventsSent,
    StepFailed,
    AttemptFailed,
    ExternalEventReceived,
    WaitStarted,
    WaitCancelled,
    InputRequested,
    CollectRequested,
    CancelRequested,
    TimerFired,
    RequestOpened,
    ResponseReceived,
    StateWritten,
    StateMerged,
    RunAborted,
    RunResumed,
)
"""Every tick class, in the order of the table in docs/architecture.md."""
