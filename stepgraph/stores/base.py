"""The store protocol: where durable runs keep their records, checkpoints and journals.

A store holds bytes it does not interpret. The runtime serializes; the store keeps, per
run:

- a **run record** (:class:`RunRecord`): its status, lineage, times and, once it has
  ended, its stored result;
- **checkpoints** (:class:`CheckpointWrite` in, :class:`StoredCheckpoint` out): a frame
  (the run's state without its large parts) plus **value chunks** (the shared state's
  keys, the run's outputs) of which each checkpoint writes only those that changed since
  the run's previous checkpoint. Reading a checkpoint gives every chunk as of it;
- a **journal**: entries appended after the latest checkpoint, replayed on resume;
- a **lease**: which coordinator owns the run now.

Every write goes through :meth:`Store.commit`, atomically: a crash leaves the store as it
was before the commit or as after it, never in between. A run has one writer at a time
(its lease's owner), which numbers what it writes: checkpoint ``seq`` 0, 1, 2, ... and,
after each checkpoint, journal positions 0, 1, 2, ...; a store refuses a number that is
taken (a second writer: ``RunLockedError``), and a checkpoint's id is
``"<run id>:<seq>"``. ``commit`` may finish before it returns (embedded stores: it
returns ``None``) or return an awaitable that finishes once the commit is durable
(stores across a network). The runtime carries out nothing a commit records (no step
starts, no event reaches the stream, no await of the run returns) before the commit is
done.

Write your own store by implementing :class:`Store`; run
``stepgraph.testing.store_conformance`` in your test suite to check it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from ..core.text import short_repr
from ..errors import StoreError

__all__ = [
    "ANOTHER_WRITER",
    "STORE_METHODS",
    "CheckpointInfo",
    "CheckpointWrite",
    "Commit",
    "RunRecord",
    "Store",
    "StoredCheckpoint",
    "StoredStatus",
    "check_journal",
    "checkpoint_id",
    "checkpoint_seq",
    "corrupt_row",
    "lacking_methods",
    "read_blob",
    "read_count",
    "read_status",
    "read_time",
    "status_wanted",
]

ANOTHER_WRITER = "another coordinator wrote it (this one no longer holds the run)"
"""How a store ends the message of a commit refused because its numbers are taken."""


class StoredStatus(StrEnum):
    """A durable run's status, as its store keeps it (a ``str``: ``status == "paused"``)."""

    QUEUED = "queued"  # submitted (``wf.submit``): waits for a worker to take it
    RUNNING = "running"
    PAUSED = "paused"  # waiting for outside input: a request is open, or only waits remain
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Whether the run has ended (completed, failed or cancelled)."""
        return self in _FINAL


_FINAL = frozenset({StoredStatus.COMPLETED, StoredStatus.FAILED, StoredStatus.CANCELLED})


def status_wanted(status: str | None) -> StoredStatus | None:
    """The status ``list_runs(status=...)`` lists (None: every run).

    Raises:
        StoreError: ``status`` is not a run's status (the message lists those there are).
    """
    if status is None:
        return None
    try:
        return StoredStatus(status)
    except ValueError:
        names = ", ".join(repr(str(s)) for s in StoredStatus)
        raise StoreError(
            f"there is no run status {status!r}: a run's status is one of {names}"
        ) from None


def read_status(value: object, run_id: str, seq: int | None = None) -> StoredStatus:
    """A status read from a store's row: of run ``run_id``'s record, or (``seq``) of its
    checkpoint ``seq``.

    Raises:
        CheckpointError: a status that is none of them (a damaged row).
    """
    try:
        return StoredStatus(value if isinstance(value, str) else repr(value))
    except ValueError:
        wrong = f"its status is {value!r}, not one of {', '.join(s.value for s in StoredStatus)}"
        raise corrupt_row(run_id, seq, wrong) from None


def read_time(value: object, what: str, run_id: str, seq: int | None = None) -> datetime:
    """A time read from a store's row as Unix seconds (``what``: its column, to name).

    Raises:
        CheckpointError: the row holds something else (a damaged row).
    """
    if type(value) is float or type(value) is int:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (ValueError, OverflowError, OSError):
            pass
    raise corrupt_row(run_id, seq, f"its {what} is {short_repr(value, 60)}, not a time")


def read_count(value: object, what: str, run_id: str, seq: int | None = None) -> int:
    """A number from 0 up read from a store's row (``what``: its column, to name).

    Raises:
        CheckpointError: the row holds something else (a damaged row).
    """
    if type(value) is int and value >= 0:
        return value
    raise corrupt_row(run_id, seq, f"its {what} is {short_repr(value, 60)}, not a number from 0 up")


def read_blob(value: object, what: str, run_id: str, seq: int | None = None) -> bytes:
    """The bytes of ``what`` (a frame, a chunk, a journal entry) of checkpoint ``seq`` of
    run ``run_id`` (None: of its record, a result), read from a store's row.

    Raises:
        CheckpointError: the row holds something else (a damaged row).
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise corrupt_row(run_id, seq, f"its {what} is a {type(value).__name__}, not bytes")


def check_journal(stored: StoredCheckpoint) -> None:
    """Check that the journal entries after checkpoint ``stored`` are at positions 0 to
    their count - 1 (positions are unique: the highest tells), where its store says.

    Raises:
        CheckpointError: an entry is missing (a damaged journal).
    """
    count, last = len(stored.journal), stored.journal_last
    if last is not None and count and last != count - 1:
        info = stored.info
        raise corrupt_row(
            info.run_id,
            info.seq,
            f"its journal has {count} entries, up to position {last}: one is missing",
        )


def corrupt_row(run_id: str, seq: int | None, wrong: str) -> Exception:
    """The error of a damaged row: of checkpoint ``seq`` of run ``run_id``, or (None) of
    the run's record."""
    from ..errors import CheckpointError

    if seq is None:
        return CheckpointError(f"the record of run {run_id!r} is corrupt: {wrong}", run_id=run_id)
    cp = checkpoint_id(run_id, seq)
    return CheckpointError(
        f"checkpoint {cp!r} of run {run_id!r} is corrupt: {wrong}", run_id=run_id, checkpoint_id=cp
    )


def checkpoint_id(run_id: str, seq: int) -> str:
    """The id of checkpoint ``seq`` of run ``run_id``: ``"<run id>:<seq>"``."""
    return f"{run_id}:{seq}"


def checkpoint_seq(run_id: str, checkpoint: str) -> int | None:
    """The ``seq`` of checkpoint id ``checkpoint`` of run ``run_id`` (None: not one of its ids).

    Only the id :func:`checkpoint_id` makes is one: ASCII digits, no leading zero.
    """
    prefix, _, seq = checkpoint.rpartition(":")
    if prefix != run_id or not seq or not seq.isascii() or not seq.isdigit():
        return None
    if seq != "0" and seq.startswith("0"):
        return None
    return int(seq)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What a store knows about one run.

    Attributes:
        run_id: the run's id (chosen with ``run(run_id=...)`` or made by stepgraph).
        workflow: the name of the workflow or graph it runs.
        status: ``"queued"``, ``"running"``, ``"paused"``, ``"completed"``, ``"failed"`` or
            ``"cancelled"``.
        created_at: when the run was created (UTC).
        updated_at: when its record last changed (UTC).
        parent_run_id: for a fork (a resume from an earlier checkpoint), the run it came
            from; otherwise None.
        parent_checkpoint_id: for a fork, the checkpoint it started from.
        result: once the run has ended, its serialized result (or failure).
        queue: for a submitted run (``wf.submit``), the queue workers take it from;
            otherwise None.
        worker: for a submitted run a worker holds, the worker's name; otherwise None.
    """

    run_id: str
    workflow: str
    status: StoredStatus
    created_at: datetime
    updated_at: datetime
    parent_run_id: str | None = None
    parent_checkpoint_id: str | None = None
    result: bytes | None = field(default=None, repr=False)
    queue: str | None = None
    worker: str | None = None


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """One stored checkpoint of a run (what ``list_checkpoints`` gives).

    Attributes:
        id: the checkpoint's id, unique in the store (pass it to ``resume``).
        run_id: the run it belongs to.
        superstep: the superstep the run was about to start (0 for a run's first
            checkpoint; a fork's first one keeps the superstep of the checkpoint it
            started from). It grows by one from one superstep barrier's checkpoint to
            the next; a checkpoint written between two (a pause, a resume by a changed
            workflow, an async run's, which has no barriers) has the superstep of the
            one before it: a store keeps checkpoints by ``seq``, never by superstep.
        created_at: when it was written (UTC).
        status: the run's status then (``"running"`` or ``"paused"``).
        parent_run_id: the run's parent, for a fork; otherwise None.
        seq: its position in the run's list of checkpoints (0, 1, 2, ...).
    """

    id: str
    run_id: str
    superstep: int
    created_at: datetime
    status: StoredStatus
    parent_run_id: str | None = None
    seq: int = 0


@dataclass(slots=True)  # not frozen (treat as immutable): made for every checkpoint
class CheckpointWrite:
    """A checkpoint to store: a frame and the value chunks that changed.

    Attributes:
        seq: its number among the run's checkpoints: 0 for the first, then one more each
            time (the store refuses a number the run has already).
        superstep: as in :class:`CheckpointInfo`.
        status: the run's status at the checkpoint.
        frame: the serialized state without its chunks.
        values: the chunks written since the run's previous checkpoint: name to bytes,
            or to None for a chunk that no longer exists.
        full: ``values`` holds every chunk of the run: nothing is inherited from earlier
            checkpoints (the first checkpoint of a fork, say).
    """

    seq: int
    superstep: int
    status: StoredStatus
    frame: bytes = field(repr=False)
    values: Mapping[str, bytes | None] = field(default_factory=dict, repr=False)
    full: bool = False


@dataclass(slots=True)  # not frozen (treat as immutable): made for every commit
class Commit:
    """One atomic write for one run.

    In this order: the journal entries are appended, then the checkpoint (if any) is
    written, then the run record gets the status (if any) and result; the stream events
    are appended and the consumed inbox messages deleted with them. A store with a run
    queue also deletes, with a commit of the status ``"completed"``, the messages left in
    the run's inbox: nothing reads them any more (a failed or cancelled run may go on).

    Attributes:
        run_id: the run written to; its record exists.
        journal: entries to append after the run's latest checkpoint.
        journal_after: the ``seq`` of that checkpoint (-1 before the run's first one).
        journal_at: the position of the first entry among those after that checkpoint
            (0, then one more per entry; the store refuses a taken position).
        checkpoint: a checkpoint to write (the journal starts afresh after it).
        status: the run record's new status, or None to leave it.
        result: with a final status, the serialized result or failure.
        events: stream events to append to the run's stored stream (serialized), in order.
        consumed: the ids of the inbox messages (``RunQueue.post``) this commit delivers:
            they are deleted with it.
    """

    run_id: str
    journal: tuple[bytes, ...] = ()
    journal_after: int = -1
    journal_at: int = 0
    checkpoint: CheckpointWrite | None = None
    status: StoredStatus | None = None
    result: bytes | None = field(default=None, repr=False)
    events: tuple[bytes, ...] = field(default=(), repr=False)
    consumed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint read back (what :meth:`Store.load` gives).

    Attributes:
        info: which checkpoint it is.
        frame: its frame, as written.
        values: every chunk as of this checkpoint (name to bytes).
        journal: the entries appended after it and before the run's next checkpoint.
        journal_last: the highest position among them, where the store knows it (None:
            it does not say); the run's restore refuses a journal missing an entry.
    """

    info: CheckpointInfo
    frame: bytes = field(repr=False)
    values: Mapping[str, bytes] = field(repr=False)
    journal: tuple[bytes, ...] = field(default=(), repr=False)
    journal_last: int | None = None


@runtime_checkable
class Store(Protocol):
    """Where durable runs are kept. See the module docstring for the model.

    A store may also have a ``location`` attribute: a str naming its data, the same for
    every object over the same data (SQLite: the file; PostgreSQL: server, database and
    schema). With it, a process that coordinates a run through one object knows the run
    is its own when reached through another (a second ``run(run_id=...)`` or ``resume``
    follows the run instead of being refused by the process's own lease).
    """

    def commit(self, batch: Commit) -> Awaitable[None] | None:
        """Write ``batch`` atomically; None when done already, else an awaitable for it.

        Raises:
            RunLockedError: a checkpoint ``seq`` or journal position is taken: another
                coordinator wrote it (nothing was written; the message ends with
                :data:`ANOTHER_WRITER`).
            StoreError: the run does not exist, or the write failed (nothing was written).
        """
        ...

    async def create_run(self, record: RunRecord, first: Commit | None = None) -> RunRecord | None:
        """Create the run ``record`` with its ``first`` commit, unless its id is taken.

        Returns:
            None when the run was created; the existing record (and nothing written)
            when a run with that id exists already.
        """
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The record of run ``run_id``, or None."""
        ...

    async def list_runs(self, status: str | None = None) -> list[RunRecord]:
        """Every run, or the runs with ``status``, oldest first.

        Raises:
            StoreError: ``status`` is not a run's status (see :func:`status_wanted`).
        """
        ...

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """The run's checkpoints, in the order written (``seq``; supersteps grow with it)."""
        ...

    async def load(self, run_id: str, checkpoint_id: str | None = None) -> StoredCheckpoint | None:
        """Checkpoint ``checkpoint_id`` of the run (its latest when None), or None."""
        ...

    async def acquire(self, run_id: str, owner: str) -> bool:
        """Take the run's lease for ``owner``; False when another live owner holds it.

        A lease dies with its owner's process (or, across machines, its session).
        """
        ...

    async def release(self, run_id: str, owner: str) -> None:
        """Give up ``owner``'s lease on the run (nothing when it holds none)."""
        ...

    async def result(
        self, run_id: str, timeout: float | None = None, *, serializer: str = "json"
    ) -> Any:
        """Wait until the run ends; its result (a failed run raises its stored error);
        ``serializer="pickle"`` also reads a pickled one.
        ``stepgraph.stores.results.StoreResults`` implements it on ``get_run``."""
        ...


STORE_METHODS: tuple[str, ...] = tuple(
    name for name, value in vars(Store).items() if not name.startswith("_") and callable(value)
)
"""The methods of the :class:`Store` protocol (to name those a store lacks)."""


def lacking_methods(value: object) -> list[str]:
    """The methods of the :class:`Store` protocol that ``value`` lacks (or does not have
    as something callable; one whose lookup raises is lacking too)."""
    lacking = []
    for name in STORE_METHODS:
        try:
            found = getattr(value, name, None)
        except Exception:
            found = None
        if not callable(found):
            lacking.append(name)
    return lacking
