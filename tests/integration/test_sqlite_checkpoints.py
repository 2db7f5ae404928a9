"""SqliteStore leaves WAL checkpoints to a thread of their own (a real SQLite file): its
connection never checkpoints in a commit, the file's WAL is copied back all the same,
and a file the thread cannot checkpoint goes back to SQLite's own checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stepgraph.stores import SqliteStore
from stepgraph.stores import sqlite as sqlite_module
from stepgraph.stores.sqlite_wal import CHECKPOINT_EVERY, WalCheckpoints, checkpoints
from tests.durability.flows import Chain


def _autocheckpoint(store: SqliteStore) -> int:
    conn = store._connect()
    return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


async def test_a_stores_commits_never_checkpoint_and_its_wal_is_copied_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    store = SqliteStore(path)
    hops = 3 * CHECKPOINT_EVERY
    try:
        assert await Chain(store=store).run(tag="wal", hops=hops) == sum(range(hops + 1))
        assert _autocheckpoint(store) == 0  # no commit of the store's checkpoints
        assert checkpoints.idle(timeout=60)
        assert not checkpoints.failed(str(path))
        # every page written is in the database file itself: the thread checkpointed it
        # (left to the store's connection alone, the file would hold the schema only)
        assert path.stat().st_size > hops * 500
    finally:
        store.close()


def test_the_thread_never_creates_a_file_and_leaves_one_it_cannot_open(tmp_path: Path) -> None:
    thread = WalCheckpoints()
    missing = str(tmp_path / "missing.db")
    assert thread.request(missing, timeout=1.0)
    assert thread.idle(timeout=60)
    assert not os.path.exists(missing)
    assert thread.failed(missing)
    assert not thread.request(missing, timeout=1.0)  # the caller checkpoints it itself


async def test_a_file_the_thread_cannot_checkpoint_goes_back_to_sqlites_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = WalCheckpoints()
    monkeypatch.setattr(sqlite_module, "checkpoints", thread)
    path = tmp_path / "runs.db"
    thread.request(str(path), timeout=1.0)  # before the file exists: that checkpoint fails
    assert thread.idle(timeout=60) and thread.failed(str(path))
    store = SqliteStore(path)
    try:
        assert _autocheckpoint(store) == 1000  # SQLite's own, as without the thread
        assert await Chain(store=store).run(tag="wal-fallback", hops=3) == 6
    finally:
        store.close()
