"""Store URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``postgresql://...``,
and ``python:MODULE:ATTR`` for a store of another kind (a store object, or what makes one)."""

from __future__ import annotations

import importlib.util
import inspect
import os
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ..stores.base import Store, lacking_methods
from ..stores.postgres import PostgresStore
from ..stores.sqlite import SqliteStore
from .common import fail

__all__ = ["close_store", "open_store", "shown", "url_of"]

STORE_URLS = (
    "sqlite:///relative.db, sqlite:////absolute/path.db, "
    "postgresql://user:password@host:5432/dbname[?schema=NAME] or python:MODULE:ATTR"
)


def shown(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def url_of(store: object) -> str | None:
    """A URL that opens ``store`` again, for a message (its password hidden), or None: a
    store in this process's memory, or of another kind."""
    if isinstance(store, SqliteStore) and store.path != ":memory:":
        return "sqlite:///" + quote(os.path.abspath(store.path))
    if isinstance(store, PostgresStore) and store.dsn.startswith(("postgresql://", "postgres://")):
        url = store.dsn
        if store.schema is not None:
            url += ("&" if urlsplit(url).query else "?") + urlencode({"schema": store.schema})
        return shown(url)
    return None


def _sqlite(url: str, *, create: bool) -> SqliteStore:
    if not url.startswith("sqlite:///"):
        fail(f"bad store URL {url!r}: a SQLite URL is sqlite:///relative.db or sqlite:////abs.db")
    path = unquote(url[len("sqlite:///") :])
    if not path or path.endswith("/"):
        fail(f"bad store URL {url!r}: it names no file (expected {STORE_URLS})")
    file = Path(path)
    if not create and not file.is_file():
        fail(f"cannot open the store {url!r}: there is no file {str(file)!r}")
    if create and not file.parent.is_dir():
        fail(f"cannot open the store {url!r}: there is no folder {str(file.parent)!r}")
    return SqliteStore(file)


def _postgres(url: str) -> PostgresStore:
    if importlib.util.find_spec("psycopg") is None:
        fail(
            f"the store {shown(url)!r} needs psycopg, which is not installed: install the extra "
            f"with pip install 'stepgraph[postgres]'"
        )
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if len(schemas) > 1 or (schemas and not schemas[0]):
        fail(f"bad store URL {shown(url)!r}: give at most one non-empty schema=NAME")
    dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "schema"])))
    return PostgresStore(dsn, schema=schemas[0] if schemas else None)


def open_store(url: str, *, create: bool) -> Store:
    """The store at ``url``; ``create``: a SQLite file may be created (else it must exist).

    A ``schema=NAME`` query parameter of a PostgreSQL URL is not given to the server: it
    is the schema the store keeps its tables in (``PostgresStore(..., schema=NAME)``).

    Raises:
        UsageError: a malformed URL, a missing SQLite file (``create=False``) or folder.
    """
    if url.startswith("sqlite:"):
        return _sqlite(url, create=create)
    if url.startswith(("postgresql://", "postgres://")):
        return _postgres(url)
    if url.startswith("python:"):
        return _python(url)
    fail(f"bad store URL {shown(url)!r}: expected {STORE_URLS}")


def _python(url: str) -> Store:
    """A store of another kind (a third party's): ``python:MODULE:ATTR`` names a store
    object, or a function (a class) that makes one when called with no argument."""
    from .loading import load_attribute

    value = load_attribute(url[len("python:") :])
    if not _is_store(value) and callable(value):
        try:
            value = value()
        except Exception as exc:
            fail(f"making the store {url!r} failed: {type(exc).__name__}: {exc}")
    if not _is_store(value):
        fail(
            f"bad store URL {url!r}: it names a {type(value).__name__}, not a store (an object "
            f"with the methods of stepgraph.stores.Store) or a function that makes one"
        )
    return value  # type: ignore[no-any-return]


def _is_store(value: object) -> bool:
    return not isinstance(value, type) and not lacking_methods(value)


async def probe_store(store: Store, url: str) -> None:
    """Open the store now (a cheap read), so that a store that cannot be opened is a usage
    error before anything runs.

    Raises:
        UsageError: the store cannot be opened (not a database, no server, ...).
    """
    try:
        await store.get_run("")
    except Exception as exc:  # (a store of another kind may raise anything)
        fail(f"cannot open the store {shown(url)!r}: {' '.join(str(exc).split())}")


async def close_store(store: Store) -> None:
    """Close the store's connections (on this event loop); never raises."""
    try:
        aclose = getattr(store, "aclose", None)
        if aclose is not None:
            result = aclose()
            if inspect.isawaitable(result):
                await result
        close = getattr(store, "close", None)
        if close is not None:
            close()
    except Exception:  # closing is best effort: the process ends next
        return
