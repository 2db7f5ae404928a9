"""The demo: a small research-report pipeline that streams its progress live.

    plan -> write_section x5 (in parallel) -> collect -> assemble -> StopEvent

``plan`` outlines the report and fans out one ``SectionTask`` per section with
``ctx.send_event``; ``write_section`` (``num_workers=5``) drafts them in
parallel (the "work" is a short ``asyncio.sleep``); ``collect`` waits with
``ctx.collect_events`` until every draft is in; ``assemble`` joins them. Every
step reports what it does with ``ctx.write_event_to_stream``, and the caller
prints each event the moment it arrives from ``handler.stream_events()``.

Run it with ``make demo`` or ``python examples/streaming_progress.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, get_context, step

# section title -> (simulated writing time in seconds, what the section says)
OUTLINE: dict[str, tuple[float, str]] = {
    "Background": (0.012, "Why {topic} matters now, and what earlier work left open."),
    "Methods": (0.030, "How the sources on {topic} were chosen, read and compared."),
    "Findings": (0.021, "What the evidence on {topic} shows, with its main numbers."),
    "Risks": (0.006, "Where the conclusions on {topic} could be wrong, and why."),
    "Outlook": (0.018, "What to watch for in {topic} over the next five years."),
}


class ReportRequest(StartEvent):
    """The run's arguments."""

    topic: str


class Progress(Event):
    """One line of progress: which stage, what happened, how far the run is."""

    stage: str
    detail: str
    done: int
    total: int


class SectionTask(Event):
    """Write one section."""

    index: int
    title: str
    topic: str


class SectionDraft(Event):
    """One written section."""

    index: int
    title: str
    text: str


class AllDrafts(Event):
    """Every section, in outline order."""

    drafts: list[SectionDraft]


async def report_progress(stage: str, detail: str, *, finished_a_unit: bool = False) -> None:
    """Stream a Progress event; a helper, so it finds the run with ``get_context()``."""
    ctx = get_context()
    done = await ctx.store.update("units_done", lambda n: (n or 0) + int(finished_a_unit))
    total = await ctx.store.get("units_total")
    ctx.write_event_to_stream(Progress(stage=stage, detail=detail, done=done, total=total))


class ResearchReport(Workflow):
    """plan -> write_section (x5) -> collect -> assemble."""

    @step
    async def plan(self, ctx: Context, ev: ReportRequest) -> None:
        await ctx.store.set("units_total", len(OUTLINE) + 2)  # plan + sections + assemble
        await ctx.store.set("topic", ev.topic)
        for index, title in enumerate(OUTLINE):  # fan out: one task per section
            ctx.send_event(SectionTask(index=index, title=title, topic=ev.topic))
        await report_progress("plan", f"outlined {len(OUTLINE)} sections", finished_a_unit=True)

    @step(num_workers=len(OUTLINE))
    async def write_section(self, ev: SectionTask) -> SectionDraft:
        await report_progress("write", f"drafting {ev.title!r}")
        seconds, summary = OUTLINE[ev.title]
        await asyncio.sleep(seconds)  # the simulated work
        text = summary.format(topic=ev.topic)
        await report_progress(
            "write", f"finished {ev.title!r} ({len(text.split())} words)", finished_a_unit=True
        )
        return SectionDraft(index=ev.index, title=ev.title, text=text)

    @step
    async def collect(self, ctx: Context, ev: SectionDraft) -> AllDrafts | None:
        drafts = ctx.collect_events(ev, [SectionDraft] * len(OUTLINE))
        if drafts is None:
            return None  # more drafts to come
        await report_progress("collect", f"all {len(drafts)} drafts in")
        return AllDrafts(drafts=sorted(drafts, key=lambda d: d.index))

    @step
    async def assemble(self, ctx: Context, ev: AllDrafts) -> StopEvent:
        topic = await ctx.store.get("topic")
        body = "\n\n".join(f"## {d.title}\n{d.text}" for d in ev.drafts)
        report = f"# Report: {topic}\n\n{body}\n"
        await report_progress(
            "assemble", f"report ready ({len(report.split())} words)", finished_a_unit=True
        )
        return StopEvent(result=report)


@dataclass
class ReportRun:
    """What one run produced: the report, the progress events in arrival order, the wall time."""

    report: str
    progress: list[Progress]
    seconds: float


async def research_report(
    topic: str, on_progress: Callable[[Progress, float], None] | None = None
) -> ReportRun:
    """Write a report on ``topic``; ``on_progress(event, elapsed)`` sees each event on arrival."""
    started = time.perf_counter()
    handler = ResearchReport(timeout=30).run(topic=topic)
    progress: list[Progress] = []
    async for ev in handler.stream_events():
        if isinstance(ev, Progress):
            progress.append(ev)
            if on_progress is not None:
                on_progress(ev, time.perf_counter() - started)
    report: str = await handler
    return ReportRun(report=report, progress=progress, seconds=time.perf_counter() - started)


def progress_line(ev: Progress, elapsed: float, width: int = 20) -> str:
    """One terminal line: time, a bar, the count, the stage and what happened."""
    filled = width * ev.done // ev.total
    bar = "#" * filled + "." * (width - filled)
    return f"{elapsed * 1000:6.1f} ms [{bar}] {ev.done}/{ev.total}  {ev.stage:<8} {ev.detail}"


def main() -> None:
    print("stepgraph demo: a research report, streamed as it is written\n")
    run = asyncio.run(
        research_report("tidal energy", lambda ev, t: print(progress_line(ev, t), flush=True))
    )
    print()
    print(run.report)
    work = sum(seconds for seconds, _ in OUTLINE.values())
    print(f"{len(run.progress)} progress events streamed")
    print(f"{work * 1000:.0f} ms of simulated writing in {run.seconds * 1000:.1f} ms wall time")


if __name__ == "__main__":
    main()
