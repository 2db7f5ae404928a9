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
    |   |   +-- RequestAnsweredError   a different answer to a request answered already
    |   +-- InvalidResponseError       send_response() with a value of the wrong type
    +-- WorkflowStalled                nothing runs, nothing is pending, no one waits for input
    +-- SuperstepLimitExceeded         more than max_supersteps supersteps (a runaway loop)
    +-- WorkflowCancelled              the run was cancelled
    +-- WorkflowTimeoutError           (also a TimeoutError) the run, a step or a wait timed out
    |   +-- StepTimeoutError           a step exceeded its own timeout after its retries
    |   +-- WaitForEventTimeoutError   ctx.wait_for_event() timed out
    +-- RecordedError                  an error known only from its record (a journal, another
    |                                  process): its type name, message and traceback text
    +-- SerializationError             a value that cannot be written to a journal or a store
    +-- CheckpointError                a stored checkpoint that cannot be used: corrupt, of another
    |                                  format version, or of a graph that has changed since
    +-- StoreError                     a store refused or failed an operation
    |   +-- RunNotFoundError           no run with that id in the store
    |   +-- CheckpointNotFoundError    no checkpoint with that id for that run
    |   +-- RunIdConflictError         run(run_id=...) names a run of another workflow
    |   +-- RunLockedError             another live coordinator owns the run
    |   +-- StoreUnavailableError      the store cannot be reached (a lost connection, a server
    |                                  restarting): what it holds is as it was; try again later
    +-- ReplayDivergenceError          a journal that the kernel does not replay the same way
    +-- KernelError                    (also a RuntimeError) a tick the kernel cannot take in its
    |                                  state: a bug in the shell that fed it
    +-- ConfigurationError             (also a ValueError) a setting of stepgraph itself refused
    +-- MissingExtraError              (also an ImportError) a feature needs an optional extra
    +-- BackendError                   a backend that is unknown, cannot run that kind of body,
    |                                  or was used after its shutdown
    +-- ResourceError                  a resource claim that no slots could ever satisfy
    +-- TaskFailed                     a task's body failed (names task, backend, arguments)
    +-- WorkerDiedError                a worker process died while it ran a body
    +-- DependencyFailed               a task or block did not run: a dependency failed
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigurationError",
    "DependencyFailed",
    "InvalidResponseError",
    "InvalidStartEventError",
    "InvalidStepResultError",
    "KernelError",
    "MissingExtraError",
    "RecordedError",
    "ReplayDivergenceError",
    "RequestAnsweredError",
    "RequestNotFoundError",
    "ResourceError",
    "RunFinishedError",
    "RunIdConflictError",
    "RunLockedError",
    "RunNotFoundError",
    "SerializationError",
    "StepTimeoutError",
    "StepgraphError",
    "StoreError",
    "StoreUnavailableError",
    "SuperstepLimitExceeded",
    "TaskFailed",
    "UnknownStepError",
    "UnroutableEventError",
    "WaitForEventTimeoutError",
    "WorkerDiedError",
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


class RequestAnsweredError(RequestNotFoundError):
    """An answer to a request that has another answer already; the first answer stands.

    (The same answer sent again is accepted and changes nothing.)
    """


class StepTimeoutError(WorkflowTimeoutError):
    """A step exceeded its own ``timeout`` on its last attempt."""


class WaitForEventTimeoutError(WorkflowTimeoutError):
    """``ctx.wait_for_event`` received no matching event in time."""


class RecordedError(StepgraphError):
    """An error known only from its record: a replayed journal, another process.

    The original exception object is not available; its class name, message and
    traceback text are.

    Attributes:
        type: the original exception's class, as ``module.QualifiedName``.
        message: the original ``str()`` of the exception.
        traceback: the original traceback text, when it was recorded.
    """

    def __init__(self, text: str, *, type: str = "", message: str = "", traceback: str = ""):
        super().__init__(text)
        self.type = type
        self.message = message
        self.traceback = traceback


class SerializationError(StepgraphError):
    """A value could not be written to (or read back from) a journal or a store.

    The message names the value's type and where it was found.
    """


class CheckpointError(StepgraphError):
    """A stored checkpoint cannot be used: it is corrupt (its checksum does not match, or
    its content does not validate), written by another format version, or made by a graph
    whose steps have changed since (a strict resume).

    The message names the run and the checkpoint; nothing stored is changed.

    Attributes:
        run_id: the run whose checkpoint it is.
        checkpoint_id: the checkpoint.
    """

    def __init__(self, message: str, *, run_id: str = "", checkpoint_id: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id
        self.checkpoint_id = checkpoint_id


class StoreError(StepgraphError):
    """A store refused an operation, or failed it (the message says which and why)."""


class RunNotFoundError(StoreError):
    """No run with the given id is in the store (nothing was created)."""


class CheckpointNotFoundError(StoreError):
    """The run has no checkpoint with the given id."""


class RunIdConflictError(StoreError):
    """``run(run_id=...)`` or ``submit(run_id=...)`` named a run the store has of another
    workflow: an idempotency key reused for different work. Nothing was written; the
    message names the run and both workflows."""


class RunLockedError(StoreError):
    """Another live coordinator (a process, a session) owns the run: it cannot be resumed here."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached (a lost connection, a server restarting): what it holds
    is as it was before the operation that failed; try again later."""


class ReplayDivergenceError(StepgraphError):
    """Replaying a journal did not give what the journal recorded.

    Attributes:
        position: the index of the tick (0-based) where replay diverged.
    """

    def __init__(self, message: str, *, position: int = -1) -> None:
        super().__init__(message)
        self.position = position


class KernelError(StepgraphError, RuntimeError):
    """A tick the kernel cannot handle in the run's current state.

    It means the shell that fed the tick has a bug (or a journal was tampered with);
    the message names the tick, the run and its status.
    """


class ConfigurationError(StepgraphError, ValueError):
    """A setting of stepgraph itself is refused (``telemetry.configure``'s arguments, say);
    the message names it and says why."""


class MissingExtraError(StepgraphError, ImportError):
    """A feature needs a package of an optional extra that is not installed.

    The message names the feature, the package and the ``pip install`` line.
    """

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs {package}, which is not installed: install the extra with "
            f"pip install 'stepgraph[{extra}]'"
        )
        self.extra = extra


class BackendError(StepgraphError):
    """A backend that does not exist, cannot run that kind of body, or has shut down."""


class ResourceError(StepgraphError):
    """A resource claim that could never be satisfied: a resource the flow does not have,
    or more slots than it has (it would wait forever)."""


class TaskFailed(StepgraphError):
    """A task's body failed. The message names the task, its backend and its arguments;
    ``__cause__`` is the body's own exception, of its own type, even from another process.

    Attributes:
        task: the task's name (its function's ``__name__``).
        backend: the name of the backend it ran on.
    """

    def __init__(self, message: str, *, task: str = "", backend: str = "") -> None:
        super().__init__(message)
        self.task = task
        self.backend = backend

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_task_failed, (str(self), self.task, self.backend))


def _rebuild_task_failed(message: str, task: str, backend: str) -> TaskFailed:
    return TaskFailed(message, task=task, backend=backend)


class DependencyFailed(StepgraphError):
    """A task or block did not run because a dependency of it failed (the dependents of
    a cancelled task are cancelled).

    The message names the task and its direct dependency; ``__cause__`` is the root
    failure (the :class:`TaskFailed` of the first task that failed).

    Attributes:
        task: the name of the task (or block) that did not run.
        dependency: the name of its direct dependency that failed.
    """

    def __init__(self, message: str, *, task: str = "", dependency: str = "") -> None:
        super().__init__(message)
        self.task = task
        self.dependency = dependency


class WorkerDiedError(StepgraphError):
    """A worker (a pool process, a Dask worker) died while it ran a body."""
