"""What the PostgreSQL modules share: psycopg's error class and advisory lock keys."""

from __future__ import annotations

import hashlib
import re

from ..errors import StoreError

__all__ = [
    "RUN_KEY_SQL",
    "TABLES_KEY",
    "binary_params",
    "lock_key",
    "psycopg_error",
    "run_key",
    "run_key_prefix",
]


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


_NAMED = re.compile(r"%\((\w+)\)s")


def binary_params(sql: str) -> str:
    """``sql`` with its named parameters (``%(name)s``) sent in binary (``%(name)b``).

    psycopg sends a ``%s`` list of strings as text, quoting each element with regular
    expressions; in binary it writes them as they are: a commit of several runs (an array
    per column) costs a third as much to send. Apply it to a statement before a schema
    name goes in.
    """
    return _NAMED.sub(r"%(\1)b", sql)


def lock_key(text: str, size: int = 8) -> int:
    """A signed advisory lock key of ``size`` bytes (8: bigint, 4: int) for ``text``."""
    digest = hashlib.blake2b(text.encode(), digest_size=size).digest()
    return int.from_bytes(digest, "big", signed=True)


def run_key(schema: str | None, run_id: str) -> int:
    """The advisory lock key of a run's lease: the first 8 bytes of the SHA-256 of
    ``schema NUL run_id``, signed; :data:`RUN_KEY_SQL` computes the same in the server."""
    data = (schema or "").encode() + b"\x00" + run_id.encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big", signed=True)


RUN_KEY_SQL = (
    "('x' || left(encode(sha256(%(key_prefix)s::bytea || convert_to({run_id}, 'UTF8')), "
    "'hex'), 16))::bit(64)::bigint"
)
""":func:`run_key` in SQL, of the text expression ``{run_id}``; the parameter
``key_prefix`` is ``schema NUL`` as bytes."""


def run_key_prefix(schema: str | None) -> bytes:
    """The ``key_prefix`` parameter of :data:`RUN_KEY_SQL`."""
    return (schema or "").encode() + b"\x00"


TABLES_KEY = lock_key("stepgraph tables")
"""The transaction lock under which stepgraph creates its tables (one creator at a time)."""
