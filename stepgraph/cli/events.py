"""``stepgraph events tail`` and ``stepgraph plot``: reading event logs (JSON lines)."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from ..errors import MissingExtraError
from .common import EXIT_OK, fail, stamp

__all__ = ["format_event", "last_records", "plot", "tail"]

_KIND_WIDTH = 19  # "superstep_completed"
FOLLOW_INTERVAL = 0.2  # seconds between looks at a followed file


def _parse(line: bytes) -> dict[str, Any] | None:
    """A line as read_events reads it: a whole JSON object with a ``kind``, or None (a
    torn write, or a line that is no record of an event log)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("kind"), str) else None


def format_event(record: Mapping[str, Any]) -> str:
    """One record on one line: time, kind, run or task, step or task name, details, error."""
    when = record.get("time")
    parts = [stamp(when) if isinstance(when, int | float) else "-" * 23]
    parts.append(str(record.get("kind", "?")).ljust(_KIND_WIDTH))
    if "run_id" in record:
        parts.append(f"run {record['run_id']}")
        name = str(record.get("workflow", ""))
        if "step" in record:
            name = f"{name}.{record['step']}" if name else str(record["step"])
        if name:
            parts.append(name)
    elif "task_id" in record:
        parts.append(f"task {record['task_id']}")
        task = str(record.get("task", ""))
        backend = record.get("backend")
        parts.append(f"{task} ({backend})" if backend else task)
    elif "flow_id" in record:
        parts.append(f"flow {record['flow_id']}")
    details = []
    capacity = record.get("capacity")
    if isinstance(capacity, Mapping):
        slots = ", ".join(f"{name} {count}" for name, count in capacity.items())
        details.append(f"slots: {slots or 'none'}")
    attempt = record.get("attempt")
    if isinstance(attempt, int) and attempt > 1:
        details.append(f"attempt {attempt}")
    for key in ("superstep", "seq", "request_id", "mode", "event"):
        if key in record:
            details.append(f"{key} {record[key]}")
    if "bytes" in record:
        details.append(f"{record['bytes']} bytes")
    if "retry_in" in record:
        details.append(f"retry in {record['retry_in']}s")
    if details:
        parts.append(f"({', '.join(details)})")
    error = record.get("error")
    if isinstance(error, Mapping):
        message = " ".join(str(error.get("message", "")).split())
        parts.append(f"error: {error.get('type', 'Error')}: {message}".rstrip(": "))
    return "  ".join(parts)


class _Follower:
    """Reads the whole lines added to a file since the last look (a cut line waits)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""

    def read(self) -> Iterator[dict[str, Any]]:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return
        if size < self.offset:  # truncated or replaced: start again
            self.offset, self.rest = 0, b""
        if size == self.offset:
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            record = _parse(line)
            if record is not None:
                yield record


_BLOCK = 1 << 16  # read backwards this much at a time


def last_records(path: Path, count: int, block: int = _BLOCK) -> list[dict[str, Any]]:
    """The last ``count`` records of an event log, in order, read from its end ``block``
    bytes at a time (a log of a long campaign holds millions: the lines before them are
    not read)."""
    found: list[dict[str, Any]] = []
    if count <= 0:
        return found
    with open(path, "rb") as f:
        position = f.seek(0, os.SEEK_END)
        head = b""  # the start of a line whose beginning is not read yet
        while position > 0 and len(found) < count:
            size = min(block, position)
            position -= size
            f.seek(position)
            lines = (f.read(size) + head).split(b"\n")
            head = lines.pop(0) if position > 0 else b""
            for line in reversed(lines):
                record = _parse(line)
                if record is not None:
                    found.append(record)
                    if len(found) == count:
                        break
    found.reverse()
    return found


def _print(record: Mapping[str, Any], out: TextIO) -> None:
    out.write(format_event(record) + "\n")


def tail(path: str, count: int, follow: bool, out: TextIO | None = None) -> int:
    """Print the last ``count`` records of the event log; ``follow``: then each new one."""
    stream = out if out is not None else sys.stdout
    file = Path(path)
    if count < 0:
        fail(f"-n {count}: give a number of records >= 0")
    if not file.is_file():
        fail(f"there is no event log {path!r}")
    if not follow:
        try:
            records = last_records(file, count)
        except OSError as exc:
            fail(f"cannot read the event log {path!r}: {exc}")
        for record in records:
            _print(record, stream)
        stream.flush()
        return EXIT_OK
    follower = _Follower(file)
    first = list(follower.read())
    for record in first[-count:] if count else []:
        _print(record, stream)
    stream.flush()
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL)  # a file has no event to wait on (portably)
            found = False
            for record in follower.read():
                _print(record, stream)
                found = True
            if found:
                stream.flush()
    except KeyboardInterrupt:
        return EXIT_OK


def plot(events: str, out: str) -> int:
    """Draw the event log's timeline to ``out`` with ``stepgraph.telemetry.plot``."""
    if not Path(events).is_file():
        fail(f"there is no event log {events!r}")
    name = "stepgraph.telemetry.plot"
    try:
        module = importlib.import_module(name)
    except MissingExtraError as exc:
        fail(f"stepgraph plot: {exc}")
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == name:
            fail(
                "stepgraph plot: this stepgraph has no timeline plot "
                f"({name} is missing); upgrade stepgraph"
            )
        fail(
            f"stepgraph plot needs matplotlib: install the extra with pip install "
            f"'stepgraph[plot]' ({exc})"
        )
    plot_timeline = getattr(module, "plot_timeline", None)
    if not callable(plot_timeline):
        fail(f"stepgraph plot: {name} has no plot_timeline(); upgrade stepgraph")
    try:
        plot_timeline(events, out)
    except MissingExtraError as exc:
        fail(f"stepgraph plot: {exc}")
    except ImportError as exc:
        fail(f"stepgraph plot needs matplotlib: pip install 'stepgraph[plot]' ({exc})")
    except Exception as exc:
        fail(f"stepgraph plot: cannot plot {events!r}: {type(exc).__name__}: {exc}")
    print(out)
    return EXIT_OK
