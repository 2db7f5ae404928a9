"""What a resume gives back of an interrupted attempt, and what it starts.

A step in flight at a crash runs again from its start; what its interrupted attempt did
is undone first: the events it collected go back to their collector (a batch released to
it too), its shared-state writes are undone, its failed attempts still count against
its retry policy, and a slot it held under ``max_concurrency`` goes to a step held back.
Every test runs on MemoryStore, SqliteStore and PostgresStore (``conftest.py``).
"""

from __future__ import annotations

import asyncio
import uuid
import warnings

import pytest

from stepgraph import HumanResponseEvent, InputRequiredEvent, WorkflowHandler

from .conftest import StoreFactory
from .flows import (
    ACTIVE,
    CALLS,
    GATES,
    STARTS,
    AddThenAsk,
    ApproveBatch,
    AskFirst,
    Counter,
    CounterWide,
    Fan,
    Flaky,
    Joined,
    Limited,
    Mixed,
    Reached,
    WithoutSlow,
    WithSlow,
    crashed_once,
    gate,
)

modes = pytest.mark.parametrize("mode", ["superstep", "async"])


@modes
@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        (AskFirst, [0, 1, 2, 3]),  # it had collected Done(0): collected once, not twice
        (ApproveBatch, [[0, 1, 2, 3], "yes"]),  # it had the whole batch: given back whole
    ],
)
async def test_what_an_interrupted_step_collected_goes_back_to_its_collector(
    stores: StoreFactory, mode: str, flow: type[Fan], expected: object
) -> None:
    first = flow(store=stores(), mode=mode).run()
    asked = await crashed_once(first, InputRequiredEvent)
    assert isinstance(asked, InputRequiredEvent)
    resumed = flow(store=stores(), mode=mode).resume(first.run_id)
    resumed.send_event(HumanResponseEvent(response="yes", request_id=asked.request_id))
    assert await resumed == expected


async def test_a_write_is_undone_after_a_resume_by_a_workflow_whose_steps_changed(
    stores: StoreFactory,
) -> None:
    """The second life runs under another ``num_workers`` (its state moved to the new
    steps); the write its interrupted hop made is still undone on the third."""
    tag = uuid.uuid4().hex[:12]
    gate(f"{tag}:2"), gate(f"{tag}:4")
    first = Counter(store=stores(), mode="async").run(tag=tag, hops=6)
    await crashed_once(first, Reached, 2)
    gate(f"{tag}:2").set()
    second = CounterWide(store=stores(), mode="async", name="Counter").resume(first.run_id)
    await crashed_once(second, Reached, 4)  # hop 4 added its 4 and holds: crashed there
    gate(f"{tag}:4").set()
    resumed = Counter(store=stores(), mode="async").resume(first.run_id)
    assert await resumed == sum(range(7))  # each hop's number once


@modes
async def test_a_lenient_resume_that_drops_the_step_holding_the_slot_starts_one_held_back(
    stores: StoreFactory, mode: str
) -> None:
    tag = uuid.uuid4().hex[:12]
    gate(tag)
    first = WithSlow(store=stores(), mode=mode, max_concurrency=1).run(tag=tag)
    await crashed_once(first, Reached)
    lenient = WithoutSlow(store=stores(), mode=mode, max_concurrency=1, name="WithSlow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the warning names the step removed)
        resumed = lenient.resume(first.run_id, strict=False)
        # (a guard: the bug this catches is a run that waits for ever)
        assert await asyncio.wait_for(resumed, 30) == "filled"


async def test_failed_attempts_still_count_against_the_retry_policy_after_a_crash(
    stores: StoreFactory,
) -> None:
    """Async mode: the crash lands while the step backs off after its first attempt."""
    tag = uuid.uuid4().hex[:12]
    first = Flaky(store=stores(), mode="async").run(tag=tag, stop_at=3)
    await crashed_once(first, Reached, 1)  # (the attempt raises as it streams this)
    with pytest.raises(ConnectionError, match="attempt 3 fails"):
        await Flaky(store=stores(), mode="async").resume(first.run_id)
    assert CALLS[f"{tag}:flaky"] == 3  # the policy's three, not a fourth that succeeds


@modes
async def test_a_write_a_fork_undid_is_stored_by_the_forks_next_checkpoint(
    stores: StoreFactory, mode: str
) -> None:
    """A fork of a paused run whose step had written: its first checkpoint keeps the
    write (with the step that made it, to undo); the undo comes after it, and the fork's
    next checkpoint (its own pause) stores what the undo left."""
    first = AddThenAsk(store=stores(), mode=mode).run()
    await crashed_once(first, InputRequiredEvent)
    latest = (await stores().list_checkpoints(first.run_id))[-1]
    fork = AddThenAsk(store=stores(), mode=mode).resume(first.run_id, checkpoint_id=latest.id)
    await crashed_once(fork, InputRequiredEvent)
    resumed = AddThenAsk(store=stores(), mode=mode).resume(fork.run_id)
    resumed.send_event(HumanResponseEvent(response="yes"))
    assert await resumed == 10  # added once, not once per life


async def four_in_flight(stores: StoreFactory, mode: str) -> tuple[str, str]:
    """A ``Limited`` run under no bound, crashed with its four workers held at their
    gates; its tag and run id."""
    tag = uuid.uuid4().hex[:12]
    for i in range(4):
        gate(f"{tag}:{i}")
    first = Limited(store=stores(), mode=mode).run(tag=tag)
    await crashed_once(first, Reached, 3)  # (all four started: no bound)
    return tag, first.run_id


async def released_one_by_one(handler: WorkflowHandler, tag: str) -> list[int]:
    """Open the gate of each ``Limited`` worker as it starts; how many ran at each start
    (the others, had they started, would be in); the run's result must be the four."""
    running: list[int] = []

    async def release() -> object:
        async for event in handler.stream_events():
            if isinstance(event, Reached):
                running.append(ACTIVE[tag])
                GATES[f"{tag}:{event.n}"].set()
        return await handler

    assert await asyncio.wait_for(release(), 30) == [0, 1, 2, 3]  # (a guard, not a wait)
    return running


@modes
async def test_steps_in_flight_start_again_within_the_resuming_workflows_max_concurrency(
    stores: StoreFactory, mode: str
) -> None:
    """Four workers in flight under no bound, crashed; resumed under ``max_concurrency=1``
    they start again one at a time (each holds until the test opens its gate)."""
    tag, run_id = await four_in_flight(stores, mode)
    resumed = Limited(store=stores(), mode=mode, max_concurrency=1).resume(run_id)
    assert await released_one_by_one(resumed, tag) == [1, 1, 1, 1]


@modes
async def test_steps_held_back_at_a_resume_are_kept_by_its_checkpoint(
    stores: StoreFactory, mode: str
) -> None:
    """The resume under a new bound writes a checkpoint while three of the four steps it
    starts again wait for the slot; crashed and resumed from it, they still do."""
    tag, run_id = await four_in_flight(stores, mode)
    again = Limited(store=stores(), mode=mode, max_concurrency=1).resume(run_id)
    await crashed_once(again, Reached)  # one started again; three held back
    resumed = Limited(store=stores(), mode=mode, max_concurrency=1).resume(run_id)
    assert await released_one_by_one(resumed, tag) == [1, 1, 1, 1]


@modes
async def test_steps_held_back_at_a_resume_start_before_steps_fed_after_it(
    stores: StoreFactory, mode: str
) -> None:
    """A chain that feeds itself does not take every slot the workers held back at the
    resume wait for (G5: first held back, first started)."""
    tag = uuid.uuid4().hex[:12]
    gate(tag)
    first = Mixed(store=stores(), mode=mode).run(tag=tag)
    await crashed_once(first, Joined, 4)  # h0 and the three workers in flight
    STARTS[tag].clear()
    gate(tag).set()  # (each step now runs through)
    resumed = Mixed(store=stores(), mode=mode, max_concurrency=1).resume(first.run_id)
    assert await asyncio.wait_for(resumed, 30) == [0, 1, 2]  # (a guard)
    assert STARTS[tag][:4] == ["h0", "w0", "w1", "w2"]
