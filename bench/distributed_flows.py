"""The workflow of ``python -m bench --only distributed`` (module level: workers import it).

``stepgraph worker bench.distributed_flows:Three`` runs it. Three supersteps, a -> b -> c,
with trivial bodies; its result is the ``time.time()`` at which step ``a`` started (the
pick-up latency is that minus the time of the submit).

For the recovery measurement, a run submitted with ``hold`` > 0 sleeps that long in step
``b`` the first time ``b`` runs (a marker file, created with ``O_EXCL``, says whether it
ran before), and each execution of ``b`` appends ``<run id> b <pid> <time.time()>`` to the
file named by the environment variable ``STEPGRAPH_BENCH_LOG`` (``O_APPEND``: lines of
several processes never mix). The bench kills the worker holding it and reads the log for
the time ``b`` started again on another worker.
"""

from __future__ import annotations

import asyncio
import os
import time

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step

LOG_ENV = "STEPGRAPH_BENCH_LOG"


class Go(StartEvent):
    hold: float = 0.0  # seconds b sleeps the first time it runs (recovery runs only)


class Hop(Event):
    started: float
    hold: float


class Last(Event):
    started: float


def _first_b(ctx: Context) -> bool:
    """Log this execution of ``b``; whether it is the run's first."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return True
    now = time.time()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.run_id} b {os.getpid()} {now!r}\n".encode())
    finally:
        os.close(fd)
    try:
        os.close(os.open(f"{path}.{ctx.run_id}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True


class Three(Workflow):
    """a -> b -> c; the result is when ``a`` started (``time.time()``)."""

    @step
    async def a(self, ctx: Context, ev: Go) -> Hop:
        return Hop(started=time.time(), hold=ev.hold)

    @step
    async def b(self, ctx: Context, ev: Hop) -> Last:
        if ev.hold and _first_b(ctx):
            await asyncio.sleep(ev.hold)
        return Last(started=ev.started)

    @step
    async def c(self, ctx: Context, ev: Last) -> StopEvent:
        return StopEvent(result=ev.started)
