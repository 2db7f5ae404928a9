"""The journal: an observer that records every tick of a run, with the commands it produced."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import Command, Tick
from ..runtime.observers import RunInfo, RunObserver
from .codec import encode_command, encode_tick

__all__ = ["Journal", "JournalRecord"]


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One tick of a run, as the kernel applied it, and the commands it produced."""

    run_id: str
    seq: int
    tick: Tick
    commands: tuple[Command, ...]

    def to_json(self) -> dict[str, Any]:
        """The record as one JSON object (a line of a journal file)."""
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "tick": encode_tick(self.tick),
            "commands": [encode_command(c) for c in self.commands],
        }


class Journal(RunObserver):
    """Records the ticks of every run it watches: ``Workflow(journal=Journal())``.

    A run is a fold of the kernel over its ticks, so its journal is a complete record:
    :func:`stepgraph.journal.replay` rebuilds the run's state from it, in this process or
    another. With ``path``, each record is also appended to that file as one JSON line
    as it happens (written whole, so a killed process leaves no torn line).

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
        self._lock = threading.Lock()

    def tick(self, run: RunInfo, tick: Tick, commands: Sequence[Command]) -> None:
        records = self._records.setdefault(run.run_id, [])
        record = JournalRecord(run.run_id, len(records), tick, tuple(commands))
        records.append(record)
        if self.path is not None:
            line = json.dumps(record.to_json(), separators=(",", ":")) + "\n"
            with self._lock, open(self.path, "a", encoding="utf-8") as out:
                out.write(line)

    def runs(self) -> list[str]:
        """The ids of the runs recorded, in the order they started."""
        return list(self._records)

    def records(self, run_id: str) -> list[JournalRecord]:
        """The records of run ``run_id``, in order."""
        return list(self._records.get(run_id, ()))

    def ticks(self, run_id: str) -> list[Tick]:
        """The ticks of run ``run_id``, in order."""
        return [record.tick for record in self._records.get(run_id, ())]
