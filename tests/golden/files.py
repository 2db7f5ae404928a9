"""Golden journal files: writing them, reading them, and replaying them.

A golden file is JSON lines: a header (``{"golden": 1, "flow": ..., "run_id": ...}``),
one line per tick (a journal record: the tick and the commands it produced), and last
the kernel's state when the run ended (``{"snapshot": ...}``). Traceback texts are left
out (they hold the paths of the machine that recorded them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stepgraph.core import RunState
from stepgraph.journal import Journal, JournalRecord, decode, encode, replay
from stepgraph.journal.codec import decode_command, decode_tick

from .flows import FLOWS

HERE = Path(__file__).resolve().parent
FORMAT = 1


def path_of(name: str) -> Path:
    return HERE / f"{name}.jsonl"


def scrub(data: Any) -> Any:
    """``data`` (encoded JSON) with every failure's traceback text left out."""
    if isinstance(data, list):
        return [scrub(item) for item in data]
    if isinstance(data, dict):
        if set(data) == {"$failure"}:
            return {"$failure": {**data["$failure"], "traceback": ""}}
        return {key: scrub(value) for key, value in data.items()}
    return data


def snapshot_json(state: RunState) -> Any:
    """The state's snapshot as golden files keep it."""
    return scrub(encode(state.snapshot()))


def write(name: str, run_id: str, records: list[JournalRecord], state: RunState) -> Path:
    lines = [{"golden": FORMAT, "flow": name, "run_id": run_id, "ticks": len(records)}]
    lines += [scrub(record.to_json()) for record in records]
    lines.append({"snapshot": snapshot_json(state)})
    path = path_of(name)
    path.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    return path


def read(path: Path) -> tuple[dict[str, Any], list[JournalRecord], Any]:
    """The header, the records and the final snapshot of a golden file."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header, *body, last = lines
    assert header.get("golden") == FORMAT, f"{path.name}: not a golden journal"
    records = [
        JournalRecord(
            line["run_id"],
            line["seq"],
            decode_tick(line["tick"]),
            tuple(decode_command(c) for c in line["commands"]),
        )
        for line in body
    ]
    return header, records, last["snapshot"]


def replay_file(path: Path) -> tuple[Any, Any]:
    """Replay a golden file: (the snapshot it recorded, the snapshot replay gives)."""
    header, records, recorded = read(path)
    workflow = FLOWS[header["flow"]].make(Journal())
    state = replay(workflow, records)
    return recorded, snapshot_json(state)


def decode_snapshot(data: Any) -> dict[str, Any]:
    """A golden snapshot as Python values again."""
    snapshot: dict[str, Any] = decode(data)
    return snapshot
