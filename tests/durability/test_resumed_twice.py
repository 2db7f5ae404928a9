"""A run resumed, stopped again, and resumed once more.

A resume replays the journal written after the checkpoint (async mode: every tick); what
that brought back (shared-state writes, outputs) is the next checkpoint's to store, as
if this process had made it: else the checkpoint names what the store does not hold,
and the run cannot be resumed from it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stepgraph import (
    Context,
    Event,
    Executor,
    HumanResponseEvent,
    InputRequiredEvent,
    RequestInfoEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    response_handler,
    step,
)
from stepgraph.testing import crash

from .conftest import StoreFactory

pytestmark = pytest.mark.parametrize("mode", ["superstep", "async"])

GATE: list[asyncio.Event] = []


class Counted(Event):
    n: int


class Holding(Event):
    where: str


class Adding(Workflow):
    """``start`` writes a key; ``ask`` is held, then asks how much to add to it."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Counted:
        await ctx.store.set("base", 41)
        return Counted(n=1)

    @step
    async def ask(self, ctx: Context, ev: Counted) -> StopEvent:
        ctx.write_event_to_stream(Holding(where="ask"))
        await GATE[0].wait()
        ctx.write_event_to_stream(InputRequiredEvent(prefix="how much?", request_id="more"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=await ctx.store.get("base") + int(answer.response))


async def _until(handler: Any, kind: type, where: str | None = None) -> None:
    async for event in handler.stream_events():
        if isinstance(event, kind) and (where is None or event.where == where):
            return


async def test_a_key_written_before_a_crash_is_in_the_checkpoint_of_the_resumed_run(
    stores: StoreFactory, mode: str
) -> None:
    GATE[:] = [asyncio.Event()]
    first = Adding(store=stores(), mode=mode).run()  # type: ignore[arg-type]
    await _until(first, Holding, "ask")
    await crash(first)
    GATE[0].set()
    second = Adding(store=stores(), mode=mode).resume(first.run_id)  # type: ignore[arg-type]
    await _until(second, InputRequiredEvent)  # paused: a checkpoint
    await crash(second)
    third = Adding(store=stores(), mode=mode).resume(first.run_id)  # type: ignore[arg-type]
    third.send_event(HumanResponseEvent(response="1", request_id="more"))
    assert await third == 42


class Yielding(Executor):
    """Yields an output, then hands on to ``asking``."""

    @handler
    async def start(self, text: str, ctx: WorkflowContext[str]) -> None:
        await ctx.yield_output(f"got {text}")
        await ctx.send_message(text)


class Asking(Executor):
    """Held, then asks the caller for a number and yields it."""

    @handler
    async def on_text(self, text: str, ctx: WorkflowContext[str]) -> None:
        ctx.write_event_to_stream(Holding(where="asking"))  # type: ignore[attr-defined]
        await GATE[0].wait()
        await ctx.request_info(text, int)

    @response_handler
    async def on_answer(self, text: str, answer: int, ctx: WorkflowContext[str]) -> None:
        await ctx.yield_output(f"{text}={answer}")


def _graph(**options: Any) -> Any:
    start, asking = Yielding(id="start"), Asking(id="asking")
    return WorkflowBuilder(start=start, name="yielding").add_edge(start, asking).build(**options)


async def test_an_output_yielded_before_a_crash_is_in_the_checkpoint_of_the_resumed_run(
    stores: StoreFactory, mode: str
) -> None:
    GATE[:] = [asyncio.Event()]
    first = _graph(store=stores(), mode=mode).run("x")
    await _until(first, Holding, "asking")
    await crash(first)
    GATE[0].set()
    second = _graph(store=stores(), mode=mode).resume(first.run_id)
    await _until(second, RequestInfoEvent)  # paused: a checkpoint
    await crash(second)
    third = _graph(store=stores(), mode=mode).resume(first.run_id)
    async for event in third.stream_events():  # the open request, announced again
        if isinstance(event, RequestInfoEvent):
            await third.send_response(event.request_id, 1)
    assert (await third).outputs == ["got x", "x=1"]
