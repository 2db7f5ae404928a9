"""Stores for durable runs: where checkpoints, journals and run records are kept.

Pass one to a workflow (``MyFlow(store=SqliteStore("runs.db"))``, or
``WorkflowBuilder(...).build(store=...)``) and its runs survive a crash or a restart.

- :class:`MemoryStore`: in this process's memory (tests; runs that need no restart).
- :class:`SqliteStore`: one SQLite file, the embedded default.
- :class:`PostgresStore`: PostgreSQL, for several processes or machines (the optional
  extra ``postgres``: ``pip install 'stepgraph[postgres]'``).

A store of your own implements :class:`Store`; see ``docs/architecture.md``.
"""

from .base import (
    CheckpointInfo,
    CheckpointWrite,
    Commit,
    RunRecord,
    Store,
    StoredCheckpoint,
    StoredStatus,
)
from .memory import MemoryStore
from .postgres import PostgresStore
from .sqlite import SqliteStore

__all__ = [
    "CheckpointInfo",
    "CheckpointWrite",
    "Commit",
    "MemoryStore",
    "PostgresStore",
    "RunRecord",
    "SqliteStore",
    "Store",
    "StoredCheckpoint",
    "StoredStatus",
]
