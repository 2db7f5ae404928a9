"""Memory: the bytes stepgraph holds per pending event, beyond the event object itself.

A producer step sends ``pending + 1`` events (created beforehand, outside the engine) to a
consumer step with ``num_workers=1`` whose first invocation blocks on an :class:`asyncio.Event`
that the harness controls. Once that invocation runs, the other ``pending`` events are queued
inside the run; a tracemalloc snapshot then shows what the run holds. The same run with no
pending event gives the fixed cost of a run, so

    bytes per pending event = (held(pending) - held(0)) / pending

counts only what the engine adds per queued event (queue slots, wrappers, tasks, bookkeeping),
not the event objects, which exist before the baseline snapshot. In superstep mode the sends
are delivered at the barrier after the producer's superstep, so the consumer's first
invocation starts only once all of them are pending: the measurement covers that state too.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.workloads import Mode
from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step

PENDING = 1_000
TARGET_BYTES = 1_024
SETTLE_TICKS = 20
"""Event-loop turns granted after the consumer started, for the engine to finish enqueuing."""


class Load(Event):
    """One event sent to the blocked consumer."""

    i: int


@dataclass
class _Gate:
    events: list[Load]
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    seen: int = 0


class PendingQueue(Workflow):
    """``produce`` sends every event of the gate; ``consume`` blocks on the first one."""

    def __init__(self, gate: _Gate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate

    @step
    async def produce(self, ctx: Context, ev: StartEvent) -> Load | None:
        for load in self.gate.events:
            ctx.send_event(load)
        return None

    @step(num_workers=1)
    async def consume(self, ctx: Context, ev: Load) -> StopEvent | None:
        gate = self.gate
        gate.seen += 1
        if gate.seen == 1:
            gate.started.set()
            await gate.release.wait()
        if gate.seen == len(gate.events):
            return StopEvent(result=gate.seen)
        return None


@dataclass(frozen=True)
class MemoryResult:
    """What one mode's measurement found."""

    mode: Mode
    pending: int
    bytes_per_pending_event: float
    event_object_bytes: float
    top_sites: list[tuple[str, int]]


def _snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )


def _site(stat: tracemalloc.StatisticDiff) -> str:
    frame = stat.traceback[0]
    return f"{Path(frame.filename).name}:{frame.lineno}"


async def _held(mode: Mode, pending: int) -> tuple[int, list[tuple[str, int]]]:
    """Bytes the run holds with ``pending`` events queued, and the biggest allocation sites."""
    gate = _Gate(events=[Load(i=i) for i in range(pending + 1)])
    wf = PendingQueue(gate, timeout=None, mode=mode)
    before = _snapshot()
    run = asyncio.ensure_future(wf.run())
    await asyncio.wait_for(gate.started.wait(), timeout=30)
    for _ in range(SETTLE_TICKS):
        await asyncio.sleep(0)
    after = _snapshot()
    gate.release.set()
    result = await asyncio.wait_for(run, timeout=30)
    assert result == pending + 1, result
    diff = after.compare_to(before, "lineno")
    held = sum(stat.size_diff for stat in diff)
    top = [(_site(stat), stat.size_diff) for stat in diff[:8] if stat.size_diff > 0]
    return held, top


def _event_object_bytes(count: int) -> float:
    before = _snapshot()
    events = [Load(i=i) for i in range(count)]
    after = _snapshot()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del events
    return size / count


async def measure_pending(mode: Mode, *, pending: int = PENDING, reps: int = 3) -> MemoryResult:
    """Median bytes per pending event over ``reps`` paired runs (``pending`` vs none queued)."""
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        await _held(mode, pending)  # warm-up: imports, caches, lazily built tables
        per_event: list[float] = []
        top: list[tuple[str, int]] = []
        for _ in range(reps):
            empty, _ = await _held(mode, 0)
            full, top = await _held(mode, pending)
            per_event.append((full - empty) / pending)
        event_bytes = _event_object_bytes(pending)
    finally:
        if started_here:
            tracemalloc.stop()
    return MemoryResult(
        mode=mode,
        pending=pending,
        bytes_per_pending_event=statistics.median(per_event),
        event_object_bytes=event_bytes,
        top_sites=top,
    )
