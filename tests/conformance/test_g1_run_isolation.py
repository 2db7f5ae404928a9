"""G1 run isolation: a workflow object holds its definition only; each run owns its state.

Checks that one workflow object runs many times concurrently in one event loop with
results that depend only on each run's input and its own ``ctx.store``; that the
same object runs again in a second event loop (``asyncio.run`` twice), which fails
if any asyncio object were created outside the loop using it; that the object's
``__dict__`` gains nothing from its runs and keeps no finished run alive; and that
``run()`` outside an event loop is a clear error.
"""

import asyncio
import gc
import weakref

import pytest
from _helpers_a import MODES, both_modes, finish

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step
from stepgraph.errors import StepgraphError


class Job(StartEvent):
    n: int


class Half(Event):
    n: int


class Checked(Event):
    n: int


class Isolated(Workflow):
    """Keeps its input in the run's store, yields, then reads it back in later steps."""

    @step
    async def start(self, ctx: Context, ev: Job) -> Half:
        await ctx.store.set("n", ev.n)
        await ctx.store.set("seen", [ev.n])
        await asyncio.sleep(0)  # let the other runs interleave with this one
        return Half(n=ev.n)

    @step
    async def middle(self, ctx: Context, ev: Half) -> Checked:
        await ctx.store.update("seen", lambda seen: [*seen, ev.n])
        await asyncio.sleep(0)
        return Checked(n=ev.n)

    @step
    async def finish(self, ctx: Context, ev: Checked) -> StopEvent:
        stored = await ctx.store.get("n")
        seen = await ctx.store.get("seen")
        return StopEvent(result=(ev.n, stored, seen, ctx.run_id))


class Contended(Workflow):
    """Two steps hold the run's store lock at overlapping times (``edit()`` blocks)."""

    @step
    async def start(self, ctx: Context, ev: Job) -> Half:
        ctx.send_event(Checked(n=ev.n))
        return Half(n=ev.n)

    @step
    async def left(self, ctx: Context, ev: Half) -> StopEvent | None:
        async with ctx.store.edit() as state:
            await asyncio.sleep(0)  # hold the lock across a suspension: the other step waits
            state["left"] = ev.n
        return await self._done(ctx)

    @step
    async def right(self, ctx: Context, ev: Checked) -> StopEvent | None:
        async with ctx.store.edit() as state:
            await asyncio.sleep(0)
            state["right"] = ev.n * 10
        return await self._done(ctx)

    async def _done(self, ctx: Context) -> StopEvent | None:
        async with ctx.store.edit() as state:
            state["done"] = state.get("done", 0) + 1
            if state["done"] < 2:
                return None
            return StopEvent(result=(state["left"], state["right"]))


@both_modes
async def test_one_workflow_object_runs_200_concurrent_runs_with_isolated_results(
    mode: str,
) -> None:
    wf = Isolated(mode=mode, timeout=30)
    handlers = [wf.run(n=i) for i in range(200)]
    results = await asyncio.gather(*(finish(h) for h in handlers))

    for i, (n, stored, seen, run_id) in enumerate(results):
        assert (n, stored, seen) == (i, i, [i, i])
        assert run_id == handlers[i].run_id
    assert len({h.run_id for h in handlers}) == 200
    assert [h.ctx.store.to_dict() for h in handlers] == [
        {"n": i, "seen": [i, i]} for i in range(200)
    ]


def test_one_workflow_object_runs_in_two_event_loops_one_after_the_other() -> None:
    wf = Contended(timeout=30)  # created before any event loop exists
    wf.validate()

    async def many(offset: int) -> list[object]:
        return list(await asyncio.gather(*(wf.run(n=offset + i) for i in range(20))))

    first = asyncio.run(many(0))
    second = asyncio.run(many(100))

    assert first == [(i, i * 10) for i in range(20)]
    assert second == [(100 + i, (100 + i) * 10) for i in range(20)]
    assert wf.run_sync(n=7) == (7, 70)  # run_sync makes a third loop


@pytest.mark.parametrize("mode", MODES)
def test_run_sync_twice_on_one_object_works_in_either_mode(
    mode: str,
) -> None:
    wf = Isolated(mode=mode)
    assert wf.run_sync(start_event=Job(n=1))[:3] == (1, 1, [1, 1])
    assert wf.run_sync(start_event=Job(n=2))[:3] == (2, 2, [2, 2])


@both_modes
async def test_runs_leave_nothing_in_the_workflow_objects_dict(mode: str) -> None:
    wf = Contended(mode=mode, timeout=30)
    before = dict(vars(wf))

    await asyncio.gather(*(finish(wf.run(n=i)) for i in range(10)))

    assert vars(wf) == before
    assert all(not isinstance(value, asyncio.AbstractEventLoop) for value in vars(wf).values())


@both_modes
async def test_a_finished_run_is_not_kept_alive_by_the_workflow_object(mode: str) -> None:
    wf = Isolated(mode=mode)
    handler = wf.run(n=3)
    assert (await finish(handler))[:3] == (3, 3, [3, 3])
    run = weakref.ref(handler._run)

    del handler
    gc.collect()

    assert run() is None


def test_run_outside_an_event_loop_is_a_clear_error_naming_run_sync() -> None:
    with pytest.raises(StepgraphError, match=r"needs a running event loop.*run_sync"):
        Isolated().run(n=1)
