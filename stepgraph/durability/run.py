"""DurableRun: a run whose every decisive fact is in a store before it has any effect.

A durable run is an in-process run (:class:`~stepgraph.runtime.run.Run`) with one rule
added: **nothing a tick decides is carried out before the store has it**. Each tick is
applied to the kernel at once; what it records (below) goes into one commit; its
commands (start a step, wake a wait, put an event on the stream, end the run) are
carried out only once that commit is done, in order. Embedded stores commit before
``commit`` returns, so nothing waits; a store across a network holds the commands until
its commit finishes.

What is recorded:

- **superstep mode**: a checkpoint at every barrier (the state as the next superstep
  starts, with the shared-state keys and outputs that changed), and, between barriers, a
  journal of what came from outside (events, responses);
- **async mode**: a journal of every tick (write-ahead: a step's completion is in the
  store before anything it feeds starts);
- both: a first checkpoint as the run starts, the run's status as it changes (running,
  paused while it waits for input, and its end with its result).

Resuming reads the latest checkpoint (or a chosen one: a fork, a new run), replays the
journal after it, and starts again every invocation that was in flight
(``RunResumed``): at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
import warnings
import weakref
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ..core import (
    AttemptFailed,
    CancelRequested,
    Command,
    EventsSent,
    ExternalEventReceived,
    ForwardResponse,
    InputRequested,
    PublishEvent,
    RequestOpened,
    ResolveWait,
    ResponseReceived,
    RunEnded,
    RunResumed,
    RunStarted,
    RunStatus,
    StartStep,
    StateMerged,
    StateWritten,
    StepCompleted,
    SuperstepEnded,
    Tick,
    apply,
)
from ..core.failure import Failure
from ..core.state import Mode, RunState
from ..errors import (
    CheckpointError,
    CheckpointNotFoundError,
    RunFinishedError,
    RunIdConflictError,
    RunLockedError,
    RunNotFoundError,
    SerializationError,
    StepgraphError,
    StoreError,
    StoreUnavailableError,
    WorkflowCancelled,
)
from ..runtime.failures import failure_of
from ..runtime.run import Run
from ..stores.base import (
    CheckpointWrite,
    Commit,
    RunRecord,
    Store,
    StoredCheckpoint,
    StoredStatus,
    check_journal,
)
from ..stores.results import outcome_of
from .checkpoints import (
    Bounds,
    HeaderCodec,
    compare_steps,
    decode_chunk,
    decode_entry,
    encode_chunk,
    encode_entry,
    encode_frame,
    encode_value,
    move_state,
    read_frame,
    read_header,
    restore_state,
)
from .frame import Restored, chunk_names, output_chunk, state_chunk
from .serializer import Serializer, serializer_named
from .written import written_graph

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..core import Graph
    from ..runtime.launch import RunOptions
    from ..runtime.plan import RunPlan
    from ..runtime.scope import Scope

_log = logging.getLogger("stepgraph.durability")

__all__ = ["DurableRun", "DurableRuntime"]

# Commands that let user code go on or show something outside: the ticks behind them must
# be in the store first. (Timers, merges and collect results only lead to more ticks.)
_PROGRESS = (StartStep, ResolveWait, PublishEvent, RunEnded, ForwardResponse)
_FROM_OUTSIDE = (ExternalEventReceived, ResponseReceived, CancelRequested)
# (and what the caller is asked: the answer is journaled, so must be the question, or a
# resume would replay an answer to a request not open yet)
_LOGGED_IN_SUPERSTEP_MODE = frozenset((*_FROM_OUTSIDE, RunResumed, InputRequested))
_RUNNING = RunStatus.RUNNING  # enum members as constants: cheaper to read (Python 3.11)
_PAUSED = StoredStatus.PAUSED
_GOING = StoredStatus.RUNNING
_ENDED = frozenset((StoredStatus.FAILED, StoredStatus.CANCELLED))  # and resumable
_FINAL = {
    RunStatus.FINISHED: StoredStatus.COMPLETED,
    RunStatus.FAILED: StoredStatus.FAILED,
    RunStatus.CANCELLED: StoredStatus.CANCELLED,
}

_live: weakref.WeakValueDictionary[tuple[object, str], DurableRun] = weakref.WeakValueDictionary()
"""Durable runs going on in this process, by (store data, run id): one coordinator a run."""


def _where(store: Store) -> object:
    """What identifies a store's data: its ``location`` (several objects over one file or
    database share it), or the object itself."""
    location = getattr(store, "location", None)
    return location if isinstance(location, str) else id(store)


def _owner(store: Store) -> str:
    """This process's lease owner name for ``store`` (one per store object and process)."""
    key = "_stepgraph_owner"
    owner = getattr(store, key, None)
    here = f"{socket.gethostname()}:{os.getpid()}:"
    if not isinstance(owner, str) or not owner.startswith(here):
        owner = f"{here}{uuid.uuid4().hex[:12]}"
        with contextlib.suppress(AttributeError):  # a store with slots: an owner per run
            setattr(store, key, owner)
    return owner


def _headers(
    plan: RunPlan, serializer: Serializer, source: str, options: RunOptions
) -> HeaderCodec:
    """The checkpoint headers of ``plan``'s runs in ``serializer`` under ``options``' bounds
    (made once per plan and bounds)."""
    most, concurrency = options.max_supersteps, options.max_concurrency
    return plan.derive(
        f"durable header {serializer.name} {source} {most} {concurrency}",
        lambda: HeaderCodec(
            plan.name,
            plan.graph,
            plan.programs,
            serializer,
            source,
            Bounds(max_supersteps=most, max_concurrency=concurrency),
        ),
    )


def source_of(owner: object) -> str:
    """Where a ``Workflow`` subclass can be imported from, as ``MODULE:ATTR`` ("" for a
    class defined in a function or in ``__main__``, which another process cannot import,
    and for a built graph, which is not a class: the command line says where those are)."""
    if owner is None:
        return ""
    kind = type(owner)
    if kind.__module__ == "__main__" or "<" in kind.__qualname__:
        return ""
    return f"{kind.__module__}:{kind.__qualname__}"


async def _raised(error: Exception) -> None:
    raise error


def taken_by_other(run_id: str, other: str, name: str, store: Store) -> RunIdConflictError:
    """The error of ``run(run_id=...)`` naming a run of workflow ``other`` (not ``name``)."""
    return RunIdConflictError(
        f"run id {run_id!r} is taken in {store!r} by a run of workflow {other!r}: workflow "
        f"{name!r} cannot run under it (nothing was written); choose another run_id"
    )


def other_workflow(run_id: str, other: str, name: str, strict: bool) -> None:
    """Resuming run ``run_id`` of workflow ``other`` with workflow ``name``: refused when
    ``strict`` (``CheckpointError``), else a warning.

    Raises:
        CheckpointError: ``strict``.
    """
    text = f"run {run_id!r} is a run of workflow {other!r}, not of {name!r}"
    if strict:
        raise CheckpointError(
            f"{text}: nothing ran; resume it with {other!r}, or with strict=False to go on "
            f"with {name!r} (its steps must take the run's messages)",
            run_id=run_id,
        )
    warnings.warn(f"{text}: resuming anyway (strict=False)", stacklevel=2)


def live_run(store: Store, run_id: str) -> DurableRun | None:
    """The run ``run_id`` of ``store`` if it goes on in this process, on the running loop."""
    run = _live.get((_where(store), run_id))
    if run is None or run.done or run.loop.is_closed():
        return None
    try:
        if asyncio.get_running_loop() is not run.loop:
            return None
    except RuntimeError:
        return None
    return run


def coordinated_here(store: Store, run_id: str) -> bool:
    """Whether this process coordinates run ``run_id`` of ``store``, on any event loop."""
    run = _live.get((_where(store), run_id))
    return run is not None and not run.done and not run.loop.is_closed()


class DurableRun(Run):
    """A run that keeps itself in a store (see the module docstring)."""

    journal_span: ClassVar[int] = 10_000
    """In async mode, a checkpoint is written with the commit that finds this many journal
    entries after the latest one: a resume replays at most about as many (each costs tens
    of microseconds), and the store reads no more."""

    __slots__ = (
        "_at",
        "_boot",
        "_booting",
        "_by_caller",
        "_consumed",
        "_crashed",
        "_db",
        "_detached",
        "_dirty",
        "_early",
        "_ending",
        "_entries",
        "_flushes",
        "_header_bytes",
        "_headers",
        "_invoked_at",
        "_origin",
        "_outputs_written",
        "_parking",
        "_pumping",
        "_queue",
        "_rebase",
        "_releasing",
        "_result_error",
        "_sent",
        "_sentinel",
        "_seq",
        "_ser",
        "_stored",
        "_stream_out",
        "_timeout",
        "_told",
        "_waiting_commit",
        "_writers",
        "_written",
        "forked_from",
        "lease",
    )

    def __init__(
        self, plan: RunPlan, owner: object, options: RunOptions, run_id: str | None = None
    ) -> None:
        super().__init__(plan, owner, options)
        if run_id is not None:
            self.run_id = self.request_prefix = run_id
        self.state.undo_writes = True  # a resumed invocation must not write twice
        self._db: Store = options.store
        self._ser = serializer_named(options.serializer)
        self._headers = _headers(plan, self._ser, options.source or source_of(owner), options)
        self._header_bytes: bytes | None = None  # encoded once, repeated in each checkpoint
        self._told = False  # its observers have heard it start
        self._booting = True  # the store has not answered yet: ticks wait in ``_early``
        self._early: list[Tick] = []
        self._origin = -1
        self._boot: asyncio.Task[None] | None = None
        self._crashed: asyncio.Future[None] | None = None  # crash(): done once settled
        self._flushes: list[asyncio.Future[None]] = []  # flushed(): done once committed
        self._queue: deque[tuple[Commit | None, Tick, list[Command]]] = deque()
        self._pumping = False
        self._waiting_commit = False
        self._entries: list[bytes] = []  # journal entries not committed yet
        self._seq = -1  # the seq of the run's latest checkpoint
        self._at = 0  # the position of the next journal entry after it
        self._invoked_at = 0  # the first invocation in flight at that checkpoint (or after)
        self._dirty: dict[str, None] = {}  # chunks changed since the last checkpoint
        self._outputs_written = 0
        self._sent: list[tuple[int, tuple[Any, ...]]] = []  # sent since the last checkpoint
        self._writers: dict[str, int] = {}  # the node that last wrote each state key
        self._written: StoredStatus | None = None  # the status the store has
        self._by_caller = False  # a cancel the caller asked for (not a loop shutting down)
        self._detached = False  # it stopped here, and goes on as its store has it
        self._sentinel: asyncio.Task[None] | None = None  # sees its loop end before it does
        self._releasing: asyncio.Task[None] | None = None  # its lease, being given up
        self._result_error: BaseException | None = None
        self._stored: tuple[object] | None = None  # a completed run's stored result
        self.lease: str | None = None
        self.forked_from: str | None = None  # a fork: the run it was forked from
        self._stream_out: list[bytes] = []  # stream events to store with the next commit
        self._timeout = (  # a resumed run's, from the resume (a float, not a subclass:
            None if options.timeout is None else float(options.timeout)  # a tick holds it)
        )
        self._rebase = False  # resumed by a workflow whose steps or bounds differ
        self._consumed: list[int] = []  # inbox messages the next commit delivers
        self._parking: asyncio.Future[None] | None = None  # park(): stop at the next barrier
        self._ending = False  # its end is recorded: nothing is fed or written after it

    @property
    def detached(self) -> bool:
        """Whether it stopped here without ending: detached, or its event loop or process
        ended behind it. Its store has it as it was (paused, or resumable)."""
        return self._detached

    @property
    def serializer(self) -> Serializer:
        """What its records are written with (and the one its reads trust)."""
        return self._ser

    # -- starting -------------------------------------------------------------------------------

    def start(self, message: object) -> None:
        """Create the run in the store, then start it (in a task: stores are async)."""
        _live[(_where(self._db), self.run_id)] = self  # this process coordinates it now
        self._boot = self.loop.create_task(self._booted(self._create(message)))
        self._sentinel = self.loop.create_task(self._until_loop_ends())

    async def _until_loop_ends(self) -> None:
        """Stay until the run ends. Should its event loop end first (``asyncio.run``
        returning behind a paused run), stop it as a process exit would, its lease given
        up (not a cancel: it stays as its store has it), before the loop closes."""
        try:
            await asyncio.wait((self.outcome,))
        except asyncio.CancelledError:
            if not self.done:
                await self.crash(
                    f"run {self.run_id!r} of workflow {self.name!r} stopped here: its event "
                    f"loop ended; it stays as its store has it (resume it)"
                )
            elif self._releasing is not None:  # (the loop runs until it has landed)
                await asyncio.wait((self._releasing,))
            raise

    def resume(
        self,
        run_id: str,
        checkpoint_id: str | None,
        strict: bool,
        record: RunRecord | None = None,
        latest: StoredCheckpoint | None = None,
        *,
        leased: bool = False,
    ) -> None:
        """Go on with stored run ``run_id`` (``checkpoint_id``: a fork from that checkpoint).

        ``record``: the run's record, when the caller has just read it (a worker's claim);
        ``latest``: its latest checkpoint, when the caller holds its lease and read it
        since (``RunQueue.take``); ``leased``: the caller holds the run's lease for this
        process (``RunQueue.take``). With all three, nothing is left to ask the store: the
        run is restored and goes on at once (its first steps start before this returns).
        """
        if checkpoint_id is None and not leased and coordinated_here(self._db, run_id):
            # on another event loop of this process (the same loop's goes on: launch gives
            # its handler); the store's lease is this process's, so it cannot say no itself
            refused = RunLockedError(
                f"run {run_id!r} is going on in this process, on another event loop: it "
                f"cannot be resumed here while that one runs it"
            )
            self._boot = self.loop.create_task(self._booted(_raised(refused)))
            return
        _live[(_where(self._db), self.run_id)] = self
        self._sentinel = self.loop.create_task(self._until_loop_ends())
        if (
            leased
            and record is not None
            and latest is not None
            and checkpoint_id is None
            and record.status != StoredStatus.COMPLETED
        ):
            self.run_id = run_id
            self.lease = _owner(self._db)
            try:
                self._load_now(record, latest, strict)
            except Exception as exc:  # ends it as a failure in its boot would
                self._boot = self.loop.create_task(self._booted(_raised(exc)))
            return
        self._boot = self.loop.create_task(
            self._booted(self._restore(run_id, checkpoint_id, strict, record, latest))
        )

    async def _booted(self, boot: Awaitable[None]) -> None:
        try:
            await boot
        except asyncio.CancelledError:
            self._booting = False
            if not self.done:
                self._end(RunStatus.CANCELLED, None, None)
            raise
        except Exception as exc:
            self._booting = False
            if self.lease is not None:
                await self._release()
            if not self.done:
                self._end(RunStatus.FAILED, None, exc)
            return
        self._booting = False
        early, self._early = self._early, []
        for tick in early:
            if type(tick) is ExternalEventReceived and self._not_taken(tick.event):
                continue
            self.feed(tick)
        self._tell_flushed()

    def _not_taken(self, event: object) -> bool:
        """Whether an answer sent while the run was being restored is one it cannot take
        (or the same answer again): logged, as the caller's send has returned already."""
        try:
            return self.answered(event)
        except StepgraphError as exc:
            _log.warning("%s", exc)
            return True

    async def _create(self, message: object) -> None:
        existing = await self._db.get_run(self.run_id)
        if existing is not None:  # run(run_id=...) of a run the store has: that run
            await self._follow(existing)
            return
        self._tell_started()  # (an observer that raises fails the run: nothing is stored)
        tick = RunStarted(run_id=self.run_id, start=message, at=self._wall())
        commands = apply(self.state, tick)
        record = self._new_record()
        first = self._commit(
            checkpoint=self._first_checkpoint(StoredStatus.RUNNING, message),
            status=StoredStatus.RUNNING,
        )
        self._written = StoredStatus.RUNNING
        existing = await self._create_run(record, first)
        if existing is not None:  # created meanwhile (by another process): that run (its
            await self._follow(existing)  # state replaces the one made here; its observers
            return  # hear how it goes on, or its stored outcome)
        await self._take_lease(self.run_id)
        self._carry(tick, commands)

    async def _follow(self, existing: RunRecord) -> None:
        """``run(run_id=...)`` of a run the store has: that run, as it is (its outcome,
        once it has ended; resume() goes on with a failed or cancelled one)."""
        if existing.workflow != self.name:
            raise taken_by_other(self.run_id, existing.workflow, self.name, self._db)
        if StoredStatus(existing.status) in _ENDED:
            self._finish_stored(existing)
            return
        await self._restore(self.run_id, None, True, existing, follows=True)

    async def enqueue(self, message: object, queue: str) -> bool:
        """Store the run as queued in ``queue`` with its start ``message``; nothing runs
        here (a worker takes it). False when the store has a run of this id already."""
        tick = RunStarted(run_id=self.run_id, start=message, at=self._wall())
        apply(self.state, tick)  # its first checkpoint: the start step about to run
        record = self._new_record(status=StoredStatus.QUEUED, queue=queue)
        first = self._commit(checkpoint=self._first_checkpoint(StoredStatus.QUEUED, message))
        return await self._db.create_run(record, first) is None

    def _first_checkpoint(self, status: StoredStatus, message: object) -> CheckpointWrite:
        """The checkpoint a new run is created with (its start event, about to be taken).

        Raises:
            SerializationError: the start event cannot be stored: the run is not created
                (the message names it and its workflow).
        """
        try:
            return self._checkpoint(status, full=True)
        except SerializationError as exc:
            raise SerializationError(
                f"run {self.run_id!r} of workflow {self.name!r} cannot start: its start event "
                f"({type(message).__name__}) cannot be stored, so the run was not created: "
                f"{exc}"
            ) from exc

    async def _create_run(self, record: RunRecord, first: Commit) -> RunRecord | None:
        """Create the run's record with its first checkpoint (observers hear of it); the
        run the store has already under that id, if any (nothing is written then)."""
        started = self.clock.monotonic()
        existing = await self._db.create_run(record, first)
        if existing is None and first.checkpoint is not None and self.observers:
            self._checkpoint_written(first.checkpoint, started)
        return existing

    def _new_record(
        self,
        parent_run_id: str | None = None,
        parent_checkpoint_id: str | None = None,
        *,
        status: StoredStatus = StoredStatus.RUNNING,
        queue: str | None = None,
    ) -> RunRecord:
        now = datetime.now(UTC)
        return RunRecord(
            run_id=self.run_id,
            workflow=self.name,
            status=status,
            created_at=now,
            updated_at=now,
            parent_run_id=parent_run_id,
            parent_checkpoint_id=parent_checkpoint_id,
            queue=queue,
        )

    async def _take_lease(self, run_id: str) -> None:
        owner = _owner(self._db)
        if not await self._db.acquire(run_id, owner):
            raise RunLockedError(
                f"run {run_id!r} is owned by another coordinator (a live process or "
                f"session) of {self._db!r}: it cannot be run or resumed here while that one "
                f"runs it"
            )
        self.lease = owner

    async def release_lease(self) -> None:
        """Give the run's lease up, if it still holds one (it does once it ends): once the
        commit on its way has landed, when the run was crashed (stopped) meanwhile."""
        if self._crashed is not None:
            await asyncio.shield(self._crashed)  # that commit landed, the lease given up
            return
        await self._release()

    async def _release(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            with contextlib.suppress(Exception):  # the lease dies with the process anyway
                await self._db.release(self.run_id, lease)

    async def _restore(
        self,
        run_id: str,
        checkpoint_id: str | None,
        strict: bool,
        record: RunRecord | None,
        latest: StoredCheckpoint | None = None,
        *,
        follows: bool = False,
    ) -> None:
        """Go on with stored run ``run_id`` (``record``: as just read, if it was), or fork
        it from ``checkpoint_id``. ``follows``: for ``run(run_id=...)``, which gives the
        outcome of a run that has ended (``resume()`` goes on with a failed or cancelled
        run; it gives the outcome of a completed one)."""
        db = self._db
        if record is None:
            record = await db.get_run(run_id)
        if record is None:
            raise RunNotFoundError(f"there is no run {run_id!r} in {db!r}")
        if record.workflow != self.name:
            other_workflow(run_id, record.workflow, self.name, strict)
        fork = checkpoint_id is not None
        if fork:
            self.forked_from = run_id
        if not fork and record.status == StoredStatus.COMPLETED:
            self._finish_stored(record)
            return
        if not fork:
            self.run_id = run_id
            await self._take_lease(run_id)
        try:  # read only once the lease is ours: the last owner's last commit has landed
            if not fork and latest is None:  # (its owner may have ended it meanwhile)
                record = await db.get_run(run_id) or record
                status = StoredStatus(record.status)
                if status == StoredStatus.COMPLETED or (follows and status in _ENDED):
                    await self._release()
                    self._finish_stored(record)
                    return
            stored = latest if latest is not None and not fork else None
            if stored is None:
                stored = await db.load(run_id, checkpoint_id)
            if checkpoint_id is not None:  # a fork
                await self._fork(record, stored, checkpoint_id, strict)
            else:
                self._load_now(record, stored, strict)
        except BaseException:
            await self._release()
            raise

    def _finish_stored(self, record: RunRecord) -> None:
        """An ended run: its stored result (or failure, or cancel), and nothing runs (its
        observers hear of nothing: no run took place here; unless they heard it start, a
        run another process created meanwhile: then of its end)."""
        self.run_id = record.run_id
        if not self._told:
            self.observers = []
        try:
            value = outcome_of(record, self._ser)
        except WorkflowCancelled as exc:
            self.state.status = RunStatus.CANCELLED
            self._end(RunStatus.CANCELLED, None, exc)
            return
        except Exception as exc:
            self.state.status = RunStatus.FAILED
            self._end(RunStatus.FAILED, None, exc)
            return
        self._stored = (value,)
        self.state.status = RunStatus.FINISHED
        self._end(RunStatus.FINISHED, value, None)

    async def _fork(
        self, record: RunRecord, stored: StoredCheckpoint | None, checkpoint_id: str, strict: bool
    ) -> None:
        """Go on as a new run from checkpoint ``stored`` of run ``record``."""
        stored = self._restore_from(record.run_id, stored, checkpoint_id, strict)
        self.state.run_id = self.run_id
        cp = stored.info.id
        created = self._new_record(parent_run_id=record.run_id, parent_checkpoint_id=cp)
        self._tell_started()  # before its first checkpoint is written: the run's first record
        undone = dict(self._dirty)  # the keys its resume undoes, after this checkpoint: for
        first = self._commit(  # the next one to store
            checkpoint=self._checkpoint(
                StoredStatus.RUNNING, full=True, superstep=stored.info.superstep
            ),
            status=StoredStatus.RUNNING,
        )
        self._dirty.update(undone)
        if await self._create_run(created, first) is not None:
            raise StoreError(f"run id {self.run_id!r} is taken in {self._db!r}")
        await self._take_lease(self.run_id)
        self._go_on(StoredStatus.RUNNING)

    def _load_now(self, record: RunRecord, stored: StoredCheckpoint | None, strict: bool) -> None:
        """Go on with the run from its latest checkpoint ``stored`` (its lease is held)."""
        stored = self._restore_from(record.run_id, stored, None, strict)
        self._seq, self._at = stored.info.seq, len(stored.journal)  # its next numbers
        self._go_on(StoredStatus(record.status))

    def _restore_from(
        self,
        run_id: str,
        stored: StoredCheckpoint | None,
        checkpoint_id: str | None,
        strict: bool,
    ) -> StoredCheckpoint:
        """Restore the state of checkpoint ``stored`` (and of the journal after it, unless
        it is a fork's: ``checkpoint_id``); the checkpoint.

        Raises:
            CheckpointError: it is missing, corrupt, or its steps changed (``strict``).
        """
        db = self._db
        fork = checkpoint_id is not None
        if stored is None:
            if fork:
                raise CheckpointNotFoundError(
                    f"run {run_id!r} has no checkpoint {checkpoint_id!r} in {db!r}"
                )
            raise CheckpointError(f"run {run_id!r} has no checkpoint in {db!r}", run_id=run_id)
        cp = stored.info.id
        if not fork:  # (a fork does not replay it)
            check_journal(stored)
        # most often the header is the run's own (None): the same steps and request prefix
        try:
            header, frame, objects = read_frame(
                stored.frame,
                run_id=run_id,
                checkpoint_id=cp,
                expected=self._header_of(),
                trusted=self._ser,
            )
        except CheckpointError as exc:  # its events' classes changed with its steps, say:
            if strict:  # name the steps, as for a checkpoint that reads
                self._check_steps(stored.frame, run_id, cp, exc)
            raise
        if frame["superstep"] != stored.info.superstep:  # a row edited beside its content
            raise CheckpointError(
                f"checkpoint {cp!r} of run {run_id!r} is corrupt: the store lists it at "
                f"superstep {stored.info.superstep}, its content is of superstep "
                f"{frame['superstep']}",
                run_id=run_id,
                checkpoint_id=cp,
            )
        if frame["run_id"] != run_id:  # a row copied from another run, or rewritten
            raise CheckpointError(
                f"checkpoint {cp!r} of run {run_id!r} is corrupt: its content is the state "
                f"of another run, {frame['run_id']!r}",
                run_id=run_id,
                checkpoint_id=cp,
            )
        removed: list[str] = []
        changed: list[str] = []
        added: list[str] = []
        template = self._headers.template
        steps = template.steps
        written: Graph | None = None  # the graph that wrote the run, if not this one
        if header is not None and (
            list(header.steps.items()) != list(steps.items())
            or (header.workers is not None and header.workers != template.workers)
            or (header.fan_ins is not None and header.fan_ins != template.fan_ins)
        ):
            removed, changed, added = compare_steps(header.steps, steps)
            written = written_graph(header.steps, self.graph, header.workers, header.fan_ins)
        if strict and (removed or changed or added):
            raise _steps_changed(run_id, cp, removed, changed, added)
        chunks = {
            name: decode_chunk(name, data, run_id=run_id, checkpoint_id=cp, trusted=self._ser)
            for name, data in stored.values.items()
        }

        ours = template.bounds
        assert ours is not None
        # the bounds the journal was written under (a checkpoint from before they were
        # kept: this workflow's, the likeliest)
        kept = ours if header is None or header.bounds is None else header.bounds

        def fresh() -> Restored:
            restored = restore_state(
                frame, objects, chunks, written or self.graph, run_id=run_id, checkpoint_id=cp
            )
            # the journal replays under the bounds it was written under (a completion that
            # went past max_supersteps ended that life: replayed, it ends it again, and the
            # run goes on from just before, as after any end)
            restored.state.max_concurrency = kept.max_concurrency
            restored.state.max_supersteps = kept.max_supersteps
            return restored

        restored = fresh()
        restored.state.undo_writes = True
        if restored.missing:  # its header said the steps had not changed
            raise CheckpointError(
                f"checkpoint {cp!r} of run {run_id!r} is corrupt: its state names "
                f"{', '.join(map(repr, restored.missing))}, which its header does not list",
                run_id=run_id,
                checkpoint_id=cp,
            )
        for inv in restored.state.invocations.values():
            for key, _, _ in inv.wrote or ():  # resuming undoes the write: the next
                self._dirty[state_chunk(key)] = None  # checkpoint stores what undoing left
        entries = (
            []
            if fork
            else [
                decode_entry(e, run_id=run_id, checkpoint_id=cp, trusted=self._ser)
                for e in stored.journal
            ]
        )
        for tick in entries:  # what the caller sent must be what the workflow takes
            if isinstance(tick, ExternalEventReceived):
                try:
                    self.plan.style.check_external(tick.event, f"run {run_id!r}")
                except StepgraphError as exc:
                    raise CheckpointError(
                        f"the journal of run {run_id!r} after checkpoint {cp!r} is corrupt: {exc}",
                        run_id=run_id,
                        checkpoint_id=cp,
                    ) from exc
        outputs = len(restored.state.outputs)  # (those the checkpoint has stored)
        state = _replay(restored.state, entries, fresh, run_id=run_id, checkpoint_id=cp)
        if written is not None:  # replayed as written: now on this workflow's steps
            moved = move_state(state, self.graph, run_id=run_id, checkpoint_id=cp)
            state = moved.state
            self._rebase = not fork  # what it records next, this workflow numbers
            moved.dropped[:0] = restored.dropped  # (a fan-in's batch, on restoring)
            dropped = moved.dropped_text()
            if removed or changed or added:
                warnings.warn(
                    _changed_message(run_id, cp, removed, changed, added, strict=False)
                    + (f"; dropped with them: {dropped}" if dropped else ""),
                    stacklevel=2,
                )
            elif dropped:  # (its steps are the same: a fan-in edge changed)
                warnings.warn(
                    f"the fan-in edges of the workflow of run {run_id!r} changed since "
                    f"checkpoint {cp!r}: dropped the part of a batch they held: {dropped}",
                    stacklevel=2,
                )
        state.max_supersteps = ours.max_supersteps  # it goes on under this workflow's
        state.max_concurrency = ours.max_concurrency
        state.undo_writes = True  # (move_state's state too)
        if kept != ours:  # what it journals next goes after a checkpoint of its own
            self._rebase = not fork
        self.state = state
        for tick in entries:  # what the journal wrote, the next checkpoint stores
            if type(tick) is StateWritten or type(tick) is StateMerged:
                self._touched(tick)
        self.mode = state.mode
        self.superstep_mode = state.mode is Mode.SUPERSTEP
        if header is not None and header.request_prefix != self.request_prefix:
            self.request_prefix = header.request_prefix
            self._header_bytes = None
        self._outputs_written = outputs  # (the journal's, the next checkpoint stores)
        return stored

    def _check_steps(self, data: bytes, run_id: str, cp: str, error: CheckpointError) -> None:
        """Raise the ``CheckpointError`` of a strict resume naming the steps changed since
        checkpoint ``data``, whose frame could not be read (``error``), if any changed."""
        try:
            header = read_header(data, run_id=run_id, checkpoint_id=cp, trusted=self._ser)
        except CheckpointError:
            return
        removed, changed, added = compare_steps(header.steps, self._headers.template.steps)
        if removed or changed or added:
            raise _steps_changed(run_id, cp, removed, changed, added, error) from error

    def _tell_started(self) -> None:
        """Observers hear that the run started (once)."""
        if self._told:
            return
        self._told = True
        for observer in self.observers:
            observer.run_started(self)

    def _go_on(self, written: StoredStatus) -> None:
        """Start again what the restored state says is in flight (``written``: the run's
        status as stored); its observers hear it start, if they have not yet."""
        state = self.state
        self._written = written
        self._invoked_at = next(iter(state.invocations), state.next_invocation)
        self._tell_started()
        self._booting = False
        self.feed(RunResumed(timeout=self._timeout))
        if not self.done:
            for name, due in list(state.timers.items()):
                self.timers.arm(name, max(0.0, due - self._wall()), self._timer_due)
            for request in state.inputs.values():  # announced again, to this process's caller
                self.stream.push(request)

    # -- the one path into the kernel -------------------------------------------------------------

    def feed(self, tick: Tick) -> list[Command]:
        """Apply ``tick``; carry out its commands once the store has what it records."""
        if self.done or self._ending:
            return []  # ended (its end may still be on its way to the store): nothing more
        if self._booting:
            self._early.append(tick)
            return []
        if self._feeding:
            self._followups.append(tick)
            return []
        kind = type(tick)
        if kind is StepCompleted or kind is EventsSent:  # who sent it, to name in errors
            inv = self.state.invocations.get(tick.invocation)  # type: ignore[union-attr, arg-type]
            self._origin = -1 if inv is None else inv.node
        commands = self._applied(tick)
        try:
            commit = self._record(tick, commands)
        except SerializationError as exc:  # nothing of it is written, nothing carried out
            self._unwritable(tick, exc)
            return commands
        if not self._queue and not self._pumping:
            if commit is not None:  # the common case, without the queue: commit, carry out
                try:
                    pending = self._save(commit)
                except Exception as exc:
                    self._store_failed(exc)
                    return commands
                if pending is not None:  # a store across a network: wait for it
                    self._queue.append((None, tick, commands))
                    self._waiting_commit = True
                    self.loop.create_task(self._committed(pending))
                    return commands
            if commands or self.observers:
                self._carry(tick, commands)
            return commands
        self._queue.append((commit, tick, commands))
        self._pump()
        return commands

    def _save(self, commit: Commit) -> Awaitable[None] | None:
        """``commit`` to the store; observers hear of the checkpoint it holds, if any."""
        write = commit.checkpoint
        if write is None or not self.observers:
            return self._db.commit(commit)
        started = self.clock.monotonic()
        pending = self._db.commit(commit)
        if pending is None:
            self._checkpoint_written(write, started)
            return None
        return self._timed(pending, write, started)

    async def _timed(
        self, pending: Awaitable[None], write: CheckpointWrite, started: float
    ) -> None:
        await pending
        self._checkpoint_written(write, started)

    def _checkpoint_written(self, write: CheckpointWrite, started: float) -> None:
        seconds = self.clock.monotonic() - started
        size = len(write.frame) + sum(len(v) for v in write.values.values() if v is not None)
        for observer in self.observers:
            observer.checkpoint_written(self, write.superstep, write.seq, size, seconds)

    def _carry(self, tick: Tick, commands: list[Command]) -> None:
        if self._parking is not None and self.superstep_mode:
            for command in commands:
                if type(command) is SuperstepEnded:  # its checkpoint is committed: stop here
                    self._stop_parked()
                    return
        self._carry_out(tick, commands)

    def _pump(self) -> None:
        """Commit and carry out the queued ticks, in order; wait for a commit that is async."""
        if self._pumping or self._waiting_commit:
            return
        self._pumping = True
        try:
            queue = self._queue
            while queue and not self._waiting_commit:
                commit, tick, commands = queue[0]
                if commit is not None:
                    try:
                        pending = self._save(commit)
                    except Exception as exc:
                        self._store_failed(exc)
                        return
                    if pending is not None:
                        self._waiting_commit = True
                        self.loop.create_task(self._committed(pending))
                        return
                queue.popleft()
                self._carry(tick, commands)
        finally:
            self._pumping = False
        self._tell_flushed()

    def flushed(self) -> asyncio.Future[None]:
        """A future done once everything the run has recorded so far (what the caller sent
        while it was being restored included) is in its store, or the run has ended."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._flushes.append(waiter)
        self._tell_flushed()
        return waiter

    def _tell_flushed(self) -> None:
        """Resolve the ``flushed()`` futures, if nothing is left to write."""
        if self._flushes and (
            self.done or not (self._booting or self._queue or self._waiting_commit)
        ):
            flushes, self._flushes = self._flushes, []
            for waiter in flushes:
                if not waiter.done():
                    waiter.set_result(None)

    async def _committed(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except asyncio.CancelledError:  # the event loop ends (asyncio.run returning):
            self._waiting_commit = False  # nothing more is written (a crash() now settles)
            if self._crashed is not None and not self._crashed.done():  # (stopped by it:
                self._crashed.set_result(None)  # its lease dies with the process or session)
            raise
        except Exception as exc:
            self._waiting_commit = False
            if not self.done:
                self._store_failed(exc)
            elif self._crashed is not None:
                await self._settle_crash()
            return
        self._waiting_commit = False
        if self.done:  # crashed meanwhile: what was committed stays, nothing more happens
            if self._crashed is not None:
                await self._settle_crash()
            return
        _, tick, commands = self._queue.popleft()
        self._carry(tick, commands)
        self._pump()

    def _store_failed(self, error: BaseException) -> None:
        """The store could not take a commit: the run cannot go on durably; it fails."""
        self._queue.clear()
        kind: type[StoreError] = StoreError
        if isinstance(error, StoreUnavailableError | RunLockedError):
            kind = type(error)  # the store is away; another coordinator has the run
        failure = kind(f"run {self.run_id!r} could not be written to {self._db!r}: {error}")
        failure.__cause__ = error
        self._end(RunStatus.FAILED, None, failure)

    def _unwritable(self, tick: Tick, error: SerializationError) -> None:
        """A value of the run cannot be serialized: it fails; the store keeps what it had."""
        self._entries.clear()
        error = self._explain(tick, error)
        note = f"stepgraph: run {self.run_id!r} of workflow {self.name!r} cannot be stored"
        error.add_note(note)
        failure = failure_of(error)
        commit = self._commit(status=StoredStatus.FAILED, result=self._failure_bytes(failure))
        self._written = StoredStatus.FAILED
        self._ending = True
        end = RunEnded(status=RunStatus.FAILED, result=None, error=error, failure=failure)
        self._queue.append((commit, tick, [end]))  # the run ends once its failure is stored
        self._pump()

    def _explain(self, tick: Tick, error: SerializationError) -> SerializationError:
        """Name the step and the event (or the state key) whose value cannot be written."""
        run = f"run {self.run_id!r} of workflow {self.name!r}"
        kind = self.graph.node_kind
        dumps = self._ser.dumps
        asked = getattr(tick, "event", None)  # what a step asked with (a prompt)
        invocation = getattr(tick, "invocation", None)
        inv = self.state.invocations.get(invocation) if type(invocation) is int else None
        if asked is not None and inv is not None:
            name = self.graph.nodes[inv.node].name
            what = type(asked).__name__
            try:
                dumps(asked, f"in the {what} {kind} {name!r} asked with")
            except SerializationError as exc:
                return SerializationError(
                    f"{kind} {name!r} of {run} asked with a {what} that cannot be stored: {exc}"
                )
        sent = list(self._sent)
        emitted = getattr(tick, "emitted", None)
        if emitted and self._origin >= 0:
            sent.append((self._origin, emitted))
        for node, messages in sent:
            for message, _ in messages:
                name = self.graph.nodes[node].name
                try:
                    dumps(message, f"in the {type(message).__name__} {kind} {name!r} sent")
                except SerializationError as exc:
                    return SerializationError(
                        f"{kind} {name!r} of {run} sent a {type(message).__name__} that cannot "
                        f"be stored: {exc}"
                    )
        for key, value in self.state.store.items():
            if state_chunk(key) not in self._dirty:
                continue
            writer = self._writers.get(key)
            by = "" if writer is None else f" (written by {kind} {self.graph.nodes[writer].name!r})"
            try:
                dumps(value, f"in the shared state's key {key!r}")
            except SerializationError as exc:
                return SerializationError(
                    f"the shared state's key {key!r}{by} of {run} holds a "
                    f"{type(value).__name__} that cannot be stored: {exc}"
                )
        return error

    # -- what each tick records ------------------------------------------------------------------

    def _record(self, tick: Tick, commands: list[Command]) -> Commit | None:
        """The commit ``tick`` needs before its commands may be carried out (None: none)."""
        state = self.state
        kind = type(tick)
        if kind is StateWritten or kind is StateMerged:
            self._touched(tick)  # type: ignore[arg-type]
        superstep = self.superstep_mode
        if (
            not superstep
            or kind in _LOGGED_IN_SUPERSTEP_MODE
            or (kind is RequestOpened and tick.forwarded)  # type: ignore[union-attr]
        ):  # (a sub-workflow's request opens between barriers: kept with its announcement)
            self._entries.append(encode_entry(tick, self._ser))
        elif (kind is StepCompleted or kind is EventsSent) and tick.emitted:  # type: ignore[union-attr]
            emitted = tick.emitted  # type: ignore[union-attr]
            for order, _, sent in reversed(state.outbox):  # to name the sender, should what
                if sent is emitted:  # it sent not be storable at the barrier
                    self._sent.append((order[0], sent))
                    break
        barrier = announced = False
        for command in commands:
            what = type(command)
            if what is RunEnded:
                return self._final(command)  # type: ignore[arg-type]
            if what is SuperstepEnded:
                barrier = superstep
            elif what is PublishEvent:  # an input request announced: kept with the stream
                self._stream_out.append(self._event_bytes(command.event))  # type: ignore[union-attr]
                announced = True
        paused = _paused(state)
        status = _PAUSED if paused else _GOING
        checkpoint = self._checkpoint(status) if barrier else None
        if kind is RunResumed and self._rebase:  # resumed by a workflow whose steps or
            self._rebase = False  # bounds differ: its journal goes after a checkpoint of
            checkpoint = checkpoint or self._checkpoint(status)  # its own, written first
        # every request is recorded before it is announced, the second of a pause too (an
        # answer sent right after a resume finds it open)
        pausing = paused and (self._written is not _PAUSED or (announced and superstep))
        if pausing and checkpoint is None:  # a pause between barriers (or in async mode) is
            checkpoint = self._checkpoint(_PAUSED)  # a checkpoint too: the state it waits in
        if (  # a pause is stored at once; going on again, with the next commit needed anyway
            checkpoint is None
            and not pausing
            and self._written not in _ENDED  # a failed or cancelled run resumed: stored now
            and kind not in _FROM_OUTSIDE  # what the caller sent is kept before send returns
            # async mode: write-ahead, and a step's completion at once, whatever it fed (a
            # step that finished is not in flight: it must not run again after a crash).
            # (Superstep mode journals only what came from outside, committed above, and
            # RunResumed, which goes with the next commit: a process that dies before it
            # resumes the same checkpoint the same way.)
            and not (
                not superstep
                and self._entries
                and (
                    kind is StepCompleted
                    or kind is AttemptFailed  # (its attempt counts, after a crash too)
                    or any(isinstance(c, _PROGRESS) for c in commands)
                )
            )
        ):
            return None
        if checkpoint is None and not superstep and self._at >= self.journal_span:
            checkpoint = self._checkpoint(status)  # a long journal: what a resume replays
        changed = status if status is not self._written else None
        self._written = status
        return self._commit(checkpoint=checkpoint, status=changed)

    def _touched(self, tick: StateWritten | StateMerged) -> None:
        """The state keys ``tick`` wrote are for the next checkpoint to store."""
        dirty = self._dirty
        if isinstance(tick, StateMerged):
            for key, _ in tick.values:
                dirty[state_chunk(key)] = None
            return
        invocation = tick.invocation
        writer = self.state.invocations.get(invocation) if invocation is not None else None
        for key, _ in tick.writes:
            dirty[state_chunk(key)] = None
            if writer is not None:
                self._writers[key] = writer.node
        for key in tick.deletes:
            dirty[state_chunk(key)] = None

    def _commit(
        self,
        *,
        checkpoint: CheckpointWrite | None = None,
        status: StoredStatus | None = None,
        result: bytes | None = None,
    ) -> Commit:
        """A commit of the buffered journal entries, numbered after what the run wrote."""
        entries, self._entries = tuple(self._entries), []
        commit = Commit(
            run_id=self.run_id,
            journal=entries,
            journal_after=self._seq,
            journal_at=self._at,
            checkpoint=checkpoint,
            status=status,
            result=result,
        )
        if self._stream_out:
            commit.events, self._stream_out = tuple(self._stream_out), []
        if self._consumed:
            commit.consumed, self._consumed = tuple(self._consumed), []
        self._at += len(entries)
        if checkpoint is not None:
            self._seq, self._at = checkpoint.seq, 0
        return commit

    def _final(self, ended: RunEnded) -> Commit | None:
        if ended.status is RunStatus.CANCELLED and not self._by_caller:
            self._entries.clear()
            self._detached = True
            return None  # a loop shutting down, not a cancel: the run stays as it was
        status = _FINAL[ended.status]
        if ended.status is RunStatus.FINISHED:
            try:
                self._check_storable()  # what works in memory must work on disk
                result = encode_value(self._result_value(), self._ser, "the run's result")
                closing = [self._event_bytes(e) for e in self.plan.style.closing_events(self.state)]
                self._stream_out.extend(closing)
            except Exception as exc:
                exc.add_note(f"stepgraph: the result of run {self.run_id!r} cannot be stored")
                self._result_error = exc
                status = StoredStatus.FAILED
                result = self._failure_bytes(failure_of(exc))
        else:
            failure = ended.failure or Failure.from_error(
                ended.error or StepgraphError(f"run {self.run_id!r} ended as {status}")
            )
            result = self._failure_bytes(failure)
        self._written = status
        self._ending = True
        return self._commit(status=status, result=result)

    def _check_storable(self) -> None:
        """Raise if what the last superstep sent or wrote could not have been stored.

        A finished run writes no checkpoint after its last superstep; this keeps a value
        that a store cannot hold from passing only because the run ended first.
        """
        dumps = self._ser.dumps
        try:
            for _, messages in self._sent:
                for message, _ in messages:
                    dumps(message, "")
            for name in self._dirty:
                key = name[2:]
                if key in self.state.store:
                    dumps(self.state.store[key], "")
        except SerializationError as exc:
            raise self._explain(RunResumed(), exc) from None

    def _event_bytes(self, event: object) -> bytes:
        return encode_value(
            event,
            self._ser,
            f"the {type(event).__name__} written to the stream of run {self.run_id!r}",
        )

    # -- the stored stream, the inbox, parking -----------------------------------------------------

    def _stream_event(self, scope: Scope | None, event: object) -> None:
        """Stream ``event`` and keep it for the store (with the run's next commit): handlers
        attached from other processes read it there."""
        try:
            data = self._event_bytes(event)
        except SerializationError as exc:
            where = "the run" if scope is None else self.where(scope)
            error = SerializationError(
                f"{where} wrote an event of type {type(event).__name__} to the stream that "
                f"cannot be stored: {exc}"
            )
            self.bridge.post(self._unstreamable, error)
            return
        self.bridge.post(self._streamed, event, data)

    def _streamed(self, event: object, data: bytes) -> None:
        if self.done:
            return
        self._stream_out.append(data)
        self.stream.push(event)

    def _unstreamable(self, error: SerializationError) -> None:
        if not self.done:
            self._unwritable(RunResumed(), error)

    def deliver(self, message_id: int, send: Callable[[], object]) -> None:
        """Carry out ``send`` (a send, a response or a cancel from another process's
        inbox message ``message_id``): the commit that journals it deletes the message."""
        self._consumed.append(message_id)
        try:
            send()
        finally:
            if self._consumed and not self._queue and not self._waiting_commit and not self.done:
                # nothing was journaled (say, an answer to a request no longer open): the
                # message is consumed all the same, alone
                lone = self._commit()
                pending = self._db.commit(lone)
                if pending is not None:
                    self.loop.create_task(_quietly(pending))

    @property
    def only_waiting(self) -> bool:
        """Paused with nothing running or due and everything committed: the run can stop
        here and be resumed when its answer comes (a worker frees its slot so)."""
        state = self.state
        return (
            not self._booting
            and not self.done
            and self._written is _PAUSED
            and state.running == 0
            and not state.timers
            and not self._queue
            and not self._waiting_commit
            and not self._entries
            and not self._stream_out
        )

    def park(self) -> asyncio.Future[None]:
        """Stop once the superstep in flight has committed (the run stays resumable from
        that checkpoint: no finished step runs again); at once when it waits for input
        with nothing running. The future is done once it has stopped or ended."""
        if self._parking is None:
            self._parking = self.loop.create_future()
            if self.done:
                self._parking.set_result(None)
            elif not self._booting and self.state.running == 0:
                self._stop_parked()
        return self._parking

    def _stop_parked(self) -> None:
        stopped = self.crash(
            f"run {self.run_id!r} of workflow {self.name!r} was parked by its worker"
        )
        parking = self._parking
        if parking is not None:
            stopped.add_done_callback(lambda _: _settled(parking))

    def _header_of(self) -> bytes:
        """The header of its checkpoints, encoded (once)."""
        if self._header_bytes is None:
            self._header_bytes = self._headers.encode(self.request_prefix)
        return self._header_bytes

    def _failure_bytes(self, failure: Failure) -> bytes:
        return encode_value(failure, self._ser, "the run's failure")

    def _checkpoint(
        self, status: StoredStatus, *, full: bool = False, superstep: int | None = None
    ) -> CheckpointWrite:
        state = self.state
        values: dict[str, bytes | None] = {}
        if full:
            for name, value in chunk_names(state).items():
                values[name] = encode_chunk(name, value, self._ser)
        else:
            store = state.store
            for name in self._dirty:
                key = name[2:]
                values[name] = encode_chunk(name, store[key], self._ser) if key in store else None
            for position in range(self._outputs_written, len(state.outputs)):
                name = output_chunk(position)
                values[name] = encode_chunk(name, state.outputs[position], self._ser)
        frame = encode_frame(state, self._header_of(), self._ser)
        self._invoked_at = next(iter(state.invocations), state.next_invocation)
        self._dirty.clear()
        self._sent.clear()
        self._writers.clear()
        self._outputs_written = len(state.outputs)
        return CheckpointWrite(
            seq=self._seq + 1,
            superstep=state.superstep if superstep is None else superstep,
            status=status,
            frame=frame,
            values=values,
            full=full,
        )

    # -- the end ----------------------------------------------------------------------------------

    def cancel(self, reason: str = "cancelled by the caller") -> None:
        self._by_caller = True
        super().cancel(reason)

    def task_cancelled(self, reason: str) -> None:
        self._by_caller = False
        Run.cancel(self, reason)

    def _result_value(self) -> object:
        if self._stored is not None:
            return self._stored[0]
        if self._result_error is not None:
            raise self._result_error
        return super()._result_value()

    def _end(self, status: RunStatus, result: object, error: BaseException | None) -> None:
        if self.done:
            return
        if self._result_error is not None and status is RunStatus.FINISHED:
            status, result, error = RunStatus.FAILED, None, self._result_error
        if self.lease is not None and not self.loop.is_closed():
            # scheduled before the caller hears of the end: a caller whose loop ends at
            # once (asyncio.run) leaves no lease behind
            self._releasing = self.loop.create_task(self._release())
        super()._end(status, result, error)
        self._tell_flushed()

    async def stopped(self) -> None:
        """Wait until the run has ended, its end stored and its lease given up: a resume
        made next, here or in another process, finds it as its store has it."""
        await super().stopped()
        if self._releasing is not None:
            await asyncio.wait((self._releasing,))

    def crash(self, reason: str | None = None) -> asyncio.Future[None]:
        """Stop as if the process running the run died: nothing more is fed or written.

        For tests of resuming: the run's tasks and timers stop, its lease goes (as a dead
        process's does) and awaiting it raises ``WorkflowCancelled``; the store keeps what
        it had, so the run can be resumed. A commit already on its way to the store lands
        or fails as it would have; the future returned is done once it has and the lease
        is gone.
        """
        settled: asyncio.Future[None] = self.loop.create_future()
        if self.done:
            settled.set_result(None)
            return settled
        self._crashed = settled
        self._detached = True
        self._queue.clear()
        self._entries.clear()
        self._written = None
        error = WorkflowCancelled(
            reason
            or f"run {self.run_id!r} of workflow {self.name!r} stopped: its process was crashed "
            f"on purpose (stepgraph.testing.crash); resume it from its store"
        )
        Run._end(self, RunStatus.CANCELLED, None, error)
        self._tell_flushed()
        outcome = self.outcome
        if outcome.done() and not outcome.cancelled():
            outcome.exception()  # retrieved: a crash is not an unhandled error
        if not self._waiting_commit:
            self.loop.create_task(self._settle_crash())
        return settled

    def stop_here(self, reason: str) -> asyncio.Future[None]:
        """Stop where it is, as :meth:`crash` does; in superstep mode, first store a
        checkpoint of the state here when steps of the superstep in flight have finished
        since the last one: they never run again, the steps still running run again when
        the run is resumed (as in async mode, whose journal holds every completion). For a
        worker's graceful stop whose grace has run out.
        """
        state = self.state
        if (
            self.superstep_mode
            and not self.done
            and not self._booting
            and not self._queue
            and not self._waiting_commit
            and any(
                i not in state.invocations for i in range(self._invoked_at, state.next_invocation)
            )
        ):
            status = _PAUSED if _paused(state) else _GOING
            try:
                pending = self._save(self._commit(checkpoint=self._checkpoint(status)))
            except Exception as exc:  # its last checkpoint stands: those steps run again
                _log.warning("run %r: stopped without its checkpoint: %s", self.run_id, exc)
                pending = None
            if pending is not None:  # on its way to the store: the stop settles once it lands
                self._waiting_commit = True
                self.loop.create_task(self._committed(pending))
        return self.crash(reason)

    async def _settle_crash(self) -> None:
        await self._release()
        if self._crashed is not None and not self._crashed.done():
            self._crashed.set_result(None)

    # -- the caller, while the store answers ------------------------------------------------

    def send_external(self, event: object, step: str | None) -> None:
        self._storable(event, f"the {type(event).__name__} sent to")
        super().send_external(event, step)

    def answered(self, event: object) -> bool:
        if self._booting:
            return False  # the state is not restored yet: checked once it is (``_booted``)
        return super().answered(event)

    def respond(self, request_id: str, response: object) -> Awaitable[None] | None:
        self._storable(response, f"the response to request {request_id!r} of")
        if self._booting:
            return self._respond_later(request_id, response)
        return super().respond(request_id, response)

    def _storable(self, value: object, what: str) -> None:
        """Refuse (``SerializationError``) what the caller sends that the store cannot hold:
        the run would fail where it stands, for the caller's mistake."""
        self._ser.dumps(value, f"in {what} run {self.run_id!r} of workflow {self.name!r}")

    async def _respond_later(self, request_id: str, response: object) -> None:
        if self._boot is not None:
            await asyncio.shield(self._boot)
        if self.done:  # (restored as completed, or failed to restore)
            raise RunFinishedError(
                f"cannot answer request {request_id!r}: run {self.run_id} of workflow "
                f"{self.name!r} has already ended"
            )
        forwarded = super().respond(request_id, response)
        if forwarded is not None:
            await forwarded


def _settled(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _quietly(pending: Awaitable[None]) -> None:
    with contextlib.suppress(Exception):  # the message is delivered again: harmless
        await pending


def _replay(
    state: RunState,
    entries: list[Tick],
    fresh: Callable[[], Restored],
    *,
    run_id: str,
    checkpoint_id: str,
) -> RunState:
    """``state`` with the journal's ``entries`` applied, but those that ended the run.

    A run that was cancelled or failed goes on from where it was just before: the tick
    that ended it is not applied (``fresh`` gives the checkpoint's state again, to apply
    the others to). What follows such a tick is a later life of the run (resumed from
    there), applied in turn.

    Raises:
        CheckpointError: the journal does not replay on the checkpoint (it is corrupt).
    """
    kept: list[Tick] = []  # the entries applied, none of them an end
    start = 0
    try:
        while True:
            end = None
            for position in range(start, len(entries)):
                apply(state, entries[position])
                if state.status is not RunStatus.RUNNING:
                    end = position
                    break
            if end is None:
                return state
            kept += entries[start:end]
            state = fresh().state
            state.undo_writes = True
            for tick in kept:
                apply(state, tick)
            start = end + 1
    except Exception as exc:
        raise CheckpointError(
            f"the journal of run {run_id!r} after checkpoint {checkpoint_id!r} is corrupt: it "
            f"does not replay ({type(exc).__name__}: {exc})",
            run_id=run_id,
            checkpoint_id=checkpoint_id,
        ) from exc


def _steps_changed(
    run_id: str,
    checkpoint_id: str,
    removed: list[str],
    changed: list[str],
    added: list[str],
    cause: Exception | None = None,
) -> CheckpointError:
    """The error of a strict resume by a workflow whose steps changed since the checkpoint
    (``cause``: what reading it raised, if it could not be read)."""
    text = _changed_message(run_id, checkpoint_id, removed, changed, added)
    return CheckpointError(
        text if cause is None else f"{text} (reading it: {cause})",
        run_id=run_id,
        checkpoint_id=checkpoint_id,
    )


def _paused(state: Any) -> bool:
    """Whether the run waits for input from outside: an input request it announced is open
    (other steps may still run), or nothing runs and a step waits for an outside event.

    The status is stored before the request is announced, so that a caller who saw the
    request finds the run paused in the store, whether or not the asking step has yet
    reached its ``wait_for_event``.
    """
    return state.status is _RUNNING and (
        bool(state.inputs) or (state.running == 0 and bool(state.waiters))
    )


def _changed_message(
    run_id: str,
    checkpoint_id: str,
    removed: list[str],
    changed: list[str],
    added: list[str],
    *,
    strict: bool = True,
) -> str:
    parts = []
    if removed:
        parts.append(f"removed {', '.join(map(repr, removed))}")
    if changed:
        parts.append(f"changed the types accepted or returned by {', '.join(map(repr, changed))}")
    if added:
        parts.append(f"added {', '.join(map(repr, added))}")
    text = (
        f"the workflow of run {run_id!r} has {'; '.join(parts)} since checkpoint {checkpoint_id!r}"
    )
    if strict:
        return (
            f"{text}. Nothing ran and the run can still be resumed by the code that wrote it; "
            f"resume with strict=False to drop the messages of removed steps and go on, or fork "
            f"from an earlier checkpoint"
        )
    return f"{text}: resuming anyway (strict=False)"


class DurableRuntime:
    """Runs durable runs (workflows built with ``store=...``) in this process."""

    def create(self, plan: RunPlan, owner: object, options: RunOptions) -> DurableRun:
        return DurableRun(plan, owner, options)

    def __repr__(self) -> str:
        return "DurableRuntime()"
