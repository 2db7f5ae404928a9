"""Starting and resuming durable runs: what ``run()`` and ``resume()`` do with a store."""

from __future__ import annotations

from ..errors import StepgraphError
from ..runtime.handler import WorkflowHandler
from ..runtime.launch import RunOptions, launch, require_loop
from ..runtime.plan import RunPlan
from ..runtime.run import IN_PROCESS, new_run_id
from ..stores.base import Store
from ..stores.queue import is_queue
from .run import DurableRun, live_run, other_workflow, taken_by_other

__all__ = ["attach_run", "launch_run", "resume_run", "submit_run"]


def launch_run(
    plan: RunPlan,
    owner: object,
    options: RunOptions,
    start: object,
    *,
    run_id: str | None = None,
    who: str = "",
) -> WorkflowHandler:
    """``run()``: a durable run when the options have a store, else an in-process one.

    ``run_id`` names the run. With a store it is an idempotency key: the run of that id
    the store has (or the one going on in this process) is the one the handler follows.
    """
    if options.store is None:
        if run_id is None:
            return launch(plan, owner, options, start, who=who)
        require_loop(who or f"workflow {plan.name!r}: run()")
        run = IN_PROCESS.create(plan, owner, options)
        run.run_id = run.request_prefix = run_id
        handler = WorkflowHandler(run)
        run.start(start)
        return handler
    require_loop(who or f"workflow {plan.name!r}: run()")
    if run_id is not None:
        live = live_run(options.store, run_id)
        if live is not None:
            if live.name != plan.name:
                raise taken_by_other(run_id, live.name, plan.name, options.store)
            return WorkflowHandler(live)
    durable = DurableRun(plan, owner, options, run_id=run_id)
    handler = WorkflowHandler(durable)
    durable.start(start)
    _read_inbox(durable)
    return handler


def _read_inbox(run: DurableRun) -> None:
    """What other processes send the run (``wf.attach(run_id)``) reaches it: its inbox is
    read while it goes on here (a worker reads the inboxes of its own runs)."""
    if is_queue(run._db):
        from ..distributed.local_inbox import follow_inbox  # distributed builds on this

        follow_inbox(run)


def resume_run(
    plan: RunPlan,
    owner: object,
    options: RunOptions,
    run_id: str,
    *,
    checkpoint_id: str | None = None,
    strict: bool = True,
    who: str = "",
) -> WorkflowHandler:
    """``resume()``: go on with stored run ``run_id``, or fork it from ``checkpoint_id``.

    Raises:
        StepgraphError: the workflow has no store, or no event loop is running.
    """
    where = who or f"workflow {plan.name!r}: resume()"
    if options.store is None:
        raise StepgraphError(
            f"{where}: the workflow has no store to resume run {run_id!r} from; build it with "
            f"store=SqliteStore('runs.db') (or another store)"
        )
    if not isinstance(run_id, str) or not run_id:
        raise StepgraphError(
            f"{where}: run_id must be a run's id (a non-empty str), got {run_id!r}"
        )
    require_loop(where, "resume(...)")
    if checkpoint_id is None:
        live = live_run(options.store, run_id)
        if live is not None:
            if live.name != plan.name:
                other_workflow(run_id, live.name, plan.name, strict)
            return WorkflowHandler(live)
    run = DurableRun(plan, owner, options, run_id=run_id if checkpoint_id is None else new_run_id())
    handler = WorkflowHandler(run)
    run.resume(run_id, checkpoint_id, strict)
    _read_inbox(run)
    return handler


def _queue_store(options: RunOptions, where: str, what: str) -> Store:
    store = options.store
    if store is None:
        raise StepgraphError(
            f"{where}: the workflow has no store to {what}; build it with "
            f"store=PostgresStore(url) or SqliteStore('runs.db')"
        )
    if not is_queue(store):
        raise StepgraphError(
            f"{where}: {store!r} has no run queue (claim, post, read_events, ...): use "
            f"PostgresStore, SqliteStore or MemoryStore"
        )
    return store  # type: ignore[no-any-return]


async def submit_run(
    plan: RunPlan,
    owner: object,
    options: RunOptions,
    start: object,
    *,
    queue: str,
    run_id: str | None,
    who: str,
) -> str:
    """``submit()``: store the run as queued (a worker runs it); its run id.

    With a ``run_id`` the store has already, nothing is written: that run's id is
    returned (submitting is idempotent).

    Raises:
        StepgraphError: no store with a run queue, a queue name that is not a non-empty
            string, or a ``run_id`` that is not one.
        RunIdConflictError: ``run_id`` names a run of another workflow.
        SerializationError: the start event cannot be stored.
    """
    store = _queue_store(options, who, "submit runs to")
    if not isinstance(queue, str) or not queue:
        raise StepgraphError(f"{who}: queue must be a non-empty str, got {queue!r}")
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise StepgraphError(f"{who}: run_id must be a non-empty str or None, got {run_id!r}")
    run = DurableRun(plan, owner, options, run_id=run_id)
    if not await run.enqueue(start, queue):
        stored = await store.get_run(run.run_id)
        if stored is not None and stored.workflow != plan.name:
            raise taken_by_other(run.run_id, stored.workflow, plan.name, store)
    return run.run_id


def attach_run(plan: RunPlan, options: RunOptions, run_id: str, *, who: str) -> WorkflowHandler:
    """``attach()``: a handler on run ``run_id``, wherever it runs: it reads the run's
    stored stream and record and posts to its inbox (so it follows the run across the
    workers that take it in turn, this process's included).
    """
    _queue_store(options, who, "attach runs from")
    if not isinstance(run_id, str) or not run_id:
        raise StepgraphError(f"{who}: run_id must be a run's id (a non-empty str), got {run_id!r}")
    require_loop(who, f"attach({run_id!r})")
    from ..distributed.attached import AttachedRun

    return WorkflowHandler(AttachedRun(plan, options, run_id))
