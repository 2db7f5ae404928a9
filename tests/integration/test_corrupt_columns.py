"""A stored checkpoint's row damaged beside its checksummed content (its status, its
superstep, a blob column holding text) is refused with ``CheckpointError`` naming the run
and the checkpoint, and refusing it changes nothing stored (a real SQLite file)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stepgraph.errors import CheckpointError
from stepgraph.stores import PostgresStore, SqliteStore
from stepgraph.testing import crash
from tests.durability.flows import Chain, Reached, gate
from tests.pg import PG_DSN, pg_schema, require_pg


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def damaged(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql)


async def refused(
    path: Path, sql: str, read: Callable[[SqliteStore], Awaitable[Any]], match: str
) -> None:
    """Run ``r1`` to its end in ``path``, damage it with ``sql``: ``read`` raises a
    ``CheckpointError`` naming ``r1`` (matching ``match``), and nothing stored changes."""
    store = SqliteStore(path)
    try:
        assert await Chain(store=store).run(run_id="r1", tag="t", hops=3) == 6
    finally:
        store.close()
    damaged(path, sql)
    before = dump(path)
    again = SqliteStore(path)
    try:
        with pytest.raises(CheckpointError, match=match) as raised:
            await read(again)
    finally:
        again.close()
    assert raised.value.run_id == "r1"
    assert dump(path) == before


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
    "superstep as text": (
        "UPDATE stepgraph_checkpoints SET superstep = 'two' WHERE seq = 2",
        lambda store: store.list_checkpoints("r1"),
        "checkpoint 'r1:2' of run 'r1' is corrupt: its superstep is 'two', not a number",
    ),
    "created_at as text": (
        "UPDATE stepgraph_checkpoints SET created_at = 'yesterday' WHERE seq = 2",
        lambda store: Chain(store=store).resume("r1", checkpoint_id="r1:2"),
        "checkpoint 'r1:2' of run 'r1' is corrupt: its created_at is 'yesterday', not a time",
    ),
    "journal_base as text": (
        "UPDATE stepgraph_checkpoints SET journal_base = 'first' WHERE seq = 2",
        lambda store: Chain(store=store).resume("r1", checkpoint_id="r1:2"),
        "checkpoint 'r1:2' of run 'r1' is corrupt: its journal_base is 'first', not a number",
    ),
    "superstep": (
        "UPDATE stepgraph_checkpoints SET superstep = 99 WHERE seq = 1",
        lambda store: Chain(store=store).resume("r1", checkpoint_id="r1:1"),
        "checkpoint 'r1:1' of run 'r1' is corrupt: the store lists it at superstep 99",
    ),
}


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
    sql = "UPDATE stepgraph_runs SET result = NULL WHERE run_id = 'r1'"
    await refused(
        tmp_path / "runs.db", sql, READS[read], r"run 'r1' is corrupt: .* result is missing"
    )


JOURNAL_GAP = (
    r"checkpoint 'r1:0' of run 'r1' is corrupt: its journal has \d+ entries, up to "
    r"position \d+: one is missing"
)

RECORD_CASES: dict[str, tuple[str, Callable[[SqliteStore], Awaitable[Any]], str]] = {
    "created_at as text": (
        "UPDATE stepgraph_runs SET created_at = 'yesterday'",
        lambda store: store.list_runs(),
        "the record of run 'r1' is corrupt: its created_at is 'yesterday', not a time",
    ),
    "updated_at as text": (
        "UPDATE stepgraph_runs SET updated_at = 'now'",
        lambda store: store.get_run("r1"),
        "the record of run 'r1' is corrupt: its updated_at is 'now', not a time",
    ),
    "result as text": (
        "UPDATE stepgraph_runs SET result = 'six'",
        lambda store: Chain(store=store).run(run_id="r1", tag="t", hops=3),
        "the record of run 'r1' is corrupt: its result is a str, not bytes",
    ),
    "status": (
        "UPDATE stepgraph_runs SET status = 'bogus'",
        lambda store: store.get_run("r1"),
        "the record of run 'r1' is corrupt: its status is 'bogus'",
    ),
}


DAMAGED = {f"checkpoint row, {k}": case for k, case in CASES.items()} | {
    f"run record, {k}": case for k, case in RECORD_CASES.items()
}


@pytest.mark.parametrize("case", list(DAMAGED))
async def test_a_damaged_row_is_refused_naming_its_run_and_nothing_changes(
    tmp_path: Path, case: str
) -> None:
    sql, read, message = DAMAGED[case]
    await refused(tmp_path / "runs.db", sql, read, re.escape(message))


async def test_a_journal_missing_an_entry_is_refused_as_corrupt_not_as_another_writer(
    tmp_path: Path,
) -> None:
    """An async run's journal after its checkpoint lost an entry in the middle: resuming
    it is refused naming the checkpoint (not taken for another coordinator's writes)."""
    path = tmp_path / "runs.db"
    store = SqliteStore(path)
    try:
        tag = f"journal-gap-{tmp_path.name}"
        gate(tag)
        handler = Chain(store=store, mode="async").run(run_id="r1", tag=tag, hops=5, stop_at=3)
        async for event in handler.stream_events():
            if isinstance(event, Reached) and event.n == 3:
                break
        await crash(handler)
    finally:
        store.close()
    damaged(path, "DELETE FROM stepgraph_entries WHERE run_id = 'r1' AND pos = 1")
    before = dump(path)
    again = SqliteStore(path)
    try:
        loaded = await again.load("r1")  # (a read serving several runs, a worker's claim,
        assert loaded is not None  # does not fail: the run's restore refuses it alone)
        assert loaded.journal_last == len(loaded.journal)
        with pytest.raises(
            CheckpointError,
            match=JOURNAL_GAP,
        ):
            await Chain(store=again, mode="async").resume("r1")
    finally:
        again.close()
    assert dump(path) == before


async def test_a_journal_missing_an_entry_is_refused_as_corrupt_on_postgresql() -> None:
    require_pg()
    import psycopg

    with pg_schema() as schema:
        store = PostgresStore(PG_DSN, schema=schema)
        try:
            tag = f"journal-gap-pg-{schema}"
            gate(tag)
            handler = Chain(store=store, mode="async").run(run_id="r1", tag=tag, hops=5, stop_at=3)
            async for event in handler.stream_events():
                if isinstance(event, Reached) and event.n == 3:
                    break
            await crash(handler)
            async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
                await conn.execute(
                    f'DELETE FROM "{schema}".stepgraph_journal WHERE run_id = %s AND pos = 1',
                    ("r1",),
                )
            with pytest.raises(
                CheckpointError,
                match=JOURNAL_GAP,
            ):
                await Chain(store=store, mode="async").resume("r1")
        finally:
            await store.aclose()
