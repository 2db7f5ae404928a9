"""A conformance kit for stores: run it in the test suite of any :class:`~stepgraph.stores.Store`.

Subclass :class:`StoreConformance` under a name your test runner collects, and say how to
make a store::

    from stepgraph.stores import Store
    from stepgraph.testing.store_conformance import StoreConformance

    class TestMyStore(StoreConformance):
        def make_store(self) -> Store:
            return MyStore(...)  # a new, empty store for each test

        def make_other_store(self, first: Store) -> Store:
            return MyStore(...)  # a second object over first's data (optional)

Its rules:

- Every test is a plain synchronous method that runs its scenario with ``asyncio.run``: no
  pytest plugin is needed, and ``unittest`` runs it too (mix it into a ``TestCase``).
- Each test makes a new store with ``make_store``, which must be empty.
- Tests that need a second store object over the same data (another coordinator) call
  ``make_other_store``; unless you override it they are skipped (``unittest.SkipTest``,
  which pytest honours too). A store whose objects cannot share data may return ``first``.
- At the end of each ``asyncio.run`` the kit closes the stores it used with
  :meth:`StoreConformance.close_store` (``await store.aclose()``, else ``store.close()``,
  when the store has one), so that no connection outlives its event loop.
- A lease is checked across processes too: a child process (forked) takes it through
  ``make_other_store`` and is killed with SIGKILL. Set ``across_processes = False`` for a
  store kept in one process's memory.
- ``commit`` may return None or an awaitable: the kit awaits it when it is awaitable.
- The kit numbers what it writes as a run's one writer does: checkpoint ``seq`` 0, 1, 2,
  ... and, after each checkpoint (``journal_after``, -1 before the first), journal
  positions (``journal_at``) 0, 1, 2, .... Where it checks a refusal, the number it gives
  is *taken*; it never leaves a gap, so a store may refuse gaps or not. It writes entries
  only after the run's latest checkpoint, so a store may refuse entries after an older
  one (a writer that missed a newer checkpoint) or not.

The test names state the guarantees checked.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import time
import unittest
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import RunLockedError, StoreError
from ..stores.base import (
    CheckpointWrite,
    Commit,
    RunRecord,
    Store,
    StoredStatus,
    checkpoint_id,
    lacking_methods,
)

__all__ = ["StoreConformance", "checkpoint", "commit", "record"]

RUNNING = StoredStatus.RUNNING
PAUSED = StoredStatus.PAUSED
COMPLETED = StoredStatus.COMPLETED
FAILED = StoredStatus.FAILED

T0 = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)  # records' creation times: T0 + n s


def record(
    run_id: str,
    *,
    at: int = 0,
    workflow: str = "flow",
    status: StoredStatus = RUNNING,
    parent_run_id: str | None = None,
    parent_checkpoint_id: str | None = None,
) -> RunRecord:
    """A run record created ``at`` seconds after a fixed time (``T0``)."""
    created = T0 + timedelta(seconds=at)
    return RunRecord(
        run_id=run_id,
        workflow=workflow,
        status=status,
        created_at=created,
        updated_at=created,
        parent_run_id=parent_run_id,
        parent_checkpoint_id=parent_checkpoint_id,
    )


def checkpoint(
    seq: int,
    superstep: int | None = None,
    values: Mapping[str, bytes | None] | None = None,
    *,
    full: bool = False,
    frame: bytes | None = None,
    status: StoredStatus = RUNNING,
) -> CheckpointWrite:
    """Checkpoint ``seq`` of a run (superstep ``seq`` and frame ``b"frame <seq>"`` unless given)."""
    return CheckpointWrite(
        seq=seq,
        superstep=seq if superstep is None else superstep,
        status=status,
        frame=f"frame {seq}".encode() if frame is None else frame,
        values=dict(values or {}),
        full=full,
    )


async def commit(store: Store, batch: Commit) -> None:
    """``store.commit(batch)``, awaited when the store returns an awaitable."""
    done = store.commit(batch)
    if done is not None and inspect.isawaitable(done):
        await done


def _hold_lease(kit: StoreConformance, first: Store, pipe: Any) -> None:
    """In a child process: take the lease of run ``r`` through a store of its own, say
    so, and hold it until the process is killed."""
    store = kit.make_other_store(first)  # (outside any event loop, as the kit says)

    async def hold() -> None:
        pipe.send(await store.acquire("r", "a"))
        await asyncio.Event().wait()

    asyncio.run(hold())


def _expect(what: str, actual: object, expected: object) -> None:
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def _utc(what: str, moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() != timedelta(0):
        raise AssertionError(f"{what}: expected a UTC datetime, got {moment!r}")


async def _raises_store_error(what: str, action: Awaitable[object]) -> None:
    try:
        await action
    except StoreError:
        return
    raise AssertionError(f"{what}: expected StoreError, nothing was raised")


async def _raises_taken(what: str, action: Awaitable[object]) -> None:
    """A commit whose numbers are taken: another coordinator wrote them (RunLockedError)."""
    try:
        await action
    except RunLockedError:
        return
    except StoreError as exc:
        raise AssertionError(f"{what}: expected RunLockedError, got {exc!r}") from exc
    raise AssertionError(f"{what}: expected RunLockedError, nothing was raised")


async def _values(store: Store, run_id: str, checkpoint_id: str | None = None) -> dict[str, bytes]:
    loaded = await store.load(run_id, checkpoint_id)
    assert loaded is not None, f"load({run_id!r}, {checkpoint_id!r}) gave None"
    return dict(loaded.values)


async def _journal(
    store: Store, run_id: str, checkpoint_id: str | None = None
) -> tuple[bytes, ...]:
    loaded = await store.load(run_id, checkpoint_id)
    assert loaded is not None, f"load({run_id!r}, {checkpoint_id!r}) gave None"
    return tuple(loaded.journal)


async def _frame(store: Store, run_id: str, checkpoint_id: str | None = None) -> bytes:
    loaded = await store.load(run_id, checkpoint_id)
    assert loaded is not None, f"load({run_id!r}, {checkpoint_id!r}) gave None"
    return bytes(loaded.frame)


async def _ids(store: Store, run_id: str) -> list[str]:
    return [info.id for info in await store.list_checkpoints(run_id)]


async def _status(store: Store, run_id: str) -> tuple[StoredStatus, bytes | None]:
    got = await store.get_run(run_id)
    assert got is not None, f"get_run({run_id!r}) gave None"
    return got.status, got.result


class StoreConformance:
    """The store guarantees, as tests; subclass it and override :meth:`make_store`.

    Example::

        class TestMemoryStore(StoreConformance):
            def make_store(self) -> Store:
                return MemoryStore()

            def make_other_store(self, first: Store) -> Store:
                return first  # its objects share no data: the same object stands in
    """

    # -- what a subclass provides ---------------------------------------------------------------

    def make_store(self) -> Store:
        """A new, empty store (called once or more per test, outside any event loop)."""
        raise NotImplementedError(f"{type(self).__name__} must override make_store()")

    def make_other_store(self, first: Store) -> Store:
        """A second store object over ``first``'s data (another coordinator).

        Raises:
            unittest.SkipTest: by default: the tests that need it are skipped.
        """
        raise unittest.SkipTest(f"{type(self).__name__} does not override make_other_store()")

    async def close_store(self, store: Store) -> None:
        """Close ``store``'s resources of the running event loop (at the end of each run)."""
        closer = getattr(store, "aclose", None) or getattr(store, "close", None)
        if closer is not None:
            done = closer()
            if inspect.isawaitable(done):
                await done

    def run_scenario(
        self, scenario: Callable[..., Awaitable[None]], *stores: Store, close: bool = True
    ) -> None:
        """Run ``scenario(*stores)`` in a new event loop, then close the stores (``close``)."""

        async def main() -> None:
            try:
                await scenario(*stores)
            finally:
                if close:
                    for store in {id(store): store for store in stores}.values():
                        await self.close_store(store)

        asyncio.run(main())

    # -- runs -----------------------------------------------------------------------------------

    def test_a_store_follows_the_store_protocol_and_starts_empty(self) -> None:
        async def scenario(store: Store) -> None:
            missing = lacking_methods(store)
            assert not missing, f"{store!r} lacks methods of the Store protocol: {missing}"
            assert isinstance(store, Store), f"{store!r} does not follow the Store protocol"
            _expect("list_runs() of a new store", await store.list_runs(), [])

        self.run_scenario(scenario, self.make_store())

    def test_create_run_stores_the_record_as_given(self) -> None:
        async def scenario(store: Store) -> None:
            given = record("child", at=3, parent_run_id="parent", parent_checkpoint_id="parent:2")
            _expect("create_run of a new id", await store.create_run(given), None)
            got = await store.get_run("child")
            assert got is not None, "get_run after create_run gave None"
            _expect("the record read back", got, given)
            assert isinstance(got.status, StoredStatus), f"status {got.status!r}"
            _utc("created_at", got.created_at)
            _utc("updated_at", got.updated_at)

        self.run_scenario(scenario, self.make_store())

    def test_get_run_of_an_unknown_run_is_none(self) -> None:
        async def scenario(store: Store) -> None:
            _expect("get_run of an unknown run", await store.get_run("nobody"), None)

        self.run_scenario(scenario, self.make_store())

    def test_create_run_applies_its_first_commit_with_it(self) -> None:
        async def scenario(store: Store) -> None:
            first = Commit(
                "r",
                journal=(b"before any checkpoint",),
                journal_after=-1,
                journal_at=0,
                checkpoint=checkpoint(0, 0, {"a": b"1"}),
                status=PAUSED,
            )
            _expect("create_run", await store.create_run(record("r"), first), None)
            got = await store.get_run("r")
            assert got is not None
            _expect("status from the first commit", got.status, PAUSED)
            assert got.updated_at > got.created_at, "the first commit did not touch updated_at"
            _expect("checkpoints", await _ids(store, "r"), ["r:0"])
            loaded = await store.load("r")
            assert loaded is not None
            _expect("frame", loaded.frame, b"frame 0")
            _expect("values", dict(loaded.values), {"a": b"1"})
            _expect("journal of r:0 (the entry came before it)", tuple(loaded.journal), ())

        self.run_scenario(scenario, self.make_store())

    def test_create_run_refuses_a_taken_id_and_writes_nothing(self) -> None:
        async def scenario(store: Store) -> None:
            original = record("r", workflow="first")
            await store.create_run(original, Commit("r", checkpoint=checkpoint(0)))
            next_numbers = Commit(  # the numbers the run's writer would give next
                "r",
                journal=(b"should not be written",),
                journal_after=0,
                journal_at=0,
                checkpoint=checkpoint(1, 5, {"x": b"y"}),
                status=FAILED,
                result=b"no",
            )
            taken_numbers = Commit(  # numbers the run has: still no error, just the record
                "r",
                journal=(b"nor this",),
                journal_after=-1,
                journal_at=0,
                checkpoint=checkpoint(0, 0, {"x": b"z"}, frame=b"not this frame"),
                status=COMPLETED,
                result=b"no",
            )
            for what, again in [("next", next_numbers), ("taken", taken_numbers)]:
                existing = await store.create_run(record("r", workflow="second", at=9), again)
                _expect(
                    f"create_run of a taken id (its first commit with {what} numbers)",
                    existing,
                    await store.get_run("r"),
                )
                assert existing is not None
                _expect("the existing workflow", existing.workflow, "first")
                _expect("the existing status", existing.status, RUNNING)
                _expect("the existing result", existing.result, None)
                _expect("checkpoints", await _ids(store, "r"), ["r:0"])
                _expect("journal of r:0", await _journal(store, "r"), ())
                _expect("frame of r:0", await _frame(store, "r", "r:0"), b"frame 0")
                _expect("values of r:0", await _values(store, "r"), {})
                _expect("load of the refused checkpoint", await store.load("r", "r:1"), None)
                _expect("runs", [run.run_id for run in await store.list_runs()], ["r"])
            await commit(  # its numbers are still free
                store,
                Commit(
                    "r", journal=(b"j",), journal_after=0, journal_at=0, checkpoint=checkpoint(1)
                ),
            )
            _expect("checkpoints", await _ids(store, "r"), ["r:0", "r:1"])
            _expect("journal of r:0", await _journal(store, "r", "r:0"), (b"j",))

        self.run_scenario(scenario, self.make_store())

    def test_list_runs_gives_every_run_oldest_first(self) -> None:
        async def scenario(store: Store) -> None:
            for run_id, at in [("b", 2), ("c", 3), ("a", 1), ("d", 4)]:
                await store.create_run(record(run_id, at=at))
            _expect(
                "list_runs()", [run.run_id for run in await store.list_runs()], ["a", "b", "c", "d"]
            )

        self.run_scenario(scenario, self.make_store())

    def test_list_runs_filters_by_status(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("p2", at=2, status=PAUSED))
            await store.create_run(record("r1", at=1))
            await store.create_run(record("p1", at=1, status=PAUSED))
            await store.create_run(record("r0", at=0))
            await commit(store, Commit("r0", status=COMPLETED, result=b"done"))

            async def ids(status: str | None) -> list[str]:
                return [run.run_id for run in await store.list_runs(status)]

            _expect("list_runs('paused')", await ids("paused"), ["p1", "p2"])
            _expect("list_runs(PAUSED)", await ids(PAUSED), ["p1", "p2"])
            _expect("list_runs('running')", await ids("running"), ["r1"])
            _expect("list_runs('completed')", await ids("completed"), ["r0"])
            _expect("list_runs('cancelled')", await ids("cancelled"), [])
            for wrong in ("canceled", "PAUSED", ""):  # a typo would find nothing: refused
                await _raises_store_error(f"list_runs({wrong!r})", store.list_runs(wrong))

        self.run_scenario(scenario, self.make_store())

    # -- commits --------------------------------------------------------------------------------

    def test_a_commit_appends_its_journal_then_writes_its_checkpoint_then_its_status(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
            batch = Commit(
                "r",
                journal=(b"e1", b"e2"),
                journal_after=0,
                journal_at=0,
                checkpoint=checkpoint(1, 1, {"k": b"v"}, status=PAUSED),
                status=PAUSED,
            )
            await commit(store, batch)
            _expect(
                "journal of r:0 (before the new checkpoint)",
                await _journal(store, "r", "r:0"),
                (b"e1", b"e2"),
            )
            _expect("journal of r:1 (it starts afresh)", await _journal(store, "r", "r:1"), ())
            infos = await store.list_checkpoints("r")
            _expect("ids", [info.id for info in infos], ["r:0", "r:1"])
            _expect("seqs", [info.seq for info in infos], [0, 1])
            _expect("supersteps", [info.superstep for info in infos], [0, 1])
            _expect("statuses", [info.status for info in infos], [RUNNING, PAUSED])
            got = await store.get_run("r")
            assert got is not None
            _expect("status", got.status, PAUSED)
            assert got.updated_at > got.created_at, "the commit did not touch updated_at"

        self.run_scenario(scenario, self.make_store())

    def test_a_final_status_stores_the_result_and_a_later_status_without_one_keeps_it(
        self,
    ) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"))
            await commit(store, Commit("r", status=COMPLETED, result=b"the result"))
            got = await store.get_run("r")
            assert got is not None
            _expect("status", got.status, COMPLETED)
            _expect("result", got.result, b"the result")
            await commit(store, Commit("r", status=FAILED))
            got = await store.get_run("r")
            assert got is not None
            _expect("status", got.status, FAILED)
            _expect("result kept", got.result, b"the result")

        self.run_scenario(scenario, self.make_store())

    def test_a_commit_to_an_unknown_run_raises_store_error_and_creates_nothing(self) -> None:
        async def scenario(store: Store) -> None:
            batches = [
                Commit(
                    "ghost",
                    journal=(b"j",),
                    checkpoint=checkpoint(0, 0, {"a": b"ghost"}),
                    status=PAUSED,
                ),
                Commit("ghost", journal=(b"only a journal entry",)),
                Commit("ghost", journal=(b"entry 0", b"entry 1")),
                Commit("ghost", checkpoint=checkpoint(0)),
                Commit("ghost", checkpoint=checkpoint(0, 0, {"a": b"ghost", "b": None})),
                Commit("ghost", status=COMPLETED, result=b"ghost"),
                Commit("ghost"),
            ]
            for batch in batches:
                await _raises_store_error(f"{batch!r} to an unknown run", commit(store, batch))
                _expect("get_run", await store.get_run("ghost"), None)
                _expect("list_runs", await store.list_runs(), [])
                _expect("list_checkpoints", await store.list_checkpoints("ghost"), [])
                _expect("load", await store.load("ghost"), None)
            # nothing was kept under its id either: a run of that id starts afresh
            first = Commit(
                "ghost",
                journal=(b"real 0", b"real 1"),
                checkpoint=checkpoint(0, 0, {"b": b"real"}),
            )
            _expect("create_run afterwards", await store.create_run(record("ghost"), first), None)
            _expect("checkpoints", await _ids(store, "ghost"), ["ghost:0"])
            _expect("frame", await _frame(store, "ghost"), b"frame 0")
            _expect("values", await _values(store, "ghost"), {"b": b"real"})
            _expect("status", await _status(store, "ghost"), (RUNNING, None))
            await commit(store, Commit("ghost", journal=(b"after",), journal_after=0, journal_at=0))
            _expect("journal of ghost:0", await _journal(store, "ghost"), (b"after",))

        self.run_scenario(scenario, self.make_store())

    def test_a_taken_checkpoint_seq_is_refused_and_nothing_of_that_commit_is_written(
        self,
    ) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(
                record("r"), Commit("r", checkpoint=checkpoint(0, 0, {"k": b"0"}))
            )
            await commit(
                store,
                Commit(
                    "r",
                    journal=(b"j0",),
                    journal_after=0,
                    journal_at=0,
                    checkpoint=checkpoint(1, 1, {"k": b"1"}),
                ),
            )
            # the journal position (after r:1, at 0) is free: only the seq is taken
            for taken, full in [(1, False), (0, False), (1, True), (0, True)]:
                batch = Commit(
                    "r",
                    journal=(b"lost 0", b"lost 1"),
                    journal_after=1,
                    journal_at=0,
                    checkpoint=checkpoint(
                        taken,
                        7,
                        {"k": b"lost", "new": b"lost", "gone": None},
                        full=full,
                        frame=b"lost",
                        status=PAUSED,
                    ),
                    status=COMPLETED,
                    result=b"lost",
                )
                what = f"a commit of the taken checkpoint seq {taken} (full={full})"
                await _raises_taken(what, commit(store, batch))
                _expect(
                    f"status and result after {what}", await _status(store, "r"), (RUNNING, None)
                )
                infos = await store.list_checkpoints("r")
                _expect("ids", [info.id for info in infos], ["r:0", "r:1"])
                _expect("seqs", [info.seq for info in infos], [0, 1])
                _expect("supersteps", [info.superstep for info in infos], [0, 1])
                _expect("statuses", [info.status for info in infos], [RUNNING, RUNNING])
                _expect("frame of r:0", await _frame(store, "r", "r:0"), b"frame 0")
                _expect("frame of r:1", await _frame(store, "r", "r:1"), b"frame 1")
                _expect("values of r:0", await _values(store, "r", "r:0"), {"k": b"0"})
                _expect("values of r:1", await _values(store, "r", "r:1"), {"k": b"1"})
                _expect("journal of r:0", await _journal(store, "r", "r:0"), (b"j0",))
                _expect("journal of r:1 (the entries refused)", await _journal(store, "r"), ())
            # the journal position the refused commits gave is still free, and seq 2 is next
            good = Commit(
                "r",
                journal=(b"kept",),
                journal_after=1,
                journal_at=0,
                checkpoint=checkpoint(2, 2, {"new": b"2"}),
            )
            await commit(store, good)
            _expect("ids", await _ids(store, "r"), ["r:0", "r:1", "r:2"])
            _expect("journal of r:1", await _journal(store, "r", "r:1"), (b"kept",))
            _expect("values of r:2", await _values(store, "r"), {"k": b"1", "new": b"2"})
            _expect("frame of r:2", await _frame(store, "r"), b"frame 2")

        self.run_scenario(scenario, self.make_store())

    def test_a_taken_journal_position_is_refused_and_nothing_of_that_commit_is_written(
        self,
    ) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"), Commit("r", journal=(b"early 0",)))
            # before the first checkpoint: position 0 after -1 is taken
            early = Commit(
                "r",
                journal=(b"lost",),
                journal_after=-1,
                journal_at=0,
                checkpoint=checkpoint(0, 0, {"a": b"lost"}),
                status=PAUSED,
            )
            await _raises_taken("a taken journal position after -1", commit(store, early))
            _expect("checkpoints", await store.list_checkpoints("r"), [])
            _expect("load", await store.load("r"), None)
            _expect("status and result", await _status(store, "r"), (RUNNING, None))
            first = Commit(  # position 1 after -1 and seq 0 are still free
                "r",
                journal=(b"early 1",),
                journal_after=-1,
                journal_at=1,
                checkpoint=checkpoint(0, 0, {"a": b"0"}),
            )
            await commit(store, first)
            await commit(store, Commit("r", journal=(b"1", b"2"), journal_after=0, journal_at=0))
            refused = [
                Commit(
                    "r",
                    journal=(b"lost a", b"lost b"),
                    journal_after=0,
                    journal_at=at,
                    checkpoint=checkpoint(1, 1, {"a": b"lost", "b": b"lost"}, frame=b"lost"),
                    status=COMPLETED,
                    result=b"lost",
                )
                for at in (0, 1)
            ]
            refused += [
                Commit("r", journal=(b"lost",), journal_after=0, journal_at=1),
                Commit("r", journal=(b"lost",), journal_after=0, journal_at=0, status=PAUSED),
                Commit("r", journal=(b"lost", b"lost"), journal_after=-1, journal_at=1),
            ]
            for batch in refused:
                what = (
                    f"a commit at the taken journal position {batch.journal_at} "
                    f"after {batch.journal_after}"
                )
                await _raises_taken(what, commit(store, batch))
                _expect(
                    f"status and result after {what}", await _status(store, "r"), (RUNNING, None)
                )
                _expect("checkpoints", await _ids(store, "r"), ["r:0"])
                _expect("journal of r:0", await _journal(store, "r", "r:0"), (b"1", b"2"))
                _expect("values of r:0", await _values(store, "r"), {"a": b"0"})
                _expect("frame of r:0", await _frame(store, "r"), b"frame 0")
                _expect("load of r:1", await store.load("r", "r:1"), None)
            await commit(
                store,
                Commit(
                    "r",
                    journal=(b"3",),
                    journal_after=0,
                    journal_at=2,
                    checkpoint=checkpoint(1, 1, {"b": b"1"}),
                ),
            )
            _expect("journal of r:0", await _journal(store, "r", "r:0"), (b"1", b"2", b"3"))
            _expect("checkpoints", await _ids(store, "r"), ["r:0", "r:1"])
            _expect("values of r:1", await _values(store, "r"), {"a": b"0", "b": b"1"})

        self.run_scenario(scenario, self.make_store())

    def test_checkpoint_seqs_and_journal_positions_are_numbered_per_run(self) -> None:
        async def scenario(store: Store) -> None:
            for run_id in ("a", "b"):
                first = Commit(
                    run_id,
                    journal=(f"{run_id} early".encode(),),
                    checkpoint=checkpoint(0, 0, {"k": f"{run_id} 0".encode()}),
                )
                _expect(f"create_run {run_id}", await store.create_run(record(run_id), first), None)
            for run_id in ("a", "b"):
                batch = Commit(
                    run_id,
                    journal=(f"{run_id} after 0".encode(),),
                    journal_after=0,
                    journal_at=0,
                    checkpoint=checkpoint(1, 1, {"k": f"{run_id} 1".encode()}),
                )
                await commit(store, batch)
            for run_id in ("a", "b"):
                _expect(
                    f"ids of {run_id}", await _ids(store, run_id), [f"{run_id}:0", f"{run_id}:1"]
                )
                _expect(
                    f"journal of {run_id}:0",
                    await _journal(store, run_id, f"{run_id}:0"),
                    (f"{run_id} after 0".encode(),),
                )
                _expect(
                    f"values of {run_id}:0",
                    await _values(store, run_id, f"{run_id}:0"),
                    {"k": f"{run_id} 0".encode()},
                )
                _expect(
                    f"values of {run_id}:1",
                    await _values(store, run_id),
                    {"k": f"{run_id} 1".encode()},
                )

        self.run_scenario(scenario, self.make_store())

    def test_concurrent_commits_to_different_runs_all_land(self) -> None:
        async def scenario(store: Store) -> None:
            async def one_run(n: int) -> None:
                run_id = f"run-{n}"
                await store.create_run(record(run_id, at=n))
                for step in range(5):
                    batch = Commit(
                        run_id,
                        journal=(f"{run_id} entry {step}".encode(),),
                        journal_after=step - 1,
                        journal_at=0,
                        checkpoint=checkpoint(step, step, {"step": bytes([step])}),
                    )
                    await commit(store, batch)

            await asyncio.gather(*(one_run(n) for n in range(8)))
            _expect("runs", len(await store.list_runs()), 8)
            for n in range(8):
                run_id = f"run-{n}"
                _expect(
                    f"checkpoints of {run_id}",
                    await _ids(store, run_id),
                    [f"{run_id}:{step}" for step in range(5)],
                )
                _expect(f"values of {run_id}", await _values(store, run_id), {"step": b"\x04"})
                _expect(
                    f"journal of {run_id}'s checkpoint 3",
                    await _journal(store, run_id, f"{run_id}:3"),
                    (f"{run_id} entry 4".encode(),),
                )

        self.run_scenario(scenario, self.make_store())

    def test_commits_made_at_once_land_each_whole_and_a_refused_one_fails_alone(self) -> None:
        async def scenario(store: Store) -> None:
            for n in range(4):
                run_id = f"r{n}"
                await store.create_run(
                    record(run_id, at=n),
                    Commit(run_id, checkpoint=checkpoint(0, 0, {"a": b"0", "b": b"0"})),
                )
            made = [
                commit(store, Commit("r0", journal=(b"j0", b"j1"), journal_after=0)),
                commit(store, Commit("r1", checkpoint=checkpoint(0, 9, {"a": b"lost"}))),
                commit(store, Commit("nobody", checkpoint=checkpoint(0))),
                commit(store, Commit("r2", checkpoint=checkpoint(1, 1, {"a": b"2"}, full=True))),
                commit(store, Commit("r3", status=COMPLETED, result=b"done")),
                commit(store, Commit("r0", journal=(b"j2",), journal_after=0, journal_at=2)),
            ]
            outcomes = await asyncio.gather(*made, return_exceptions=True)
            failed = [i for i, outcome in enumerate(outcomes) if outcome is not None]
            _expect("the commits that failed", failed, [1, 2])
            for i in failed:
                if not isinstance(outcomes[i], StoreError):
                    raise AssertionError(f"commit {i} raised {outcomes[i]!r}, not a StoreError")
            _expect("journal of r0:0", await _journal(store, "r0", "r0:0"), (b"j0", b"j1", b"j2"))
            _expect("checkpoints of r1", await _ids(store, "r1"), ["r1:0"])
            _expect("values of r1", await _values(store, "r1"), {"a": b"0", "b": b"0"})
            _expect("values of r2", await _values(store, "r2"), {"a": b"2"})
            _expect("status of r3", await _status(store, "r3"), (COMPLETED, b"done"))
            _expect("runs", len(await store.list_runs()), 4)

        self.run_scenario(scenario, self.make_store())

    # -- chunks ---------------------------------------------------------------------------------

    def test_each_checkpoint_reads_every_chunk_as_of_itself(self) -> None:
        async def scenario(store: Store) -> None:
            c0 = checkpoint(0, 0, {"a": b"a0", "b": b"b0", "c": b"c0"})
            await store.create_run(record("r"), Commit("r", checkpoint=c0))
            # a changes, b is unchanged (not written), c is deleted
            await commit(store, Commit("r", checkpoint=checkpoint(1, 1, {"a": b"a1", "c": None})))
            # nothing changes
            await commit(store, Commit("r", checkpoint=checkpoint(2, 2)))
            # c comes back, d is new, b is deleted
            c3 = checkpoint(3, 3, {"c": b"c3", "d": b"d3", "b": None})
            await commit(store, Commit("r", checkpoint=c3))
            expected = {
                "r:0": {"a": b"a0", "b": b"b0", "c": b"c0"},
                "r:1": {"a": b"a1", "b": b"b0"},
                "r:2": {"a": b"a1", "b": b"b0"},
                "r:3": {"a": b"a1", "c": b"c3", "d": b"d3"},
            }
            for wanted, values in expected.items():
                _expect(f"values of {wanted}", await _values(store, "r", wanted), values)
            _expect("values of the latest", await _values(store, "r"), expected["r:3"])

        self.run_scenario(scenario, self.make_store())

    def test_a_full_checkpoint_deletes_every_chunk_it_does_not_list(self) -> None:
        async def scenario(store: Store) -> None:
            c0 = checkpoint(0, 0, {"a": b"a0", "b": b"b0", "gone": None})
            await store.create_run(record("r"), Commit("r", checkpoint=c0))
            full = checkpoint(1, 1, {"b": b"b1", "e": b"e1"}, full=True)
            await commit(store, Commit("r", checkpoint=full))
            await commit(store, Commit("r", checkpoint=checkpoint(2, 2, {"a": b"a2"})))
            _expect("values of r:0", await _values(store, "r", "r:0"), {"a": b"a0", "b": b"b0"})
            _expect(
                "values of r:1 (full)", await _values(store, "r", "r:1"), {"b": b"b1", "e": b"e1"}
            )
            _expect(
                "values of r:2",
                await _values(store, "r", "r:2"),
                {"a": b"a2", "b": b"b1", "e": b"e1"},
            )
            await commit(store, Commit("r", checkpoint=checkpoint(3, 3, full=True)))
            _expect("values of an empty full checkpoint", await _values(store, "r"), {})
            _expect("values of r:2 afterwards", len(await _values(store, "r", "r:2")), 3)

        self.run_scenario(scenario, self.make_store())

    def test_a_fork_starts_from_a_full_first_checkpoint(self) -> None:
        async def scenario(store: Store) -> None:
            first = Commit("fork", checkpoint=checkpoint(0, 4, {"a": b"1"}, full=True))
            fork = record("fork", parent_run_id="origin", parent_checkpoint_id="origin:4")
            await store.create_run(fork, first)
            _expect("values of the fork", await _values(store, "fork"), {"a": b"1"})
            _expect("checkpoints of the fork", await _ids(store, "fork"), ["fork:0"])

        self.run_scenario(scenario, self.make_store())

    # -- loading and listing checkpoints --------------------------------------------------------

    def test_load_gives_the_latest_checkpoint_or_the_one_named(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
            await commit(store, Commit("r", checkpoint=checkpoint(1, status=PAUSED)))
            await commit(store, Commit("r", checkpoint=checkpoint(2)))
            latest = await store.load("r")
            assert latest is not None
            _expect("latest id", latest.info.id, "r:2")
            _expect("latest seq", latest.info.seq, 2)
            _expect("latest frame", latest.frame, b"frame 2")
            older = await store.load("r", "r:1")
            assert older is not None
            _expect(
                "older info", (older.info.id, older.info.seq, older.info.superstep), ("r:1", 1, 1)
            )
            _expect("older status", older.info.status, PAUSED)
            _expect("older frame", older.frame, b"frame 1")
            _expect("older run id", older.info.run_id, "r")
            _utc("a checkpoint's created_at", older.info.created_at)

        self.run_scenario(scenario, self.make_store())

    def test_checkpoint_ids_are_the_run_id_and_seq_and_load_takes_them(self) -> None:
        runs = {"r": 3, "a:b": 2, "r:1": 1, "run ✓ 名前": 2}  # run id: its checkpoints

        async def scenario(store: Store) -> None:
            for at, (run_id, count) in enumerate(runs.items()):
                for seq in range(count):
                    mark = f"{run_id} {seq}".encode()
                    write = checkpoint(seq, seq, {"v": mark}, frame=mark)
                    if seq == 0:
                        await store.create_run(
                            record(run_id, at=at), Commit(run_id, checkpoint=write)
                        )
                    else:
                        await commit(store, Commit(run_id, checkpoint=write))
            for run_id, count in runs.items():
                ids = [f"{run_id}:{seq}" for seq in range(count)]
                _expect(f"ids of {run_id!r}", await _ids(store, run_id), ids)
                _expect(
                    f"checkpoint_id of {run_id!r}",
                    [checkpoint_id(run_id, seq) for seq in range(count)],
                    ids,
                )
                latest = await store.load(run_id)
                assert latest is not None
                _expect(f"the latest id of {run_id!r}", latest.info.id, ids[-1])
                for seq, wanted in enumerate(ids):
                    loaded = await store.load(run_id, wanted)
                    assert loaded is not None, f"load({run_id!r}, {wanted!r}) gave None"
                    _expect(
                        f"load({run_id!r}, {wanted!r})",
                        (loaded.info.id, loaded.info.seq, loaded.info.run_id),
                        (wanted, seq, run_id),
                    )
                    _expect("its frame", loaded.frame, f"{run_id} {seq}".encode())
                    _expect("its values", dict(loaded.values), {"v": f"{run_id} {seq}".encode()})
            not_theirs = [
                ("r", "a:b:0", "another run's id"),
                ("a:b", "r:0", "another run's id"),
                ("r", "r:1:0", "the id of run 'r:1'"),
                ("r:1", "r:1", "checkpoint 1 of run 'r', not of run 'r:1'"),
                ("r:1", "r:0", "checkpoint 0 of run 'r'"),
                ("a:b", "b:0", "a part of the run id"),
                ("a:b", "a:0", "a part of the run id"),
                ("r", "r:3", "a seq the run has not reached"),
                ("r:1", "r:1:1", "a seq the run has not reached"),
                ("nobody", "nobody:0", "an unknown run"),
                ("r", "r", "the run id alone"),
                ("r", "r:", "no seq"),
                ("r", "", "nothing"),
                ("r", ":0", "no run id"),
                ("r", "0", "the seq alone"),
                ("r", "r:-1", "a negative seq"),
                ("r", "r:+1", "a signed seq"),
                ("r", "r: 1", "a space"),
                ("r", "r:1 ", "a space"),
                ("r", " r:1", "a space"),
                ("r", "r:1.0", "a decimal"),
                ("r", "r:0x1", "hex"),
                ("r", "r:one", "a word"),
                ("r", "R:1", "another case"),
                ("r", "r::1", "two colons"),
                ("r", "r;1", "another separator"),
            ]
            for run_id, wanted, why in not_theirs:
                _expect(
                    f"load({run_id!r}, {wanted!r}): {why}", await store.load(run_id, wanted), None
                )

        self.run_scenario(scenario, self.make_store())

    def test_load_of_an_id_with_the_seq_spelled_otherwise_is_none(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
            await commit(store, Commit("r", checkpoint=checkpoint(1)))
            # leading zeros, ARABIC-INDIC DIGIT ONE, FULLWIDTH DIGIT ONE: int() reads them as
            # 0 or 1, but checkpoint ids are "<run id>:<seq>" as checkpoint_id writes them
            for wanted in ["r:01", "r:00", "r:\u0661", "r:\uff11"]:
                _expect(f"load('r', {wanted!r})", await store.load("r", wanted), None)

        self.run_scenario(scenario, self.make_store())

    def test_load_of_an_id_with_digit_like_characters_is_none(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
            # SUPERSCRIPT TWO, CIRCLED DIGIT ONE: str.isdigit() is true, int() refuses them
            for wanted in ["r:\u00b2", "r:\u2460", "r:1\u00b2"]:
                _expect(f"load('r', {wanted!r})", await store.load("r", wanted), None)

        self.run_scenario(scenario, self.make_store())

    def test_load_of_an_id_with_a_seq_beyond_64_bits_is_none(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
            for wanted in [f"r:{2**63 - 1}", f"r:{2**63}", f"r:{2**64}", "r:" + "9" * 40]:
                _expect(f"load('r', {wanted!r})", await store.load("r", wanted), None)

        self.run_scenario(scenario, self.make_store())

    def test_journal_entries_before_the_first_checkpoint_belong_to_no_checkpoint(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"), Commit("r", journal=(b"early 0",)))
            await commit(
                store, Commit("r", journal=(b"early 1", b"early 2"), journal_after=-1, journal_at=1)
            )
            _expect("load before any checkpoint", await store.load("r"), None)
            _expect("load of r:0 before any checkpoint", await store.load("r", "r:0"), None)
            _expect("checkpoints", await store.list_checkpoints("r"), [])
            await commit(
                store,
                Commit(
                    "r",
                    journal=(b"early 3",),
                    journal_after=-1,
                    journal_at=3,
                    checkpoint=checkpoint(0),
                ),
            )
            _expect("journal of the first checkpoint", await _journal(store, "r"), ())

        self.run_scenario(scenario, self.make_store())

    def test_journal_entries_belong_to_the_checkpoint_before_them_in_order(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
            await commit(store, Commit("r", journal=(b"1",), journal_after=0, journal_at=0))
            await commit(store, Commit("r", journal=(b"2", b"3"), journal_after=0, journal_at=1))
            await commit(store, Commit("r"))
            await commit(
                store,
                Commit(
                    "r", journal=(b"4",), journal_after=0, journal_at=3, checkpoint=checkpoint(1)
                ),
            )
            await commit(store, Commit("r", journal=(b"5",), journal_after=1, journal_at=0))
            await commit(store, Commit("r", checkpoint=checkpoint(2)))
            _expect("journal of r:0", await _journal(store, "r", "r:0"), (b"1", b"2", b"3", b"4"))
            _expect("journal of r:1", await _journal(store, "r", "r:1"), (b"5",))
            _expect("journal of r:2", await _journal(store, "r", "r:2"), ())
            many = tuple(f"entry {n}".encode() for n in range(12))  # position 10 after 9, 2
            await commit(store, Commit("r", journal=many[:9], journal_after=2, journal_at=0))
            await commit(store, Commit("r", journal=many[9:], journal_after=2, journal_at=9))
            await commit(
                store,
                Commit("r", journal=(b"last",), journal_after=2, journal_at=12, status=PAUSED),
            )
            _expect("journal of the latest", await _journal(store, "r"), (*many, b"last"))

        self.run_scenario(scenario, self.make_store())

    def test_load_of_an_unknown_run_or_checkpoint_is_none(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("a"), Commit("a", checkpoint=checkpoint(0)))
            await store.create_run(record("b"), Commit("b", checkpoint=checkpoint(0)))
            await store.create_run(record("empty"))
            _expect("load of an unknown run", await store.load("nobody"), None)
            _expect("load of an unknown run and id", await store.load("nobody", "a:0"), None)
            _expect("load of an unknown checkpoint", await store.load("a", "a:1"), None)
            _expect("load of a malformed id", await store.load("a", "nothing"), None)
            _expect("load of another run's checkpoint", await store.load("a", "b:0"), None)
            _expect("load of a run without checkpoints", await store.load("empty"), None)
            _expect("load of its first id", await store.load("empty", "empty:0"), None)

        self.run_scenario(scenario, self.make_store())

    def test_list_checkpoints_gives_them_by_seq_with_the_runs_lineage(self) -> None:
        async def scenario(store: Store) -> None:
            fork = record("fork", parent_run_id="origin", parent_checkpoint_id="origin:3")
            await store.create_run(fork, Commit("fork", checkpoint=checkpoint(0, 3)))
            await commit(store, Commit("fork", checkpoint=checkpoint(1, 4)))
            await store.create_run(record("plain"), Commit("plain", checkpoint=checkpoint(0)))
            infos = await store.list_checkpoints("fork")
            _expect("ids", [info.id for info in infos], ["fork:0", "fork:1"])
            _expect("seqs", [info.seq for info in infos], [0, 1])
            _expect("supersteps", [info.superstep for info in infos], [3, 4])
            _expect("run ids", {info.run_id for info in infos}, {"fork"})
            _expect("parent run ids", {info.parent_run_id for info in infos}, {"origin"})
            for info in infos:
                _utc("created_at", info.created_at)
            loaded = await store.load("fork", "fork:0")
            assert loaded is not None
            _expect("parent run id of a loaded checkpoint", loaded.info.parent_run_id, "origin")
            _expect("its superstep", loaded.info.superstep, 3)
            plain = await store.list_checkpoints("plain")
            _expect("parent run id of a plain run", [info.parent_run_id for info in plain], [None])
            _expect("list_checkpoints of an unknown run", await store.list_checkpoints("x"), [])

        self.run_scenario(scenario, self.make_store())

    # -- bytes ----------------------------------------------------------------------------------

    def test_bytes_round_trip_exactly(self) -> None:
        every_byte = bytes(range(256))
        values: dict[str, bytes | None] = {
            "empty": b"",
            "nuls": b"\x00\x00a\x00",
            "every byte": every_byte,
            "large": every_byte * 4096,  # 1 MiB
            "naïve ✓ 名前": b"\xff\xfe\x00",
        }
        journal = (b"", b"\x00", every_byte, b"\x00" * 100)

        async def scenario(store: Store) -> None:
            run_id = "run ✓ \u00e9"
            first = Commit(run_id, checkpoint=checkpoint(0, 0, values, frame=b""))
            await store.create_run(record(run_id), first)
            await commit(
                store,
                Commit(
                    run_id,
                    journal=journal,
                    journal_after=0,
                    journal_at=0,
                    status=COMPLETED,
                    result=b"\x00",
                ),
            )
            loaded = await store.load(run_id, f"{run_id}:0")
            assert loaded is not None
            _expect("the id", loaded.info.id, "run ✓ \u00e9:0")
            _expect("an empty frame", loaded.frame, b"")
            assert set(loaded.values) == set(values), f"chunk names {sorted(loaded.values)}"
            for name, data in values.items():
                _expect(f"chunk {name!r}", loaded.values[name], data)
                assert type(loaded.values[name]) is bytes, f"chunk {name!r} is not bytes"
            _expect("journal", tuple(loaded.journal), journal)
            got = await store.get_run(run_id)
            assert got is not None
            _expect("result", got.result, b"\x00")
            await store.create_run(record("empty result"))
            await commit(store, Commit("empty result", status=FAILED, result=b""))
            got = await store.get_run("empty result")
            assert got is not None
            _expect("an empty result", got.result, b"")
            frame = every_byte * 64
            await commit(store, Commit(run_id, checkpoint=checkpoint(1, 1, frame=frame)))
            loaded = await store.load(run_id)
            assert loaded is not None
            _expect("a binary frame", loaded.frame, frame)

        self.run_scenario(scenario, self.make_store())

    # -- leases ---------------------------------------------------------------------------------

    def test_a_lease_taken_twice_by_its_owner_stays_its_owners(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"))
            _expect("acquire", await store.acquire("r", "owner"), True)
            _expect("acquire again by the owner", await store.acquire("r", "owner"), True)
            _expect("acquire by another", await store.acquire("r", "other"), False)
            await store.release("r", "owner")

        self.run_scenario(scenario, self.make_store())

    def test_a_lease_is_refused_to_another_owner_until_released(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"))
            _expect("acquire by a", await store.acquire("r", "a"), True)
            _expect("acquire by b", await store.acquire("r", "b"), False)
            _expect("acquire by b again", await store.acquire("r", "b"), False)
            await store.release("r", "a")
            _expect("acquire by b after a released", await store.acquire("r", "b"), True)
            _expect("acquire by a after b took it", await store.acquire("r", "a"), False)
            await store.release("r", "b")

        self.run_scenario(scenario, self.make_store())

    def test_release_by_a_non_owner_is_a_no_op(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r"))
            await store.release("r", "nobody")  # no lease at all
            _expect("acquire by a", await store.acquire("r", "a"), True)
            await store.release("r", "b")
            _expect("acquire by c after b's release", await store.acquire("r", "c"), False)
            _expect("acquire by a", await store.acquire("r", "a"), True)
            await store.release("r", "a")

        self.run_scenario(scenario, self.make_store())

    def test_leases_of_different_runs_are_independent(self) -> None:
        async def scenario(store: Store) -> None:
            await store.create_run(record("r1"))
            await store.create_run(record("r2"))
            _expect("acquire r1 by a", await store.acquire("r1", "a"), True)
            _expect("acquire r2 by b", await store.acquire("r2", "b"), True)
            await store.release("r1", "a")
            _expect("acquire r2 by a", await store.acquire("r2", "a"), False)
            await store.release("r2", "b")

        self.run_scenario(scenario, self.make_store())

    # -- leases across processes ---------------------------------------------------------------

    across_processes = True
    """Whether processes share the store's data (a file, a server): the leases are then
    checked across processes too. Set it to False for a store kept in one process's
    memory."""

    lease_gone_within = 10.0
    """Seconds a killed process's lease may take to go (a server noticing the session
    ended, say)."""

    def test_a_lease_held_by_another_process_is_refused_and_goes_when_it_is_killed(
        self,
    ) -> None:
        """What resuming after a crash stands on: a live process's lease keeps every
        other process out, and a process killed with SIGKILL leaves no lease behind."""
        if not self.across_processes:
            raise unittest.SkipTest(f"{type(self).__name__}: across_processes is False")
        first = self.make_store()
        other = self.make_other_store(first)  # (skipped here unless there is one)
        if other is first:
            raise unittest.SkipTest(f"{type(self).__name__}: its store objects share no data")

        async def create(store: Store) -> None:
            await store.create_run(record("r"))

        self.run_scenario(create, first)
        context = multiprocessing.get_context("fork")  # (the child makes its own store)
        ours, theirs = context.Pipe()
        child = context.Process(target=_hold_lease, args=(self, first, theirs), daemon=True)
        child.start()
        theirs.close()  # (the child's end: a child that dies is then seen at once)
        try:
            try:
                took = ours.poll(30) and ours.recv()
            except EOFError:
                child.join(5)
                raise AssertionError(
                    f"the child process ended (exit code {child.exitcode}) before it took "
                    f"the lease through make_other_store()"
                ) from None
            _expect("the child took the lease", took, True)

            async def refused(store: Store) -> None:
                _expect("acquire while its holder lives", await store.acquire("r", "b"), False)

            self.run_scenario(refused, other)
        finally:
            child.kill()
            child.join(30)
            ours.close()
        deadline = time.monotonic() + self.lease_gone_within

        async def taken(store: Store) -> None:
            pause = 0.01
            while not await store.acquire("r", "b"):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"the lease of a process killed with SIGKILL was still held "
                        f"{self.lease_gone_within} s later"
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
            await store.release("r", "b")

        self.run_scenario(taken, self.make_other_store(first))

    # -- event loops and store objects ----------------------------------------------------------

    def test_the_store_works_from_one_event_loop_after_another(self) -> None:
        store = self.make_store()

        async def first_loop(store: Store) -> None:
            await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
            await store.acquire("r", "first loop")
            await store.release("r", "first loop")

        async def second_loop(store: Store) -> None:
            batch = Commit(
                "r", journal=(b"j",), journal_after=0, journal_at=0, checkpoint=checkpoint(1)
            )
            await commit(store, batch)
            _expect("acquire in another loop", await store.acquire("r", "second loop"), True)
            await store.release("r", "second loop")

        async def third_loop(store: Store) -> None:
            _expect("checkpoints", await _ids(store, "r"), ["r:0", "r:1"])
            _expect("journal of r:0", await _journal(store, "r", "r:0"), (b"j",))
            _expect("runs", [run.run_id for run in await store.list_runs()], ["r"])
            taken = Commit("r", checkpoint=checkpoint(1))
            await _raises_taken("a taken seq in a third loop", commit(store, taken))

        self.run_scenario(first_loop, store, close=False)
        self.run_scenario(second_loop, store, close=False)
        self.run_scenario(third_loop, store)

    def test_two_store_objects_over_the_same_data_see_the_same_runs(self) -> None:
        store = self.make_store()
        other = self.make_other_store(store)

        async def scenario(store: Store, other: Store) -> None:
            await store.create_run(
                record("r"), Commit("r", checkpoint=checkpoint(0, 0, {"a": b"1"}))
            )
            _expect("the run seen by the other", await other.get_run("r"), await store.get_run("r"))
            _expect(
                "create_run of the same id by the other",
                (await other.create_run(record("r"))) is not None,
                True,
            )
            batch = Commit(
                "r",
                journal=(b"j",),
                journal_after=0,
                journal_at=0,
                checkpoint=checkpoint(1, 1, {"b": b"2"}),
            )
            await commit(other, batch)
            _expect("checkpoints seen by the first", await _ids(store, "r"), ["r:0", "r:1"])
            _expect("values seen by the first", await _values(store, "r"), {"a": b"1", "b": b"2"})
            _expect("journal seen by the first", await _journal(store, "r", "r:0"), (b"j",))
            # the same numbers through the first object: taken
            stale = Commit(
                "r",
                journal=(b"stale",),
                journal_after=0,
                journal_at=0,
                checkpoint=checkpoint(1, 1, {"b": b"stale"}),
                status=FAILED,
            )
            await _raises_taken("the other's numbers again", commit(store, stale))
            _expect("values after", await _values(store, "r"), {"a": b"1", "b": b"2"})
            _expect("journal after", await _journal(store, "r", "r:0"), (b"j",))
            _expect("status after", await _status(other, "r"), (RUNNING, None))
            await store.create_run(record("s", at=1))
            _expect(
                "runs seen by the other",
                [run.run_id for run in await other.list_runs()],
                ["r", "s"],
            )

        self.run_scenario(scenario, store, other)

    def test_of_two_writers_giving_the_same_numbers_one_commit_lands_whole(self) -> None:
        store = self.make_store()
        other = self.make_other_store(store)

        async def scenario(store: Store, other: Store) -> None:
            await store.create_run(
                record("r"), Commit("r", checkpoint=checkpoint(0, 0, {"k": b"0"}))
            )

            def batch(writer: str, status: StoredStatus) -> Commit:
                return Commit(
                    "r",
                    journal=(f"{writer} a".encode(), f"{writer} b".encode()),
                    journal_after=0,
                    journal_at=0,
                    checkpoint=checkpoint(1, 1, {"k": writer.encode()}, frame=writer.encode()),
                    status=status,
                )

            outcomes = await asyncio.gather(
                commit(store, batch("first", PAUSED)),
                commit(other, batch("second", FAILED)),
                return_exceptions=True,
            )
            refused = [outcome for outcome in outcomes if outcome is not None]
            _expect("how many commits were refused", len(refused), 1)
            assert isinstance(refused[0], StoreError), f"refused with {refused[0]!r}"
            winner, status = ("first", PAUSED) if outcomes[0] is None else ("second", FAILED)
            _expect("checkpoints", await _ids(store, "r"), ["r:0", "r:1"])
            _expect("frame of r:1", await _frame(other, "r"), winner.encode())
            _expect("values of r:1", await _values(other, "r"), {"k": winner.encode()})
            _expect(
                "journal of r:0",
                await _journal(store, "r", "r:0"),
                (f"{winner} a".encode(), f"{winner} b".encode()),
            )
            _expect("status", await _status(store, "r"), (status, None))

        self.run_scenario(scenario, store, other)

    def test_a_lease_held_through_one_store_object_is_refused_through_another(self) -> None:
        store = self.make_store()
        other = self.make_other_store(store)

        async def scenario(store: Store, other: Store) -> None:
            await store.create_run(record("r"))
            _expect("acquire through the first", await store.acquire("r", "first"), True)
            _expect("acquire through the other", await other.acquire("r", "second"), False)
            await store.release("r", "first")
            _expect(
                "acquire through the other once freed", await other.acquire("r", "second"), True
            )
            _expect("acquire through the first", await store.acquire("r", "first"), False)
            await other.release("r", "second")

        self.run_scenario(scenario, store, other)
