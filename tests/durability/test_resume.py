"""Resuming durable runs: from the latest checkpoint, from an earlier one (a fork), after a
crash, after a cancel; checkpoints at barriers, a journal in async mode; statuses.

Every test runs on MemoryStore, SqliteStore and PostgresStore (``conftest.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from stepgraph import Context, StartEvent, StopEvent, Workflow, WorkflowHandler, step
from stepgraph.durability.checkpoints import HeaderCodec, decode_entry
from stepgraph.errors import (
    CheckpointNotFoundError,
    RunNotFoundError,
    StepgraphError,
    SuperstepLimitExceeded,
    WorkflowCancelled,
)
from stepgraph.stores import MemoryStore, Store
from stepgraph.testing import crash

from .conftest import StoreFactory
from .flows import CALLS, Chain, Fan, Hop, Joined, Limited, Reached, gate

modes = pytest.mark.parametrize("mode", ["superstep", "async"])

PEEKS: dict[str, tuple[Store, list[tuple[int, int]]]] = {}


class Peek(Workflow):
    """Each hop notes the superstep of the latest checkpoint its store has as it starts."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Hop:
        return Hop(n=0)

    @step
    async def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:
        store, seen = PEEKS[ctx.run_id]
        checkpoints = await store.list_checkpoints(ctx.run_id)
        seen.append((ev.n, checkpoints[-1].superstep))
        return StopEvent(result=ev.n) if ev.n == 2 else Hop(n=ev.n + 1)


class Broken(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        raise ValueError("broken on purpose")


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


async def held_at(wf: Workflow, tag: str, stop_at: int, hops: int = 5) -> str:
    """Start a run (a Chain, say) held at hop ``stop_at``; crash it there; return its id."""
    gate(tag)
    return await crashed_at(wf.run(tag=tag, hops=hops, stop_at=stop_at), stop_at)


async def crashed_at(handler: WorkflowHandler, n: int) -> str:
    """Crash the run of ``handler`` once it has reached hop ``n``; return its id."""
    async for event in handler.stream_events():
        if isinstance(event, Reached) and event.n == n:
            break
    await crash(handler)
    with pytest.raises(WorkflowCancelled):
        await handler
    return handler.run_id


@modes
async def test_a_crashed_run_resumed_from_its_latest_checkpoint_goes_on_as_the_same_run(
    stores: StoreFactory, mode: str
) -> None:
    tag = new_tag()
    run_id = await held_at(Chain(store=stores(), mode=mode), tag, stop_at=3)
    store = stores()
    before = await store.list_checkpoints(run_id)
    assert (await store.get_run(run_id)).status == "running"  # type: ignore[union-attr]
    gate(tag).set()

    handler = Chain(store=stores(), mode=mode).resume(run_id)
    assert handler.run_id == run_id
    assert await handler == sum(range(6))
    after = await store.list_checkpoints(run_id)
    assert after[: len(before)] == before  # the history before the resume is unchanged
    assert [c.superstep for c in after] == list(range(len(after)))
    assert (await store.get_run(run_id)).status == "completed"  # type: ignore[union-attr]
    assert [r.run_id for r in await store.list_runs()] == [run_id]
    assert CALLS[f"{tag}:hop:2"] == 1  # what completed before the crash did not run again
    assert CALLS[f"{tag}:hop:3"] == 2  # the interrupted step ran again: at least once
    assert CALLS[f"{tag}:hop:4"] == 1


@modes
async def test_resuming_a_completed_run_gives_its_stored_result_and_runs_nothing(
    stores: StoreFactory, mode: str
) -> None:
    tag = new_tag()
    handler = Chain(store=stores(), mode=mode).run(tag=tag, hops=3)
    assert await handler == 6
    calls = dict(CALLS)
    checkpoints = await stores().list_checkpoints(handler.run_id)

    again = Chain(store=stores(), mode=mode).resume(handler.run_id)
    assert await again == 6
    assert again.run_id == handler.run_id
    assert dict(CALLS) == calls
    assert await stores().list_checkpoints(handler.run_id) == checkpoints


async def test_superstep_mode_writes_one_checkpoint_per_barrier_never_one_per_step(
    stores: StoreFactory,
) -> None:
    store = stores()
    handler = Fan(store=store).run()
    assert await handler == [0, 1, 2, 3]
    checkpoints = await store.list_checkpoints(handler.run_id)
    # before superstep 0, then the barriers after supersteps 0 (start) and 1 (four workers,
    # one checkpoint); the last superstep (join) ends the run with its final status
    assert [c.superstep for c in checkpoints] == [0, 1, 2]
    assert [c.seq for c in checkpoints] == [0, 1, 2]


async def test_a_checkpoint_is_committed_before_any_step_of_the_next_superstep_starts(
    stores: StoreFactory,
) -> None:
    store = stores()
    run_id = f"peek-{new_tag()}"
    PEEKS[run_id] = (store, [])
    await Peek(store=store).run(run_id=run_id)
    # hop n runs in superstep n + 1: the checkpoint that superstep starts from is stored
    assert PEEKS[run_id][1] == [(0, 1), (1, 2), (2, 3)]


async def test_in_async_mode_a_steps_completion_is_in_the_journal_before_what_it_feeds_starts(
    stores: StoreFactory,
) -> None:
    store = stores()
    kinds_when_reached: list[list[str]] = []
    handler = Chain(store=store, mode="async").run(tag=new_tag(), hops=2)
    async for event in handler.stream_events():
        if isinstance(event, Reached):
            stored = await store.load(handler.run_id)
            assert stored is not None
            ticks = [decode_entry(e, run_id="", checkpoint_id="") for e in stored.journal]
            kinds_when_reached.append([t.kind for t in ticks])  # type: ignore[union-attr]
    await handler
    # when hop n starts, the completion of the step that fed it is stored already
    for n, kinds in enumerate(kinds_when_reached):
        assert kinds.count("step_completed") >= n + 1, (n, kinds)


@modes
async def test_a_fork_from_an_earlier_checkpoint_is_a_new_run_with_its_lineage(
    stores: StoreFactory, mode: str
) -> None:
    if mode == "async":
        pytest.skip("async mode keeps a journal, not a checkpoint per superstep")
    store = stores()
    handler = Chain(store=store, mode=mode).run(tag=new_tag(), hops=4)
    assert await handler == 10
    checkpoints = await store.list_checkpoints(handler.run_id)
    fork_from = checkpoints[2]

    fork = Chain(store=stores(), mode=mode).resume(handler.run_id, checkpoint_id=fork_from.id)
    assert fork.run_id != handler.run_id
    assert await fork == 10
    record = await stores().get_run(fork.run_id)
    assert record is not None
    assert record.parent_run_id == handler.run_id
    assert record.parent_checkpoint_id == fork_from.id
    assert record.status == "completed"
    fork_checkpoints = await stores().list_checkpoints(fork.run_id)
    assert fork_checkpoints[0].superstep == fork_from.superstep
    assert all(c.parent_run_id == handler.run_id for c in fork_checkpoints)
    assert [c.superstep for c in fork_checkpoints] == list(
        range(fork_from.superstep, fork_from.superstep + len(fork_checkpoints))
    )
    # the parent is untouched, and both are listed
    assert await store.list_checkpoints(handler.run_id) == checkpoints
    assert {r.run_id for r in await store.list_runs()} == {handler.run_id, fork.run_id}
    # a fork is a run like any other: resumable (here: completed, its stored result)
    assert await Chain(store=stores(), mode=mode).resume(fork.run_id) == 10


async def test_a_fork_of_a_crashed_run_can_itself_be_crashed_and_resumed(
    stores: StoreFactory,
) -> None:
    tag = new_tag()
    run_id = await held_at(Chain(store=stores()), tag, stop_at=3)
    first = (await stores().list_checkpoints(run_id))[1]
    # the fork re-runs from hop 0 with the stored plan: it is held at hop 3 again
    fork = Chain(store=stores()).resume(run_id, checkpoint_id=first.id)
    async for event in fork.stream_events():
        if isinstance(event, Reached) and event.n == 3:
            break
    await crash(fork)
    gate(tag).set()
    assert await Chain(store=stores()).resume(fork.run_id) == 15
    assert await Chain(store=stores()).resume(run_id) == 15
    record = await stores().get_run(fork.run_id)
    assert record is not None and record.parent_run_id == run_id


async def test_an_unknown_run_id_is_an_error_naming_it_and_creates_no_run(
    stores: StoreFactory,
) -> None:
    store = stores()
    with pytest.raises(RunNotFoundError, match="no-such-run"):
        await Chain(store=store).resume("no-such-run")
    assert issubclass(RunNotFoundError, StepgraphError)
    assert await store.list_runs() == []


async def test_an_unknown_checkpoint_id_is_an_error_naming_it(stores: StoreFactory) -> None:
    store = stores()
    handler = Chain(store=store).run(tag=new_tag(), hops=1)
    await handler
    with pytest.raises(CheckpointNotFoundError, match="no-such-checkpoint"):
        await Chain(store=store).resume(handler.run_id, checkpoint_id="no-such-checkpoint")
    assert len(await store.list_runs()) == 1


async def held_at_hop_2(chain: Chain, tag: str) -> WorkflowHandler:
    """A run of ``chain`` (5 hops), held at hop 2 (its gate ``tag`` closed)."""
    handler = chain.run(tag=tag, hops=5, stop_at=2)
    async for event in handler.stream_events():
        if isinstance(event, Reached) and event.n == 2:
            break
    return handler


@modes
async def test_a_cancelled_run_keeps_its_last_checkpoint_resumable(
    stores: StoreFactory, mode: str
) -> None:
    tag = new_tag()
    gate(tag)
    store = stores()
    handler = await held_at_hop_2(Chain(store=store, mode=mode), tag)
    await handler.cancel()
    with pytest.raises(WorkflowCancelled):
        await handler
    assert (await store.get_run(handler.run_id)).status == "cancelled"  # type: ignore[union-attr]
    assert [r.run_id for r in await store.list_runs(status="cancelled")] == [handler.run_id]
    gate(tag).set()
    assert await Chain(store=stores(), mode=mode).resume(handler.run_id) == 15
    assert (await store.get_run(handler.run_id)).status == "completed"  # type: ignore[union-attr]


@modes
async def test_a_resume_made_as_soon_as_cancel_returns_goes_on_from_the_last_checkpoint(
    stores: StoreFactory, mode: str
) -> None:
    """``await handler.cancel()`` returns once the run's cancel is stored and its lease
    given up: a resume made next (no other await between) goes on; it does not follow the
    run still ending, and get its cancel (a store across a network did)."""
    tag = new_tag()
    gate(tag)
    handler = await held_at_hop_2(Chain(store=stores(), mode=mode), tag)
    await handler.cancel()
    assert handler.done()
    assert (await stores().get_run(handler.run_id)).status == "cancelled"  # type: ignore[union-attr]
    gate(tag).set()
    assert await Chain(store=stores(), mode=mode).resume(handler.run_id) == 15


@modes
async def test_a_cancel_after_an_await_of_the_run_timed_out_returns_once_the_run_ended(
    stores: StoreFactory, mode: str
) -> None:
    """An await of the handler that timed out (``asyncio.wait_for``) cancelled the future
    the run's end resolves: ``cancel()`` still returns only once the run has ended."""
    tag = new_tag()
    gate(tag)
    handler = await held_at_hop_2(Chain(store=stores(), mode=mode), tag)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handler, 0.01)
    await handler.cancel()
    assert handler.done()
    assert (await stores().get_run(handler.run_id)).status == "cancelled"  # type: ignore[union-attr]
    gate(tag).set()
    assert await Chain(store=stores(), mode=mode).resume(handler.run_id) == 15


@modes
async def test_an_await_after_one_that_timed_out_gets_the_runs_cancel(
    stores: StoreFactory, mode: str
) -> None:
    """An await of the run that timed out cancelled it: a later await gets its
    ``WorkflowCancelled`` (not a ``CancelledError`` while its cancel is on its way to a
    store across a network), and the run is done only once it has ended."""
    tag = new_tag()
    gate(tag)
    handler = await held_at_hop_2(Chain(store=stores(), mode=mode), tag)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handler, 0.01)
    with pytest.raises(WorkflowCancelled):
        await handler
    assert handler.done()
    assert (await stores().get_run(handler.run_id)).status == "cancelled"  # type: ignore[union-attr]
    gate(tag).set()


@modes
async def test_when_an_await_of_the_run_returns_or_raises_its_final_status_is_stored(
    stores: StoreFactory, mode: str
) -> None:
    store = stores()
    done = Chain(store=store, mode=mode).run(tag=new_tag(), hops=2)
    await done
    assert (await store.get_run(done.run_id)).status == "completed"  # type: ignore[union-attr]
    failing = Broken(store=store, mode=mode).run()
    with pytest.raises(ValueError, match="broken"):
        await failing
    assert (await store.get_run(failing.run_id)).status == "failed"  # type: ignore[union-attr]
    assert [r.run_id for r in await store.list_runs(status="failed")] == [failing.run_id]


async def test_when_an_await_of_the_run_returns_its_lease_is_given_up(
    stores: StoreFactory, store_kind: str
) -> None:
    if store_kind == "postgres":
        pytest.skip("a PostgreSQL lease is the session's: it goes with the session anyway")
    store = stores()
    done = Chain(store=store).run(tag=new_tag(), hops=2)
    await done
    # nothing left behind, even for a caller whose loop ends right here (asyncio.run)
    assert await store.acquire(done.run_id, "another coordinator")


async def test_one_memory_store_keeps_its_runs_across_event_loops() -> None:

    store = MemoryStore()

    async def first() -> str:
        handler = Chain(store=store).run(tag=new_tag(), hops=2)
        await handler
        return handler.run_id

    run_id = await first()

    def in_another_loop() -> object:
        async def again() -> object:
            return await Chain(store=store).resume(run_id)

        return asyncio.run(again())

    assert await asyncio.to_thread(in_another_loop) == 3
    assert [r.run_id for r in await store.list_runs()] == [run_id]


async def test_an_async_run_longer_than_the_default_bound_resumes_under_its_workflows_bound() -> (
    None
):
    """The journal replays under the workflow's ``max_supersteps``: a run past the
    default 10,000 generations (the bound raised) is not refused as a corrupt journal."""
    store, tag, hops = MemoryStore(), new_tag(), 10_005
    wf = Chain(store=store, mode="async", timeout=None, max_supersteps=20_000)
    run_id = await held_at(wf, tag, stop_at=hops - 2, hops=hops)
    gate(tag).set()
    resumed = Chain(store=store, mode="async", timeout=None, max_supersteps=20_000).resume(run_id)
    assert await resumed == sum(range(hops + 1))
    assert CALLS[f"{tag}:hop:{hops - 3}"] == 1


@modes
async def test_a_run_resumed_under_a_lowered_max_supersteps_fails_once_it_goes_past_it(
    stores: StoreFactory, mode: str
) -> None:
    """The journal replays as it was written (a completion it holds is not run again);
    the run then goes on under the lowered bound, and fails at its next step."""
    tag = new_tag()
    run_id = await held_at(Chain(store=stores(), mode=mode, max_supersteps=100), tag, 8, 12)
    gate(tag).set()
    with pytest.raises(SuperstepLimitExceeded) as caught:
        await Chain(store=stores(), mode=mode, max_supersteps=5).resume(run_id)
    assert [CALLS[f"{tag}:hop:{n}"] for n in (7, 8, 9)] == [1, 2, 0]
    assert "last steps: )" not in str(caught.value)  # (none to name since the resume)


async def test_an_async_run_under_max_concurrency_resumes_as_it_ran(stores: StoreFactory) -> None:
    """The journal replays under the workflow's ``max_concurrency``: the steps it held
    back are not taken for started, nor a completion for another step's."""
    tag = new_tag()
    gate(f"{tag}:2")
    run_id = await crashed_at(
        Limited(store=stores(), mode="async", max_concurrency=1).run(tag=tag), 2
    )
    gate(f"{tag}:2").set()
    resumed = Limited(store=stores(), mode="async", max_concurrency=1).resume(run_id)
    assert await resumed == [0, 1, 2, 3]
    assert [CALLS[f"{tag}:work:{i}"] for i in range(4)] == [1, 1, 2, 1]


async def test_a_run_resumed_under_another_max_concurrency_replays_under_its_own(
    stores: StoreFactory,
) -> None:
    """Its journal replays under the bound it was written under; the run goes on under
    the new one, and what it journals then replays under that one."""
    tag = new_tag()
    gate(f"{tag}:0")
    first = Limited(store=stores(), mode="async", max_concurrency=1).run(tag=tag)
    run_id = await crashed_at(first, 0)  # items 1 to 3 held back by the bound
    written = len(await stores().list_checkpoints(run_id))
    gate(f"{tag}:0").set()
    gate(f"{tag}:2")
    again = Limited(store=stores(), mode="async").resume(run_id)  # no bound: 1 to 3 at once
    seen: set[object] = set()
    async for event in again.stream_events():
        seen.add((type(event), getattr(event, "n", None)))
        if {(Joined, 1), (Joined, 3), (Reached, 2)} <= seen:
            break  # items 1 and 3 done under the new bound, 2 held: crash there
    await crash(again)
    with pytest.raises(WorkflowCancelled):
        await again
    # the resume wrote a checkpoint first, under the new bound: the journal after it
    # replays under that one
    assert len(await stores().list_checkpoints(run_id)) == written + 1
    gate(f"{tag}:2").set()
    resumed = Limited(store=stores(), mode="async", max_concurrency=2).resume(run_id)
    assert await resumed == [0, 1, 2, 3]
    assert [CALLS[f"{tag}:work:{i}"] for i in range(4)] == [2, 1, 2, 1]


async def test_a_checkpoint_without_bounds_replays_under_the_resuming_workflows(
    stores: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint written before checkpoints kept their run's bounds: the journal
    replays under the resuming workflow's, the likeliest, and no checkpoint is added."""
    from stepgraph.durability import run as durable

    def without_bounds(plan: Any, serializer: Any, source: str, options: Any) -> HeaderCodec:
        return HeaderCodec(plan.name, plan.graph, plan.programs, serializer, source)

    with monkeypatch.context() as patched:
        patched.setattr(durable, "_headers", without_bounds)
        tag = new_tag()
        gate(f"{tag}:2")
        old = Limited(store=stores(), mode="async", max_concurrency=1).run(tag=tag)
        run_id = await crashed_at(old, 2)
    written = len(await stores().list_checkpoints(run_id))
    gate(f"{tag}:2").set()
    resumed = Limited(store=stores(), mode="async", max_concurrency=1).resume(run_id)
    assert await resumed == [0, 1, 2, 3]
    assert [CALLS[f"{tag}:work:{i}"] for i in range(4)] == [1, 1, 2, 1]
    assert len(await stores().list_checkpoints(run_id)) == written


async def test_a_long_async_run_writes_a_checkpoint_every_journal_span_entries(
    stores: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a resume replays is bounded: the journal after the latest checkpoint never
    holds much more than ``journal_span`` entries; a crash and a resume change nothing."""
    from stepgraph.durability.run import DurableRun

    monkeypatch.setattr(DurableRun, "journal_span", 8)
    tag, store = new_tag(), stores()
    run_id = await held_at(Chain(store=stores(), mode="async"), tag, stop_at=20, hops=24)
    stored = await store.load(run_id)
    assert stored is not None
    assert 0 < len(stored.journal) <= 8 + 2  # (a commit may hold a tick or two more)
    # the first checkpoint, then one each 8 entries (a hop journals two: 20 hops, 40)
    assert len(await store.list_checkpoints(run_id)) >= 4
    gate(tag).set()
    assert await Chain(store=stores(), mode="async").resume(run_id) == sum(range(25))
    assert [CALLS[f"{tag}:hop:{n}"] for n in (19, 20, 21)] == [1, 2, 1]


async def test_a_run_that_reached_its_bound_twice_goes_on_once_it_is_raised(
    stores: StoreFactory,
) -> None:
    """Async mode: it fails at the bound, is resumed under the same bound (and fails
    again), then under a higher one: each life's journal replays as it was written."""
    tag = new_tag()
    gate(tag).set()
    first = Chain(store=stores(), mode="async", max_supersteps=4).run(tag=tag, hops=8)
    with pytest.raises(SuperstepLimitExceeded):
        await first
    with pytest.raises(SuperstepLimitExceeded):
        await Chain(store=stores(), mode="async", max_supersteps=4).resume(first.run_id)
    raised = Chain(store=stores(), mode="async", max_supersteps=100).resume(first.run_id)
    assert await raised == sum(range(9))
