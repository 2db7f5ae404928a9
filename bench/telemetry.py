"""What observing costs: ``python -m bench --only telemetry``.

Each entry times the same workload with observation off and on, interleaved in one run:

- **tel-w1** (both modes): W1, 200 hops, with spans (an OpenTelemetry SDK tracer provider
  and a ``SimpleSpanProcessor`` into an ``InMemorySpanExporter``) and the JSONL event log
  (a file in a temporary folder) on, against W1 with both off. Target: under 2x. Spans
  alone and the log alone are reported beside it.
- **tel-w4**: W4 (a 100 x 100 task DAG) on InlineBackend, the same way. Target: under 2x.

Beside each, the **SDK floor**: what the OpenTelemetry SDK alone costs for the spans a
unit must have (W1 in superstep mode: a step span and a superstep span per hop; in
async mode, a step span; W4: a task span), each started with as many attributes as
ours, made current, ended and exported to the same in-memory exporter, with nothing of
stepgraph around it. ``floor_ratio`` is (off + that) against off: no implementation of
these spans on that SDK can get under it.

"Off" is the default: nothing configured, no global provider, no event log. That it
costs nothing against the code before observability existed is checked by an A/B run
of W1 and W4 across the two commits (not part of ``make bench``: the figures are in the
notes of the change that added it).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.tasks import WIDTH, check, combine, layers_of, seed
from bench.timing import Runner, measure, median, paired_ratio
from bench.workloads import Chain, Mode
from stepgraph.backends import InlineBackend
from stepgraph.tasks import TaskFlow
from stepgraph.telemetry import EventLog, tracing

HOPS = 200
TARGET = 2.0


class _Spans:
    """A tracer provider exporting to memory, switched on for one run at a time."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @contextmanager
    def on(self) -> Iterator[None]:
        self.exporter.clear()
        tracing._state.update(tracer_provider=self.provider, tracers={}, instruments={})
        try:
            yield
        finally:
            tracing._state.update(tracer_provider=None, tracers={}, instruments={})


# attributes of the spans a unit must have, as many as ours carry
_STEP = {
    "stepgraph.step.name": "hop",
    "stepgraph.event.type": "Ping",
    "stepgraph.step.attempt": 1,
    "stepgraph.step.worker": 0,
    "stepgraph.backend": "inline",
    "stepgraph.run.id": "0123456789abcdef0123456789abcdef",
    "stepgraph.workflow.name": "Chain",
}
_SUPERSTEP = {"stepgraph.superstep.index": 1, "stepgraph.run.id": _STEP["stepgraph.run.id"]}
_TASK = {"stepgraph.task.name": "combine", "stepgraph.task.id": "t-1", "stepgraph.backend": "x"}


def _sdk_floor(spans: _Spans, shapes: list[dict[str, Any]]) -> Runner:
    """Per unit, one span of each shape in ``shapes``: started, made current, ended."""
    from opentelemetry import context, trace

    tracer = spans.provider.get_tracer("bench")

    async def run(size: int) -> None:
        for _ in range(size):
            for attributes in shapes:
                span = tracer.start_span("stepgraph.step", attributes=attributes)
                context.detach(context.attach(trace.set_span_in_context(span)))
                span.end()
        spans.exporter.clear()

    return run


def _switched(run: Callable[[int], Awaitable[None]], spans: _Spans | None) -> Runner:
    async def timed(size: int) -> None:
        if spans is None:
            await run(size)
            return
        with spans.on():
            await run(size)

    return timed


def _chain(mode: Mode, log: EventLog | None) -> Callable[[int], Awaitable[None]]:
    wf = Chain(timeout=None, mode=mode, event_log=log)

    async def run(hops: int) -> None:
        assert await wf.run(hops=hops) == hops

    return run


def _dag(log: EventLog | None) -> Callable[[int], Awaitable[None]]:
    async def run(size: int) -> None:
        layers = layers_of(size)
        async with TaskFlow({"default": InlineBackend()}, event_log=log) as flow:
            first, then = flow.function_task(seed), flow.function_task(combine)
            row = [first(i) for i in range(WIDTH)]
            for _ in range(layers - 1):
                row = [then(row[i], row[(i + 1) % WIDTH]) for i in range(WIDTH)]
            result = await asyncio.gather(*row)
        check(layers, result)

    return run


def _entries(
    key: str, title: str, mode: str, unit: str, size: int, samples: dict[str, list[float]]
) -> list[dict[str, Any]]:
    ratio = paired_ratio(samples["on"], samples["off"])
    floor = [off + sdk for off, sdk in zip(samples["off"], samples["sdk"], strict=True)]
    return [
        {
            "workload": key,
            "title": title,
            "mode": mode,
            "us_per_unit": round(median(samples["on"]), 3),
            "baseline": "observation off",
            "baseline_us_per_unit": round(median(samples["off"]), 3),
            "ratio": round(ratio, 3),
            "unit": unit,
            "target_ratio": TARGET,
            "passed": ratio <= TARGET,
            "size": size,
            "spans_us_per_unit": round(median(samples["spans"]), 3),
            "spans_ratio": round(paired_ratio(samples["spans"], samples["off"]), 3),
            "log_us_per_unit": round(median(samples["log"]), 3),
            "log_ratio": round(paired_ratio(samples["log"], samples["off"]), 3),
            "sdk_us_per_unit": round(median(samples["sdk"]), 3),
            "floor_ratio": round(paired_ratio(floor, samples["off"]), 3),
        }
    ]


async def telemetry_costs(
    modes: list[Mode], reps: int, warmup: int, layers: int
) -> list[dict[str, Any]]:
    """tel-w1 in each mode and tel-w4: observation on against off."""
    spans = _Spans()
    entries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        log = EventLog(Path(folder) / "events.jsonl")
        try:
            for mode in modes:
                runners = {
                    "off": _switched(_chain(mode, None), None),
                    "spans": _switched(_chain(mode, None), spans),
                    "log": _switched(_chain(mode, log), None),
                    "on": _switched(_chain(mode, log), spans),
                    "sdk": _sdk_floor(
                        spans, [_SUPERSTEP, _STEP] if mode == "superstep" else [_STEP]
                    ),
                }
                samples = await measure(runners, HOPS, reps=reps, warmup=warmup)
                title = "chain, spans (in-memory exporter) + JSONL event log"
                entries += _entries("tel-w1", title, mode, "hop", HOPS, samples)
            runners = {
                "off": _switched(_dag(None), None),
                "spans": _switched(_dag(None), spans),
                "log": _switched(_dag(log), None),
                "on": _switched(_dag(log), spans),
                "sdk": _sdk_floor(spans, [_TASK]),
            }
            size = layers * WIDTH
            samples = await measure(runners, size, reps=reps, warmup=warmup)
            title = f"{layers}x{WIDTH} DAG on InlineBackend, spans + JSONL event log"
            entries += _entries("tel-w4", title, "inline", "task", size, samples)
        finally:
            log.close()
    return entries
