"""The child process of the crash tests: run one flow on a store until it is killed.

Usage::

    python -m tests.crash.child <store-kind> <store-location> <run-id> <mode> [flow] [seed]
                                [--hold N]

- ``store-kind``: ``sqlite`` (``store-location`` is the database file) or ``postgres``
  (``store-location`` is the schema; the server is ``$STEPGRAPH_TEST_PG``, else
  ``tests.pg.PG_DSN``; the sessions are named ``stepgraph-crash-<pid>`` so that the
  parent can tell when the server has let go of them);
- ``mode``: ``superstep`` or ``async``; ``flow``: a name of :data:`tests.crash.flows.FLOWS`
  (default ``relay``); ``seed`` (default 0) picks the flow's input and the pace of its
  steps;
- ``--hold N``: at the N-th large commit (over 1 MB) print ``held <N>`` and wait, inside
  the commit, for the parent's kill. With SQLite the rows are written and the
  transaction is open (its pages may be in the WAL already); with PostgreSQL the line
  comes just before the commit's statement is sent, which then goes on (the kill races
  it). If stdin closes instead (the parent died), the process exits at once.

It prints one line per step as the step starts (``step <superstep> <name>``), ``big <n>``
after a large write, and ``result <json>`` once the run has completed; every line flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
from typing import Any

from stepgraph.stores import PostgresStore, SqliteStore, Store
from stepgraph.stores.base import Commit

from . import flows

LARGE = 1 << 20
"""A commit of more bytes than this is a large one (``--hold``)."""


def commit_size(batch: Commit) -> int:
    """The bytes a commit writes."""
    size = sum(len(entry) for entry in batch.journal)
    if batch.checkpoint is not None:
        size += len(batch.checkpoint.frame)
        size += sum(len(data) for data in batch.checkpoint.values.values() if data is not None)
    return size


def _hold(count: int) -> None:
    print(f"held {count}", flush=True)
    sys.stdin.readline()  # the parent kills us here; an empty line: it is gone
    os._exit(3)


class HoldingSqliteStore(SqliteStore):
    """A SqliteStore that stops inside its N-th large transaction, after writing its rows."""

    def __init__(self, path: str, hold: int) -> None:
        super().__init__(path)
        self.hold = hold
        self.large = 0

    def _execute(self, cursor: sqlite3.Cursor, batch: Commit, statements: list[Any]) -> None:
        super()._execute(cursor, batch, statements)
        if commit_size(batch) > LARGE:
            self.large += 1
            if self.large == self.hold:
                _hold(self.large)


class HoldingPostgresStore(PostgresStore):
    """A PostgresStore that says so just before sending its N-th large commit."""

    def __init__(self, dsn: str, schema: str, hold: int) -> None:
        super().__init__(dsn, schema=schema)
        self.hold = hold
        self.large = 0

    async def commit(self, batch: Commit) -> None:
        if commit_size(batch) > LARGE:
            self.large += 1
            if self.large == self.hold:
                print(f"held {self.large}", flush=True)
        await super().commit(batch)


def pg_dsn() -> str:
    """The PostgreSQL server of the tests."""
    dsn = os.environ.get("STEPGRAPH_TEST_PG")
    if dsn is None:
        from tests.pg import PG_DSN

        dsn = PG_DSN
    return dsn


def named_dsn(dsn: str, application_name: str) -> str:
    """``dsn`` with its sessions named ``application_name`` (URI or key=value form)."""
    if "://" in dsn:
        return f"{dsn}{'&' if '?' in dsn else '?'}application_name={application_name}"
    return f"{dsn} application_name={application_name}"


def session_name(pid: int) -> str:
    """The name of the PostgreSQL sessions of child ``pid``."""
    return f"stepgraph-crash-{pid}"


def open_store(kind: str, location: str, hold: int = 0) -> Store:
    """The child's store (``hold``: see ``--hold``; 0 for none)."""
    if kind == "sqlite":
        return HoldingSqliteStore(location, hold) if hold else SqliteStore(location)
    if kind == "postgres":
        dsn = named_dsn(pg_dsn(), session_name(os.getpid()))
        if hold:
            return HoldingPostgresStore(dsn, location, hold)
        return PostgresStore(dsn, schema=location)
    raise SystemExit(f"unknown store kind {kind!r}: expected sqlite or postgres")


def pace_for(seed: int) -> Any:
    """How long each step waits after it reports: none, or up to 1 or 4 ms, by the seed."""
    base = random.Random(f"pace-{seed}").choice([0.0, 0.0, 0.0005, 0.002])
    if not base:
        return None
    return lambda superstep, name: base * (flows.mix(seed, superstep, name) % 3)


async def _main(args: argparse.Namespace) -> None:
    spec = flows.FLOWS[args.flow]
    store = open_store(args.store_kind, args.store_location, args.hold)
    workflow = spec.build(store, args.mode)
    value = await spec.start(workflow, args.run_id, args.seed)
    print("result", json.dumps(spec.outcome(value), sort_keys=True), flush=True)
    if isinstance(store, PostgresStore):
        await store.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.crash.child")
    parser.add_argument("store_kind", choices=["sqlite", "postgres"])
    parser.add_argument("store_location")
    parser.add_argument("run_id")
    parser.add_argument("mode", choices=["superstep", "async"])
    parser.add_argument("flow", nargs="?", default="relay", choices=sorted(flows.FLOWS))
    parser.add_argument("seed", nargs="?", type=int, default=0)
    parser.add_argument("--hold", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)

    def report(run_id: str, line: str) -> None:
        print(line, flush=True)

    flows.set_reporter(report)
    flows.set_pace(pace_for(args.seed))
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
