"""The progress display of ``stepgraph run``: a run observer and what shows it.

:class:`Progress` is a :class:`~stepgraph.RunObserver` that counts, per step, the
attempts running, done, retried and failed, the current superstep and the first step
failure. It shows them one of three ways:

- a live region on a terminal (rich, the extra ``cli``), redrawn ten times a second, that
  disappears when the run ends, leaving one summary line;
- plain lines, one per step start and end, then the summary line (rich missing, or
  stderr is not a terminal);
- nothing but the failure (``--no-progress``).

It writes to stderr: stdout is the run's result.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from ..core import AttemptFailed, RunStatus, StepCompleted, StepFailed, Tick
from ..runtime.observers import RunInfo, RunObserver
from ..tasks.observers import TaskObserver

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

    from ..tasks.flow import TaskFlow
    from ..tasks.futures import TaskFuture

__all__ = ["Progress", "StepCounts", "make_progress"]

RICH_HINT = "stepgraph: pip install 'stepgraph[cli]' gives a live progress display"


@dataclass(slots=True)
class StepCounts:
    """One step's attempts so far."""

    running: int = 0
    done: int = 0
    retried: int = 0
    failed: int = 0
    stopped: int = 0  # attempts the run's end (a cancel, an interrupt) stopped


@dataclass(slots=True)
class StepFailure:
    """The first step failure of the run: what the error line names."""

    step: str
    type_name: str
    message: str


@dataclass(slots=True)
class _Snapshot:
    workflow: str
    run_id: str
    superstep: int
    elapsed: float
    run_mode: str
    steps: list[tuple[str, StepCounts]] = field(default_factory=list)
    tasks: list[tuple[str, StepCounts]] = field(default_factory=list)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class Progress(RunObserver, TaskObserver):
    """Counts a run's step attempts (and its steps' tasks); ``mode`` says how they are
    shown (see the module).

    Observers are called on the run's event loop thread; the live display reads from its
    refresh thread: a lock keeps the counts whole.
    """

    def __init__(self, mode: str = "off", stream: TextIO | None = None) -> None:
        self.mode = mode  # "live", "plain" or "off"
        self.stream = stream if stream is not None else sys.stderr
        self.workflow = ""
        self.run_id = ""
        self.superstep = 0
        self.run_mode = "superstep"
        self.steps: dict[str, StepCounts] = {}
        self.tasks: dict[str, StepCounts] = {}  # the tasks of task flows, by name
        self._running_tasks: set[str] = set()  # the uids of tasks whose bodies run
        self.failure: StepFailure | None = None
        self.status: RunStatus | None = None
        self.stored = False  # the run had completed: its stored result, nothing ran
        self._order: list[str] = []
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._console: Console | None = None
        self._live: Live | None = None

    # -- the observer -----------------------------------------------------------------------------

    def run_started(self, run: RunInfo) -> None:
        with self._lock:
            self.workflow = run.name
            self.run_id = run.run_id
            self.superstep = run.state.superstep
            self.run_mode = run.mode.value
            self._order = [node.name for node in run.graph.nodes]
            for name in self._order:
                self.steps.setdefault(name, StepCounts())
        self._line(f"run {run.run_id} of {run.name} started ({run.mode.value} mode)")

    def step_started(
        self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
    ) -> None:
        with self._lock:
            self.superstep = run.state.superstep
            self.steps.setdefault(step, StepCounts()).running += 1
        again = f" (attempt {attempt})" if attempt > 1 else ""
        where = f"superstep {run.state.superstep}: " if self.run_mode == "superstep" else ""
        self._line(f"{where}{step} started{again}")

    def step_ended(
        self, run: RunInfo, step: str, invocation: int, attempt: int, outcome: Tick | None
    ) -> None:
        with self._lock:
            counts = self.steps.setdefault(step, StepCounts())
            counts.running = max(0, counts.running - 1)
            if isinstance(outcome, StepCompleted):
                counts.done += 1
                line = f"{step} done"
            elif isinstance(outcome, AttemptFailed):
                counts.retried += 1
                error = outcome.failure
                line = f"{step} retried after {error.type_name}: {_oneline(error.message)}"
            elif isinstance(outcome, StepFailed):
                counts.failed += 1
                error = outcome.failure
                if self.failure is None:
                    self.failure = StepFailure(step, error.type_name, _oneline(error.message))
                line = f"{step} failed: {error.type_name}: {_oneline(error.message)}"
            else:
                counts.stopped += 1
                line = f"{step} stopped (the run ended)"
        self._line(line)

    def superstep_ended(self, run: RunInfo, superstep: int) -> None:
        with self._lock:  # the last one a step ran in, until a step of the next starts (a
            self.superstep = superstep  # graph run ends at the barrier of its last one)

    def run_ended(
        self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
    ) -> None:
        with self._lock:
            self.status = status

    # -- the tasks of its steps' task flows (``observing_tasks``) ---------------------------------

    def task_started(self, flow: TaskFlow, future: TaskFuture) -> None:
        with self._lock:
            self._running_tasks.add(future.uid)
            self.tasks.setdefault(future.name, StepCounts()).running += 1
        self._line(f"task {future.name} started")

    def _task_ended(self, future: TaskFuture, outcome: str) -> None:
        with self._lock:
            counts = self.tasks.setdefault(future.name, StepCounts())
            if future.uid in self._running_tasks:
                self._running_tasks.discard(future.uid)
                counts.running = max(0, counts.running - 1)
            if outcome == "done":
                counts.done += 1
            elif outcome == "failed":
                counts.failed += 1
            elif outcome == "cancelled":
                counts.stopped += 1
        self._line(f"task {future.name} {outcome}")

    def task_resolved(self, flow: TaskFlow, future: TaskFuture) -> None:
        self._task_ended(future, "done")

    def task_failed(self, flow: TaskFlow, future: TaskFuture, error: BaseException) -> None:
        self._task_ended(future, "failed")

    def task_cancelled(self, flow: TaskFlow, future: TaskFuture) -> None:
        self._task_ended(future, "cancelled")

    # -- showing ----------------------------------------------------------------------------------

    def _line(self, text: str) -> None:
        if self.mode == "plain":
            elapsed = time.monotonic() - self._started
            print(f"stepgraph: [{elapsed:6.2f}s] {text}", file=self.stream, flush=True)

    def start(self) -> None:
        """Start showing (the live region, on a terminal)."""
        self._started = time.monotonic()
        if self.mode != "live":
            return
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=self.stream)
        self._live = Live(
            _Renderable(self),
            console=self._console,
            refresh_per_second=10,
            transient=True,  # the region goes when the run ends; the summary stays
            redirect_stdout=True,  # what steps print goes above the region
            redirect_stderr=True,
        )
        self._live.start()

    def stop(self, outcome: str, detail: str = "") -> None:
        """Stop showing and write the summary line: ``outcome`` is completed, failed, ..."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()
        if self.mode == "off" or outcome == "refused":  # nothing ran: the error says why
            return
        summary = self.summary(outcome, detail)
        if self.stored:
            summary = f"run {self.run_id} had completed already: its stored result (nothing ran)"
        if self._console is not None:
            style = {"completed": "green", "failed": "red", "paused": "yellow"}.get(outcome, "")
            mark = {"completed": "✓", "failed": "✗", "paused": "⏸"}.get(outcome, "•")
            self._console.print(
                f"{mark} {summary}", style=style, highlight=False, markup=False, soft_wrap=True
            )
        else:
            print(f"stepgraph: {summary}", file=self.stream, flush=True)

    def snapshot(self) -> _Snapshot:
        with self._lock:
            names = self._order + [n for n in self.steps if n not in self._order]
            steps = [(n, StepCounts(*_fields(self.steps[n]))) for n in names if n in self.steps]
            tasks = [(n, StepCounts(*_fields(c))) for n, c in self.tasks.items()]
            return _Snapshot(
                self.workflow,
                self.run_id,
                self.superstep,
                time.monotonic() - self._started,
                self.run_mode,
                steps,
                tasks,
            )

    def summary(self, outcome: str, detail: str = "") -> str:
        """One line: the workflow, the outcome, the time, the supersteps, the steps."""
        snap = self.snapshot()
        done = [_times(name, c.done) for name, c in snap.steps if c.done]
        failed = [_times(name, c.failed) for name, c in snap.steps if c.failed]
        parts = [
            f"{snap.workflow or 'the run'} {outcome} in {snap.elapsed:.2f}s",
            _where(snap),
            "done: " + (", ".join(done) or "no step"),
        ]
        if failed:
            parts.append("failed: " + ", ".join(failed))
        if snap.tasks:
            parts.append(
                "tasks done: "
                + (", ".join(_times(n, c.done) for n, c in snap.tasks if c.done) or "none")
            )
            tasks_failed = [_times(n, c.failed) for n, c in snap.tasks if c.failed]
            if tasks_failed:
                parts.append("tasks failed: " + ", ".join(tasks_failed))
        if detail:
            parts.append(detail)
        if snap.run_id:
            parts.append(f"run {snap.run_id}")
        return " · ".join(parts) if self._console is not None else " | ".join(parts)


def _where(snap: _Snapshot) -> str:
    """Where the run is: its superstep (async mode has none: messages go at once)."""
    return f"superstep {snap.superstep}" if snap.run_mode == "superstep" else "async mode"


def _fields(counts: StepCounts) -> tuple[int, int, int, int, int]:
    return counts.running, counts.done, counts.retried, counts.failed, counts.stopped


def _times(name: str, n: int) -> str:
    return name if n == 1 else f"{name} x{n}"


def _oneline(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class _Renderable:
    """The live region: a header line, then a line per step (redrawn on every refresh)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __rich__(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        snap = self.progress.snapshot()
        spin = _SPINNER[int(snap.elapsed * 10) % len(_SPINNER)]
        header = Text.assemble(
            (f"{spin} ", "cyan"),
            (snap.workflow or "starting", "bold"),
            f" · {_where(snap)} · {snap.elapsed:.1f}s",
            (f" · run {snap.run_id}" if snap.run_id else "", "dim"),
        )
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        shown = _visible(snap.steps)
        tasks = _visible(snap.tasks, limit=10)
        for name, c in [*shown, *((f"task {n}", c) for n, c in tasks)]:
            if c.running:
                mark, style, state = (
                    spin,
                    "cyan",
                    "running" + (f" x{c.running}" if c.running > 1 else ""),
                )
            elif c.failed:
                mark, style, state = "✗", "red", "failed"
            elif c.stopped:  # the run ended while it ran: not done
                mark, style, state = "■", "yellow", "stopped"
            elif c.done:
                mark, style, state = "✓", "green", "done"
            else:
                mark, style, state = "·", "dim", "waiting"
            counts = [f"done {c.done}"]
            if c.retried:
                counts.append(f"retried {c.retried}")
            if c.failed:
                counts.append(f"failed {c.failed}")
            if c.stopped:
                counts.append(f"stopped {c.stopped}")
            table.add_row(
                Text(f"  {mark} {name}", style=style),
                Text(state, style=style),
                Text(", ".join(counts), style="dim"),
            )
        hidden = len(snap.steps) - len(shown)
        if hidden:
            table.add_row(Text(f"    … {_plural(hidden, 'more step')}", style="dim"), "", "")
        hidden = len(snap.tasks) - len(tasks)
        if hidden:
            table.add_row(Text(f"    … {_plural(hidden, 'more task')}", style="dim"), "", "")
        from rich.console import Group

        return Group(header, table)


def _visible(
    steps: Sequence[tuple[str, StepCounts]], limit: int = 20
) -> list[tuple[str, StepCounts]]:
    """At most ``limit`` steps: the running and failed ones first, then the others in order."""
    if len(steps) <= limit:
        return list(steps)
    busy = [s for s in steps if s[1].running or s[1].failed]
    rest = [s for s in steps if not (s[1].running or s[1].failed) and s[1].done]
    chosen = {name for name, _ in (busy + rest)[:limit]}
    return [s for s in steps if s[0] in chosen]


def make_progress(enabled: bool, stream: TextIO | None = None) -> Progress:
    """A progress observer for the terminal at hand.

    Live (rich) when ``stream`` (stderr) is a terminal and rich is installed; plain lines
    otherwise, with a hint, once, when rich is what is missing; only the counts (for the
    error line) when ``enabled`` is False.
    """
    out = stream if stream is not None else sys.stderr
    if not enabled:
        return Progress("off", out)
    try:
        import rich  # noqa: F401
    except ImportError:
        print(RICH_HINT, file=out, flush=True)
        return Progress("plain", out)
    isatty = getattr(out, "isatty", None)
    live = isatty is not None and isatty() and os.environ.get("TERM") != "dumb"
    return Progress("live" if live else "plain", out)
