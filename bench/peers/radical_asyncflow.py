"""RADICAL AsyncFlow (``radical.asyncflow``): task DAGs whose edges are futures, as TaskFlow.

W4 on its local thread backend: a ``WorkflowEngine`` over a ``LocalExecutionBackend`` with
a ``ThreadPoolExecutor`` (AsyncFlow function tasks are ``async def``; this backend runs each
one with ``asyncio.run`` in a pool thread). A new engine and pool per run, as stepgraph's
W4 starts a new flow with a new ThreadBackend. The engine installs handlers for SIGINT,
SIGTERM and SIGHUP on the loop; they are removed after each run.

It runs the full 10,000-task DAG: its cost per task grows with the DAG (on the development
machine, 0.6.0 took about 250 µs a task for 200 tasks, 700 for 3,000 and 1,300 for 10,000),
so a smaller one would flatter it. At over 10 s a run, it gets :data:`REPS` repetitions.
"""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor

from radical.asyncflow import LocalExecutionBackend, WorkflowEngine

from bench.peers.common import Peer, PeerWorkload
from bench.tasks import WIDTH, check, combine, layers_of, seed

REPS = 2


async def dag(size: int) -> None:
    """W4: ``size // WIDTH`` layers of WIDTH tasks, each on its two parents' futures."""
    layers = layers_of(size)
    backend = await LocalExecutionBackend(ThreadPoolExecutor())
    flow = await WorkflowEngine.create(backend=backend)
    try:

        @flow.function_task
        async def first(i: int) -> int:
            return seed(i)

        @flow.function_task
        async def then(a: int, b: int) -> int:
            return combine(a, b)

        row = [first(i) for i in range(WIDTH)]
        for _ in range(layers - 1):
            row = [then(row[i], row[(i + 1) % WIDTH]) for i in range(WIDTH)]
        result = await asyncio.gather(*row)
    finally:
        await flow.shutdown()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    check(layers, result)


def load() -> Peer:
    """The peer with its W4 runner."""
    return Peer(
        name="radical.asyncflow",
        dist="radical.asyncflow",
        workloads={
            "w4": PeerWorkload(dag, reps=REPS, note=f"thread backend; {REPS} reps (> 10 s a run)")
        },
    )
