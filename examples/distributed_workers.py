"""Run queues and workers: runs submitted here, run by two ``stepgraph worker`` processes.

    fetch -> summarize -> publish

``wf.submit(...)`` stores a run as queued and returns its id at once; a worker process
(``stepgraph worker MODULE:ATTR --store URL``) takes it, runs it and keeps its lease alive;
if that worker dies, another resumes the run from its last checkpoint. This script starts
two workers, submits six runs, follows one with an attached handler (``wf.attach``: its
stream comes from the store, written by whichever worker runs it), waits for every result
(``store.result``), and stops the workers with SIGTERM (a graceful stop).

``summarize`` holds the limiter ``"model"`` (at most 2 at once): on PostgreSQL the limit holds
across every worker; on SQLite, within each worker process.

Stored events name their classes by module, so this script and the workers both take the
workflow from the module ``distributed_workers``, not from ``__main__``.

Run it with ``python examples/distributed_workers.py`` (a SQLite file in a temporary
folder), or with ``--store postgresql://127.0.0.1:5432/test?schema=demo``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from stepgraph import Context, Event, Limiter, StartEvent, StopEvent, Workflow, step
from stepgraph.stores import PostgresStore, SqliteStore

HERE = Path(__file__).resolve().parent


class Article(StartEvent):
    topic: str


class Fetched(Event):
    topic: str
    text: str


class Summarized(Event):
    topic: str
    summary: str
    worker: int


class Digest(Workflow):
    @step
    async def fetch(self, ctx: Context, ev: Article) -> Fetched:
        await asyncio.sleep(0.05)  # a download
        text = f"{ev.topic} " * 20
        ctx.write_event_to_stream(Fetched(topic=ev.topic, text=text))
        return Fetched(topic=ev.topic, text=text)

    @step(limiter="model")
    async def summarize(self, ctx: Context, ev: Fetched) -> Summarized:
        await asyncio.sleep(0.05)  # a model call, at most 2 at once
        summary = f"{ev.topic}: {len(ev.text.split())} words"
        done = Summarized(topic=ev.topic, summary=summary, worker=os.getpid())
        ctx.write_event_to_stream(done)
        return done

    @step
    async def publish(self, ctx: Context, ev: Summarized) -> StopEvent:
        return StopEvent(result={"summary": ev.summary, "worker": ev.worker})


LIMITERS = [Limiter("model", max_concurrency=2)]
workflow = Digest(limiters=LIMITERS)
"""What the workers run (``distributed_workers:workflow``): they bind it to their store."""


def this_module() -> ModuleType:
    """This file as the module ``distributed_workers`` (what the workers import)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module("distributed_workers")


def start_worker(url: str) -> subprocess.Popen[str]:
    """``stepgraph worker distributed_workers:workflow --store URL``, serving once it prints."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stepgraph.cli",
            "worker",
            "distributed_workers:workflow",
            "--store",
            url,
            "--concurrency",
            "2",
            "--lease-seconds",
            "2",
        ],
        cwd=HERE,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    print(f"[worker] {worker.stderr.readline().strip()}", flush=True)
    return worker


def open_store(url: str) -> Any:
    if url.startswith("sqlite:///"):
        return SqliteStore(url[len("sqlite:///") :])
    dsn, _, query = url.partition("?")
    schema = query.partition("schema=")[2] or None
    return PostgresStore(dsn, schema=schema)


async def submit_and_follow(url: str, topics: list[str]) -> dict[str, Any]:
    """Submit a run per topic, stream the first through an attached handler, gather all."""
    flows = this_module()
    store = open_store(url)
    wf = flows.Digest(store=store, limiters=flows.LIMITERS)
    ids = [await wf.submit(topic=topic) for topic in topics]
    print(f"submitted: {len(ids)} runs to queue 'default'", flush=True)
    handler = wf.attach(ids[0])
    streamed = [type(ev).__name__ async for ev in handler.stream_events()]
    print(f"attached:  run {ids[0][:8]}... streamed {', '.join(streamed)}", flush=True)
    results = [await store.result(run_id, timeout=60) for run_id in ids]
    if isinstance(store, PostgresStore):
        await store.aclose()
    return {"streamed": streamed, "results": results}


def main() -> None:
    args = sys.argv[1:]
    with tempfile.TemporaryDirectory() as folder:
        url = (
            args[args.index("--store") + 1] if "--store" in args else f"sqlite:///{folder}/runs.db"
        )
        workers = [start_worker(url) for _ in range(2)]
        try:
            topics = ["tides", "glaciers", "monsoons", "auroras", "dunes", "reefs"]
            outcome = asyncio.run(submit_and_follow(url, topics))
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            codes = [worker.wait(60) for worker in workers]
        for _topic, result in zip(topics, outcome["results"], strict=True):
            print(f"result:    {result['summary']}", flush=True)
        pids = {result["worker"] for result in outcome["results"]}
        print(
            f"workers:   {len(workers)} stopped (exit codes {codes}); "
            f"runs ran in {len(pids)} of them"
        )


if __name__ == "__main__":
    main()
