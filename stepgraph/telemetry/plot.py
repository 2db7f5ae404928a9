"""Timelines of event logs: a Gantt of step runs and tasks over the resources they held.

:func:`plot_timeline` reads a JSONL event log (see :mod:`stepgraph.telemetry.event_log`)
and draws two panels sharing one time axis:

- **top**, a Gantt: one row per step (``Workflow.step`` when the log holds several
  workflows, or tasks too) and per task name, or per workflow instance with
  ``by="workflow"`` (a task's ``workflow_id``, a step run's ``run_id``). A bar is one
  step attempt (``step_started`` to ``step_completed``/``step_failed``/``step_retried``,
  keyed by ``run_id``, ``step``, ``invocation`` and ``attempt``) or one task body
  (``task_started`` to ``task_resolved``/``task_failed``/``task_cancelled``, keyed by
  ``flow_id`` and ``task_id``). Bars that run at once in one row are stacked in lanes.
  Colours follow the step or task name, or the backend with ``by="backend"``. A failed
  bar has a red edge and a red x at its end, a retried attempt an orange edge and an
  orange circle, a cancelled one a grey square; a task that never ran gets its marker
  alone: a grey square if cancelled, a pale red x if it failed (a ``DependencyFailed``,
  or a log that lost its start). Blocks are drawn pale: they are groups of tasks. A bar
  still open at the log's end (a crash, or a log read while it is written) is hatched
  and runs to the log's last record.
- **bottom**, utilisation: per resource name, the sum of the claims (``resources``) of
  the tasks that hold their slots, as a step line. A task takes its slots at
  ``task_submitted`` (see :class:`stepgraph.tasks.TaskObserver`) and gives them back
  when it ends, so that is the interval counted (``task_started`` when a log has no
  submission). The capacity a flow declared (its ``flow_started`` record; the most of
  each resource over the log's flows, or ``capacity=``) is drawn as a dashed line; a
  resource no flow declared gets its observed peak, dotted. On the right axis, in grey,
  the number of step attempts and tasks in flight (blocks are not counted). A run's end
  closes the bars of its steps still running (stopped with it: drawn cancelled).

**The time axis** is seconds since the log's first record. Every record carries both
``monotonic`` and ``time`` (wall clock). Monotonic time is exact but only comparable
between records read from one monotonic clock, so the plot uses it when the log holds
one: when ``time - monotonic`` is the same (within 1 s) for every record, which holds
for one process, and for the processes of one machine (their monotonic clock is the
system's). Otherwise (records from several machines, a clock set back, a durable run
resumed after a reboot) the plot uses ``time``, the wall clock, for every record. The
axis label says which clock was used.

Matplotlib is an optional dependency (the extra ``plot``); it is imported when a plot is
drawn, and the figure is drawn with the Agg canvas without touching pyplot's state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import MissingExtraError
from .event_log import read_events

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Mark", "Span", "Timeline", "plot_timeline", "read_timeline", "timeline_figure"]

Outcome = Literal["completed", "failed", "retried", "cancelled", "open"]

BY_CHOICES: tuple[str, ...] = ("auto", "backend", "workflow")
SAME_CLOCK_TOLERANCE = 1.0
"""Records whose ``time - monotonic`` agree within this many seconds share a clock."""

_ENDS: dict[str, Outcome] = {
    "step_completed": "completed",
    "step_failed": "failed",
    "step_retried": "retried",
    "task_resolved": "completed",
    "task_failed": "failed",
    "task_cancelled": "cancelled",
}
_RUN_ENDS = frozenset(("run_completed", "run_failed", "run_cancelled"))
_MARKERS: dict[str, tuple[str, str, str]] = {  # outcome: marker, colour, legend label
    "failed": ("x", "#d62728", "failed"),
    "retried": ("o", "#ff7f0e", "retried"),
    "cancelled": ("s", "#7f7f7f", "cancelled"),
    "unrun": ("x", "#f4a09c", "failed before it ran"),  # a dependency failed
}
_EDGES = {"failed": "#d62728", "retried": "#ff7f0e", "cancelled": "#7f7f7f", "open": "#333333"}
_HUES = (0, 4, 8, 10, 12, 16, 18, 1, 5, 9, 11, 13, 17, 19)  # tab20: dark hues, then light
_MIN_WIDTH = 0.003  # of the time span: an instant's bar stays visible
_SEPARATED = 5.0  # points: bars at least this thick get a white edge between them
_LABELLED_ROWS = 60
_LABEL_CHARS = 32
_MAX_LEGEND = 12
_NO_BACKEND = "steps (no backend)"  # what steps are coloured by with by="backend"
_WIDTH_INCHES = 11.0
_DPI = 100


@dataclass(frozen=True, slots=True)
class Span:
    """One bar: a step attempt or a task body, in seconds since the log's first record."""

    row: str
    colour: str
    start: float
    end: float
    outcome: Outcome
    kind: Literal["step", "task", "block"]


@dataclass(frozen=True, slots=True)
class Mark:
    """The end of a step or task that has no bar: it never started (or its start was lost)."""

    row: str
    colour: str
    time: float
    outcome: Outcome


@dataclass(slots=True)
class Timeline:
    """What :func:`read_timeline` found in an event log, ready to draw.

    ``utilisation`` maps each resource to its claims held over time and ``in_flight`` is
    the number of step attempts and (non-block) tasks running: both are step functions,
    as ``(time, value from that time on)`` points starting at ``(0.0, 0)``.
    """

    path: Path
    clock: Literal["monotonic", "wall"]
    duration: float
    rows: list[str]
    spans: list[Span]
    marks: list[Mark]
    utilisation: dict[str, list[tuple[float, int]]]
    in_flight: list[tuple[float, int]]
    runs: int = 0
    flows: int = 0
    colours: list[str] = field(default_factory=list)
    capacity: dict[str, int] = field(default_factory=dict)  # the most a flow declared

    @property
    def peaks(self) -> dict[str, int]:
        """The most slots of each resource held at once."""
        return {name: max(v for _, v in points) for name, points in self.utilisation.items()}


def _short(text: str, limit: int = _LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _seconds(value: float) -> str:
    if value < 1.0:
        return f"{value * 1000:.3g} ms"
    if value < 600.0:
        return f"{value:.3g} s"
    if value < 36_000.0:
        return f"{value / 60:.3g} min"
    return f"{value / 3600:.3g} h"


def _run_label(workflow: str, run_id: str) -> str:
    short = run_id if len(run_id) <= 12 else f"{run_id[:8]}\u2026{run_id[-4:]}"
    return f"{_short(workflow, 20)} {short}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _claims(record: Mapping[str, Any]) -> dict[str, int]:
    found = record.get("resources")
    if not isinstance(found, dict):
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, int) and not isinstance(v, bool)}


def _steps(changes: list[tuple[float, int, int]]) -> list[tuple[float, int]]:
    """A step function from ``(time, order, delta)`` changes: ``(time, value)`` points.

    Changes at one time are kept apart, in the log's order: a coarse clock (or a virtual
    one) gives many records the same time, and their values in between still happened.
    """
    points = [(0.0, 0)]
    value = 0
    for when, _, delta in sorted(changes):
        value += delta
        points.append((when, value))
    return points


def read_timeline(events_path: str | os.PathLike[str], *, by: str = "auto") -> Timeline:
    """Read an event log into a :class:`Timeline` (rows, bars, markers and utilisation).

    ``by`` is as for :func:`plot_timeline`. Lines cut by a crash are skipped.

    Raises:
        ValueError: ``by`` is not one of its choices, or the log holds no records, or
            no step or task records.
    """
    if by not in BY_CHOICES:
        choices = ", ".join(repr(c) for c in BY_CHOICES)
        raise ValueError(f"plot_timeline(by={by!r}): expected one of {choices}")
    path = Path(events_path)
    records: list[tuple[float, float, dict[str, Any]]] = []
    for record in read_events(path):
        wall, mono = _number(record.get("time")), _number(record.get("monotonic"))
        if wall is not None and mono is not None and isinstance(record.get("kind"), str):
            records.append((wall, mono, record))
    if not records:
        raise ValueError(f"{path}: the event log is empty (it holds no whole records)")
    if not any(r["kind"].startswith(("step_", "task_")) for _, _, r in records):
        raise ValueError(
            f"{path}: the event log holds no step or task records to draw "
            f"({len(records)} records of other kinds)"
        )

    offsets = [wall - mono for wall, mono, _ in records]
    clock: Literal["monotonic", "wall"] = (
        "monotonic" if max(offsets) - min(offsets) <= SAME_CLOCK_TOLERANCE else "wall"
    )
    times = [mono if clock == "monotonic" else wall for wall, mono, _ in records]
    origin = min(times)
    duration = max(times) - origin

    workflows = {str(r.get("workflow")) for _, _, r in records if r["kind"].startswith("step_")}
    has_tasks = any(r["kind"].startswith("task_") for _, _, r in records)
    qualify = len(workflows) > 1 or has_tasks

    def place(record: Mapping[str, Any]) -> tuple[str, str]:
        """The row and the colour key of a step or task record."""
        if record["kind"].startswith("step_"):
            workflow, step = str(record.get("workflow", "?")), str(record.get("step", "?"))
            name = _short(f"{workflow}.{step}" if qualify else step)
            if by == "workflow":
                return _run_label(workflow, str(record.get("run_id", "?"))), name
            return name, (_NO_BACKEND if by == "backend" else name)
        name = _short(str(record.get("task", "?")))
        if record.get("task_kind") == "block":
            name = _short(str(record.get("task", "?")), _LABEL_CHARS - 8) + " (block)"
        if by == "workflow":
            return _short(str(record.get("workflow_id", "(no workflow)"))), name
        return name, (str(record.get("backend", "?")) if by == "backend" else name)

    ordered = sorted(
        ((t - origin, i, r) for i, (t, (_, _, r)) in enumerate(zip(times, records, strict=True))),
        key=lambda item: (item[0], item[1]),
    )
    spans: list[Span] = []
    marks: list[Mark] = []
    first_bar: dict[str, tuple[float, int]] = {}  # rows in the order of their first bar,
    first_mark: dict[str, tuple[float, int]] = {}  # or of their first marker if they have none
    colours: dict[str, None] = {}
    running: dict[tuple[Any, ...], tuple[float, str, str, Literal["step", "task", "block"]]] = {}
    holding: dict[tuple[Any, ...], dict[str, int]] = {}
    resource_changes: dict[str, list[tuple[float, int, int]]] = {}
    flight_changes: list[tuple[float, int, int]] = []
    run_ids: set[str] = set()
    flow_ids: set[str] = set()

    def take(key: tuple[Any, ...], when: float, order: int, claims: dict[str, int]) -> None:
        if key in holding:
            return
        holding[key] = claims
        for name, amount in claims.items():
            resource_changes.setdefault(name, []).append((when, order, amount))

    def give_back(key: tuple[Any, ...], when: float, order: int) -> None:
        for name, amount in holding.pop(key, {}).items():
            resource_changes.setdefault(name, []).append((when, order, -amount))

    def close(key: tuple[Any, ...], when: float, order: int, outcome: Outcome) -> bool:
        opened = running.pop(key, None)
        if opened is None:
            return False
        start, row, colour, kind = opened
        spans.append(Span(row, colour, start, when, outcome, kind))
        if kind != "block":
            flight_changes.append((when, order, -1))
        return True

    capacity: dict[str, int] = {}
    for when, order, record in ordered:
        kind = record["kind"]
        if kind == "flow_started":
            declared = record.get("capacity")
            for name, slots in declared.items() if isinstance(declared, dict) else ():
                if isinstance(slots, int):
                    capacity[str(name)] = max(capacity.get(str(name), 0), slots)
            continue
        if kind in _RUN_ENDS:  # its steps still running were stopped with it
            run_id = record.get("run_id")
            for stopped in [k for k in running if k[0] == "step" and k[1] == run_id]:
                close(stopped, when, order, "cancelled")
            continue
        if kind.startswith("step_"):
            run_ids.add(str(record.get("run_id")))
            key: tuple[Any, ...] = (
                "step",
                record.get("run_id"),
                record.get("workflow"),
                record.get("step"),
                record.get("invocation"),
                record.get("attempt"),
            )
        elif kind.startswith("task_"):
            flow_ids.add(str(record.get("flow_id")))
            key = ("task", record.get("flow_id"), record.get("task_id"))
        else:
            continue
        row, colour = place(record)
        if kind in ("step_started", "task_started"):
            first_bar.setdefault(row, (when, order))
            colours.setdefault(colour)
            close(key, when, order, "open")  # started again (a resumed run): the first is cut
            what: Literal["step", "task", "block"] = "step" if kind == "step_started" else "task"
            if record.get("task_kind") == "block":
                what = "block"
            running[key] = (when, row, colour, what)
            if what != "block":
                flight_changes.append((when, order, 1))
            if kind == "task_started":  # no submission in the log: count from the start
                take(key, when, order, _claims(record))
        elif kind == "task_submitted":
            take(key, when, order, _claims(record))
        elif kind in _ENDS:
            outcome = _ENDS[kind]
            give_back(key, when, order)
            if not close(key, when, order, outcome) and outcome != "completed":
                first_mark.setdefault(row, (when, order))
                colours.setdefault(colour)
                marks.append(Mark(row, colour, when, outcome))
    end = duration
    for key in list(running):
        close(key, end, len(records), "open")
    for key in list(holding):
        give_back(key, end, len(records))

    rows = sorted(first_mark | first_bar, key=lambda row: first_bar.get(row) or first_mark[row])
    if not rows:  # ends of steps or tasks whose starts the log lacks, say
        raise ValueError(
            f"{path}: the event log holds no step or task records to draw (none of its "
            f"{len(records)} records starts a step or a task, or marks one's failure)"
        )
    return Timeline(
        path=path,
        clock=clock,
        duration=duration,
        rows=rows,
        spans=spans,
        marks=marks,
        utilisation={name: _steps(changes) for name, changes in resource_changes.items()},
        in_flight=_steps(flight_changes),
        runs=len(run_ids),
        flows=len(flow_ids),
        colours=list(colours),
        capacity=capacity,
    )


def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise MissingExtraError("plotting timelines", "matplotlib", "plot") from error


def _palette(count: int) -> list[tuple[float, float, float, float]]:
    """Colours for bars and lines: tab20's without red, orange and grey (the markers')."""
    from matplotlib import colormaps

    table = colormaps["tab20"]
    return [table(_HUES[i % len(_HUES)]) for i in range(count)]


def _lanes(spans: Sequence[Span], least: float) -> tuple[list[int], dict[str, int]]:
    """A lane per span so that bars of one row never overlap, and the lanes per row."""
    lane_of = [0] * len(spans)
    ends: dict[str, list[float]] = {}
    for index in sorted(range(len(spans)), key=lambda i: (spans[i].start, i)):
        span = spans[index]
        lanes = ends.setdefault(span.row, [])
        stop = max(span.end, span.start + least)
        for lane, busy_until in enumerate(lanes):
            if busy_until <= span.start:
                lanes[lane] = stop
                lane_of[index] = lane
                break
        else:
            lane_of[index] = len(lanes)
            lanes.append(stop)
    return lane_of, {row: len(lanes) for row, lanes in ends.items()}


def _gantt(ax: Axes, timeline: Timeline, by: str, width: float, inches: float) -> None:
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = {row: i for i, row in enumerate(timeline.rows)}
    colour_of = dict(zip(timeline.colours, _palette(len(timeline.colours)), strict=True))
    least = width * _MIN_WIDTH
    lane_of, lanes = _lanes(timeline.spans, least)
    groups: dict[tuple[bool, bool], tuple[list[Any], list[Any], list[Any], list[float]]] = {}
    markers: dict[str, tuple[list[float], list[float]]] = {}
    for span, lane in zip(timeline.spans, lane_of, strict=True):
        count = lanes.get(span.row, 1)
        thick = inches * 72 * 0.8 / (len(rows) * count) >= _SEPARATED  # in points
        height = 0.8 / count
        bottom = rows[span.row] - 0.4 + lane * height
        top = bottom + height * (0.9 if count > 1 else 1.0)
        left, right = span.start, max(span.end, span.start + least)
        verts, faces, edges, widths = groups.setdefault(
            (span.outcome == "open", span.kind == "block"), ([], [], [], [])
        )
        verts.append([(left, bottom), (left, top), (right, top), (right, bottom)])
        faces.append(colour_of[span.colour])
        edges.append(_EDGES.get(span.outcome, "white"))  # white: bars end to end stay apart
        widths.append(1.6 if span.outcome in _EDGES else 0.6 if thick else 0.0)
        if span.outcome in _MARKERS:
            xs, ys = markers.setdefault(span.outcome, ([], []))
            xs.append(right)
            ys.append((bottom + top) / 2)
    for (is_open, is_block), (verts, faces, edges, widths) in groups.items():
        ax.add_collection(
            PolyCollection(
                verts,
                facecolors=faces,
                edgecolors=edges,
                linewidths=widths,
                alpha=0.35 if is_block else 0.9,
                hatch="///" if is_open else None,
                zorder=2,
            )
        )
    for mark in timeline.marks:
        style: str = "unrun" if mark.outcome == "failed" else mark.outcome
        xs, ys = markers.setdefault(style, ([], []))
        xs.append(mark.time)
        ys.append(float(rows[mark.row]))
    handles: list[Any] = []
    for style in [style for style in _MARKERS if style in markers]:
        xs, ys = markers[style]
        marker, colour, label = _MARKERS[style]
        hollow = marker != "x"
        ax.plot(
            xs,
            ys,
            linestyle="none",
            marker=marker,
            markersize=7,
            markerfacecolor="none" if hollow else colour,
            markeredgecolor=colour,
            markeredgewidth=1.6,
            zorder=3,
        )
        handles.append(
            Line2D(
                [],
                [],
                marker=marker,
                linestyle="none",
                color=colour,
                markerfacecolor="none" if hollow else colour,
                label=label,
            )
        )
    if any(span.outcome == "open" for span in timeline.spans):
        handles.append(Patch(facecolor="white", edgecolor="#333333", hatch="///", label="open"))
    if by != "auto":
        shown = timeline.colours[:_MAX_LEGEND]
        prefix = "backend " if by == "backend" else ""
        handles.extend(
            Patch(color=colour_of[key], label=(key if key == _NO_BACKEND else prefix + key))
            for key in shown
        )
        if len(timeline.colours) > len(shown):
            handles.append(Patch(color="none", label=f"+{len(timeline.colours) - len(shown)}"))
    count = len(timeline.rows)
    ax.set_ylim(count - 0.5, -0.5)
    if count <= _LABELLED_ROWS:
        ax.set_yticks(range(count))
        ax.set_yticklabels(timeline.rows, fontsize=8)
    else:  # too many to read: the label counts them
        ax.set_yticks([])
    ax.grid(axis="x", color="#dddddd", linewidth=0.6, zorder=0)
    if by == "workflow":
        label = "workflow instances"
    else:
        label = " and ".join(
            n for n, k in (("steps", timeline.runs), ("tasks", timeline.flows)) if k
        )
    ax.set_ylabel(label if count <= _LABELLED_ROWS else f"{count} rows of {label}")
    if handles:
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
        )


def _utilisation(ax: Axes, timeline: Timeline, capacity: Mapping[str, int], end: float) -> None:
    from matplotlib.ticker import MaxNLocator

    names = list(timeline.utilisation) + [n for n in capacity if n not in timeline.utilisation]
    handles: list[Any] = []
    flight = [*timeline.in_flight, (end, timeline.in_flight[-1][1])]
    fx, fy = [t for t, _ in flight], [v for _, v in flight]
    if names:
        counts = ax.twinx()
        counts.fill_between(fx, fy, step="post", color="#bbbbbb", alpha=0.5, linewidth=0)
        (line,) = counts.step(fx, fy, where="post", color="#777777", linewidth=0.8)
        line.set_label("in flight (right)")
        counts.set_ylabel("in flight", color="#555555")
        counts.set_ylim(0, max(fy) * 1.15 + 0.5)
        counts.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_zorder(counts.get_zorder() + 1)  # the resources' lines over the grey area
        ax.patch.set_visible(False)
        handles.append(line)
        top = 0
        for name, colour in zip(names, _palette(len(names)), strict=True):
            points = timeline.utilisation.get(name, [(0.0, 0)])
            points = [*points, (end, points[-1][1])]
            peak = max(v for _, v in points)
            (used,) = ax.step(
                [t for t, _ in points],
                [v for _, v in points],
                where="post",
                color=colour,
                linewidth=1.8,
                label=f"{name} (peak {peak})",
            )
            handles.append(used)
            if name in capacity:
                limit = capacity[name]
                handles.append(
                    ax.axhline(
                        limit, color=colour, linestyle="--", linewidth=1.2, label=f"{name} capacity"
                    )
                )
            else:
                limit = peak
                ax.axhline(peak, color=colour, linestyle=":", linewidth=1.0)
            top = max(top, peak, limit)
        ax.set_ylim(0, top * 1.15 + 0.5)
        ax.set_ylabel("slots held")
    else:
        ax.fill_between(fx, fy, step="post", color="#bbbbbb", alpha=0.5, linewidth=0)
        (line,) = ax.step(fx, fy, where="post", color="#333333", linewidth=1.2)
        line.set_label("in flight")
        handles.append(line)
        ax.set_ylim(0, max(fy) * 1.15 + 0.5)
        ax.set_ylabel("in flight")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.06, 1.0), fontsize=8, frameon=False
    )


def timeline_figure(
    events_path: str | os.PathLike[str],
    *,
    by: str = "auto",
    capacity: Mapping[str, int] | None = None,
) -> Figure:
    """The figure :func:`plot_timeline` saves (on an Agg canvas), to adjust or show.

    Raises:
        MissingExtraError: matplotlib is not installed (the extra ``plot``).
        ValueError: as :func:`read_timeline`, or a capacity that is not a count.
    """
    _matplotlib()
    limits = dict(capacity or {})
    for name, amount in limits.items():
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ValueError(f"plot_timeline(capacity={{{name!r}: {amount!r}}}): expected a count")
    timeline = read_timeline(events_path, by=by)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    gantt_inches = min(12.0, max(2.4, 0.3 * len(timeline.rows) + 0.6))
    figure = Figure(figsize=(_WIDTH_INCHES, gantt_inches + 3.2), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [gantt_inches, 2.0]}
    )
    width = timeline.duration if timeline.duration > 0 else 1.0
    _gantt(top, timeline, by, width, gantt_inches)
    _utilisation(bottom, timeline, limits or timeline.capacity, timeline.duration)
    top.set_xlim(0, width * 1.02)
    bottom.set_xlabel(
        "seconds since the first record ("
        + (
            "monotonic clock)"
            if timeline.clock == "monotonic"
            else "wall clock: the records come from several clocks)"
        )
    )
    steps = sum(span.kind == "step" for span in timeline.spans)
    tasks = sum(span.kind == "task" for span in timeline.spans)
    parts = []
    if timeline.runs:
        parts.append(f"{_plural(steps, 'step attempt')} in {_plural(timeline.runs, 'run')}")
    if timeline.flows:
        parts.append(f"{_plural(tasks, 'task')} in {_plural(timeline.flows, 'flow')}")
    top.set_title(
        f"{timeline.path.name}: {', '.join(parts)} over {_seconds(timeline.duration)}",
        fontsize=10,
        loc="left",
    )
    return figure


def plot_timeline(
    events_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    by: str = "auto",
    capacity: Mapping[str, int] | None = None,
) -> None:
    """Draw the timeline of an event log to an image file (see the module's doc).

    Args:
        events_path: a JSONL event log; lines cut by a crash are skipped.
        out_path: the image to write (its folder is made); its suffix picks the format
            (``.png``, ``.svg``, ``.pdf``, ...), PNG when it has none.
        by: ``"auto"``: a row and a colour per step or task name; ``"backend"``: a row
            per name, a colour per backend; ``"workflow"``: a row per workflow instance
            (a task's ``workflow_id``, a step run's ``run_id``), a colour per name.
        capacity: the flow's slots per resource (``{"cpu": 4, "gpu": 1}``), drawn as
            dashed lines; without it, the capacity the log's flows declared (the most
            of each resource), else the observed peak of each resource.

    Raises:
        MissingExtraError: matplotlib is not installed (the extra ``plot``).
        ValueError: ``by`` is not one of its choices, or the log is empty or holds no
            step or task records (the message names the file).
        OSError: the log cannot be read or the image written.
    """
    figure = timeline_figure(events_path, by=by, capacity=capacity)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format=None if out.suffix else "png")
