"""Journal records and journal files: one JSON object per line, a record per tick."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import Command, Tick
from ..errors import SerializationError
from .codec import decode_command, decode_tick, encode_command, encode_tick

__all__ = ["JournalRecord", "read_journal", "write_journal"]


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


def write_journal(path: str | os.PathLike[str], records: Iterable[JournalRecord]) -> None:
    """Write ``records`` to ``path`` as JSON lines (replacing the file)."""
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")


def read_journal(path: str | os.PathLike[str], run_id: str | None = None) -> list[JournalRecord]:
    """The records in the journal file ``path`` (only run ``run_id``'s when given)."""
    return list(_read(Path(path), run_id))


def _read(path: Path, run_id: str | None) -> Iterator[JournalRecord]:
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if run_id is not None and data.get("run_id") != run_id:
                    continue
                yield JournalRecord(
                    data["run_id"],
                    data["seq"],
                    decode_tick(data["tick"]),
                    tuple(decode_command(c) for c in data["commands"]),
                )
            except (ValueError, KeyError, TypeError, SerializationError) as exc:
                raise SerializationError(
                    f"{path}, line {number}: not a journal record: {exc}"
                ) from exc
