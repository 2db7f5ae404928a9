"""Timelines drawn from event logs: what is read from a log, and that both panels are drawn.

The logs are real ones, written by a step workflow and a TaskFlow in the test, plus one
recorded campaign kept as data (``data/campaign.jsonl``, made by
``data/make_campaign_log.py``). Images are checked where their panels are: the panels'
pixel boxes come from the figure's axes, not from guesses.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest

pytest.importorskip("matplotlib")  # the extra "plot" (numpy comes with it)

import numpy as np

from stepgraph import Context, Event, RetryPolicy, StartEvent, StopEvent, Workflow, step
from stepgraph.backends import InlineBackend, ThreadBackend
from stepgraph.errors import MissingExtraError
from stepgraph.tasks import DependencyFailed, TaskFlow
from stepgraph.telemetry import EVENT_LOG_SCHEMA
from stepgraph.telemetry.plot import plot_timeline, read_timeline, timeline_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CAMPAIGN = Path(__file__).with_name("data") / "campaign.jsonl"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- the logs --------------------------------------------------------------------------------


class Part(Event):
    n: int


class Done(Event):
    n: int


class Pipeline(Workflow):
    """Fans out three parts; part 1 fails once and is retried; checking part 2 fails."""

    @step
    async def split(self, ctx: Context, ev: StartEvent) -> None:
        for n in range(3):
            ctx.send_event(Part(n=n))

    @step(num_workers=3, retry_policy=RetryPolicy(max_attempts=2))
    async def work(self, ctx: Context, ev: Part) -> Done:
        tries = await ctx.store.update(f"tries-{ev.n}", lambda t: (t or 0) + 1)
        if ev.n == 1 and tries == 1:
            raise ConnectionError("flaky")
        return Done(n=ev.n)

    @step
    async def check(self, ctx: Context, ev: Done) -> StopEvent | None:
        if ev.n == 2:
            raise ValueError("bad part")
        return None


async def step_log(path: Path) -> Path:
    with pytest.raises(ValueError, match="bad part"):
        await Pipeline(event_log=path).run()
    return path


async def task_log(path: Path) -> Path:
    """Three simulations on 2 cpu slots (two of them provably at once), analyses on the
    one gpu slot, a failure, a task that never runs because of it, one cancelled."""
    backends = {"default": InlineBackend(), "threads": ThreadBackend(2)}
    async with TaskFlow(
        backends, resources={"cpu": 2, "gpu": 1}, event_log=path, uid="flow-plot"
    ) as flow:
        both = asyncio.Event()
        running = 0

        @flow.function_task(resources={"cpu": 1})
        async def simulate(i: int) -> int:
            nonlocal running
            running += 1
            if running == 2:
                both.set()
            await both.wait()  # the first two hold both cpu slots together
            return i

        @flow.function_task(backend="threads", resources={"gpu": 1})
        def analyze(x: int) -> int:
            return x * 2

        @flow.function_task
        def broken(x: int) -> int:
            raise KeyError(x)

        @flow.function_task(backend="threads", resources={"cpu": 1})
        def after(x: int) -> int:
            return x

        @flow.block
        async def member(i: int) -> int:
            return await analyze(simulate(i))

        async with flow.workflow_scope("campaign"):
            assert await asyncio.gather(*(member(i) for i in range(3))) == [0, 2, 4]
        with pytest.raises(DependencyFailed):
            await after(broken(1))
        cancelled = after(simulate(9))
        cancelled.cancel()
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, found: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in found))
    return path


# -- the image -------------------------------------------------------------------------------


def ink(region: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Pixels that are drawn on purpose: coloured or dark (not white, not a light grid)."""
    rgb = region[..., :3]
    coloured = rgb.max(axis=-1) - rgb.min(axis=-1) > 0.15
    dark = rgb.max(axis=-1) < 0.5
    return coloured | dark  # type: ignore[no-any-return]


def panels(png: Path, figure: Figure) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The image's pixels inside the Gantt and inside the utilisation panel (spines
    excluded), after checking that it is a PNG of the figure's size."""
    from matplotlib.image import imread

    assert png.read_bytes()[:8] == PNG_MAGIC
    image = imread(png)
    height, width = image.shape[:2]
    expected = figure.get_size_inches() * figure.dpi
    assert (width, height) == (round(expected[0]), round(expected[1]))
    figure.canvas.draw()  # the constrained layout places the axes when drawn
    gantt, usage = figure.axes[:2]
    boxes = []
    for ax in (gantt, usage):
        box = ax.get_window_extent()  # pixels, from the bottom left
        top, bottom = height - int(box.y1) + 3, height - int(box.y0) - 3
        left, right = int(box.x0) + 3, int(box.x1) - 3
        assert 0 <= top < bottom <= height and 0 <= left < right <= width
        boxes.append((top, bottom, left, right))
    assert boxes[0][1] < boxes[1][0]  # the Gantt above, the utilisation below
    return tuple(image[t:b, lo:hi] for t, b, lo, hi in boxes)  # type: ignore[return-value]


def assert_both_panels_drawn(png: Path, figure: Figure) -> tuple[Any, Any]:
    top, bottom = panels(png, figure)
    for region in (top, bottom):
        drawn = int(ink(region).sum())
        assert drawn >= max(400, region.shape[0] * region.shape[1] // 200), drawn
    return top, bottom


def red(region: np.ndarray[Any, Any]) -> int:
    r, g, b = region[..., 0], region[..., 1], region[..., 2]
    return int(((r > 0.75) & (g < 0.3) & (b < 0.3)).sum())


# -- step workflows --------------------------------------------------------------------------


async def test_a_step_run_with_a_retry_and_a_failure_is_drawn(tmp_path: Path) -> None:
    log = await step_log(tmp_path / "events.jsonl")
    timeline = read_timeline(log)
    assert timeline.clock == "monotonic" and timeline.runs == 1 and timeline.flows == 0
    assert timeline.rows == ["split", "work", "check"]  # one workflow: bare step names
    outcomes = [(s.row, s.outcome) for s in timeline.spans]
    assert outcomes.count(("work", "retried")) == 1
    assert outcomes.count(("work", "completed")) == 3  # parts 0 and 2, and part 1's retry
    assert ("check", "failed") in outcomes
    assert timeline.marks == [] and timeline.utilisation == {}
    assert max(v for _, v in timeline.in_flight) >= 1
    assert timeline.in_flight[-1][1] == 0  # every attempt ended
    assert all(0 <= s.start <= s.end <= timeline.duration for s in timeline.spans)

    png = tmp_path / "out" / "steps.png"  # its folder is made
    plot_timeline(log, png)
    top, _ = assert_both_panels_drawn(png, timeline_figure(log))
    assert red(top) > 10  # the failure's red edge and x


# -- task flows ------------------------------------------------------------------------------


async def test_a_task_flow_is_drawn_with_the_slots_its_tasks_held(tmp_path: Path) -> None:
    log = await task_log(tmp_path / "events.jsonl")
    timeline = read_timeline(log)
    assert timeline.flows == 1 and timeline.runs == 0
    assert timeline.peaks == {"cpu": 2, "gpu": 1}  # two simulations at once; never more
    assert timeline.capacity == {"cpu": 2, "gpu": 1}  # as the flow declared it (its log says)
    assert all(points[-1][1] == 0 for points in timeline.utilisation.values())
    assert {"simulate", "analyze", "member (block)", "broken"} <= set(timeline.rows)
    assert {(m.row, m.outcome) for m in timeline.marks} >= {
        ("after", "failed"),  # DependencyFailed: it never ran
        ("after", "cancelled"),
    }
    assert [s.outcome for s in timeline.spans if s.row == "broken"] == ["failed"]
    in_flight = max(v for _, v in timeline.in_flight)
    assert 2 <= in_flight <= 3  # blocks are not counted

    png = tmp_path / "tasks.png"
    capacity = {"cpu": 2, "gpu": 1}
    plot_timeline(log, png, capacity=capacity)
    top, _ = assert_both_panels_drawn(png, timeline_figure(log, capacity=capacity))
    assert red(top) > 10


async def test_steps_and_tasks_in_one_log_share_the_chart(tmp_path: Path) -> None:
    log = await task_log(await step_log(tmp_path / "events.jsonl"))
    timeline = read_timeline(log)
    assert timeline.runs == 1 and timeline.flows == 1
    assert timeline.rows[:3] == ["Pipeline.split", "Pipeline.work", "Pipeline.check"]
    assert "simulate" in timeline.rows
    png = tmp_path / "both.png"
    plot_timeline(log, png)
    assert_both_panels_drawn(png, timeline_figure(log))

    by_backend = read_timeline(log, by="backend")
    assert by_backend.rows == timeline.rows
    assert set(by_backend.colours) == {"steps (no backend)", "default", "threads"}
    run_id = next(r["run_id"] for r in records(log) if "run_id" in r)
    by_workflow = read_timeline(log, by="workflow")  # a run is its own workflow instance
    assert by_workflow.rows == [
        f"Pipeline {run_id[:8]}\u2026{run_id[-4:]}",
        "campaign",
        "(no workflow)",
    ]
    assert {"Pipeline.work", "simulate"} <= set(by_workflow.colours)


# -- the recorded campaign -------------------------------------------------------------------


def test_the_recorded_campaign_is_a_valid_event_log() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(Path(EVENT_LOG_SCHEMA).read_text()))
    found = records(CAMPAIGN)
    for record in found:
        validator.validate(record)
    kinds = {r["kind"] for r in found}
    assert {"task_started", "task_failed", "task_cancelled", "task_submitted"} <= kinds
    assert {r["workflow_id"] for r in found} == {"campaign-1", "campaign-2"}


@pytest.mark.parametrize("by", ["auto", "backend", "workflow"])
def test_the_recorded_campaign_is_drawn_by_name_backend_or_workflow(
    tmp_path: Path, by: str
) -> None:
    timeline = read_timeline(CAMPAIGN, by=by)
    assert timeline.peaks == {"cpu": 2, "gpu": 1}
    names = {"member (block)", "prepare", "simulate", "analyze", "train", "report"}
    if by == "workflow":
        assert sorted(timeline.rows) == ["campaign-1", "campaign-2"]
        assert set(timeline.colours) == names
    else:
        assert set(timeline.rows) == names
        assert set(timeline.colours) == ({"default", "inline"} if by == "backend" else names)
    failed = [m for m in timeline.marks if m.outcome == "failed"]
    assert len(failed) == 2  # campaign-2's analysis and training never ran
    assert [m.outcome for m in timeline.marks if m.outcome != "failed"] == ["cancelled"]

    png = tmp_path / f"campaign-{by}.png"
    plot_timeline(CAMPAIGN, png, by=by, capacity={"cpu": 2, "gpu": 1})
    top, _ = assert_both_panels_drawn(png, timeline_figure(CAMPAIGN, by=by, capacity=None))
    assert red(top) > 10


def test_the_suffix_picks_the_format_png_without_one(tmp_path: Path) -> None:
    out = tmp_path / "campaign.svg"
    plot_timeline(CAMPAIGN, out)
    assert out.read_text().lstrip().startswith("<?xml")
    bare = tmp_path / "campaign"
    plot_timeline(CAMPAIGN, bare)
    assert bare.read_bytes()[:8] == PNG_MAGIC


# -- the time axis ---------------------------------------------------------------------------


def test_one_clock_uses_monotonic_time_several_clocks_use_wall_time(tmp_path: Path) -> None:
    found = records(CAMPAIGN)
    same = read_timeline(CAMPAIGN)
    assert same.clock == "monotonic"
    # the same campaign again, 10 s later on another machine: its monotonic clock differs
    elsewhere = [
        {**r, "flow_id": "remote", "time": r["time"] + 10.0, "monotonic": r["monotonic"] - 4e5}
        for r in found
    ]
    mixed = read_timeline(write(tmp_path / "mixed.jsonl", found + elsewhere))
    assert mixed.clock == "wall" and mixed.flows == 2
    assert mixed.duration == pytest.approx(10.0 + same.duration, abs=0.01)
    assert mixed.peaks == same.peaks  # the two campaigns never overlap in wall time
    starts = sorted(s.start for s in mixed.spans)
    assert starts[0] < 1.0 and starts[-1] > 10.0
    # processes of one machine share its monotonic clock: their offsets agree
    local = [
        {**r, "flow_id": "local", "time": r["time"] + 10, "monotonic": r["monotonic"] + 10}
        for r in found
    ]
    assert read_timeline(write(tmp_path / "local.jsonl", found + local)).clock == "monotonic"
    out = tmp_path / "mixed.png"
    plot_timeline(tmp_path / "mixed.jsonl", out)
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_records_of_one_instant_keep_their_order(tmp_path: Path) -> None:
    """A virtual clock (or a coarse one) gives records the same time: what happened in
    between still counts, in the log's order."""
    frozen = [{**r, "time": 1.7e9, "monotonic": 0.0} for r in records(CAMPAIGN)]
    timeline = read_timeline(write(tmp_path / "frozen.jsonl", frozen))
    assert timeline.duration == 0 and timeline.peaks == {"cpu": 2, "gpu": 1}
    assert all(s.start == s.end == 0 for s in timeline.spans)
    png = tmp_path / "frozen.png"
    plot_timeline(tmp_path / "frozen.jsonl", png)
    assert png.read_bytes()[:8] == PNG_MAGIC


# -- logs that are empty, torn or cut short --------------------------------------------------


def test_an_empty_log_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.jsonl: the event log is empty"):
        plot_timeline(empty, tmp_path / "out.png")
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b'{"schema_version":1,"kind":"task_sta\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"torn\.jsonl: the event log is empty"):
        plot_timeline(torn, tmp_path / "out.png")
    runs_only = write(
        tmp_path / "runs.jsonl",
        [{"schema_version": 1, "kind": "run_started", "time": 1.0, "monotonic": 1.0}],
    )
    with pytest.raises(ValueError, match=r"runs\.jsonl: .* no step or task records"):
        plot_timeline(runs_only, tmp_path / "out.png")
    ends_only = write(  # the end of a step whose start the log lacks: no bar to draw
        tmp_path / "ends.jsonl",
        [{"schema_version": 1, "kind": "step_completed", "time": 2.0, "monotonic": 2.0,
          "run_id": "r", "workflow": "W", "step": "s", "invocation": 0, "attempt": 1}],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"ends\.jsonl: .* no step or task records"):
        plot_timeline(ends_only, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_torn_lines_are_skipped(tmp_path: Path) -> None:
    lines = CAMPAIGN.read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    torn = [*lines[:middle], lines[middle][:40] + b"\n", *lines[middle:], lines[-1][:25]]
    log = tmp_path / "torn.jsonl"
    log.write_bytes(b"".join(torn))
    whole, cut = read_timeline(CAMPAIGN), read_timeline(log)
    assert (cut.rows, cut.spans, cut.marks, cut.utilisation) == (
        whole.rows,
        whole.spans,
        whole.marks,
        whole.utilisation,
    )
    png = tmp_path / "torn.png"
    plot_timeline(log, png)
    assert_both_panels_drawn(png, timeline_figure(log))


def test_a_run_that_ends_closes_the_bars_of_its_steps_still_running(tmp_path: Path) -> None:
    base = {"schema_version": 1, "run_id": "r", "workflow": "W", "invocation": 0, "attempt": 1}
    log = write(
        tmp_path / "cancelled.jsonl",
        [
            {**base, "kind": "run_started", "time": 1.0, "monotonic": 1.0, "mode": "async"},
            {**base, "kind": "step_started", "time": 1.0, "monotonic": 1.0, "step": "slow"},
            {**base, "kind": "run_cancelled", "time": 2.0, "monotonic": 2.0},
            {**base, "kind": "run_started", "time": 5.0, "monotonic": 5.0, "run_id": "later",
             "mode": "async"},
        ],
    )  # fmt: skip
    timeline = read_timeline(log)
    (slow,) = timeline.spans
    assert (slow.outcome, slow.start, slow.end) == ("cancelled", 0.0, 1.0)  # not open to 4.0
    assert timeline.in_flight[-1] == (1.0, 0)


def test_a_log_cut_short_leaves_its_running_bars_open_to_its_end(tmp_path: Path) -> None:
    found = records(CAMPAIGN)
    log = write(tmp_path / "half.jsonl", found[: len(found) // 2])
    timeline = read_timeline(log)
    still = [s for s in timeline.spans if s.outcome == "open"]
    assert still and all(s.end == timeline.duration for s in still)
    assert all(points[-1][1] == 0 for points in timeline.utilisation.values())  # given back
    png = tmp_path / "half.png"
    plot_timeline(log, png)
    assert_both_panels_drawn(png, timeline_figure(log))


# -- arguments and the optional extra --------------------------------------------------------


def test_bad_arguments_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"by='task'.*'auto', 'backend', 'workflow'"):
        plot_timeline(CAMPAIGN, tmp_path / "out.png", by="task")
    with pytest.raises(ValueError, match=r"capacity=\{'gpu': -1\}"):
        plot_timeline(CAMPAIGN, tmp_path / "out.png", capacity={"gpu": -1})


def test_without_matplotlib_it_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'stepgraph\[plot\]'") as caught:
        plot_timeline(CAMPAIGN, tmp_path / "out.png")
    assert isinstance(caught.value, ImportError) and caught.value.extra == "plot"
    assert "plotting timelines needs matplotlib" in str(caught.value)
    assert not (tmp_path / "out.png").exists()


def test_matplotlib_is_imported_only_when_drawing() -> None:
    code = (
        "import sys, stepgraph.telemetry.plot as p, stepgraph.telemetry as t\n"
        "assert 'matplotlib' not in sys.modules, 'imported early'\n"
        "p.read_timeline(sys.argv[1])\n"
        "assert 'matplotlib' not in sys.modules, 'imported to read'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(CAMPAIGN)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
