"""Following a run to its end for ``stepgraph run`` and ``stepgraph runs resume|fork``."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..authoring.graph_workflow import GraphWorkflow
from ..authoring.workflow import Workflow
from ..core.text import short_repr
from ..errors import (
    CheckpointError,
    CheckpointNotFoundError,
    InvalidStartEventError,
    RunIdConflictError,
    RunLockedError,
    RunNotFoundError,
    StoreError,
    WorkflowCancelled,
)
from ..events import HumanResponseEvent, InputRequiredEvent
from ..graph_events import RequestInfoEvent, RunResult
from ..runtime.handler import WorkflowHandler
from ..tasks.observers import observing_tasks
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PAUSED,
    CommandError,
    UsageError,
    format_value,
    say,
)
from .progress import Progress

__all__ = ["Outcome", "follow"]


@dataclass(slots=True)
class _Paused:
    request_id: str
    prompt: str


@dataclass(slots=True)
class Outcome:
    """How a followed run ended: the exit code, and the result to print (if any)."""

    code: int
    result: Any = None


def printable(result: Any) -> str:
    """What stdout gets: a graph run's outputs, a ``@step`` run's result; JSON or repr."""
    if isinstance(result, RunResult):
        return format_value(result.outputs)
    return format_value(result)


async def _answer(
    handler: WorkflowHandler,
    workflow: Workflow | GraphWorkflow,
    responses: deque[Any],
    paused: asyncio.Future[_Paused],
) -> None:
    """Read the run's stream: answer each input request with the next ``--respond`` value;
    with none left, mark the run paused."""
    answered: set[str] = set()
    try:
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                request, prompt = event.request_id, event.prefix
            elif isinstance(event, RequestInfoEvent):
                request, prompt = event.request_id, event.data
            else:
                continue
            key = str(request)
            if key in answered:
                continue  # announced again (a resume): it has its answer
            if not responses:
                if not paused.done():
                    paused.set_result(_Paused(key, short_repr(prompt, 200)))
                return
            answered.add(key)
            value = responses.popleft()
            try:
                if isinstance(workflow, GraphWorkflow):
                    await handler.send_response(key, value)
                else:
                    handler.send_event(HumanResponseEvent(response=value, request_id=request))
            except Exception as exc:  # the run waits on: say why, as a pause
                if not paused.done():
                    refused = f"{short_repr(prompt, 200)} (the answer {value!r} was refused: {exc})"
                    paused.set_result(_Paused(key, refused))
                return
    except Exception:  # the run's end is reported by awaiting it, not here
        return


async def follow(
    start: Callable[[], WorkflowHandler],
    workflow: Workflow | GraphWorkflow,
    progress: Progress,
    *,
    responses: list[Any],
    resume_hint: Callable[[str], str] | None,
    on_start: Callable[[WorkflowHandler], None] | None = None,
) -> Outcome:
    """Start the run (``start()``), show its progress and wait for its end or its pause.

    ``resume_hint(run_id)`` is the command that resumes a paused durable run (None: the
    run has no store that outlives this process, so a pause cannot either).

    Returns:
        The exit code (0 completed, 1 failed, 3 paused) and the result.

    Raises:
        UsageError: the start arguments are refused, or the store refuses the run (no such
            run or checkpoint, another process owns it, a checkpoint the workflow cannot
            use).
    """
    progress.start()
    outcome = "refused"  # until the run exists: no summary then, the error says why
    detail = ""
    try:
        try:
            with observing_tasks(progress):  # the task flows its steps make: shown too
                handler = start()
        except InvalidStartEventError as exc:
            raise UsageError(f"the run's arguments are refused: {_flat(exc)}") from None
        outcome = "failed"
        if on_start is not None:
            on_start(handler)
        paused: asyncio.Future[_Paused] = asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(_answer(handler, workflow, deque(responses), paused))
        ended = asyncio.ensure_future(_result(handler))
        try:
            await asyncio.wait({ended, paused}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # Ctrl-C: cancel the run (a stored one stays resumable)
            await _stop(handler, True)
            await _settled(ended)
            outcome, detail = "cancelled", "interrupted"
            raise
        finally:
            reader.cancel()
        if not ended.done():
            pause = paused.result()
            await _stop(handler, resume_hint is None)
            await _settled(ended)
            outcome = "paused" if resume_hint is not None else "stopped"
            progress.stop(outcome, f"waiting for input (request {pause.request_id})")
            outcome = ""  # stopped already: the summary comes before what to do next
            _say_paused(handler.run_id, pause, resume_hint)
            return Outcome(EXIT_PAUSED if resume_hint is not None else EXIT_FAILED)
        try:
            result = ended.result()
        except (
            RunNotFoundError,
            CheckpointNotFoundError,
            RunLockedError,
            RunIdConflictError,
            CheckpointError,
        ) as exc:
            outcome = "refused"
            raise UsageError(_flat(exc)) from None
        except WorkflowCancelled as exc:
            outcome = "cancelled"
            raise CommandError(
                f"run {handler.run_id} was cancelled: {_flat(exc)}", EXIT_FAILED
            ) from None
        except StoreError as exc:
            raise CommandError(
                f"run {handler.run_id}: the store failed: {_flat(exc)}", EXIT_FAILED
            ) from None
        except Exception as exc:
            raise CommandError(_failure_text(handler.run_id, progress, exc), EXIT_FAILED) from None
        outcome = "completed"
        if not progress.run_id:  # a completed run resumed: its stored result, nothing ran
            progress.run_id = handler.run_id
            progress.stored = True
        return Outcome(EXIT_OK, result)
    finally:
        if outcome:
            progress.stop(outcome, detail)


async def _result(handler: WorkflowHandler) -> Any:
    return await handler


async def _settled(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` to end and take its outcome (no "exception never retrieved")."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def _stop(handler: WorkflowHandler, cancel: bool) -> None:
    """Stop following the run: cancel it (``cancel``: it cannot outlive this process), or
    leave it as the store has it (paused, or resumable), as a process that exits does."""
    if cancel:
        await handler.cancel()
        return
    with contextlib.suppress(Exception):
        await handler.detach()


def _say_paused(run_id: str, pause: _Paused, resume_hint: Callable[[str], str] | None) -> None:
    say(f"stepgraph: run {run_id} is waiting for input: request {pause.request_id}: {pause.prompt}")
    if resume_hint is None:
        say(
            "stepgraph: the run has no store that outlives this process, so it cannot wait "
            "past it: answer with --respond VALUE, or give --store URL to pause it"
        )
    else:
        say(f"stepgraph: it is paused; answer it with: {resume_hint(run_id)} --respond VALUE")


def _flat(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _failure_text(run_id: str, progress: Progress, exc: BaseException) -> str:
    """The one or two lines of a failed run: its step and its error."""
    failure = progress.failure
    if failure is not None:
        return (
            f"run {run_id} failed: step {failure.step!r} raised "
            f"{failure.type_name}: {failure.message}"
        )
    return f"run {run_id} failed: {type(exc).__name__}: {_flat(exc)}"


def print_result(result: Any) -> None:
    """The result on stdout, one line."""
    sys.stdout.write(printable(result) + "\n")
    sys.stdout.flush()
