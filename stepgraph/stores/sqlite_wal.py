"""WAL checkpoints of SQLite files, off the thread that commits.

In WAL mode SQLite appends each commit to the file's ``-wal`` and, left to itself, has
the commit that takes the WAL past 1,000 pages copy it back into the database file and
sync both (a *checkpoint*). That commit takes milliseconds instead of microseconds, on
the thread that made it: for a store, the event loop's, which runs nothing else
meanwhile. Spread over the commits, it is about 40% of what a small commit costs.

So a :class:`~stepgraph.stores.SqliteStore` turns it off on its connection
(``wal_autocheckpoint=0``) and, every :data:`CHECKPOINT_EVERY` writes, asks the one thread
this module runs per process to checkpoint the file (``PASSIVE``: it never waits for, nor
blocks, a reader or a writer; SQLite releases the GIL while it works). The thread opens
the file for each checkpoint (never creating it) and closes it again. Should a
checkpoint of a file fail, the thread leaves that file alone and the store gives the job
back to SQLite (``wal_autocheckpoint`` as before).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

__all__ = ["CHECKPOINT_EVERY", "WalCheckpoints", "checkpoints"]

CHECKPOINT_EVERY = 256
"""Writes of a store between two checkpoints it asks for (a write appends a page or more)."""

_log = logging.getLogger(__name__)


class WalCheckpoints:
    """One thread that checkpoints the files it is asked to, one after the other."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):  # a forked child has no thread, and a lock
            os.register_at_fork(after_in_child=self._reset)  # held at the fork is not its

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._working = False
        self._wake = threading.Event()
        self._wanted: dict[str, float] = {}  # path -> how long to wait for the file's lock
        self._failed: set[str] = set()
        self._thread: threading.Thread | None = None

    def request(self, path: str, timeout: float) -> bool:
        """Ask for a checkpoint of the file at ``path`` (at once, on the thread).

        Returns:
            False: checkpoints of that file have failed; the caller checkpoints it.
        """
        with self._lock:
            if path in self._failed:
                return False
            self._wanted[path] = timeout
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="stepgraph-sqlite-checkpoints", daemon=True
                )
                self._thread.start()
        self._wake.set()
        return True

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until every checkpoint asked for is done; False: ``timeout`` passed first."""
        with self._done:
            return self._done.wait_for(lambda: not self._wanted and not self._working, timeout)

    def failed(self, path: str) -> bool:
        """Whether a checkpoint of the file at ``path`` has failed."""
        with self._lock:
            return path in self._failed

    def _serve(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                wanted, self._wanted = self._wanted, {}
                self._working = True
            for path, timeout in wanted.items():
                try:
                    _checkpoint(path, timeout)
                except Exception as exc:  # the file is gone, unreadable, ...: SQLite's job
                    _log.debug("WAL checkpoint of %s failed: %s", path, exc)
                    with self._lock:
                        self._failed.add(path)
            with self._done:
                self._working = False
                self._done.notify_all()


def _checkpoint(path: str, timeout: float) -> None:
    """Checkpoint the WAL of the database file at ``path``, which must exist."""
    uri = f"{Path(path).absolute().as_uri()}?mode=rw"  # (never creates the file)
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()


checkpoints = WalCheckpoints()
"""The process's checkpoint thread (started when first asked)."""
