"""Races between processes over one run, played in a set order: another process (a
child) ends or creates the run just before this one takes the run's lease or creates it.

A run that ended meanwhile gives its outcome and runs nothing again; a run created
meanwhile is followed (``run(run_id=...)`` gives that run). And on SQLite: the lease of a
killed process is free even before its parent has reaped it, and store objects opening a
new file at once all open it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from stepgraph.stores import PostgresStore, SqliteStore, Store
from tests.pg import PG_DSN, pg_schema, require_pg

from .flows import CALLS, Held, Waiting
from .pause_child import close_store

ROOT = Path(__file__).resolve().parents[2]


class Child:
    """A process running ``Held`` as run ``run_id``, driven line by line."""

    def __init__(self, where: tuple[str, str], run_id: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.durability.race_child", *where, run_id],
            cwd=ROOT,
            env=dict(os.environ, STEPGRAPH_TEST_PG=PG_DSN),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def began(self) -> None:
        assert self.process.stdout is not None
        line = await asyncio.to_thread(self.process.stdout.readline)
        assert line == "began\n", line + self.process.stderr.read()  # type: ignore[union-attr]

    async def finish(self) -> str:
        """Let its step return; the run's result, once the process has exited."""
        out, err = await asyncio.to_thread(self.process.communicate, "go\n", 120)
        assert self.process.returncode == 0, err
        return out.strip().splitlines()[-1]


def gated(where: tuple[str, str], method: str, before: Any) -> Store:
    """A store of ``where`` that runs ``before()`` before its ``method`` does anything."""
    kind, location = where
    base: type[Any] = SqliteStore if kind == "sqlite" else PostgresStore

    class Gated(base):  # type: ignore[misc, valid-type]
        pass

    async def call(self: Any, *args: Any) -> Any:
        await before()
        return await getattr(base, method)(self, *args)

    setattr(Gated, method, call)
    if kind == "sqlite":
        return Gated(location)  # type: ignore[no-any-return]
    return Gated(PG_DSN, schema=location)  # type: ignore[no-any-return]


@pytest.mark.parametrize("call", ["resume", "run"])
async def test_a_run_that_ends_before_its_lease_is_taken_gives_its_outcome_and_runs_nothing(
    where: tuple[str, str], call: str
) -> None:
    """The run is going on when this process reads its record, and completed by its
    owner before this process takes its lease (it is free then)."""
    child = Child(where, "race-1")
    await child.began()
    results: list[str] = []

    async def owner_completes_it() -> None:
        if not results:
            results.append(await child.finish())

    store = gated(where, "acquire", owner_completes_it)
    try:
        flow = Held(store=store)
        handler = flow.resume("race-1") if call == "resume" else flow.run(run_id="race-1")
        async with asyncio.timeout(60):
            assert await handler == results[0]  # the owner's result
        assert CALLS["race-1:only"] == 0  # nothing ran here
        record = await store.get_run("race-1")
        assert record is not None and record.status == "completed"
        assert await store.result("race-1") == results[0]
    finally:
        await close_store(store)


async def test_a_run_created_meanwhile_by_another_process_is_followed(
    where: tuple[str, str],
) -> None:
    """``run(run_id=...)`` finds no run of that id, and another process creates it (and
    completes it) before this one does: this one gives that run's result."""
    results: list[str] = []

    async def another_process_runs_it() -> None:
        child = Child(where, "race-2")
        await child.began()
        results.append(await child.finish())

    store = gated(where, "create_run", another_process_runs_it)
    try:
        async with asyncio.timeout(60):
            assert await Held(store=store).run(run_id="race-2") == results[0]
        assert CALLS["race-2:only"] == 0
    finally:
        await close_store(store)


async def test_the_lease_of_a_killed_process_its_parent_has_not_waited_for_is_free(
    tmp_path: Path,
) -> None:
    """SQLite: a zombie (dead, not yet reaped) holds no lease; resume takes the run over."""
    where = ("sqlite", str(tmp_path / "runs.db"))
    child = Child(where, "race-3")
    await child.began()
    child.process.send_signal(signal.SIGKILL)
    # dead once this returns, and not reaped (WNOWAIT): a zombie
    pid = child.process.pid
    await asyncio.to_thread(os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    store = SqliteStore(where[1])
    try:
        async with asyncio.timeout(60):
            assert await Held(store=store).resume("race-3") == f"from {os.getpid()}"
    finally:
        store.close()
        child.process.communicate()


def test_store_objects_opening_a_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    """SQLite refuses at once (without waiting) one of several connections turning a new
    file to WAL together: the store tries again, within its timeout."""
    errors: list[BaseException] = []

    def open_it(path: Path, barrier: threading.Barrier) -> None:
        barrier.wait()
        store = SqliteStore(path)
        try:
            asyncio.run(store.get_run("r"))
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    for attempt in range(40):
        barrier = threading.Barrier(4)
        path = tmp_path / f"runs-{attempt}.db"
        threads = [threading.Thread(target=open_it, args=(path, barrier)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def test_an_event_loop_ending_while_a_postgresql_commit_is_on_its_way_ends() -> None:
    """``asyncio.run`` returns right after a cancel, its commit still on its way: the run
    stops there (it hung, waiting for that commit's task, which the loop had cancelled)."""
    require_pg()
    ended: list[str] = []

    async def main(schema: str) -> None:
        store = PostgresStore(PG_DSN, schema=schema)
        handler = Waiting(store=store).run()
        async with asyncio.timeout(30):
            await handler.stream_events().__anext__()  # paused: it asked
        await handler.cancel()
        ended.append("returned")

    with pg_schema() as schema:
        thread = threading.Thread(target=asyncio.run, args=(main(schema),), daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "asyncio.run never returned"
    assert ended == ["returned"]
