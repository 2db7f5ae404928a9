"""SqliteStore's journal keys (``(run number << 32) | ordinal``, a checkpoint's
``journal_base``) on a real SQLite file: several store objects writing a run one after
another (as coordinators taking over do, with or without a lease and a load first) keep
every checkpoint's journal exactly as written; a writer that has not seen a newer
checkpoint is refused, never the run's owner; a damaged base is refused as corrupt."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepgraph.distributed.cancel import cancel_unowned
from stepgraph.errors import CheckpointError, RunLockedError, StoreError
from stepgraph.stores import MemoryStore, SqliteStore, Store
from stepgraph.stores.base import Commit, StoredStatus
from stepgraph.testing.store_conformance import checkpoint, commit, record
from tests.durability.flows import Chain

# one step of a run's single writer: which store object writes it, and what
_Step = tuple[int, str, int]  # (object, "entries" | "checkpoint" | "both" | "status" | "load", n)

_STEPS = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(["entries", "checkpoint", "both", "status", "load"]),
        st.integers(1, 3),
    ),
    min_size=1,
    max_size=25,
)


async def _replay(steps: list[_Step], path: Path) -> None:
    """Write one run through three SqliteStore objects over ``path`` (and a MemoryStore,
    the model), numbered as one writer numbers; every checkpoint's journal must match."""
    objects = [SqliteStore(path) for _ in range(3)]
    model = MemoryStore()
    seq, at, written = 0, 0, 0
    try:
        for store in (objects[0], model):
            await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
        for who, what, n in steps:
            writer = objects[who]
            if what == "load":
                await writer.load("r")
                continue
            entries = tuple(f"e{written + i}".encode() for i in range(n))
            batch = Commit("r", journal_after=seq, journal_at=at)
            if what in ("entries", "both"):
                batch.journal, written, at = entries, written + n, at + n
            if what in ("checkpoint", "both"):
                seq, at = seq + 1, 0
                batch.checkpoint = checkpoint(seq)
            if what == "status":
                batch.status = StoredStatus.PAUSED
            for store in (writer, model):
                await commit(store, batch)
        fresh = SqliteStore(path)
        objects.append(fresh)
        for info in await model.list_checkpoints("r"):
            want = await model.load("r", info.id)
            got = await fresh.load("r", info.id)
            assert want is not None and got is not None
            assert got.journal == want.journal, info.id
        # and the run goes on from any of them
        await commit(objects[1], Commit("r", journal=(b"last",), journal_after=seq, journal_at=at))
        latest = await fresh.load("r")
        assert latest is not None and latest.journal[-1] == b"last"
    finally:
        for store in objects:
            store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_STEPS)
def test_writers_taking_turns_keep_every_checkpoints_journal(steps: list[_Step]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(_replay(steps, Path(directory) / "runs.db"))


async def test_a_writer_that_missed_a_newer_checkpoint_is_refused_not_the_owner(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    stale, owner = SqliteStore(path), SqliteStore(path)
    try:
        await stale.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
        stale.commit(Commit("r", journal=(b"a0",), journal_after=0, journal_at=0))
        assert await owner.acquire("r", "owner")
        assert (await owner.load("r")).journal == (b"a0",)  # type: ignore[union-attr]
        owner.commit(Commit("r", checkpoint=checkpoint(1)))
        with pytest.raises(RunLockedError, match=r"has (a )?checkpoint (1 )?after it"):
            stale.commit(Commit("r", journal=(b"a1",), journal_after=0, journal_at=1))
        owner.commit(Commit("r", journal=(b"b0",), journal_after=1, journal_at=0))
        assert (await owner.load("r", "r:0")).journal == (b"a0",)  # type: ignore[union-attr]
        assert (await owner.load("r")).journal == (b"b0",)  # type: ignore[union-attr]
    finally:
        stale.close()
        owner.close()


def _store_with_journals(path: Path) -> None:
    """Run r: checkpoint 0, three entries, checkpoint 1, one entry (and a run after it)."""

    async def write(store: Store) -> None:
        await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
        await store.create_run(record("s", at=1), Commit("s", checkpoint=checkpoint(0)))
        await commit(store, Commit("s", journal=(b"of s",), journal_after=0))
        await commit(store, Commit("r", journal=(b"0", b"1", b"2"), journal_after=0))
        await commit(store, Commit("r", checkpoint=checkpoint(1), journal_at=3))
        await commit(store, Commit("r", journal=(b"3",), journal_after=1))

    store = SqliteStore(path)
    try:
        asyncio.run(write(store))
    finally:
        store.close()


def _damaged(path: Path, sql: str) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(sql)


DAMAGED_BASES = {  # checkpoint r:0 has entries at ordinals 0-2, r:1 starts at 3
    "r:1 among r:0's entries": (1, 1, "r:1", "among the entries before it"),
    "r:1 at r:0's last entry": (1, 2, "r:1", "among the entries before it"),
    "r:1 past the run's keys": (1, 2**33, "r:1", "past the run's keys"),
    "r:0 past its own entries": (0, 2, "r:0", "past its own entries"),
    "r:0 past the next one's": (0, 7, "r:0", r"past the next one's \(3\)"),
}


@pytest.mark.parametrize("case", list(DAMAGED_BASES))
def test_a_damaged_base_is_corrupt_never_a_shorter_or_foreign_journal(
    tmp_path: Path, case: str
) -> None:
    seq, base, named, what = DAMAGED_BASES[case]
    path = tmp_path / "runs.db"
    _store_with_journals(path)
    _damaged(path, f"UPDATE stepgraph_checkpoints SET journal_base = {base} WHERE seq = {seq}")
    store = SqliteStore(path)
    try:
        with pytest.raises(
            CheckpointError, match=rf"checkpoint '{named}' of run 'r' is corrupt: .*{what}"
        ):
            asyncio.run(store.load("r", "r:0"))
    finally:
        store.close()


async def test_a_status_alone_is_stored_whatever_the_checkpoints_bases_hold(
    tmp_path: Path,
) -> None:
    """Cancelling (or failing) a run whose checkpoint is damaged needs no journal number."""
    path = tmp_path / "runs.db"
    store = SqliteStore(path)
    await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
    store.close()
    _damaged(path, "UPDATE stepgraph_checkpoints SET journal_base = 'first'")
    again = SqliteStore(path)
    try:
        await cancel_unowned(again, "r", "stopped by an operator")
        assert (await again.get_run("r")).status == "cancelled"  # type: ignore[union-attr]
    finally:
        again.close()


async def test_an_entry_sqlite_refuses_for_another_reason_is_no_taken_position(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "runs.db")
    try:
        await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
        broken = Commit("r", journal=(None,), journal_after=0)  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="NOT NULL") as raised:
            store.commit(broken)
        assert not isinstance(raised.value, RunLockedError)
        store.commit(Commit("r", journal=(b"0",), journal_after=0))
        assert (await store.load("r")).journal == (b"0",)  # type: ignore[union-attr]
    finally:
        store.close()


async def test_what_a_store_knew_before_it_closed_is_read_again(tmp_path: Path) -> None:
    """Closed and opened again, a store object reads what others wrote meanwhile."""
    path = tmp_path / "runs.db"
    first, other = SqliteStore(path), SqliteStore(path)
    try:
        await first.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
        first.commit(Commit("r", journal=(b"0",), journal_after=0, journal_at=0))
        first.close()
        other.commit(Commit("r", checkpoint=checkpoint(1), journal_at=1))
        other.close()
        with pytest.raises(RunLockedError, match=r"has (a )?checkpoint (1 )?after it"):
            first.commit(Commit("r", journal=(b"1",), journal_after=0, journal_at=1))
        first.commit(Commit("r", journal=(b"1",), journal_after=1, journal_at=0))
        assert (await first.load("r", "r:0")).journal == (b"0",)  # type: ignore[union-attr]
        assert (await first.load("r")).journal == (b"1",)  # type: ignore[union-attr]
    finally:
        first.close()
        other.close()


async def test_a_commit_of_one_statement_that_changes_no_row_is_no_refusal(
    tmp_path: Path,
) -> None:
    """Only an entry that did not go in is refused: a message already taken off the inbox
    (delivered twice, say) changes no row, and that is no other writer's doing."""
    store = SqliteStore(tmp_path / "runs.db")
    try:
        await store.create_run(record("r"), Commit("r", checkpoint=checkpoint(0)))
        store.commit(Commit("r", consumed=(12345,)))
        store.commit(Commit("r", journal=(b"0",), journal_after=0))
        assert (await store.load("r")).journal == (b"0",)  # type: ignore[union-attr]
    finally:
        store.close()


async def test_a_store_keeps_nothing_of_a_run_once_it_has_ended(tmp_path: Path) -> None:
    """A worker writes run after run through one store object: what it keeps per run to
    write it faster goes when the run ends."""
    store = SqliteStore(tmp_path / "runs.db")
    try:
        for n in range(20):
            assert await Chain(store=store, mode="async").run(tag=f"kept-{n}", hops=2) == 3
        assert store._numbers == {} and store._latest == {}
    finally:
        store.close()
