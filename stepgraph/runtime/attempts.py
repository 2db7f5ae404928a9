"""One attempt of one invocation: run the body, and say what happened as a tick.

The attempt runs the node's body in a fresh :class:`Scope` (on its backend, bounded by
the node's timeout on the run's clock) and returns the tick for the kernel:
``StepCompleted`` with what it emitted, ``AttemptFailed`` with the delay before the next
attempt when its retry policy allows one, or ``StepFailed``. The kernel keeps the attempt
count and the backoff timer; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..backends.process import dumps
from ..core import AttemptFailed, StartStep, StepCompleted, StepFailed, Tick
from ..core.text import short_repr
from ..errors import (
    InvalidStepResultError,
    SerializationError,
    StepgraphError,
    StepTimeoutError,
    WorkflowRuntimeError,
)
from ..events import Event
from ..limits import LimiterGate
from ..telemetry.tracing import carry_trace, tracer
from .effects import RecordingPort, run_recorded
from .failures import failure_of
from .plan import backend_name
from .requests import short
from .scope import Scope, set_scope

if TYPE_CHECKING:
    from .plan import NodeProgram
    from .run import Run

__all__ = [
    "attempt_body",
    "attempt_completed",
    "attempt_failed",
    "attempt_scope",
    "run_attempt",
]


def _task_cancelled() -> bool:
    """Whether this worker's task was asked to cancel (not a CancelledError the step raised)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _closing() -> bool:
    """Whether the coroutine is being closed (its loop is gone: interpreter shutdown)."""
    return asyncio._get_running_loop() is None


def _expire(deadline: asyncio.Timeout) -> None:
    """A step's timer fired on the run's clock: time the attempt out now."""
    if not deadline.expired():
        deadline.reschedule(asyncio.get_running_loop().time())


def attempt_scope(run: Run, command: StartStep) -> Scope:
    """The fresh scope of attempt ``command`` (set as the current one)."""
    scope = Scope(run, command.invocation, command.node, command.message)
    set_scope(scope)
    return scope


def attempt_body(run: Run, command: StartStep, scope: Scope) -> Awaitable[Any]:
    """What to await for attempt ``command``: its body on its backend, within its timeout.

    It may raise at once (an executor with no handler for the message, say): that is the
    attempt failing like any other.
    """
    program = run.programs[command.node]
    limiter = program.config.limiter
    if limiter is None:
        if program.backend is None:  # the common case, inline: async on the loop, def a thread
            body = program.call(run.owner, run.context, command.message)
        else:
            body = _started(run, program, command)
    else:  # the body starts once the limiter lets it (the attempt runs while it waits)
        body = _held(run.limiters[limiter], run, program, command)
    timeout = program.config.timeout
    if timeout is None:
        return body
    return _bounded(run, body, timeout, scope)


def _started(run: Run, program: NodeProgram, command: StartStep) -> Awaitable[Any]:
    """The body of attempt ``command``, started on its backend."""
    backend = program.backend
    if backend is None:  # the default: inline when async, a thread when not
        return program.call(run.owner, run.context, command.message)
    if backend.in_process:
        if program.is_async_for(command.message):  # a coroutine function: run on the loop
            return backend.submit(_awaited, program.body, run.owner, run.context, command.message)
        return backend.submit(program.body, run.owner, run.context, command.message)
    return _elsewhere(run, program, command)


async def _awaited(body: Callable[..., Any], owner: Any, ctx: Any, message: Any) -> Any:
    """``body(owner, ctx, message)`` awaited: an async body as the coroutine function it
    is, which an in-process backend runs on the run's loop."""
    return await body(owner, ctx, message)


async def _held(gate: LimiterGate, run: Run, program: NodeProgram, command: StartStep) -> Any:
    """The body, started once ``gate`` lets it, and awaited while holding it."""
    async with gate.hold():
        return await _started(run, program, command)


async def _bounded(run: Run, body: Awaitable[Any], timeout: float, scope: Scope) -> Any:
    """``body``, timed out after ``timeout`` seconds on the run's clock."""
    async with asyncio.timeout(None) as deadline:
        timer = run.clock.call_later(timeout, lambda: _expire(deadline))
        try:
            return await body
        finally:
            timer.cancel()
            scope.timed_out = deadline.expired()


def attempt_completed(run: Run, command: StartStep, scope: Scope, result: object) -> Tick:
    """The tick of an attempt whose body returned ``result``."""
    sent = scope.sent
    if sent:
        scope.sent = []  # a pending flush (async mode) finds nothing left to deliver
    if result is not None:
        program = run.programs[command.node]
        if not (isinstance(result, Event) and program.returns_events):
            return _invalid_result(run, program, command, result)
        if program.asks:
            run.stamp(scope, result)
        if sent:
            sent.append((result, None))
        elif run._route is None:  # the common case: one event, routed by type
            return StepCompleted(invocation=command.invocation, emitted=((result, None),))
        else:
            sent = [(result, None)]
    if not sent:
        return StepCompleted(invocation=command.invocation)
    if run._route is None:  # routed by type, in the kernel: nothing to resolve here
        return StepCompleted(invocation=command.invocation, emitted=tuple(sent))
    return run.completed(command.invocation, command.node, sent)


def attempt_failed(run: Run, command: StartStep, scope: Scope, exc: BaseException) -> Tick:
    """The tick of an attempt whose body raised ``exc`` (re-raised when the run is ending)."""
    if isinstance(exc, GeneratorExit) and _closing():
        raise exc  # the coroutine is being closed, with no loop left: nothing to report
    program = run.programs[command.node]
    if isinstance(exc, asyncio.CancelledError):
        if run.done:
            raise exc  # the run is ending: this worker is being cancelled
        if _task_cancelled():  # by the step itself, or from outside (a loop shutting down)
            _cancel_run(run, program, command)
            raise exc
    scope.active = False
    return _failed(run, program, command, exc, scope.timed_out)


async def run_attempt(run: Run, command: StartStep) -> Tick:
    """Run attempt ``command.attempt`` of ``command.invocation`` and return its outcome tick.

    (The worker loop does the same with these parts inline: it saves a coroutine per step.)
    """
    scope = attempt_scope(run, command)
    try:
        result = await attempt_body(run, command, scope)
    except BaseException as exc:
        return attempt_failed(run, command, scope, exc)
    return attempt_completed(run, command, scope, result)


def _cancel_run(run: Run, program: NodeProgram, command: StartStep) -> None:
    """The worker's task was cancelled while a step ran: the run ends as cancelled."""
    run.task_cancelled(
        f"{run.graph.node_kind} {program.name!r} of workflow {run.name!r} (run {run.run_id}): "
        f"its task was cancelled while it ran, on attempt {command.attempt} (by the step or "
        f"code it called, or from outside the run, as a loop shutting down does)"
    )
    outcome = run.outcome
    if outcome.done() and not outcome.cancelled():
        outcome.exception()  # retrieved: whoever cancelled the task knows, and awaits report it


async def _elsewhere(run: Run, program: NodeProgram, command: StartStep) -> Any:
    """Run the body on a backend that is not in-process; carry out its recorded effects."""
    backend = program.backend
    assert backend is not None
    plan = run.plan
    port = RecordingPort(
        run_id=run.run_id,
        request_prefix=run.request_prefix,
        name=run.name,
        graph=run.graph,
        reducers=plan.reducers,
        context_type=plan.context_type,
        backend=backend_name(program),
        store=run.state.store,
    )
    await backend.start()  # idempotent: a backend starts with the first body it gets
    body = run_recorded if tracer() is None else carry_trace(run_recorded)  # span goes along
    try:
        pending = backend.submit(
            body,
            program.body,
            run.owner,
            port,
            command.invocation,
            command.node,
            command.message,
        )
    except SerializationError as exc:
        raise _unsendable(run, program, command, exc) from exc
    try:
        result, effects = await pending
    except SerializationError as exc:  # (item 1: what it returned; 2: what it did)
        raise SerializationError(
            f"{run.graph.node_kind} {program.name!r} of workflow {run.name!r} (run "
            f"{run.run_id}) on backend {backend_name(program)!r}: what it returned or did cannot "
            f"come back: {exc}"
        ) from exc
    run.carry_out_effects(effects)
    return result


def _unsendable(
    run: Run, program: NodeProgram, command: StartStep, error: SerializationError
) -> SerializationError:
    """A body that cannot go to its backend: name the step, and the event if it is that."""
    where = (
        f"{run.graph.node_kind} {program.name!r} of workflow {run.name!r} (run {run.run_id}) "
        f"runs on backend {backend_name(program) if program.backend else '?'!r}"
    )
    message = command.message
    for what, value in (
        (f"its {type(message).__name__} event", message),
        ("the workflow", run.owner),
    ):
        try:
            dumps(value)
        except SerializationError as exc:
            return SerializationError(f"{where}, but {what} cannot be pickled: {exc}")
        except Exception:
            break
    return SerializationError(f"{where}, but what it needs cannot be pickled: {error}")


def _failed(
    run: Run, program: NodeProgram, command: StartStep, exc: BaseException, timed_out: bool
) -> Tick:
    """The attempt raised: retry it when its policy says so, else the step fails."""
    if timed_out:  # every attempt that times out says so alike (its policy sees it so too)
        exc = _timeout_error(run, program, command, exc)
    policy = program.config.retry_policy
    delay = None
    if (
        policy is not None
        and isinstance(exc, Exception)
        and not isinstance(exc, WorkflowRuntimeError | SerializationError)
        and not _exited(exc)
    ):  # never retried: our own misuse errors, CancelledError, KeyboardInterrupt, SystemExit
        delay = policy.next_delay(command.attempt, exc)
    if delay is not None:
        return AttemptFailed(invocation=command.invocation, failure=failure_of(exc), retry_in=delay)
    error = _step_error(run, program, command, exc)
    return StepFailed(invocation=command.invocation, failure=failure_of(error))


def _exited(exc: BaseException) -> bool:
    """A ``def`` step's ``SystemExit`` or ``GeneratorExit``, which its thread turned into a
    ``RuntimeError`` saying so (``call_to_end``): never retried, as the exit itself."""
    return type(exc) is RuntimeError and isinstance(exc.__cause__, SystemExit | GeneratorExit)


def _where(run: Run, program: NodeProgram, command: StartStep) -> str:
    message = command.message
    return (
        f"{run.graph.node_kind} {program.name!r} of workflow {run.name!r} (run {run.run_id}) "
        f"processing {type(message).__name__}: {short(message)}"
    )


def _timeout_error(
    run: Run, program: NodeProgram, command: StartStep, exc: BaseException
) -> StepTimeoutError:
    error = StepTimeoutError(
        f"{_where(run, program, command)} timed out after {program.config.timeout}s on "
        f"attempt {command.attempt}"
    )
    error.__cause__ = exc
    return error


def _step_error(
    run: Run, program: NodeProgram, command: StartStep, exc: BaseException
) -> BaseException:
    """The error the run fails with: the step's own, noted with where it was raised."""
    where = _where(run, program, command)
    if isinstance(exc, asyncio.CancelledError):  # never hand a caller a bare CancelledError
        error: BaseException = WorkflowRuntimeError(
            f"{where} raised CancelledError on attempt {command.attempt} (it awaited "
            f"something that was cancelled)"
        )
        error.__cause__ = exc
        return error
    if isinstance(exc, StepgraphError):
        if not any(program.name in short_repr(arg, 10_000) for arg in exc.args):
            exc.add_note(f"raised in {where}")
        return exc
    exc.add_note(f"stepgraph: raised in {where}, attempt {command.attempt}")
    return exc


def _invalid_result(run: Run, program: NodeProgram, command: StartStep, result: object) -> Tick:
    if program.returns_events:
        hint = "a step returns an Event or None (send several with ctx.send_event)"
    else:
        hint = "a handler returns None; send messages with `await ctx.send_message(...)`"
    error = InvalidStepResultError(
        f"{run.graph.node_kind} {program.name!r} of workflow {run.name!r} returned "
        f"{short(result)} ({type(result).__name__}) processing "
        f"{type(command.message).__name__}; {hint}"
    )
    return StepFailed(invocation=command.invocation, failure=failure_of(error))
