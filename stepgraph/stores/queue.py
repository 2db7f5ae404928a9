"""The run queue: what a store offers so that workers in other processes run its runs.

A store that implements :class:`RunQueue` (all of stepgraph's do) holds, besides runs:

- **queued runs**: ``wf.submit(...)`` creates a run with status ``"queued"`` in a named
  queue, with its first checkpoint (the start event), and nothing runs yet;
- **claims**: a worker ``claim``s queued runs (oldest first; on PostgreSQL with ``FOR
  UPDATE SKIP LOCKED``, so that several workers never take one run twice) and holds each
  with a **lease** that lasts ``lease_seconds`` unless ``renew``ed. A running or paused
  run whose lease has expired (its worker died) is claimed again by a live worker, which
  resumes it from its last checkpoint; so is a running run given up (``unclaim``). A
  paused run given up as idle (nothing runs, nothing is due: it waits for an answer) is
  claimed again once a message is posted to it. The run's own lease (``Store.acquire``)
  still decides who coordinates it: a claim only says who should;
- **stored stream events**: what a run wrote to its stream, appended with its commits
  (``Commit.events``), for handlers attached from other processes (``wf.attach``);
- an **inbox**: events, responses and cancels sent to a run from another process
  (``post``); the process that holds the run reads them (``inbox``) and delivers them,
  deleting each with the commit that journals it (``Commit.consumed``): exactly once.
  A post to a run the store does not have, or to one that has completed, is refused
  (what is left in a run's inbox when it completes goes with its completing commit);
  a failed or cancelled run may be resumed, so its inbox stays.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import RunFinishedError, RunNotFoundError
from .base import RunRecord, StoredCheckpoint, StoredStatus

__all__ = [
    "Message",
    "RunQueue",
    "StoredEvent",
    "Wakeups",
    "check_postable",
    "is_queue",
    "take",
    "take_each",
]


@dataclass(frozen=True, slots=True)
class Message:
    """A message in a run's inbox.

    Attributes:
        id: its id in the store (increasing in the order posted).
        run_id: the run it is for.
        data: what was posted (serialized by the sender).
    """

    id: int
    run_id: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of a run's stored stream.

    Attributes:
        position: its place in the store (increasing in the order written; pass the last
            one read as ``after`` to read on).
        data: the event, serialized.
    """

    position: int
    data: bytes = field(repr=False)


@runtime_checkable
class RunQueue(Protocol):
    """Queues, claims, stored streams and inboxes of a store (see the module docstring)."""

    async def claim(
        self,
        owner: str,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        lease: bool = False,
        take_over: bool = True,
        workflows: Sequence[str] | None = None,
    ) -> list[RunRecord]:
        """Take up to ``limit`` runs for worker ``owner``, oldest first: queued runs of
        ``queues`` (their status becomes ``"running"``) and, with ``take_over``, runs of
        ``queues`` whose lease has expired (or that were given up, or are paused, given
        up as idle, with a message waiting). Each is leased to ``owner`` for
        ``lease_seconds``. With ``workflows``, only runs of those workflows (by name): a
        worker takes only the runs it can run, and leaves the others to other workers.
        The search for runs to take over should cost in proportion to the runs it finds
        (and the inbox), not to the runs running or paused.

        With ``lease``, a store may also take the runs' own leases (``Store.acquire``) for
        ``owner`` in the same statement, as ``take`` would; ``take`` then finds them held."""
        ...

    async def take(self, owner: str, run_ids: Sequence[str]) -> dict[str, StoredCheckpoint | None]:
        """Take the leases (``Store.acquire``) of claimed ``run_ids`` for ``owner``, then
        read the latest checkpoint of each run whose lease it got (read once the lease is
        held: the last owner's last commit has landed). Runs whose lease another holds are
        left out. A store may give these leases up lazily: ``release`` of one of them
        is carried out by the next ``take`` or ``unclaim``, or by ``release_taken``."""
        ...

    async def release_taken(self) -> None:
        """Carry out the releases of leases got with ``take`` that are still due."""
        ...

    async def renew(self, owner: str, run_ids: Sequence[str], lease_seconds: float) -> None:
        """Extend the lease of ``owner`` on ``run_ids`` (it coordinates them) by
        ``lease_seconds`` from now; a run given up meanwhile (``unclaim``) stays so."""
        ...

    async def unclaim(self, owner: str, run_ids: Sequence[str], *, idle: bool = False) -> None:
        """End ``owner``'s lease on ``run_ids``: another worker may take them at once.

        With ``idle``, for paused runs nobody needs to hold: they are claimed again only
        once a message is posted to them.
        """
        ...

    async def post(self, run_id: str, data: bytes) -> None:
        """Append ``data`` to run ``run_id``'s inbox (and wake whoever holds the run).

        Raises:
            RunNotFoundError: the store has no run ``run_id``.
            RunFinishedError: the run has completed (nothing would read the message).
        """
        ...

    async def inbox(self, run_ids: Sequence[str]) -> list[Message]:
        """The messages waiting for ``run_ids``, in the order posted."""
        ...

    async def read_events(self, run_id: str, after: int = -1) -> list[StoredEvent]:
        """The stored stream events of run ``run_id`` after position ``after``, in order."""
        ...

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Return when a run may have been submitted to ``queues`` or a message posted
        (True), or after ``timeout`` seconds at the latest (False)."""
        ...


_QUEUE_METHODS = (
    "claim",
    "take",
    "release_taken",
    "renew",
    "unclaim",
    "post",
    "inbox",
    "read_events",
    "wait_for_work",
)
_QUEUE_TYPES: set[type] = set()  # classes whose instances all are queues (asked often)


def check_postable(store: object, run_id: str, status: str | None) -> None:
    """Raise why nothing may be posted to run ``run_id``, whose stored status is
    ``status`` (None: the store has no such run); return if something may."""
    if status is None:
        raise RunNotFoundError(f"cannot post to run {run_id!r}: there is no such run in {store!r}")
    if status == StoredStatus.COMPLETED:
        raise RunFinishedError(f"cannot post to run {run_id!r}: it has completed")


def is_queue(store: object) -> bool:
    """Whether ``store`` implements :class:`RunQueue`."""
    kind = type(store)
    if kind in _QUEUE_TYPES:
        return True
    if not all(callable(getattr(store, name, None)) for name in _QUEUE_METHODS):
        return False
    if all(callable(getattr(kind, name, None)) for name in _QUEUE_METHODS):
        _QUEUE_TYPES.add(kind)
    return True


async def take(
    store: Any, owner: str, run_ids: Sequence[str]
) -> dict[str, StoredCheckpoint | None]:
    """``store.take`` (:meth:`RunQueue.take`), or :func:`take_each` for a store without it."""
    if is_queue(store):
        taken: dict[str, StoredCheckpoint | None] = await store.take(owner, run_ids)
        return taken
    return await take_each(store, owner, run_ids)


async def take_each(
    store: Any, owner: str, run_ids: Sequence[str]
) -> dict[str, StoredCheckpoint | None]:
    """``RunQueue.take`` one run at a time (``acquire``, then ``load``): for stores where
    a lease and a read cost no round trip to a server."""
    taken: dict[str, StoredCheckpoint | None] = {}
    for run_id in run_ids:
        if await store.acquire(run_id, owner):
            try:
                taken[run_id] = await store.load(run_id)
            except BaseException:
                await store.release(run_id, owner)
                raise
    return taken


class Wakeups:
    """Waiters for "there may be work" in this process, on any event loop or thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def notify(self) -> None:
        """Wake every waiter."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, waiter)

    async def wait(self, timeout: float) -> bool:
        """Wait for the next ``notify`` (True) or ``timeout`` seconds (False)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters.append((loop, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                if (loop, waiter) in self._waiters:
                    self._waiters.remove((loop, waiter))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
