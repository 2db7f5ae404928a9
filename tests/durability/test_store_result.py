"""``await store.result(run_id, timeout=None)``: a stored run's end, from the store alone,
on every store."""

from __future__ import annotations

import asyncio
from typing import Any

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
from stepgraph.errors import (
    RecordedError,
    RunNotFoundError,
    WorkflowCancelled,
    WorkflowTimeoutError,
)
from tests.durability.conftest import StoreFactory


class Double(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result={"doubled": ev.n * 2})


class Broken(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        raise KeyError("no such account")


class Ask(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="ok? ")

    @step
    async def done(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


async def test_result_gives_a_completed_runs_result_to_another_store_object(
    stores: StoreFactory,
) -> None:
    handler = Double(store=stores()).run(n=21)
    assert await handler == {"doubled": 42}
    assert await stores().result(handler.run_id) == {"doubled": 42}


async def test_result_waits_for_a_run_that_has_not_ended(stores: StoreFactory) -> None:
    reader = stores()
    polled = asyncio.Event()
    reads: list[Any] = []
    get_run = reader.get_run

    async def counted(run_id: str) -> Any:
        found = await get_run(run_id)
        if watching:
            reads.append(found)
            if len(reads) >= 3:
                polled.set()
        return found

    reader.get_run = counted  # type: ignore[method-assign]
    watching = False  # the run's own reads (one store object in memory) do not count
    handler = Ask(store=stores()).run()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):  # the run is stored, and paused
            watching = True
            waiting = asyncio.ensure_future(reader.result(handler.run_id))
            await polled.wait()  # it read the paused run three times: it must still wait
            assert not waiting.done()
            assert all(r.status == "paused" for r in reads)
            handler.send_event(HumanResponseEvent(response="yes", request_id=event.request_id))
    assert await handler == "yes"
    assert await waiting == "yes"


async def test_a_failed_run_raises_its_stored_error(stores: StoreFactory) -> None:
    handler = Broken(store=stores()).run()
    with pytest.raises(KeyError):
        await handler
    with pytest.raises(Exception) as caught:
        await stores().result(handler.run_id)
    error = caught.value
    assert "no such account" in str(error)
    assert isinstance(error, KeyError | RecordedError)  # the live one here, or its record


async def test_a_cancelled_run_an_unknown_run_and_a_timeout(stores: StoreFactory) -> None:
    handler = Ask(store=stores()).run()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            break
    with pytest.raises(WorkflowTimeoutError, match="paused"):
        await stores().result(handler.run_id, timeout=0.05)
    await handler.cancel()
    with pytest.raises(WorkflowCancelled):
        await stores().result(handler.run_id)
    with pytest.raises(RunNotFoundError, match="'nope'"):
        await stores().result("nope")
