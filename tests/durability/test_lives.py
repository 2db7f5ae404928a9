"""What a run keeps across its lives (each resume starts one): an answer to a question
asked between two barriers, what a life after a cancel did, a completion in async mode
that fed nothing, its status while it runs again; and what the caller may send it.

Every test runs on MemoryStore, SqliteStore and PostgresStore (``conftest.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from stepgraph import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StopEvent,
    Workflow,
    step,
)
from stepgraph.errors import SerializationError, WorkflowCancelled
from stepgraph.testing import crash, settled

from .conftest import StoreFactory
from .flows import CALLS, GATES, Chain, Go, Hop, Reached, gate

modes = pytest.mark.parametrize("mode", ["superstep", "async"])


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


class AskIt(Event):
    tag: str


class Slow(Event):
    tag: str


class AskWhileBusy(Workflow):
    """``ask`` asks the caller and waits while ``slow``, of the same superstep, is held."""

    @step
    async def start(self, ctx: Context, ev: Go) -> None:
        ctx.send_event(AskIt(tag=ev.tag))
        ctx.send_event(Slow(tag=ev.tag))

    @step
    async def ask(self, ctx: Context, ev: AskIt) -> StopEvent:
        CALLS[f"{ev.tag}:ask"] += 1
        ctx.write_event_to_stream(InputRequiredEvent(prefix="name?"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=answer.response)

    @step
    async def slow(self, ctx: Context, ev: Slow) -> None:
        await GATES[ev.tag].wait()


class Sink(Event):
    tag: str


class SinkWhileBusy(Workflow):
    """``sink`` ends feeding nothing while ``slow`` is held; the result is what it wrote."""

    @step
    async def start(self, ctx: Context, ev: Go) -> None:
        ctx.send_event(Sink(tag=ev.tag))
        ctx.send_event(Slow(tag=ev.tag))

    @step
    async def sink(self, ctx: Context, ev: Sink) -> None:
        CALLS[f"{ev.tag}:sink"] += 1
        await ctx.store.set("sunk", True)

    @step
    async def slow(self, ctx: Context, ev: Slow) -> StopEvent:
        ctx.write_event_to_stream(Reached(n=0))
        await GATES[ev.tag].wait()
        return StopEvent(result=await ctx.store.get("sunk", False))


class Poke(Event):
    payload: object = None


class WaitsForPoke(Workflow):
    @step
    async def start(self, ctx: Context, ev: Go) -> StopEvent:
        ctx.write_event_to_stream(Reached(n=0))
        poke = await ctx.wait_for_event(Poke)
        return StopEvent(result=poke.payload)


class GatedHops(Workflow):
    """Hops 0..5, one a superstep; hop n waits on the gate ``"<tag>:<n>"`` if there is one;
    the result is the sum of the hop numbers."""

    @step
    async def start(self, ctx: Context, ev: Go) -> Hop:
        await ctx.store.set("tag", ev.tag)
        return Hop(n=0)

    @step
    async def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:
        tag = await ctx.store.get("tag")
        CALLS[f"{tag}:hop:{ev.n}"] += 1
        ctx.write_event_to_stream(Reached(n=ev.n))
        held = GATES.get(f"{tag}:{ev.n}")
        if held is not None:
            await held.wait()
        total = await ctx.store.update("total", lambda t: (t or 0) + ev.n)
        return StopEvent(result=total) if ev.n == 5 else Hop(n=ev.n + 1)


async def _reaching(handler: Any, n: int) -> None:
    async for event in handler.stream_events():
        if isinstance(event, Reached) and event.n == n:
            return


@modes
async def test_an_answer_to_a_question_asked_between_barriers_is_not_asked_again(
    stores: StoreFactory, mode: str
) -> None:
    tag = new_tag()
    gate(tag)
    store = stores()
    handler = AskWhileBusy(store=store, mode=mode).run(tag=tag)
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            asked = event
            break
    assert (await store.get_run(handler.run_id)).status == "paused"  # type: ignore[union-attr]
    handler.send_event(HumanResponseEvent(response="Ed", request_id=asked.request_id))
    await settled(handler)  # the answer is stored; its step has not ended (slow is held)
    await crash(handler)
    resumed = AskWhileBusy(store=stores(), mode=mode).resume(handler.run_id)
    GATES[tag].set()
    seen = [type(event).__name__ async for event in resumed.stream_events()]
    assert await resumed == "Ed"
    assert "InputRequiredEvent" not in seen  # the stored answer, not a new question
    assert CALLS[f"{tag}:ask"] <= 2  # run again if it was in flight at the crash


@modes
async def test_a_run_resumed_after_a_cancel_then_crashed_goes_on_from_its_second_life(
    stores: StoreFactory, mode: str
) -> None:
    tag = new_tag()
    gate(f"{tag}:1")
    handler = GatedHops(store=stores(), mode=mode).run(tag=tag)
    await _reaching(handler, 1)
    await handler.cancel()  # its first life ends at hop 1
    with pytest.raises(WorkflowCancelled):
        await handler
    GATES[f"{tag}:1"].set()
    gate(f"{tag}:4")
    second = GatedHops(store=stores(), mode=mode).resume(handler.run_id)
    await _reaching(second, 4)  # its second life does hops 1 to 3, and dies at hop 4
    await settled(second)
    await crash(second)
    with pytest.raises(WorkflowCancelled):
        await second
    GATES[f"{tag}:4"].set()
    third = GatedHops(store=stores(), mode=mode).resume(handler.run_id)
    assert await third == 15
    assert [CALLS[f"{tag}:hop:{n}"] for n in range(6)] == [1, 2, 1, 1, 2, 1]  # the ones in
    # flight (at the cancel, at the crash) ran again, and only those


@modes
async def test_a_cancelled_run_resumed_is_stored_as_running_while_it_runs(
    stores: StoreFactory, mode: str
) -> None:
    tag = new_tag()
    gate(tag)
    store = stores()
    handler = Chain(store=store, mode=mode).run(tag=tag, hops=3, stop_at=1)
    async for event in handler.stream_events():
        if isinstance(event, Reached) and event.n == 1:
            break
    await handler.cancel()
    with pytest.raises(WorkflowCancelled):
        await handler
    gate(tag)  # held at hop 1 again
    resumed = Chain(store=stores(), mode=mode).resume(handler.run_id)
    async for event in resumed.stream_events():
        if isinstance(event, Reached) and event.n == 1:
            break
    await settled(resumed)
    record = await store.get_run(handler.run_id)
    assert record is not None and record.status == "running"  # not its old "cancelled"
    assert handler.run_id in [r.run_id for r in await store.list_runs(status="running")]
    GATES[tag].set()
    assert await resumed == 6


async def test_in_async_mode_a_step_that_ended_feeding_nothing_does_not_run_again(
    stores: StoreFactory,
) -> None:
    tag = new_tag()
    gate(tag)
    handler = SinkWhileBusy(store=stores(), mode="async").run(tag=tag)
    async for event in handler.stream_events():
        if isinstance(event, Reached):
            break
    run = handler._run
    for _ in range(100_000):  # a few turns of the loop: sink ends, slow runs on
        if CALLS[f"{tag}:sink"] == 1 and run.state.running == 1:
            break
        await asyncio.sleep(0)
    else:
        raise AssertionError("sink did not end")
    await settled(handler)
    await crash(handler)
    GATES[tag].set()
    assert await SinkWhileBusy(store=stores(), mode="async").resume(handler.run_id) is True
    assert CALLS[f"{tag}:sink"] == 1  # its completion was stored: it is not in flight


@modes
async def test_an_event_the_store_cannot_hold_is_refused_to_the_caller_and_the_run_waits_on(
    stores: StoreFactory, mode: str
) -> None:
    store = stores()
    handler = WaitsForPoke(store=store, mode=mode).run(tag=new_tag())
    async for event in handler.stream_events():
        if isinstance(event, Reached):
            break
    await settled(handler)
    with pytest.raises(SerializationError, match=rf"Poke sent to run '{handler.run_id}'"):
        handler.send_event(Poke(payload=object()))
    await settled(handler)
    assert (await store.get_run(handler.run_id)).status == "paused"  # type: ignore[union-attr]
    handler.send_event(Poke(payload="fine"))
    assert await handler == "fine"


class Bump(Event):
    n: int


class Bumped(Event):
    n: int


SENT: set[str] = set()
"""Tags whose side effect was done (what a step checks to be idempotent across lives)."""


class WritesOnceThenWaits(Workflow):
    """``start`` sets ``k`` to 1; ``waiter`` sets it to 2 once per tag (its side effect
    is idempotent), then waits for a Poke; ``bump`` makes a barrier while it waits."""

    @step
    async def start(self, ctx: Context, ev: Go) -> Slow:
        await ctx.store.set("k", 1)
        return Slow(tag=ev.tag)

    @step
    async def waiter(self, ctx: Context, ev: Slow) -> StopEvent:
        if ev.tag not in SENT:
            SENT.add(ev.tag)
            await ctx.store.set("k", 2)
        ctx.write_event_to_stream(Reached(n=0))
        await ctx.wait_for_event(Poke)
        return StopEvent(result=await ctx.store.get("k"))

    @step
    async def bump(self, ctx: Context, ev: Bump) -> None:
        ctx.write_event_to_stream(Bumped(n=ev.n))


async def _bumped(handler: Any) -> None:
    """Once the waiter waits, make a barrier; crash the run once it is stored."""
    async for event in handler.stream_events():
        if isinstance(event, Reached):
            handler.send_event(Bump(n=0))
        elif isinstance(event, Bumped):
            break
    await settled(handler)
    await crash(handler)


@modes
async def test_a_value_restored_by_undoing_an_interrupted_step_is_stored_at_the_next_checkpoint(
    stores: StoreFactory, mode: str
) -> None:
    tag = new_tag()
    handler = WritesOnceThenWaits(store=stores(), mode=mode).run(tag=tag)
    await _bumped(handler)  # k is 2, written by the waiter's attempt, and stored
    await crash(handler)
    # life 2: the waiter runs again from its start, its write undone (k is 1 again); it
    # does not write k this time (its side effect is done)
    second = WritesOnceThenWaits(store=stores(), mode=mode).resume(handler.run_id)
    await _bumped(second)  # a checkpoint (or journal entry) after the undo
    third = WritesOnceThenWaits(store=stores(), mode=mode).resume(handler.run_id)
    await _reaching(third, 0)
    third.send_event(Poke())
    assert await third == 1  # what the second life had, not the undone write
