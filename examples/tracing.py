"""Trace a workflow run and a task flow with OpenTelemetry.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (``http://127.0.0.1:4318``, say: a collector,
Jaeger, Grafana Tempo), the spans go there over OTLP/HTTP (``pip install
'stepgraph[otel]'``). Without it, they are kept in memory and printed as a tree, with
the event log the runs wrote beside it.

Run it with ``python examples/tracing.py``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stepgraph import Context, Event, RetryPolicy, StartEvent, StopEvent, Workflow, step
from stepgraph.backends import InlineBackend, ThreadBackend
from stepgraph.tasks import TaskFlow
from stepgraph.telemetry import configure, read_events


class Question(StartEvent):
    text: str


class Draft(Event):
    text: str


class Answer(Workflow):
    """draft (fails once, retried) -> review -> the answer."""

    tries = 0

    @step(retry_policy=RetryPolicy(max_attempts=2))
    async def draft(self, ctx: Context, ev: Question) -> Draft:
        Answer.tries += 1
        if Answer.tries == 1:
            raise TimeoutError("the model took too long")
        return Draft(text=f"a draft about {ev.text}")

    @step
    async def review(self, ctx: Context, ev: Draft) -> StopEvent:
        return StopEvent(result=ev.text.replace("a draft", "an answer"))


def exporter() -> tuple[SpanExporter, InMemorySpanExporter | None]:
    """OTLP when an endpoint is set, else memory (printed at the end)."""
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(), None  # reads the endpoint from the environment
    memory = InMemorySpanExporter()
    return memory, memory


def tree(spans: Sequence[ReadableSpan]) -> list[str]:
    """The spans as an indented tree, children in start order."""
    children: dict[int | None, list[ReadableSpan]] = {}
    known = {s.context.span_id for s in spans}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent and span.parent.span_id in known else None
        children.setdefault(parent, []).append(span)

    def label(span: ReadableSpan) -> str:
        attributes: dict[str, Any] = dict(span.attributes or {})
        name = (
            attributes.get("stepgraph.step.name")
            or attributes.get("stepgraph.task.name")
            or attributes.get("stepgraph.block.name")
            or attributes.get("stepgraph.workflow.name")
            or attributes.get("stepgraph.workflow.id")
            or attributes.get("stepgraph.superstep.index")
        )
        error = " ERROR " + str(attributes["error.type"]) if "error.type" in attributes else ""
        retried = " (retried)" if any(e.name == "stepgraph.retry" for e in span.events) else ""
        return f"{span.name} {name}{error}{retried}"

    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in children.get(parent, []):
            lines.append("  " * depth + label(span))
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines


async def trace_both() -> None:
    chosen, memory = exporter()
    configure(span_processors=[SimpleSpanProcessor(chosen)])
    log = os.path.join(tempfile.mkdtemp(), "events.jsonl")

    print("answer:", await Answer(event_log=log).run(text="tracing"))

    async with TaskFlow(
        backends={"default": ThreadBackend(2), "inline": InlineBackend()}, event_log=log
    ) as flow:

        @flow.function_task
        def fetch(i: int) -> str:
            return f"page {i}"

        @flow.function_task(backend="inline")
        def count(pages: list[str]) -> int:
            return len(pages)

        @flow.block
        async def crawl(n: int) -> int:
            return await count([fetch(i) for i in range(n)])

        async with flow.workflow_scope("crawl-1"):
            print("pages:", await crawl(3))

    if memory is None:
        print("spans sent to", os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
    else:
        print("spans:")
        for line in tree(memory.get_finished_spans()):
            print("  " + line)
    records = read_events(log)
    kinds = [record["kind"] for record in records]
    resolved = [r for r in records if r["kind"] == "task_resolved"]
    blocks = sum(1 for r in resolved if r.get("task_kind") == "block")
    print(
        f"event log: {len(kinds)} records, {kinds.count('step_retried')} retry, "
        f"{len(resolved) - blocks} tasks and {blocks} block resolved"
    )


def main() -> None:
    asyncio.run(trace_both())


if __name__ == "__main__":
    main()
