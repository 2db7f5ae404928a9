"""PostgreSQL for the tests that need a server.

``PG_DSN`` is where the server is (the environment variable ``STEPGRAPH_TEST_PG``
overrides the default, a local server with trust auth and a database ``test``; ``.ci/run``
starts one). A test that needs it calls :func:`require_pg`, which skips the test, with the
reason, when no server answers; :func:`pg_schema` gives it a fresh schema of its own,
dropped afterwards, so that tests are independent and can run again and side by side.

Example::

    @pytest.fixture
    def schema() -> Iterator[str]:
        require_pg()
        with pg_schema() as name:
            yield name
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

__all__ = ["PG_DSN", "pg_available", "pg_schema", "require_pg"]

PG_DSN = os.environ.get("STEPGRAPH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def pg_available() -> str | None:
    """None when the server at ``PG_DSN`` answers; otherwise why not (asked once)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'stepgraph[postgres]')"
    try:
        with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL server at {PG_DSN}: {' '.join(str(exc).split())}"
    return None


def require_pg() -> None:
    """Skip the calling test, saying why, when the PostgreSQL server is not reachable."""
    reason = pg_available()
    if reason is not None:
        pytest.skip(f"{reason} (start one, or set STEPGRAPH_TEST_PG)")


@contextmanager
def pg_schema() -> Iterator[str]:
    """A new, unique schema name; the schema (and all in it) is dropped afterwards."""
    import psycopg

    name = f"stepgraph_test_{uuid.uuid4().hex[:16]}"
    try:
        yield name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
