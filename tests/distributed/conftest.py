"""Stores for the distributed tests: each test gets a fresh one of each kind it asks for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from stepgraph.stores import MemoryStore, PostgresStore, SqliteStore
from tests.pg import PG_DSN, pg_schema, require_pg


@pytest.fixture
def pg_store_schema() -> Iterator[str]:
    require_pg()
    with pg_schema() as name:
        yield name


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A MemoryStore, a SqliteStore and a PostgresStore (a schema of its own) in turn."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        made = SqliteStore(tmp_path / "runs.db")
        yield made
        made.close()
    else:
        require_pg()
        with pg_schema() as name:
            made_pg = PostgresStore(PG_DSN, schema=name)
            yield made_pg
            await made_pg.aclose()
