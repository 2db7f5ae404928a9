"""What PostgresStore and PostgresGate share: psycopg's error class and advisory lock keys."""

from __future__ import annotations

import hashlib

from ..errors import StoreError

__all__ = ["TABLES_KEY", "lock_key", "psycopg_error"]


def psycopg_error(who: str = "PostgresStore") -> type[Exception]:
    """psycopg's base error class (importing psycopg), or a StoreError naming ``who`` and
    the extra to install if it is missing."""
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(
            f"{who} needs psycopg 3, which is not installed: install the extra with "
            f"pip install 'stepgraph[postgres]'"
        ) from exc
    return psycopg.Error


def lock_key(text: str, size: int = 8) -> int:
    """A signed advisory lock key of ``size`` bytes (8: bigint, 4: int) for ``text``."""
    digest = hashlib.blake2b(text.encode(), digest_size=size).digest()
    return int.from_bytes(digest, "big", signed=True)


TABLES_KEY = lock_key("stepgraph tables")
"""The transaction lock under which stepgraph creates its tables (one creator at a time)."""
