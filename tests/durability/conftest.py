"""Stores for the durability tests: every test runs on MemoryStore, SqliteStore and
PostgresStore (the PostgreSQL tests skip, saying why, when no server answers).

``stores`` gives a factory: each call returns a store object over the same data (for
MemoryStore, the same object), as a new process would open the same file or database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from stepgraph.stores import MemoryStore, PostgresStore, SqliteStore, Store
from tests.pg import PG_DSN, pg_schema, require_pg

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A store for several processes: ``("sqlite", file)`` or ``("postgres", schema)``."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "runs.db")
        return
    require_pg()
    with pg_schema() as name:
        yield "postgres", name


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg_schema_name(store_kind: str) -> Iterator[str | None]:
    if store_kind != "postgres":
        yield None
        return
    require_pg()
    with pg_schema() as name:
        yield name


@pytest.fixture
async def stores(
    store_kind: str, tmp_path: Path, pg_schema_name: str | None
) -> AsyncIterator[StoreFactory]:
    made: list[Store] = []
    memory = MemoryStore()

    def make() -> Store:
        store: Store
        if store_kind == "memory":
            store = memory
        elif store_kind == "sqlite":
            store = SqliteStore(tmp_path / "runs.db")
        else:
            store = PostgresStore(PG_DSN, schema=pg_schema_name)
        made.append(store)
        return store

    yield make
    for store in made:
        if isinstance(store, PostgresStore):
            await store.aclose()
        elif isinstance(store, SqliteStore):
            store.close()
