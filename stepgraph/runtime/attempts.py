"""One attempt of one invocation: run the body, and say what happened as a tick.

The attempt runs the node's body in a fresh :class:`Scope` (on its backend, bounded by
the node's timeout on the run's clock) and returns the tick for the kernel:
``StepCompleted`` with what it emitted, ``AttemptFailed`` with the delay before the next
attempt when its retry policy allows one, or ``StepFailed``. The kernel keeps the attempt
count and the backoff timer; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..core import AttemptFailed, StartStep, StepCompleted, StepFailed, Tick
from ..errors import (
    InvalidStepResultError,
    StepgraphError,
    StepTimeoutError,
    WorkflowRuntimeError,
)
from ..events import Event
from .effects import RecordingPort, run_recorded
from .failures import failure_of
from .requests import short
from .scope import Scope, set_scope

if TYPE_CHECKING:
    from .plan import NodeProgram
    from .run import Run

__all__ = ["run_attempt"]


def _forget_cancellation() -> None:
    """The step cancelled its own task (or code it called did): take the request back.

    The worker goes on; the cancellation is the step's failure, not the worker's end.
    """
    task = asyncio.current_task()
    while task is not None and task.cancelling():
        task.uncancel()


def _expire(deadline: asyncio.Timeout) -> None:
    """A step's timer fired on the run's clock: time the attempt out now."""
    if not deadline.expired():
        deadline.reschedule(asyncio.get_running_loop().time())


async def run_attempt(run: Run, command: StartStep) -> Tick:
    """Run attempt ``command.attempt`` of ``command.invocation`` and return its outcome tick."""
    program = run.programs[command.node]
    message = command.message
    timeout = program.config.timeout
    scope = Scope(run, command.invocation, command.node, message)
    set_scope(scope)
    deadline: asyncio.Timeout | None = None
    body: Awaitable[Any]
    try:
        backend = program.backend
        if backend is None:  # the default: inline when async, a thread when not
            body = program.call(run.owner, run.context, message)
        elif backend.in_process:
            body = backend.submit(program.body, run.owner, run.context, message)
        else:
            body = _elsewhere(run, program, command)
        if timeout is None:
            result = await body
        else:
            async with asyncio.timeout(None) as deadline:
                timer = run.clock.call_later(timeout, lambda: _expire(deadline))
                try:
                    result = await body
                finally:
                    timer.cancel()
    except (Exception, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError):
            if run.done:
                raise  # the run is ending: this worker is being cancelled
            _forget_cancellation()
        scope.active = False
        timed_out = deadline is not None and deadline.expired()
        return _failed(run, program, command, exc, timed_out)
    sent = scope.sent
    scope.sent = []  # a pending flush (async mode) finds nothing left to deliver
    if result is not None:
        if isinstance(result, Event) and program.returns_events:
            sent.append((result, None))
        else:
            return _invalid_result(run, program, command, result)
    if not sent:
        return StepCompleted(invocation=command.invocation)
    if run._route is None:  # routed by type, in the kernel: nothing to resolve here
        return StepCompleted(invocation=command.invocation, emitted=tuple(sent))
    return run.completed(command.invocation, command.node, sent)


async def _elsewhere(run: Run, program: NodeProgram, command: StartStep) -> Any:
    """Run the body on a backend that is not in-process; carry out its recorded effects."""
    backend = program.backend
    assert backend is not None
    plan = run.plan
    port = RecordingPort(
        run_id=run.run_id,
        name=run.name,
        graph=run.graph,
        reducers=plan.reducers,
        context_type=plan.context_type,
        backend=backend.name,
        store=run.state.store,
    )
    result, effects = await backend.submit(
        run_recorded,
        program.body,
        run.owner,
        port,
        command.invocation,
        command.node,
        command.message,
    )
    run.carry_out_effects(effects)
    return result


def _failed(
    run: Run, program: NodeProgram, command: StartStep, exc: BaseException, timed_out: bool
) -> Tick:
    """The attempt raised: retry it when its policy says so, else the step fails."""
    policy = program.config.retry_policy
    delay = None
    if policy is not None and not isinstance(exc, WorkflowRuntimeError | asyncio.CancelledError):
        delay = policy.next_delay(command.attempt, exc)
    if delay is not None:
        return AttemptFailed(invocation=command.invocation, failure=failure_of(exc), retry_in=delay)
    error = _step_error(run, program, command, exc, timed_out)
    return StepFailed(invocation=command.invocation, failure=failure_of(error))


def _step_error(
    run: Run, program: NodeProgram, command: StartStep, exc: BaseException, timed_out: bool
) -> BaseException:
    """The error the run fails with: the step's own, noted with where it was raised."""
    message = command.message
    where = (
        f"{run.graph.node_kind} {program.name!r} of workflow {run.name!r} (run {run.run_id}) "
        f"processing {type(message).__name__}: {short(message)}"
    )
    if timed_out:
        error: BaseException = StepTimeoutError(
            f"{where} timed out after {program.config.timeout}s on attempt {command.attempt}"
        )
        error.__cause__ = exc
        return error
    if isinstance(exc, asyncio.CancelledError):  # never hand a caller a bare CancelledError
        error = WorkflowRuntimeError(
            f"{where} was cancelled from inside, on attempt {command.attempt}: its task was "
            f"cancelled by the step or by code it called, or it awaited something cancelled"
        )
        error.__cause__ = exc
        return error
    if isinstance(exc, StepgraphError):
        if not any(program.name in str(arg) for arg in exc.args):
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
