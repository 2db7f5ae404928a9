"""A SQLite file whose journal is in the table the previous release wrote
(``stepgraph_journal``, keyed by run id, checkpoint and position) opens with every entry
in ``stepgraph_entries``, each checkpoint reads the same journal, and a crashed run
resumes from it as it would have."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stepgraph.durability.run import DurableRun
from stepgraph.errors import StoreError
from stepgraph.stores import SqliteStore

from .flows import CALLS, Chain, gate
from .test_resume import held_at, new_tag

# the previous release's journal table, as it made it
_OLD_JOURNAL = """
CREATE TABLE stepgraph_journal (
    run_id TEXT NOT NULL,
    after_seq INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    entry BLOB NOT NULL,
    PRIMARY KEY (run_id, after_seq, pos)
) WITHOUT ROWID;
"""


def _as_the_previous_release_wrote_it(path: Path, orphan: bool = False) -> None:
    """Put the file's journal back in the old table, and drop ``journal_base``."""
    with sqlite3.connect(path) as conn:
        conn.executescript(_OLD_JOURNAL)
        conn.execute(
            "INSERT INTO stepgraph_journal SELECT run_id, after_seq, pos, entry "
            "FROM stepgraph_entries"
        )
        if orphan:  # an entry of a run the file has no record of
            conn.execute("INSERT INTO stepgraph_journal VALUES ('ghost', 0, 0, x'00')")
        conn.execute("DROP TABLE stepgraph_entries")
        conn.execute("ALTER TABLE stepgraph_checkpoints DROP COLUMN journal_base")
        conn.execute("PRAGMA user_version = 0")  # as it left it
    conn.close()


async def _one_run(path: Path) -> None:
    """A run of one hop, async mode (a journal), in a file at ``path``."""
    store = SqliteStore(path)
    try:
        assert await Chain(store=store, mode="async").run(tag=new_tag(), hops=1) == 1
    finally:
        store.close()


async def _opened(path: Path) -> None:
    """Open the file at ``path`` (upgrading it) and close it again."""
    store = SqliteStore(path)
    try:
        await store.list_runs()
    finally:
        store.close()


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        names = {str(n) for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    return names


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_an_old_journal_is_moved_and_a_crashed_run_resumes_from_it(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DurableRun, "journal_span", 2)  # several checkpoints, each a journal
    path = tmp_path / "runs.db"
    tag = new_tag()
    store = SqliteStore(path)
    run_id = await held_at(Chain(store=store, mode=mode), tag, stop_at=4, hops=6)
    done = Chain(store=store, mode=mode).run(tag=new_tag(), hops=2)
    assert await done == 3
    checkpoints = await store.list_checkpoints(run_id)
    journals = [(await store.load(run_id, c.id)).journal for c in checkpoints]  # type: ignore[union-attr]
    if mode == "async":
        assert len(checkpoints) > 1 and all(journals), journals
    store.close()
    _as_the_previous_release_wrote_it(path, orphan=True)

    upgraded = SqliteStore(path)
    assert await upgraded.list_checkpoints(run_id) == checkpoints
    moved = [(await upgraded.load(run_id, c.id)).journal for c in checkpoints]  # type: ignore[union-attr]
    assert moved == journals
    assert (await upgraded.get_run(done.run_id)).status == "completed"  # type: ignore[union-attr]
    with sqlite3.connect(path) as conn:  # what it could not move is kept, apart
        unmoved = conn.execute("SELECT run_id FROM stepgraph_journal_unmoved").fetchall()
        assert unmoved == [("ghost",)]
    conn.close()
    assert "stepgraph_journal" not in _tables(path)

    gate(tag).set()
    assert await Chain(store=upgraded, mode=mode).resume(run_id) == sum(range(7))
    assert CALLS[f"{tag}:hop:3"] == 1  # what the old journal held did not run again
    assert CALLS[f"{tag}:hop:5"] == 1
    upgraded.close()


async def test_a_file_whose_old_journal_is_all_moved_loses_the_old_table(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = SqliteStore(path)
    handler = Chain(store=store, mode="async").run(tag=new_tag(), hops=3)
    assert await handler == 6
    store.close()
    _as_the_previous_release_wrote_it(path)
    assert "stepgraph_journal" in _tables(path)

    again = SqliteStore(path)
    assert await Chain(store=again, mode="async").resume(handler.run_id) == 6
    assert "stepgraph_journal" not in _tables(path)
    with sqlite3.connect(path) as conn:
        bases = conn.execute("SELECT journal_base FROM stepgraph_checkpoints").fetchall()
    conn.close()
    assert bases and all(type(b) is int for (b,) in bases)
    again.close()


async def test_a_run_named_as_an_unmoved_entry_later_gets_none_of_it(tmp_path: Path) -> None:
    """The upgrade happens once: what it kept apart is never moved into a run later."""
    path = tmp_path / "runs.db"
    await _one_run(path)
    _as_the_previous_release_wrote_it(path, orphan=True)  # an entry of run 'ghost'
    await _opened(path)  # (upgraded)
    again = SqliteStore(path)
    handler = Chain(store=again, mode="async").run(run_id="ghost", tag=new_tag(), hops=2)
    assert await handler == 3
    again.close()
    third = SqliteStore(path)
    checkpoints = await third.list_checkpoints("ghost")
    for info in checkpoints:
        assert b"\x00" not in (await third.load("ghost", info.id)).journal  # type: ignore[union-attr]
    third.close()


async def test_a_file_an_older_stepgraph_wrote_its_journal_to_again_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    await _one_run(path)
    with sqlite3.connect(path) as conn:  # what an older stepgraph does with the file
        conn.executescript(_OLD_JOURNAL)
        conn.execute("INSERT INTO stepgraph_journal VALUES ('r', 0, 0, x'00')")
    conn.close()
    with pytest.raises(StoreError, match="an older stepgraph wrote journal entries"):
        await _opened(path)


async def test_a_file_a_newer_stepgraph_made_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await _one_run(path)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    with pytest.raises(StoreError, match=r"a newer stepgraph made it .*format is 2"):
        await _opened(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM stepgraph_entries").fetchone()[0] > 0
    conn.close()
