"""Stores of another kind for the CLI tests, named by ``--store python:cli_stores:ATTR``."""

from __future__ import annotations

import os

from stepgraph.stores import SqliteStore


class ThirdParty(SqliteStore):
    """Stands in for a store a third party wrote (the CLI knows nothing of it)."""


def make() -> ThirdParty:
    """Makes the store (its file from ``CLI_TEST_DB``)."""
    return ThirdParty(os.environ["CLI_TEST_DB"])


NOT_A_STORE = "runs.db"


def broken() -> ThirdParty:
    raise OSError("the bucket is gone")
