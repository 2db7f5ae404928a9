"""A child process for ``test_races``: runs ``Held`` as run ``RUN_ID``, its one step held
until this process reads a line on stdin; prints ``began`` once the step runs, then the
run's result.

Usage: ``python -m tests.durability.race_child <sqlite|postgres> <location> <run id>``
where location is the SQLite file or the PostgreSQL schema (the server is ``PG_DSN``).
"""

from __future__ import annotations

import asyncio
import os
import sys

from tests.durability.flows import Held
from tests.durability.pause_child import close_store, open_store


async def main(kind: str, location: str, run_id: str) -> None:
    os.environ["STEPGRAPH_TEST_HOLD"] = "1"
    store = open_store(kind, location)
    print(await Held(store=store).run(run_id=run_id), flush=True)
    await close_store(store)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
