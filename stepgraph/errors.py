"""The stepgraph exception hierarchy.

Every error stepgraph raises derives from :class:`StepgraphError`, except the
exceptions raised by your own step code: awaiting a failed run re-raises the
step's own exception (with a note naming the step and the event), so that
``except ValueError`` around ``await wf.run()`` works as it reads.

::

    StepgraphError
    +-- WorkflowValidationError        the definition is wrong (build time, or run start)
    +-- WorkflowRuntimeError           the run was misused while running
    |   +-- UnroutableEventError       an event no step accepts (names type and sender)
    |   +-- UnknownStepError           send_event(..., step=...) names no step
    |   +-- InvalidStepResultError     a step returned something that is not an event
    |   +-- RunFinishedError           an event was sent to a run that has ended
    |   +-- InvalidStartEventError     run() arguments the start event rejects
    |   +-- RequestNotFoundError       send_response() for a request that is not open
    |   +-- InvalidResponseError       send_response() with a value of the wrong type
    +-- WorkflowStalled                nothing runs, nothing is pending, no one waits for input
    +-- SuperstepLimitExceeded         more than max_supersteps supersteps (a runaway loop)
    +-- WorkflowCancelled              the run was cancelled
    +-- WorkflowTimeoutError           (also a TimeoutError) the run, a step or a wait timed out
        +-- StepTimeoutError           a step exceeded its own timeout after its retries
        +-- WaitForEventTimeoutError   ctx.wait_for_event() timed out
"""

from __future__ import annotations

__all__ = [
    "InvalidResponseError",
    "InvalidStartEventError",
    "InvalidStepResultError",
    "RequestNotFoundError",
    "RunFinishedError",
    "StepTimeoutError",
    "StepgraphError",
    "SuperstepLimitExceeded",
    "UnknownStepError",
    "UnroutableEventError",
    "WaitForEventTimeoutError",
    "WorkflowCancelled",
    "WorkflowRuntimeError",
    "WorkflowStalled",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
]


class StepgraphError(Exception):
    """Root of every error stepgraph raises itself."""


class WorkflowValidationError(StepgraphError):
    """The workflow definition is invalid; the message names the step and event at fault."""


class WorkflowRuntimeError(StepgraphError):
    """A run was misused while running (bad event, bad target, finished run)."""


class UnroutableEventError(WorkflowRuntimeError):
    """An event was emitted that no step accepts and no one waits for."""


class UnknownStepError(WorkflowRuntimeError):
    """``ctx.send_event(ev, step=name)`` named a step the workflow does not have."""


class InvalidStepResultError(WorkflowRuntimeError):
    """A step returned something that is neither an event nor ``None``."""


class RunFinishedError(WorkflowRuntimeError):
    """An event was sent to a run that has already ended."""


class InvalidStartEventError(WorkflowRuntimeError, ValueError):
    """``run()`` was called with arguments the start event rejects."""


class WorkflowStalled(StepgraphError):
    """The run can make no progress: nothing runs, nothing is pending, no one waits for input.

    Attributes:
        collectors: descriptions of the collectors still waiting for events.
        last_events: descriptions of the last events the run processed.
    """

    def __init__(
        self, message: str, *, collectors: tuple[str, ...] = (), last_events: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.collectors = collectors
        self.last_events = last_events


class SuperstepLimitExceeded(StepgraphError):
    """The run went beyond ``max_supersteps`` supersteps (usually a loop that never ends)."""


class WorkflowCancelled(StepgraphError):
    """The run was cancelled (``await handler.cancel()``)."""


class WorkflowTimeoutError(StepgraphError, TimeoutError):
    """The run, a step, or a wait exceeded its timeout."""


class RequestNotFoundError(WorkflowRuntimeError, KeyError):
    """``send_response`` named a request that is not open (unknown, or already answered)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidResponseError(WorkflowRuntimeError, TypeError):
    """``send_response`` got a value of the wrong type; the request stays open."""


class StepTimeoutError(WorkflowTimeoutError):
    """A step exceeded its own ``timeout`` on its last attempt."""


class WaitForEventTimeoutError(WorkflowTimeoutError):
    """``ctx.wait_for_event`` received no matching event in time."""
