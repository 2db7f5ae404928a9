"""``crash(handler)``: stop a durable run as if its process had died (to test resuming)."""

from __future__ import annotations

import asyncio

from ..durability.run import DurableRun
from ..errors import StepgraphError
from ..runtime.handler import WorkflowHandler

__all__ = ["crash", "settled"]


def crash(handler: WorkflowHandler) -> asyncio.Future[None]:
    """Stop the durable run behind ``handler`` as if the process running it had died.

    Its steps and timers stop where they are, nothing more is written to its store and
    its lease goes, as a killed process's does; awaiting ``handler`` raises
    ``WorkflowCancelled``. Resume it with ``MyFlow(store=...).resume(handler.run_id)``,
    in this event loop or another, as a new process would.

    Returns:
        A future done once a commit that was already on its way to the store has landed
        (or failed) and the run's lease is gone: ``await crash(handler)`` before resuming
        on a store that commits over a network (PostgreSQL). Awaiting it is optional.

    Raises:
        StepgraphError: the run is not durable (its workflow has no store).

    Example::

        handler = MyFlow(store=store).run()
        ...  # until it reaches the point to test
        await crash(handler)
        result = await MyFlow(store=store).resume(handler.run_id)
    """
    run = handler._run
    if not isinstance(run, DurableRun):
        raise StepgraphError(
            f"crash(): run {handler.run_id} is not durable: only a run of a workflow built "
            f"with store=... can be resumed after a crash"
        )
    return run.crash()


async def settled(handler: WorkflowHandler) -> None:
    """Wait until everything the durable run behind ``handler`` has recorded so far is in
    its store (at once for an embedded store, whose commits finish as they are made).

    Raises:
        StepgraphError: the run is not durable.
    """
    run = handler._run
    if not isinstance(run, DurableRun):
        raise StepgraphError(f"settled(): run {handler.run_id} is not durable")
    await run.flushed()
