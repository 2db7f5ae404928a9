"""The journal: an observer that records every tick of a run, with the commands it produced."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from ..core import Command, RunStatus, Tick
from ..runtime.observers import RunInfo, RunObserver
from .records import JournalRecord, read_journal

__all__ = ["Journal"]


class Journal(RunObserver):
    """Records the ticks of every run it watches: ``Workflow(journal=Journal())``.

    A run is a fold of the kernel over its ticks, so its journal is a complete record:
    :func:`stepgraph.journal.replay` rebuilds the run's state from it, in this process or
    another. ``Journal()`` keeps the records in memory (with the live exceptions of
    failures: for tests and debugging; ``forget(run_id)`` lets a run's records go).
    ``Journal(path)`` appends each record to that file as one JSON line as it happens and
    keeps nothing in memory; ``records`` reads them back from the file. Writing a line is
    blocking file IO on the run's loop: a tool for tests and debugging, not for production
    durability (that is the stores' job).

    Example::

        journal = Journal()
        handler = MyFlow(journal=journal).run()
        await handler
        state = replay(MyFlow(), journal.records(handler.run_id))
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8"):
                pass  # a path that cannot be written fails here, not in the middle of a run
        self._records: dict[str, list[JournalRecord]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def tick(self, run: RunInfo, tick: Tick, commands: Sequence[Command]) -> None:
        run_id = run.run_id
        if self.path is None:
            records = self._records.setdefault(run_id, [])
            records.append(JournalRecord(run_id, len(records), tick, tuple(commands)))
            return
        seq = self._counts.get(run_id, 0)
        self._counts[run_id] = seq + 1
        record = JournalRecord(run_id, seq, tick, tuple(commands))
        line = json.dumps(record.to_json(), separators=(",", ":")) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(line)

    def run_ended(
        self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
    ) -> None:
        self._counts.pop(run.run_id, None)  # a file journal keeps nothing of an ended run

    def runs(self) -> list[str]:
        """The ids of the runs recorded, in the order they started."""
        if self.path is None:
            return list(self._records)
        return list(dict.fromkeys(record.run_id for record in self._read(None)))

    def records(self, run_id: str) -> list[JournalRecord]:
        """The records of run ``run_id``, in order."""
        if self.path is None:
            return list(self._records.get(run_id, ()))
        return list(self._read(run_id))

    def ticks(self, run_id: str) -> list[Tick]:
        """The ticks of run ``run_id``, in order."""
        return [record.tick for record in self.records(run_id)]

    def forget(self, run_id: str) -> None:
        """Let the records of run ``run_id`` go (an in-memory journal keeps them until then)."""
        self._records.pop(run_id, None)

    def _read(self, run_id: str | None) -> list[JournalRecord]:
        assert self.path is not None
        return read_journal(self.path, run_id)
