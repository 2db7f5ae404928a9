"""Dask (``distributed``): W4 as raw ``client.submit`` calls, each task given its two
parents' Dask futures as arguments, the last layer gathered.

The cluster is a ``LocalCluster(processes=False)`` (one worker, two threads, in this
process), started on the first run and closed at the end of the peer bench; each run
connects a client of its own, as in ``python -m bench --only tasks``.
"""

from __future__ import annotations

from typing import Any

from distributed import LocalCluster

from bench.peers.common import Peer, PeerWorkload
from bench.tasks import DASK_LAYERS, WIDTH, dask_raw_dag


def load() -> Peer:
    """The peer with its W4 runner (the cluster starts on the first run)."""
    state: dict[str, Any] = {}

    async def dag(size: int) -> None:
        if "cluster" not in state:
            state["cluster"] = await LocalCluster(
                asynchronous=True,
                processes=False,
                n_workers=1,
                threads_per_worker=2,
                dashboard_address=None,
            )
            state["run"] = dask_raw_dag(state["cluster"].scheduler_address)
        await state["run"](size)

    async def close() -> None:
        cluster = state.pop("cluster", None)
        if cluster is not None:
            await cluster.close()

    return Peer(
        name="dask",
        dist="distributed",
        workloads={
            "w4": PeerWorkload(
                dag, size=DASK_LAYERS * WIDTH, note=f"{DASK_LAYERS} layers: ms per task"
            )
        },
        close=close,
    )
