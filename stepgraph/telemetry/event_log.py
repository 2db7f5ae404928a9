"""The JSONL event log: one JSON object per line for what happens in runs and task flows.

An :class:`EventLog` is an observer of step runs (the run observer seam) and of task
flows (their task observer seam). Every record has ``schema_version``, ``kind``,
``time`` (wall clock, Unix seconds) and ``monotonic`` (seconds), both read from the
clock of the run or the flow; run records carry ``run_id`` and ``workflow``, task
records ``task_id``, ``task``, ``block_id`` and ``workflow_id``. The shape of every kind
is the JSON Schema at :data:`EVENT_LOG_SCHEMA`, shipped in the package.

Several runs, flows and processes may append to one file: the file is opened in append
mode and records go out as ``write``s of whole lines, which the operating system never
interleaves with another append. In an event loop, the records of one loop iteration
go out together, in one ``write``, at its end (the end of a run or a flow writes at
once; an iteration logging more than 64 KiB writes each 64 KiB as it fills): a process
killed with ``kill -9`` loses at most its last iteration's records. A
``kill -9`` can cut a write only where it crosses a page of the file (4 KiB); a log
opened on a file whose last line was cut starts on a new line, so the cut line stands
alone, and :func:`read_events` skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json

from ..core import (
    AttemptFailed,
    Command,
    ExternalEventReceived,
    PublishEvent,
    ResponseReceived,
    RunStatus,
    StepCompleted,
    StepFailed,
    Tick,
)
from ..core.state import Mode
from ..core.text import error_text, storable_text
from ..runtime.observers import RunInfo, RunObserver, step_backend
from ..tasks.observers import TaskObserver
from .reported import body_error, error_type

if TYPE_CHECKING:
    from ..runtime.clock import Clock
    from ..tasks.flow import TaskFlow
    from ..tasks.futures import TaskFuture

__all__ = ["EVENT_LOG_SCHEMA", "SCHEMA_VERSION", "EventLog", "event_log_of", "read_events"]

_BATCH_BYTES = 1 << 16  # a batch this large is written at once

SCHEMA_VERSION = 1
"""The version of the records' shape; it changes only when a kind changes its meaning."""

EVENT_LOG_SCHEMA = str(Path(__file__).with_name("event_log.schema.json"))
"""The path of the JSON Schema every line of an event log validates against."""


def _error(error: BaseException | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": error_type(error), "message": error_text(error)}


def _writable(value: Any) -> Any:
    """``value`` with each str that UTF-8 cannot hold escaped (``\\udce9``), in the dicts
    and lists it is made of."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, Mapping):
        return {_writable(k): _writable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_writable(v) for v in value]
    return value


def _json(value: Any) -> str:
    """``value`` as JSON text, as :meth:`EventLog.write` writes it."""
    try:
        return to_json(value, fallback=repr).decode()
    except ValueError:  # a str JSON cannot hold (a lone surrogate: a file name, say)
        return to_json(_writable(value), fallback=repr).decode()


def _text(value: object) -> str:
    """An id or a name as JSON text: a plain str as it is between quotes when nothing in it
    needs escaping (most), anything else (a str to escape, a str enum, a UUID) as
    :func:`_json` writes it."""
    if (
        type(value) is str
        and value.isascii()
        and value.isprintable()
        and '"' not in value
        and "\\" not in value
    ):
        return f'"{value}"'
    return _json(value)


def _fields(fields: Mapping[str, Any]) -> str:
    """``,"key":value`` for each of ``fields`` that is not None, as JSON text."""
    return "".join(f',"{key}":{_json(value)}' for key, value in fields.items() if value is not None)


_KEPT = 4096  # names (and runs) whose JSON text a log keeps: steps, event types, backends


class EventLog(RunObserver, TaskObserver):
    """Appends a JSON line per event to ``path`` (its folder is created when needed).

    Give it to a workflow (``event_log=`` takes it or a path), a built graph or a
    ``TaskFlow``; one log may serve several of them at once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.sink = os.path.realpath(self.path)
        """The file it writes to (a sub-workflow's run, which the log of its outer run
        records too, is recorded once by two logs of one file)."""
        self._fd: int | None = None
        self._torn = False
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled: set[asyncio.AbstractEventLoop] = set()  # loops due to flush
        self._tasks: dict[tuple[int, int], str] = {}  # a task's repeated fields, as JSON
        self._names: dict[str, str] = {}  # a name (a step's, an event type's) as JSON
        self._runs: dict[str, tuple[str, str]] = {}  # a run's id: its workflow, and both
        # as JSON
        self._flows: set[int] = set()  # the flows whose start (and capacity) is logged

    # -- writing ------------------------------------------------------------------------------

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line.

        In an event loop, the lines of one loop iteration are written together, at its
        end (one ``write`` of whole lines: never torn, never interleaved with another
        writer's; every 64 KiB, should an iteration log more); the end of a run or a flow
        writes at once. Outside a loop, at once.
        """
        try:
            data = to_json(record, fallback=repr) + b"\n"  # compact JSON, several times faster
        except ValueError:  # a str JSON cannot hold (a lone surrogate: a file name, say)
            data = to_json(_writable(record), fallback=repr) + b"\n"
        self._append(data)

    def _line(self, clock: Clock, kind: str, fields: str) -> None:
        """Append a record of ``kind`` stamped by ``clock``, its other ``fields`` given
        as JSON text (``,"key":value`` each): what :meth:`write` writes of the same record,
        made without building it (the records of every step and task)."""
        wall, monotonic = clock.wall(), clock.monotonic()
        if type(wall) is float and type(monotonic) is float:  # both in one call: its
            times = to_json((wall, monotonic)).decode()  # numbers, written several times
            wall_text, monotonic_text = times[1:-1].split(",")  # faster than repr does
        else:
            wall_text, monotonic_text = _json(wall), _json(monotonic)
        self._append(
            f'{{"schema_version":{SCHEMA_VERSION},"kind":"{kind}","time":{wall_text},'
            f'"monotonic":{monotonic_text}{fields}}}\n'.encode()
        )

    def _name(self, name: str) -> str:
        """``name`` as JSON text (kept: the same few names come again and again)."""
        if type(name) is not str:  # (kept by equality: a str enum member is equal to its
            return _json(name)  # value, True to 1, and they may not be written alike)
        text = self._names.get(name)
        if text is None:
            if len(self._names) >= _KEPT:
                self._names.clear()
            text = self._names[name] = _text(name)
        return text

    def _run_fields(self, run: RunInfo) -> str:
        """``,"run_id":...,"workflow":...``: what every record of ``run`` starts with."""
        name = run.telemetry_name
        kept = self._runs.get(run.run_id)  # (a run id may be another workflow's run's too)
        if kept is not None and kept[0] == name:
            return kept[1]
        if len(self._runs) >= _KEPT:
            self._runs.clear()
        text = f',"run_id":{_text(run.run_id)},"workflow":{self._name(name)}'
        self._runs[run.run_id] = (name, text)
        return text

    def _append(self, data: bytes) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending.append(data)
            self._size += len(data)
            if loop is not None and self._size < _BATCH_BYTES:
                scheduled = self._scheduled
                if loop not in scheduled:  # (each loop flushes at the end of its own
                    if scheduled:  # iteration: one loop's records never wait for another,
                        self._forget_closed()  # busy, loop's)
                    scheduled.add(loop)
                    loop.call_soon(self._flush_on, loop)
                return
            self._write_pending()

    def flush(self) -> None:
        """Write the records not written yet."""
        with self._lock:
            self._write_pending()

    def _forget_closed(self) -> None:
        """Forget the loops that closed before their flush came (a loop stopped in the
        iteration it logged in); what they left pending is written with what comes next."""
        for loop in [loop for loop in self._scheduled if loop.is_closed()]:
            self._scheduled.discard(loop)

    def _flush_on(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._scheduled.discard(loop)
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        if self._fd is None:
            self._fd = self._open()
            if self._torn:  # a writer died mid-line: end its line, keep ours whole
                data = b"\n" + data
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)  # so that a log opening the file never sees a
        try:  # write of another process half done (it would take it for a cut line)
            os.write(fd, data)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            self._torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return fd

    def close(self) -> None:
        """Write what is pending and close the file (a later record opens it again)."""
        with self._lock:
            self._write_pending()
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        if getattr(self, "_pending", None):
            with contextlib.suppress(Exception):
                self._write_pending()
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"EventLog({str(self.path)!r})"

    # -- step runs ----------------------------------------------------------------------------

    def _run_record(self, run: RunInfo, kind: str, **fields: Any) -> None:
        self._line(run.clock, kind, self._run_fields(run) + _fields(fields))

    follows_sub_runs = True
    """A run started by a step of a run this log records (a sub-workflow's) is recorded
    too, its ``run_started`` naming the outer run as ``parent_run_id``."""

    follows_task_flows = True
    """A task flow made by a step of a run this log records is recorded too, its
    ``flow_started`` naming that run (``run_id``) and step (``step``)."""

    def run_started(self, run: RunInfo) -> None:
        self._run_record(run, "run_started", mode=run.mode.value, parent_run_id=run.parent_run_id)

    def _step_fields(self, run: RunInfo, step: str, invocation: int, attempt: int) -> str:
        """What every record of a step attempt starts with, as JSON text."""
        return (
            f'{self._run_fields(run)},"step":{self._name(step)},"invocation":{invocation},'
            f'"attempt":{attempt}'
        )

    def step_started(
        self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
    ) -> None:
        name = self._name
        fields = self._step_fields(run, step, invocation, attempt)
        fields += f',"event":{name(type(message).__name__)}'
        if run.mode is Mode.SUPERSTEP:  # (async: no superstep)
            fields += f',"superstep":{run.state.superstep}'
        backend = name(step_backend(run, invocation, message))
        self._line(run.clock, "step_started", f'{fields},"backend":{backend}')

    def step_ended(
        self, run: RunInfo, step: str, invocation: int, attempt: int, outcome: Tick | None
    ) -> None:
        if isinstance(outcome, StepCompleted):
            kind, more = "step_completed", ""
        elif isinstance(outcome, AttemptFailed):
            failure = outcome.failure
            error = {"type": failure.type_name, "message": failure.message}
            kind, more = "step_retried", _fields({"error": error, "retry_in": outcome.retry_in})
        elif isinstance(outcome, StepFailed) and outcome.failure is not None:
            failure = outcome.failure
            error = {"type": failure.type_name, "message": failure.message}
            kind, more = "step_failed", _fields({"error": error})
        else:
            return
        self._line(run.clock, kind, self._step_fields(run, step, invocation, attempt) + more)

    def superstep_ended(self, run: RunInfo, superstep: int) -> None:
        fields = f'{self._run_fields(run)},"superstep":{superstep}'
        self._line(run.clock, "superstep_completed", fields)

    def tick(self, run: RunInfo, tick: Tick, commands: Sequence[Command]) -> None:
        for command in commands:  # an input request a step returned, announced
            if isinstance(command, PublishEvent) and run.graph.is_input_request(command.event):
                request = getattr(command.event, "request_id", None)
                self._run_record(run, "input_requested", request_id=request)
        if isinstance(tick, ResponseReceived):
            self._run_record(run, "input_received", request_id=tick.request_id)
        elif isinstance(tick, ExternalEventReceived) and run.graph.is_answer(tick.event):
            request = getattr(tick.event, "request_id", None)
            if request is None:  # it answered the oldest open request: that one
                answers = run.state.answers
                request = next((r for r, a in answers.items() if a is tick.event), None)
            self._run_record(run, "input_received", request_id=request)

    def checkpoint_written(
        self, run: RunInfo, superstep: int, seq: int, size: int, seconds: float
    ) -> None:
        self._run_record(
            run, "checkpoint_written", superstep=superstep, seq=seq, bytes=size, seconds=seconds
        )

    def run_ended(
        self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
    ) -> None:
        kind = {
            RunStatus.FINISHED: "run_completed",
            RunStatus.FAILED: "run_failed",
            RunStatus.CANCELLED: "run_detached" if run.detached else "run_cancelled",
        }.get(status, "run_" + status.value)
        self._run_record(run, kind, error=_error(error) if status is RunStatus.FAILED else None)
        self._runs.pop(run.run_id, None)
        self.flush()  # the run's records are in the file before awaiting it returns

    # -- task flows ---------------------------------------------------------------------------

    def _task_record(
        self, flow: TaskFlow, future: TaskFuture, kind: str, more: str = "", end: bool = False
    ) -> None:
        """A record of ``kind`` for ``future``'s task; ``more``: its other fields, as JSON
        text (``,"key":value`` each)."""
        key = (id(flow), future._task)
        base = self._tasks.pop(key, None) if end else self._tasks.get(key)
        if base is None:  # what every record of the task repeats, made once
            spec = future._spec
            name = self._name
            base = (
                f',"flow_id":{_text(flow.uid)},"task_id":{_text(future.uid)},'
                f'"task":{name(spec.name)},"task_kind":{name(spec.kind)},'
                f'"backend":{name(spec.backend)}'
            )
            if future.workflow_id is not None:
                base += f',"workflow_id":{_text(future.workflow_id)}'
            if future.block_id is not None:
                base += f',"block_id":{_text(future.block_id)}'
            if spec.resources:
                base += f',"resources":{_json(spec.resources)}'
            if not end:
                self._tasks[key] = base
        self._line(flow.clock, kind, base + more)

    def task_created(self, flow: TaskFlow, future: TaskFuture, dependencies: Sequence[str]) -> None:
        if id(flow) not in self._flows:  # its first task: the flow and its slots, first
            self._flows.add(id(flow))
            started = {
                "flow_id": flow.uid,
                "run_id": flow.parent_run_id,  # (None: made outside any step, left out)
                "step": flow.parent_step,
                "capacity": flow.resources,
            }
            self._line(flow.clock, "flow_started", _fields(started))
        listed = ",".join(_text(uid) for uid in dependencies)
        self._task_record(flow, future, "task_created", f',"dependencies":[{listed}]')

    def task_submitted(self, flow: TaskFlow, future: TaskFuture) -> None:
        self._task_record(flow, future, "task_submitted")

    def task_started(self, flow: TaskFlow, future: TaskFuture) -> None:
        self._task_record(flow, future, "task_started")

    def task_resolved(self, flow: TaskFlow, future: TaskFuture) -> None:
        self._task_record(flow, future, "task_resolved", end=True)

    def task_failed(self, flow: TaskFlow, future: TaskFuture, error: BaseException) -> None:
        error = body_error(error)  # what the body raised (as the task's span says)
        self._task_record(flow, future, "task_failed", f',"error":{_json(_error(error))}', end=True)

    def task_cancelled(self, flow: TaskFlow, future: TaskFuture) -> None:
        self._task_record(flow, future, "task_cancelled", end=True)

    def flow_closed(self, flow: TaskFlow) -> None:
        for key in [k for k in self._tasks if k[0] == id(flow)]:
            del self._tasks[key]
        self._flows.discard(id(flow))
        self.flush()


def event_log_of(value: object, where: str) -> EventLog | None:
    """``event_log=``'s value as an :class:`EventLog` (a path makes one; None: none)."""
    if value is None or isinstance(value, EventLog):
        return value
    if isinstance(value, str | os.PathLike):
        return EventLog(value)
    from ..errors import WorkflowValidationError

    raise WorkflowValidationError(
        f"{where}(event_log={value!r}): expected a path or a stepgraph.telemetry.EventLog"
    )


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of an event log, in order; a line that is not a whole JSON object (a
    write cut by a ``kill -9``) is skipped."""
    found: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
    return found
