"""``stepgraph worker``: a long-running process that runs a store's queued runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
from collections.abc import Iterable
from typing import Any

from ..distributed.worker import Worker, registry
from ..errors import StepgraphError
from .common import EXIT_OK, fail, say
from .loading import configure, load_registry
from .stores import close_store, open_store, probe_store, shown

__all__ = ["serve"]

_YOUNG_OBJECTS = 10_000  # allocations between young-generation collections (Python: 700)


def _positive(value: Any, option: str) -> None:
    if value is None or not math.isfinite(value) or value <= 0:
        fail(f"{option} must be a number > 0, got {value!r}")


class _OneLine(logging.Formatter):
    """A record on one line: a message that spans several (a database driver's error
    text, say) has its line breaks and their indentation turned into one space each."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(line.strip() for line in super().format(record).splitlines() if line)


def _log_to_stderr() -> None:
    """A worker is a service: what it logs (a store that fails and is retried, the runs
    it stops, a limiter waited for) goes to standard error, a line each, unless the
    program has set up logging itself."""
    logger = logging.getLogger("stepgraph")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLine("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _settle_memory() -> None:
    """Tune the garbage collector for a long-running worker, as servers do: what exists
    once it is set up (modules, classes, schemas: most of its objects) is frozen out of
    the collections, and the young generation is collected less often. Each run allocates
    thousands of short-lived objects: with Python's defaults a full collection walking
    every object would stop the worker for tens of milliseconds now and then, and young
    collections would fall in the middle of starting a run."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_YOUNG_OBJECTS, middle, old)


async def _declare_limiters(workflows: Iterable[Any]) -> None:
    """Declare the limiters the workflows keep in the store (a ``PostgresStore``'s) now: a
    declaration the store contradicts refuses the worker at start, not each run later.

    Raises:
        StepgraphError: a limiter the store has with other limits (naming it).
    """
    for workflow in workflows:
        for gate in workflow.options.limiters.values():
            declare = getattr(gate, "declare", None)
            if declare is not None:
                await declare()


async def serve(
    target: str,
    url: str,
    *,
    queues: list[str],
    concurrency: int,
    lease_seconds: float,
    grace_seconds: float,
) -> int:
    """Run a worker until SIGTERM or SIGINT (then stop gracefully); the exit code.

    Raises:
        UsageError: a bad option, registry or store URL, or a store that cannot be opened.
    """
    if concurrency < 1:
        fail(f"--concurrency must be >= 1, got {concurrency}")
    _positive(lease_seconds, "--lease-seconds")
    _positive(grace_seconds, "--grace-seconds")
    for queue in queues:
        if not queue:
            fail("--queue needs a non-empty name")
    items = load_registry(target)
    _log_to_stderr()
    store = open_store(url, create=True)
    try:
        await probe_store(store, url)
        bound = [(key, configure(workflow, store=store)) for key, workflow in items]
        try:
            workflows = registry(bound)
            await _declare_limiters(workflows.values())
        except StepgraphError as exc:
            fail(str(exc))
        worker = Worker(
            store,
            workflows,
            queues=queues,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            grace_seconds=grace_seconds,
        )
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Task[None]] = []

        def stop() -> None:
            if not stopping:
                stopping.append(loop.create_task(worker.stop()))
                say(f"stepgraph: worker {worker.name} stopping (grace {grace_seconds:g} s)")

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        say(
            f"stepgraph: worker {worker.name} serving queue(s) {', '.join(queues)} of "
            f"{shown(url)} with workflow(s) {', '.join(sorted(workflows))}, concurrency "
            f"{concurrency}"
        )
        _settle_memory()
        try:
            await worker.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        say(f"stepgraph: worker {worker.name} stopped after taking {worker.started} run(s)")
        return EXIT_OK
    finally:
        await close_store(store)
