"""Starting and resuming durable runs: what ``run()`` and ``resume()`` do with a store."""

from __future__ import annotations

from ..errors import StepgraphError
from ..runtime.handler import WorkflowHandler
from ..runtime.launch import RunOptions, launch, require_loop
from ..runtime.plan import RunPlan
from ..runtime.run import IN_PROCESS, new_run_id
from .run import DurableRun, live_run

__all__ = ["launch_run", "resume_run"]


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
            return WorkflowHandler(live)
    durable = DurableRun(plan, owner, options, run_id=run_id)
    handler = WorkflowHandler(durable)
    durable.start(start)
    return handler


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
            return WorkflowHandler(live)
    run = DurableRun(plan, owner, options, run_id=run_id if checkpoint_id is None else new_run_id())
    handler = WorkflowHandler(run)
    run.resume(run_id, checkpoint_id, strict)
    return handler
