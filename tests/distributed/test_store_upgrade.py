"""A SQLite file written before run queues existed opens, keeps its runs, and queues runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stepgraph.stores import SqliteStore
from stepgraph.stores.base import StoredStatus

from .flows import Three

# stepgraph_runs as the first release made it (no queue, worker or lease_until column)
_OLD_RUNS = """
CREATE TABLE stepgraph_runs (
    number INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    parent_run_id TEXT,
    parent_checkpoint_id TEXT,
    result BLOB
);
INSERT INTO stepgraph_runs (run_id, workflow, status, created_at, updated_at, result)
VALUES ('old-1', 'Three', 'completed', 1700000000.0, 1700000001.0, NULL);
"""


async def test_an_old_file_gets_the_new_columns_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_OLD_RUNS)
    store = SqliteStore(path)
    (old,) = await store.list_runs()
    assert old.run_id == "old-1" and old.status == StoredStatus.COMPLETED
    assert old.queue is None and old.worker is None
    run_id = await Three(store=store).submit(n=1)
    assert [r.run_id for r in await store.list_runs(status="queued")] == [run_id]
    assert [r.run_id for r in await store.claim("w", ["default"], 5, 10.0)] == [run_id]
    store.close()
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(stepgraph_runs)")}
    assert {"queue", "worker", "lease_until"} <= columns
