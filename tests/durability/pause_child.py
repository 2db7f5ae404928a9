"""A child process for ``test_pause_across_processes``: starts a run that pauses for input,
prints its run id and request id as one JSON line, and exits with the run still paused.

Usage: ``python -m tests.durability.pause_child <sqlite|postgres> <location> <flow> <mode>``
where location is the SQLite file or the PostgreSQL schema (the server is ``PG_DSN``).
"""

from __future__ import annotations

import asyncio
import json
import sys

from stepgraph import InputRequiredEvent, Workflow
from stepgraph.stores import PostgresStore, SqliteStore, Store
from tests.durability.flows import Interview, Waiting
from tests.pg import PG_DSN

FLOWS: dict[str, type[Workflow]] = {"Interview": Interview, "Waiting": Waiting}


def open_store(kind: str, location: str) -> Store:
    if kind == "sqlite":
        return SqliteStore(location)
    return PostgresStore(PG_DSN, schema=location)


async def pause(kind: str, location: str, flow: str, mode: str) -> None:
    store = open_store(kind, location)
    handler = FLOWS[flow](store=store, mode=mode).run()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            print(json.dumps({"run_id": handler.run_id, "request_id": event.request_id}))
            sys.stdout.flush()
            break
    await close_store(store)


async def close_store(store: Store) -> None:
    if isinstance(store, PostgresStore):
        await store.aclose()
    elif isinstance(store, SqliteStore):
        store.close()


if __name__ == "__main__":
    asyncio.run(pause(*sys.argv[1:5]))
