"""The live region of the progress display, drawn by rich into a string: steps, then the
tasks of the task flows the run's steps make."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from stepgraph.cli.progress import Progress, StepCounts, _Renderable
from stepgraph.core import StepCompleted


def future(uid: str, name: str) -> Any:
    return SimpleNamespace(uid=uid, name=name)


def test_the_live_region_shows_steps_then_tasks_with_their_counts() -> None:
    progress = Progress("live", io.StringIO())
    progress.workflow = "Campaign"
    progress.steps["run_tasks"] = StepCounts(running=1)
    flow: Any = None
    progress.task_started(flow, future("t1", "simulate"))
    progress.task_started(flow, future("t2", "simulate"))
    progress.task_resolved(flow, future("t1", "simulate"))
    progress.task_failed(flow, future("t3", "analyze"), ValueError("never ran"))
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(_Renderable(progress))
    lines = [" ".join(line.split()[1:]) for line in out.getvalue().splitlines()]  # no mark
    assert lines[1:] == [
        "run_tasks running done 0",
        "task simulate running done 1",
        "task analyze failed done 0, failed 1",
    ]
    summary = progress.summary("completed")
    assert "tasks done: simulate" in summary and "tasks failed: analyze" in summary


def test_a_step_the_run_end_stopped_shows_stopped_not_done() -> None:
    progress = Progress("live", io.StringIO())
    progress.workflow = "Chain"
    run: Any = SimpleNamespace(state=SimpleNamespace(superstep=3))
    progress.step_started(run, "hop", 1, 1, None)
    progress.step_ended(run, "hop", 1, 1, StepCompleted(invocation=1))
    progress.step_started(run, "hop", 2, 1, None)
    progress.step_ended(run, "hop", 2, 1, None)  # interrupted: the run was cancelled
    progress.task_cancelled(None, future("t1", "simulate"))  # type: ignore[arg-type]
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(_Renderable(progress))
    lines = [" ".join(line.split()[1:]) for line in out.getvalue().splitlines()]  # no mark
    assert lines[1:] == ["hop stopped done 1, stopped 1", "task simulate stopped done 0, stopped 1"]


def test_the_summary_names_the_last_superstep_a_step_ran_in() -> None:
    progress = Progress("plain", io.StringIO())
    progress.workflow = "Graph"
    run: Any = SimpleNamespace(state=SimpleNamespace(superstep=1))
    progress.step_started(run, "first", 0, 1, None)
    run.state.superstep = 2  # past the barrier of superstep 1: the next one would be 2
    progress.superstep_ended(run, 1)  # a graph run ends there: nothing is left to deliver
    assert "superstep 1 |" in progress.summary("completed")
