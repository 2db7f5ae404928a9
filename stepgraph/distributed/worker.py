"""Worker: takes queued runs from a store, runs them, and keeps their leases alive.

One loop, in this order, again and again:

1. **claim** as many runs as it has free slots (``concurrency``): queued runs of its
   queues and of the workflows it knows, and such runs whose worker's lease expired (a
   worker that died); each is resumed from its last checkpoint (a queued run's is its
   start);
2. **deliver** the inbox messages (sends, responses, cancels from other processes) of the
   runs it holds;
3. **renew** its leases every third of ``lease_seconds``;
4. **wait** for work: a NOTIFY on PostgreSQL, a poll that backs off (2 ms to a quarter
   second) elsewhere, a slot freeing when it is full.

A run of a workflow the worker does not know stays queued for a worker that does. One
whose checkpoint its code cannot use (its steps changed since it was submitted) is failed
with a stored error naming the cause; the worker goes on.

:meth:`stop` is a graceful shutdown: no more claims, each run in superstep mode stops at
its next barrier (what finished is committed: nothing runs twice), the others get
``grace_seconds`` to end; what is left stops where it is, resumable (a run in superstep
mode first stores what finished of the superstep in flight: it never runs again), and its
lease is given up so that another worker takes it at once.

While the store is away, the runs go on; once it has not renewed their leases for two
thirds of ``lease_seconds``, the worker stops them where their store has them (another
worker may take them over when the leases expire). A commit refused because another
coordinator wrote that checkpoint (``RunLockedError``) stops the run here and stores
nothing: the run is the other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.failure import Failure
from ..durability.checkpoints import encode_value
from ..durability.run import DurableRun, _owner, _where, coordinated_here
from ..durability.serializer import serializer_named
from ..errors import RunLockedError, StepgraphError, StoreUnavailableError, WorkflowCancelled
from ..runtime.handler import WorkflowHandler
from ..runtime.plan import RunPlan
from ..stores.base import Commit, RunRecord, StoredCheckpoint, StoredStatus
from ..stores.queue import is_queue, take
from .messages import deliver

__all__ = ["Worker"]

_log = logging.getLogger("stepgraph.worker")
_LOOK_EVERY = 60.0  # seconds between looks for queued runs of workflows a worker lacks

_FIRST_POLL = 0.002
_LAST_POLL = 0.25  # idle: a claim every quarter second at most (recovery needs claims)
_TAKE_OVER_EVERY = 0.2  # look for runs to take over (dead workers') this often, at least
_READ_INBOX_EVERY = 0.05  # at least this often, and whenever a post wakes the worker
_RETRY_FIRST = 0.1  # a store that fails: retry with a back-off ...
_RETRY_LAST = 5.0  # ... up to every 5 s
_FENCE_AFTER = 2 / 3  # no renewal for this share of a lease: its runs stop (see _fence)


@dataclass
class _Held:
    handler: WorkflowHandler
    run: DurableRun
    task: asyncio.Task[None] | None = None
    delivered: set[int] = field(default_factory=set)  # inbox messages carried out
    idle: bool = False  # only waiting for an answer at the last renewal
    parked: bool = False  # stopped while only waiting: given up until a message comes


class Worker:
    """Runs the queued runs of ``workflows`` from ``store`` (see the module docstring).

    Args:
        store: the store (``PostgresStore`` across machines; ``SqliteStore`` on one).
        workflows: the workflows it runs, by name (a run names its workflow): each bound
            to ``store`` already (``stepgraph worker`` binds them).
        queues: the queues it takes runs from.
        concurrency: how many runs it holds at once.
        lease_seconds: how long its claim on a run lasts unless renewed; a worker that
            dies has its runs taken by another once this has passed.
        grace_seconds: how long :meth:`stop` lets runs end before it stops them.

    Example::

        worker = Worker(store, {"Flow": Flow(store=store)}, queues=["default"])
        task = asyncio.create_task(worker.run())
        ...
        await worker.stop()
    """

    def __init__(
        self,
        store: Any,
        workflows: Mapping[str, Any],
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int = 8,
        lease_seconds: float = 10.0,
        grace_seconds: float = 30.0,
    ) -> None:
        if not is_queue(store):
            raise StepgraphError(f"Worker: {store!r} has no run queue (claim, post, ...)")
        if (
            isinstance(queues, str)
            or not queues
            or not all(isinstance(q, str) and q for q in queues)
        ):
            raise StepgraphError(f"Worker(queues={queues!r}): give a list of queue names")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise StepgraphError(f"Worker(concurrency={concurrency!r}): must be an int >= 1")
        for option, value in (("lease_seconds", lease_seconds), ("grace_seconds", grace_seconds)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise StepgraphError(f"Worker({option}={value!r}): must be a number of seconds > 0")
        _check_registry(store, workflows)
        self.store = store
        self.workflows = dict(workflows)
        self._known = sorted(self.workflows)  # their names: the runs a claim may take
        self.queues = list(queues)
        self.concurrency = concurrency
        self.lease_seconds = float(lease_seconds)
        self.grace_seconds = float(grace_seconds)
        self.name = _owner(store)
        # the claim may take the runs' leases too when their runs take them here, as here
        self._lease_in_claim = all(
            getattr(workflow, "options", None) is not None and workflow.options.store is store
            for workflow in self.workflows.values()
        )
        self.held: dict[str, _Held] = {}
        self.started = 0  # runs it took (for reports and tests)
        self._took_over = -_TAKE_OVER_EVERY  # when a claim last looked for runs to take over
        self._stopping = False
        self._woken = False  # the last wait ended with a notification (a post, maybe)
        self._fresh: set[str] = set()  # the runs the claim of this round took
        self._freed: asyncio.Event | None = None  # a run ended: a slot is free
        self._waiting: asyncio.Future[bool] | None = None  # the store's wait for work
        self._stopped: asyncio.Event | None = None
        self._renewed = 0.0  # see run() and _fence()
        self._next_look = 0.0  # when, idle, to look for runs nobody here knows
        self._said: set[str] = set()  # the runs of unknown workflows logged already

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Work until :meth:`stop` (then stop gracefully, and return).

        Raises:
            StepgraphError: it was called before (a worker runs once: make another).
        """
        if self._freed is not None:
            raise StepgraphError(
                f"worker {self.name}: run() was called already (a worker runs once, until it "
                f"stops: make another Worker to work again)"
            )
        self._freed = asyncio.Event()
        self._stopped = asyncio.Event()
        renew_every = self.lease_seconds / 3
        renewed = delivered = time.monotonic()
        self._renewed = renewed  # when the last renewal that succeeded was sent
        pause = _FIRST_POLL
        retry = _RETRY_FIRST
        try:
            while not self._stopping:
                try:
                    asked = self.concurrency - len(self.held)
                    claimed = await self._claim()
                    if self._woken or time.monotonic() - delivered >= _READ_INBOX_EVERY:
                        self._woken = False  # a post wakes the worker: read the inbox then,
                        delivered = time.monotonic()  # or every so often (other stores)
                        await self._deliver()
                    if time.monotonic() - renewed >= renew_every:
                        renewed = time.monotonic()
                        self._park_idle()
                        await self.store.renew(self.name, self._holding(), self.lease_seconds)
                        self._renewed = renewed
                    retry = _RETRY_FIRST
                    if claimed:
                        pause = _FIRST_POLL
                        if claimed == asked:  # there may be more
                            continue
                    timeout = min(pause, max(0.0, renewed + renew_every - time.monotonic()))
                    if len(self.held) >= self.concurrency:
                        await self._nap(timeout)  # full: wait for a slot (or the next renewal)
                    else:
                        await self._release_taken()  # the leases of the runs that ended
                        if not claimed:
                            await self._say_unknown()
                        await self._wait_for_work(timeout)
                    pause = min(pause * 2, _LAST_POLL)
                except StepgraphError as exc:  # the store is away: keep what runs, retry
                    _log.warning(
                        "worker %s: the store failed (%s); retrying in %.1f s",
                        self.name,
                        exc,
                        retry,
                    )
                    self._fence()
                    await self._nap(min(retry, self._until_fence()))
                    retry = min(retry * 2, _RETRY_LAST)
        finally:
            await self._shutdown()
            with contextlib.suppress(Exception):  # the leases of the runs that ended
                await self._release_taken()
            self._stopped.set()

    async def _say_unknown(self) -> None:
        """Idle, at most once a minute: log (once each) the queued runs of its queues that
        are of workflows it does not know. It leaves them for a worker that knows them,
        but says so: a run nobody can take is not a silent stall."""
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + _LOOK_EVERY
        queues = set(self.queues)
        try:
            queued = await self.store.list_runs(status="queued")
        except StepgraphError:  # (a look, only: the next claim says what the store has)
            return
        for record in queued:
            if (
                record.queue in queues
                and record.workflow not in self.workflows
                and record.run_id not in self._said
            ):
                self._said.add(record.run_id)
                _log.warning(
                    "worker %s: run %r of workflow %r waits in queue %r: this worker does "
                    "not know that workflow (it runs: %s); a worker that knows it takes it",
                    self.name,
                    record.run_id,
                    record.workflow,
                    record.queue,
                    ", ".join(sorted(self.workflows)) or "none",
                )

    async def _nap(self, seconds: float) -> None:
        freed = self._freed
        assert freed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(freed.wait(), seconds)
        freed.clear()

    async def _wait_for_work(self, timeout: float) -> None:
        """The store's wait, cut short by :meth:`stop` only (a run that ends while it waits
        frees a slot it has already: cutting the wait would drop the LISTEN session).

        It is awaited directly (no task watching it besides): a notification reaches the
        loop one turn of the event loop sooner."""
        if self._stopping:
            return
        waiting = self._waiting = asyncio.ensure_future(
            self.store.wait_for_work(self.queues, timeout)
        )
        try:
            self._woken = bool(await waiting)  # a store error raises: the loop retries
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not (self._stopping and waiting.cancelled()) or (task and task.cancelling()):
                raise  # not (only) stop() cutting the wait short
        finally:
            self._waiting = None

    async def stop(self) -> None:
        """Stop gracefully (see the module docstring); returns once :meth:`run` has.

        Takes no more runs from now on; runs in superstep mode stop at their next barrier.
        """
        self._stopping = True
        for held in list(self.held.values()):
            if held.run.superstep_mode:
                held.run.park()
        if self._freed is not None:
            self._freed.set()
        if self._waiting is not None:
            self._waiting.cancel()
        if self._stopped is not None:
            await self._stopped.wait()

    # -- taking runs ----------------------------------------------------------------------------

    async def _claim(self) -> int:
        free = self.concurrency - len(self.held)
        self._fresh = set()
        if free <= 0 or self._stopping:
            return 0
        options: dict[str, bool] = {"lease": True} if self._lease_in_claim else {}
        # runs to take over (of dead workers) are looked for every _TAKE_OVER_EVERY; the
        # claims in between take queued runs only (the search costs more than they do)
        now = time.monotonic()
        if now - self._took_over >= _TAKE_OVER_EVERY:
            self._took_over = now
        else:
            options["take_over"] = False
        records = await self.store.claim(  # only the runs of the workflows it knows
            self.name, self.queues, free, self.lease_seconds, workflows=self._known, **options
        )
        self._fresh = {record.run_id for record in records}
        ours = await self._ours(records)
        try:
            if self._stopping:  # stopped while claiming: give them back at once
                await self._let_go([r for r in records if r.run_id not in ours])
                await self.store.unclaim(self.name, [record.run_id for record in records])
                return 0
            await self._start(records, ours)
        finally:  # the leases of the runs claimed but not started (refused, or a failure)
            await self._let_go(
                [r for r in records if r.run_id not in ours and r.run_id not in self.held]
            )
        return len(records)

    async def _ours(self, records: list[RunRecord]) -> set[str]:
        """The claimed runs this process runs already, to leave as they are: held (a claim
        may return one: a renewal raced its expiry), or coordinated here otherwise (a
        ``resume`` in this process). A held run that has ended is being given up (its
        claim too, which is how this claim could take it): once it is, it is taken anew."""
        ending = [
            held.task
            for record in records
            if (held := self.held.get(record.run_id)) is not None
            and held.run.done
            and held.task is not None
        ]
        if ending:
            await asyncio.wait(ending)
        ours = set()
        for record in records:
            workflow = self.workflows.get(record.workflow)
            if record.run_id in self.held or (
                workflow is not None and coordinated_here(workflow.options.store, record.run_id)
            ):
                ours.add(record.run_id)
        return ours

    async def _start(self, records: list[RunRecord], ours: set[str]) -> None:
        known: list[tuple[RunRecord, Any]] = []
        for record in records:
            if record.run_id in ours:
                continue
            workflow = self.workflows.get(record.workflow)
            if workflow is None:
                await self._refuse(record)
                continue
            known.append((record, workflow))
        # their leases (where and as their runs take them), then their checkpoints, for all
        # of them at once; a run whose lease another process holds is left to it
        by_store: dict[int, list[tuple[RunRecord, Any]]] = {}
        for record, workflow in known:
            by_store.setdefault(id(workflow.options.store), []).append((record, workflow))
        for runs in by_store.values():
            store = runs[0][1].options.store
            taken = await take(store, _owner(store), [record.run_id for record, _ in runs])
            for record, workflow in runs:
                if record.run_id in taken:
                    self._take(record, workflow, taken[record.run_id])

    async def _let_go(self, records: list[RunRecord]) -> None:
        """Give up the run leases of ``records`` this process holds (a claim with lease, or
        ``take``, took them) for runs it does not run."""
        for record in records:
            workflow = self.workflows.get(record.workflow)
            stores = {id(self.store): (self.store, self.name)}
            if workflow is not None:
                store = workflow.options.store
                stores[id(store)] = (store, _owner(store))
            for store, owner in stores.values():
                with contextlib.suppress(Exception):  # it dies with the process anyway
                    await store.release(record.run_id, owner)

    async def _release_taken(self) -> None:
        stores = {id(w.options.store): w.options.store for w in self.workflows.values()}
        for store in stores.values():
            if is_queue(store):
                await store.release_taken()

    def _take(self, record: RunRecord, workflow: Any, latest: StoredCheckpoint | None) -> None:
        """Resume the claimed run from the record the claim returned and the checkpoint
        read once its lease was taken (nothing is read again)."""
        plan, owner = _plan_of(workflow)
        run = DurableRun(plan, owner, workflow.options, run_id=record.run_id)
        handler = WorkflowHandler(run)
        run.resume(record.run_id, None, True, record, latest, leased=True)  # take() took it
        held = _Held(handler, run)
        self.held[record.run_id] = held
        self.started += 1
        held.task = asyncio.get_running_loop().create_task(self._follow(record, held, workflow))

    async def _follow(self, record: RunRecord, held: _Held, workflow: Any) -> None:
        run_id = record.run_id
        try:
            await held.handler
        except RunLockedError:
            pass  # another coordinator has it: its worker renews the lease
        except WorkflowCancelled:
            await held.run.release_lease()  # before the claim goes: a claimer can take it
            if held.parked:  # only waiting for an answer: claimed again once one comes
                await self._give_up(run_id, idle=True)
            elif self._stopping:  # parked or stopped: as stored, for another worker at once
                await self._give_up(run_id)
        except StoreUnavailableError as exc:  # the store went away under the run: its last
            await held.run.release_lease()  # checkpoint stands; the next claim (ours, maybe,
            await self._give_up(run_id)  # once the store answers) resumes it
            _log.warning("worker %s: run %r stopped: %s", self.name, run_id, exc)
        except Exception as exc:
            await self._store_boot_failure(run_id, workflow, exc)
        finally:
            self.held.pop(run_id, None)
            if self._freed is not None:
                self._freed.set()

    async def _give_up(self, run_id: str, **options: Any) -> None:
        """Give the claim on ``run_id`` up (``RunQueue.unclaim``); should the store refuse,
        say so: the claim then lapses with its lease, and the run is taken again."""
        try:
            await self.store.unclaim(self.name, [run_id], **options)
        except Exception as exc:
            _log.warning(
                "worker %s: could not give up its claim on run %r (%s: %s); it is taken "
                "again once the claim's lease has run out",
                self.name,
                run_id,
                type(exc).__name__,
                exc,
            )

    async def _store_boot_failure(self, run_id: str, workflow: Any, error: Exception) -> None:
        """A run that failed before it could start (a checkpoint its code cannot use) has
        no stored end: store one, so that it is not taken again and again."""
        try:
            record = await self.store.get_run(run_id)
            if record is None or StoredStatus(record.status).final:
                return
            stored = StepgraphError(
                f"worker {self.name} could not resume run {run_id!r} of workflow "
                f"{record.workflow!r}: {type(error).__name__}: {error}"
            )
            stored.__cause__ = error
            await self._fail(run_id, workflow.options.serializer, stored)
        except Exception as exc:  # the next worker to claim it tries again
            _log.warning(
                "worker %s: cannot store the failure of run %r: %s", self.name, run_id, exc
            )

    async def _refuse(self, record: RunRecord) -> None:
        known = ", ".join(sorted(self.workflows)) or "none"
        error = StepgraphError(
            f"run {record.run_id!r} is a run of workflow {record.workflow!r}, which worker "
            f"{self.name} does not know (it runs: {known}); give the worker a registry that "
            f"names it"
        )
        _log.error("%s", error)
        await self._fail(record.run_id, "json", error)

    async def _fail(self, run_id: str, serializer: str, error: BaseException) -> None:
        failure = Failure.from_error(error)
        result = encode_value(failure, serializer_named(serializer), "the run's failure")
        pending = self.store.commit(
            Commit(run_id=run_id, status=StoredStatus.FAILED, result=result)
        )
        if pending is not None:
            await pending

    def _fence(self) -> None:
        """Stop the runs it holds once it has not renewed their leases for most of a
        lease (the store is away): another worker may take them over when their leases
        expire, and two copies of a run must not go on side by side. They stop where
        their store has them, as a crashed process's do, and are resumed (here or
        elsewhere) from their last checkpoints; the steps that were under way run again."""
        if self._until_fence() > 0:
            return
        silent = time.monotonic() - self._renewed
        for held in list(self.held.values()):
            if not held.run.done:
                _log.warning(
                    "worker %s: run %r stopped: its lease was not renewed for %.1f s",
                    self.name,
                    held.run.run_id,
                    silent,
                )
                held.run.crash(
                    f"run {held.run.run_id!r} was stopped by worker {self.name}: it could "
                    f"not renew the run's lease for {silent:.1f} s (lease_seconds="
                    f"{self.lease_seconds}); another worker may take it over"
                )

    def _until_fence(self) -> float:
        """Seconds until :meth:`_fence` stops the runs held, unless a renewal succeeds."""
        if all(held.run.done for held in self.held.values()):
            return math.inf
        fence = self._renewed + self.lease_seconds * _FENCE_AFTER
        return max(0.0, fence - time.monotonic())

    def _holding(self) -> list[str]:
        """The runs whose claims to renew: held, neither ended nor parked."""
        return [
            run_id for run_id, held in self.held.items() if not held.parked and not held.run.done
        ]

    def _park_idle(self) -> None:
        """Stop the runs that have only been waiting for an answer since the last renewal:
        they hold a slot for nothing (a person may answer in a day). A message posted to
        one makes it claimable again; it resumes where it waited."""
        for held in list(self.held.values()):
            waiting = held.run.only_waiting
            if waiting and held.idle and not held.parked:
                held.parked = True
                held.run.crash(
                    f"run {held.run.run_id!r} was parked by worker {self.name}: it waits for "
                    f"an answer, and is resumed when one is sent"
                )
            held.idle = waiting

    # -- messages -------------------------------------------------------------------------------

    async def _deliver(self) -> None:
        ready = [  # the runs this round's claim took: from the next round on (no round trip
            # in the way of their first steps, which are starting)
            run_id
            for run_id, held in self.held.items()
            if not held.run._booting and run_id not in self._fresh
        ]
        if not ready:
            return
        for message in await self.store.inbox(ready):
            held = self.held.get(message.run_id)
            # a message stays in the inbox until the commit that journals it is done:
            # carried out once, however often it is read meanwhile
            if held is not None and not held.run.done and message.id not in held.delivered:
                held.delivered.add(message.id)
                deliver(held.run, message)

    # -- stopping -------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        held = list(self.held.values())
        if not held:
            return
        for each in held:
            if each.run.superstep_mode:
                each.run.park()
        tasks = [each.task for each in held if each.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.grace_seconds)
        left = [each for each in held if not each.run.done]
        for each in left:  # (what finished of a superstep in flight is stored first)
            each.run.stop_here(
                f"run {each.run.run_id!r} was stopped by worker {self.name} shutting down"
            )
        for each in left:  # each gives its claim up as it ends
            if each.task is not None:
                with contextlib.suppress(BaseException):
                    await each.task


def _check_registry(store: Any, workflows: object) -> None:
    """Refuse a registry a worker cannot run: not a mapping, or a workflow not bound to
    the worker's store (its runs would be claimed from one store and read from another).

    Raises:
        StepgraphError: naming the workflow and what is wrong with it.
    """
    if not isinstance(workflows, Mapping):
        raise StepgraphError(
            f"Worker(workflows=...): give a mapping of names to workflows (registry(...) "
            f"makes one from a list), not a {type(workflows).__name__}"
        )
    for key, workflow in workflows.items():
        options = None if isinstance(workflow, type) else getattr(workflow, "options", None)
        bound = getattr(options, "store", None)
        if bound is None:
            raise StepgraphError(
                f"Worker: workflow {key!r} ({workflow!r}) is not bound to a store: give an "
                f"instance made with store= the worker's store (`stepgraph worker` binds "
                f"them itself)"
            )
        if _where(bound) != _where(store):
            raise StepgraphError(
                f"Worker: workflow {key!r} is bound to {bound!r}, not to the worker's store "
                f"{store!r}: its runs would be claimed from the one and read from the other"
            )


def registry(items: Iterable[tuple[str | None, Any]]) -> dict[str, Any]:
    """Workflows by name: each under its own name (and under its key, when given).

    Raises:
        StepgraphError: two different workflows under one name (a worker runs the runs
            stored under a name with one workflow).
    """
    found: dict[str, Any] = {}
    for key, workflow in items:
        names = {workflow_name(workflow)}
        if key is not None:
            names.add(key)
        for name in names:
            known = found.get(name)
            if known is not None and _runs_of(known) is not _runs_of(workflow):
                raise StepgraphError(
                    f"the registry names two workflows {name!r}: {known!r} and {workflow!r}; "
                    f"a worker runs the runs of a name with one of them: give one another "
                    f"name (name=...)"
                )
            found[name] = workflow
    return found


def _runs_of(workflow: Any) -> object:
    """What runs of ``workflow`` run: a Workflow's class, a built graph's plan (copies of
    one graph, or instances of one class, are one workflow)."""
    if hasattr(workflow, "_compiled"):
        return workflow if isinstance(workflow, type) else type(workflow)
    return getattr(workflow, "plan", workflow)


def _plan_of(workflow: Any) -> tuple[RunPlan, object]:
    """The plan runs of ``workflow`` follow, and the object their steps are methods of."""
    if hasattr(workflow, "_compiled"):  # a Workflow
        return workflow._placed(workflow._compiled()), workflow
    return workflow.plan, None  # a built graph


def workflow_name(workflow: Any) -> str:
    """The name a workflow's runs are stored under."""
    return _plan_of(workflow)[0].name
