"""A stored checkpoint's row damaged beside its checksummed content (its status, its
superstep, a blob column holding text) is refused with ``CheckpointError`` naming the run
and the checkpoint, and refusing it changes nothing stored (a real SQLite file)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stepgraph.errors import CheckpointError
from stepgraph.stores import SqliteStore
from tests.durability.flows import Chain


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def damaged(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql)


CASES: dict[str, tuple[str, Callable[[SqliteStore], Awaitable[Any]], str]] = {
    "status": (
        "UPDATE stepgraph_checkpoints SET status = 'bogus' WHERE seq = 2",
        lambda store: store.list_checkpoints("r1"),
        "checkpoint 'r1:2' of run 'r1' is corrupt: its status is 'bogus'",
    ),
    "frame as text": (
        "UPDATE stepgraph_checkpoints SET frame = 'x' WHERE seq = 3",
        lambda store: Chain(store=store).resume("r1", checkpoint_id="r1:3"),
        "checkpoint 'r1:3' of run 'r1' is corrupt: its frame is a str, not bytes",
    ),
    "superstep": (
        "UPDATE stepgraph_checkpoints SET superstep = 99 WHERE seq = 1",
        lambda store: Chain(store=store).resume("r1", checkpoint_id="r1:1"),
        "checkpoint 'r1:1' of run 'r1' is corrupt: the store lists it at superstep 99",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_damaged_checkpoint_row_is_refused_naming_it_and_nothing_changes(
    tmp_path: Path, case: str
) -> None:
    path = tmp_path / "runs.db"
    store = SqliteStore(path)
    try:
        assert await Chain(store=store).run(run_id="r1", tag="t", hops=3) == 6
    finally:
        store.close()
    sql, read, message = CASES[case]
    damaged(path, sql)
    before = dump(path)
    again = SqliteStore(path)
    try:
        with pytest.raises(CheckpointError, match=message) as raised:
            await read(again)
    finally:
        again.close()
    assert raised.value.run_id == "r1"
    assert dump(path) == before


READS: dict[str, Callable[[SqliteStore], Awaitable[Any]]] = {
    "resume": lambda store: Chain(store=store).resume("r1"),
    "run(run_id=)": lambda store: Chain(store=store).run(run_id="r1", tag="t", hops=3),
    "store.result": lambda store: store.result("r1"),
}


@pytest.mark.parametrize("read", list(READS))
async def test_a_completed_run_whose_result_is_missing_is_refused_not_read_as_none(
    tmp_path: Path, read: str
) -> None:
    """A result of None is stored (as an encoded ``null``): no result at all is damage."""
    path = tmp_path / "runs.db"
    store = SqliteStore(path)
    try:
        assert await Chain(store=store).run(run_id="r1", tag="t", hops=3) == 6
    finally:
        store.close()
    damaged(path, "UPDATE stepgraph_runs SET result = NULL WHERE run_id = 'r1'")
    before = dump(path)
    again = SqliteStore(path)
    try:
        with pytest.raises(CheckpointError, match=r"run 'r1' is corrupt: .* result is missing"):
            await READS[read](again)
    finally:
        again.close()
    assert dump(path) == before
