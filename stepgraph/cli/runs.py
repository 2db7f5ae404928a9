"""``stepgraph runs list|show|cancel``: what a store holds, read and changed from outside."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..core import Failure
from ..distributed.cancel import cancel_unowned
from ..durability.checkpoints import decode_value
from ..durability.serializer import written_with
from ..errors import RunNotFoundError, StepgraphError
from ..stores.base import CheckpointInfo, RunRecord, Store, StoredStatus
from .common import EXIT_OK, fail, format_value, stamp
from .loading import cwd_on_path

__all__ = ["cancel_run", "list_runs", "show_run"]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Columns padded to their widest cell: nothing is ever cut to fit a terminal."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def _record_json(record: RunRecord) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "workflow": record.workflow,
        "status": str(record.status),
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "parent_run_id": record.parent_run_id,
        "parent_checkpoint_id": record.parent_checkpoint_id,
        "queue": record.queue,
        "worker": record.worker,
    }


async def list_runs(store: Store, status: str | None, as_json: bool) -> int:
    """Print the store's runs, oldest first: full ids, status, workflow, times, parent."""
    records = await store.list_runs(status)
    if as_json:
        print(json.dumps([_record_json(r) for r in records], indent=2))
        return EXIT_OK
    if not records:
        print("no runs" + (f" with status {status!r}" if status else ""))
        return EXIT_OK
    rows = [
        (
            r.run_id,
            str(r.status),
            r.workflow,
            stamp(r.created_at),
            stamp(r.updated_at),
            r.parent_run_id or "-",
        )
        for r in records
    ]
    header = ("RUN ID", "STATUS", "WORKFLOW", "CREATED", "UPDATED", "PARENT")
    print("\n".join(table(header, rows)))
    return EXIT_OK


def describe_result(record: RunRecord) -> tuple[str, list[str]]:
    """The stored result of an ended run, for people: ("result" or "error", its lines)."""
    data = record.result
    if data is None:
        return "result", []
    try:
        serializer = written_with(data)
    except ValueError as exc:
        return "result", [f"(cannot be read: {exc})"]
    if serializer.name == "pickle":
        return "result", [f"(pickled, {len(data)} bytes: not loaded, since loading runs code)"]
    cwd_on_path()  # a result naming the user's classes imports them
    try:
        value = decode_value(data, "the stored result", run_id=record.run_id)
    except StepgraphError as exc:
        return "result", [f"(cannot be read here: {' '.join(str(exc).split())})"]
    if isinstance(value, Failure):
        return "error", [f"{value.type_name}: {value.message}", *value.notes]
    return "result", [format_value(value)]


def _checkpoint_rows(infos: Sequence[CheckpointInfo]) -> list[tuple[str, ...]]:
    return [(i.id, str(i.superstep), str(i.status), stamp(i.created_at)) for i in infos]


async def show_run(store: Store, run_id: str, as_json: bool) -> int:
    """Print the run's record, its stored result (or error) and its checkpoints."""
    record = await store.get_run(run_id)
    if record is None:
        fail(f"there is no run {run_id!r} in the store")
    infos = await store.list_checkpoints(run_id)
    label, lines = describe_result(record)
    if as_json:
        shown = _record_json(record)
        shown[label] = "\n".join(lines) if lines else None
        shown["checkpoints"] = [
            {
                "id": i.id,
                "seq": i.seq,
                "superstep": i.superstep,
                "status": str(i.status),
                "created_at": i.created_at.isoformat(),
            }
            for i in infos
        ]
        print(json.dumps(shown, indent=2))
        return EXIT_OK
    fields: list[tuple[str, str]] = [
        ("run", record.run_id),
        ("workflow", record.workflow),
        ("status", str(record.status)),
        ("created", stamp(record.created_at)),
        ("updated", stamp(record.updated_at)),
    ]
    if record.parent_run_id is not None:
        fields.append(
            ("parent", f"{record.parent_run_id} (checkpoint {record.parent_checkpoint_id})")
        )
    if record.queue is not None:
        fields.append(("queue", record.queue))
    if record.worker is not None:
        fields.append(("worker", record.worker))
    for i, line in enumerate(lines):
        fields.append((label if i == 0 else "", line))
    width = max(len(name) for name, _ in fields)
    out = [f"{name.ljust(width)}  {value}".rstrip() for name, value in fields]
    out.append(f"checkpoints ({len(infos)}):")
    if infos:
        out.extend(table(("ID", "SUPERSTEP", "STATUS", "CREATED"), _checkpoint_rows(infos), "  "))
    print("\n".join(out))
    return EXIT_OK


async def cancel_run(store: Store, run_id: str) -> int:
    """Store run ``run_id`` as cancelled, unless it ended or another process runs it.

    A run that is queued, paused, or was running when its process died, has no live
    coordinator: it is stored as ``cancelled`` (see :mod:`stepgraph.distributed.cancel`;
    ``runs resume`` can still go on with it from its latest checkpoint). A run whose lease
    a live process holds is refused: only that process can stop it.
    """
    try:
        done = await cancel_unowned(
            store, run_id, f"run {run_id!r} was cancelled with `stepgraph runs cancel`"
        )
    except RunNotFoundError:
        fail(f"there is no run {run_id!r} in the store")
    if done.done:
        print(f"run {run_id} cancelled (it was {done.status})")
    elif done.status == StoredStatus.CANCELLED:
        print(f"run {run_id} is cancelled already")
    elif done.ended:
        fail(f"run {run_id!r} has ended already ({done.status}): there is nothing to cancel")
    else:
        fail(
            f"run {run_id!r} ({done.status}) is live in another process, which holds its "
            f"lease: stop it there (Ctrl-C, or the handler's cancel()); the store cannot"
        )
    return EXIT_OK
