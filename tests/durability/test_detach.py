"""handler.detach(): stop following a durable run and leave it as its store has it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepgraph import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from stepgraph.errors import StepgraphError, WorkflowCancelled
from stepgraph.stores import SqliteStore


class Ask(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="ok? ")

    @step
    async def done(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


async def test_a_detached_paused_run_stays_paused_and_is_resumed_elsewhere(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "runs.db")
    try:
        handler = Ask(store=store).run()
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                request = event.request_id
                break
        await handler.detach()
        with pytest.raises(WorkflowCancelled):
            await handler
        record = await store.get_run(handler.run_id)
        assert record is not None and record.status == "paused"
        again = Ask(store=store).resume(handler.run_id)
        again.send_event(HumanResponseEvent(response="yes", request_id=request))
        assert await again == "yes"
    finally:
        store.close()


async def test_detaching_a_run_without_a_store_is_an_error() -> None:
    handler = Ask().run()
    with pytest.raises(StepgraphError, match="not durable"):
        await handler.detach()
    await handler.cancel()
