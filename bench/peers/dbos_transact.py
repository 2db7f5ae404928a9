"""dbos (DBOS Transact): durable workflows of steps, on SQLite (its embedded default).

Only W1d: a workflow that calls one step per hop; DBOS records each step's output in its
system database before the workflow goes on, so a hop is a durable write, as stepgraph's.
The database is a SQLite file in a temporary folder, with DBOS's own settings.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from dbos import DBOS

from bench.peers.common import Peer, PeerWorkload


@DBOS.step()
async def _hop(n: int) -> int:
    return n + 1


@DBOS.workflow()
async def _chain(hops: int) -> int:
    n = 0
    while n < hops:
        n = await _hop(n)
    return n


def load() -> Peer:
    """Configure and launch DBOS on a SQLite file; the peer with its W1d runner."""
    folder = Path(tempfile.mkdtemp(prefix="bench-dbos-"))
    DBOS(
        config={
            "name": "stepgraph-bench",
            "system_database_url": f"sqlite:///{folder}/dbos.db",
            "log_level": "WARNING",  # (its start-up otherwise logs each schema migration)
        }
    )
    DBOS.launch()

    async def durable_chain(hops: int) -> None:
        result = await _chain(hops)
        assert result == hops, result

    async def close() -> None:
        DBOS.destroy()
        shutil.rmtree(folder, ignore_errors=True)

    return Peer(
        name="dbos",
        dist="dbos",
        workloads={"w1d": PeerWorkload(durable_chain, note="SQLite system database", reps=5)},
        close=close,
    )
