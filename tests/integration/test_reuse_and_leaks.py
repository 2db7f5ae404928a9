"""One workflow object, many runs: results stay isolated and nothing of a run outlives it (G1).

Checks that a single workflow object runs 200 runs at once in one event loop, and
again under a second ``asyncio.run``, each run seeing only its own state; and that
after 10,000 sequential runs neither the workflow object nor any module holds an
object of a finished run: weak references to a run's objects die, a census of the
per-run types finds none alive, nothing reachable from the workflow's definition
is per-run, and memory traced from run 1,000 to run 10,000 stays bounded.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
import types
import weakref
from dataclasses import dataclass
from typing import Any

import pytest

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, WorkflowHandler, step
from stepgraph.core import RunState
from stepgraph.runtime.run import Run
from stepgraph.runtime.stream import EventStream
from stepgraph.state.store import StateStore

PER_RUN_TYPES: tuple[type, ...] = (
    Run,
    Context,
    WorkflowHandler,
    RunState,
    StateStore,
    EventStream,
)

SEQUENTIAL_RUNS = 10_000
TRACE_FROM_RUN = 1_000
GROWTH_LIMIT_BYTES = 256 * 1024


class Ping(Event):
    n: int


class Numbered(StartEvent):
    n: int


class Rendezvous:
    """Holds runs inside a step until the test lets them go (created inside the run's loop)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived == self.expected:
            self.all_arrived.set()
        await self.release.wait()


class Held(StartEvent):
    n: int
    rendezvous: Rendezvous


class HeldEcho(Workflow):
    """Remembers its input in the run's store, waits at the rendezvous, then reads it back."""

    @step
    async def remember(self, ctx: Context, ev: Held) -> Ping:
        await ctx.store.set("n", ev.n)
        await ev.rendezvous.arrive()
        return Ping(n=ev.n)

    @step
    async def answer(self, ctx: Context, ev: Ping) -> StopEvent:
        return StopEvent(result=(ev.n, await ctx.store.get("n"), ctx.run_id))


class Echo(Workflow):
    """Two steps, using the store and the stream: the unit of the 10,000-run loop."""

    @step
    async def start(self, ctx: Context, ev: Numbered) -> Ping:
        await ctx.store.set("n", ev.n)
        return Ping(n=ev.n)

    @step
    async def finish(self, ctx: Context, ev: Ping) -> StopEvent:
        ctx.write_event_to_stream(ev)
        return StopEvent(result=[ev.n, await ctx.store.get("n")])


def live_per_run_objects() -> dict[str, int]:
    """How many objects of each per-run type are alive (after a full collection)."""
    gc.collect()
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, PER_RUN_TYPES):
            name = type(obj).__name__
            counts[name] = counts.get(name, 0) + 1
    return counts


def reachable_from(root: object) -> list[object]:
    """Everything ``root`` keeps alive, not following functions, classes or modules.

    Functions lead to their module's globals and classes to everything defined in
    them; per-run objects found through those would be module globals, which the
    census in ``live_per_run_objects`` covers.
    """
    stop = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen = {id(root)}
    found: list[object] = []
    stack = [root]
    while stack:
        for ref in gc.get_referents(stack.pop()):
            if isinstance(ref, stop) or id(ref) in seen:
                continue
            seen.add(id(ref))
            found.append(ref)
            stack.append(ref)
    return found


# -- reuse: one object, many concurrent runs, two event loops -----------------------------------


async def run_concurrently(wf: HeldEcho, count: int) -> tuple[int, list[Any], list[str]]:
    """Start ``count`` runs; once all are inside a step at the same time, let them finish."""
    rendezvous = Rendezvous(count)
    handlers = [wf.run(start_event=Held(n=n, rendezvous=rendezvous)) for n in range(count)]
    await rendezvous.all_arrived.wait()
    in_flight_together = rendezvous.arrived
    rendezvous.release.set()
    results = list(await asyncio.gather(*handlers))
    return in_flight_together, results, [h.run_id for h in handlers]


def test_one_workflow_object_runs_200_isolated_runs_at_once_in_each_of_two_loops() -> None:
    wf = HeldEcho(timeout=30)
    for _ in range(2):  # each asyncio.run is a new event loop
        together, results, run_ids = asyncio.run(run_concurrently(wf, 200))
        assert together == 200
        assert [(n, stored) for n, stored, _ in results] == [(n, n) for n in range(200)]
        assert [run_id for _, _, run_id in results] == run_ids
        assert len(set(run_ids)) == 200


async def test_the_workflow_object_and_modules_do_not_reference_a_run_in_flight() -> None:
    wf = HeldEcho(timeout=30)
    rendezvous = Rendezvous(1)
    handler = wf.run(start_event=Held(n=7, rendezvous=rendezvous))
    await rendezvous.all_arrived.wait()
    run = handler._run
    per_run = (run, handler.ctx, run.state, run.store, run.stream)

    assert any(obj is run for obj in reachable_from(handler))  # the walk does find runs
    definition = (wf, type(wf)._compiled())
    for root in definition:
        assert [o for o in reachable_from(root) if isinstance(o, PER_RUN_TYPES)] == []
    module_dicts = [vars(m) for m in list(sys.modules.values()) if m is not None]
    holders = [vars(wf), *(vars(klass) for klass in type(wf).__mro__), *module_dicts]
    for obj in per_run:
        referrers = gc.get_referrers(obj)
        assert not any(r is h for r in referrers for h in holders), type(obj).__name__
    del referrers, per_run, run

    rendezvous.release.set()
    assert (await handler)[:2] == (7, 7)


# -- leaks: 10,000 sequential runs --------------------------------------------------------------


@dataclass
class SequentialRuns:
    """What the 10,000-run loop observed."""

    wrong_results: int
    first_run_alive: dict[str, bool]
    tasks_left: int
    growth_bytes: int
    census_after: dict[str, int]
    workflow_vars_before: dict[str, Any]
    workflow_vars_after: dict[str, Any]
    seconds: float


async def sequential_runs(wf: Echo) -> SequentialRuns:
    start = Numbered(n=0)
    handler = wf.run(start_event=start)
    assert await handler == [0, 0]
    streamed = [ev async for ev in handler.stream_events()]
    first: dict[str, weakref.ref[Any]] = {
        "Run": weakref.ref(handler._run),
        "result future": weakref.ref(handler._run.outcome),
        "start event": weakref.ref(start),
        "streamed Ping": weakref.ref(streamed[0]),
    }
    del start, handler, streamed

    vars_before = dict(vars(wf))
    started = time.perf_counter()
    wrong = 0
    for n in range(1, SEQUENTIAL_RUNS):
        if n == TRACE_FROM_RUN:
            gc.collect()
            tracemalloc.start()
            traced_before = tracemalloc.get_traced_memory()[0]
        if await wf.run(n=n) != [n, n]:
            wrong += 1
    gc.collect()
    growth = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    seconds = time.perf_counter() - started

    await asyncio.sleep(0)  # one turn of the loop: the last run's cancelled workers unwind
    tasks_left = len(asyncio.all_tasks() - {asyncio.current_task()})
    gc.collect()
    return SequentialRuns(
        wrong_results=wrong,
        first_run_alive={name: ref() is not None for name, ref in first.items()},
        tasks_left=tasks_left,
        growth_bytes=growth,
        census_after=live_per_run_objects(),
        workflow_vars_before=vars_before,
        workflow_vars_after=dict(vars(wf)),
        seconds=seconds,
    )


@pytest.fixture(scope="module")
def ten_thousand_runs() -> SequentialRuns:
    assert live_per_run_objects() == {}, "another test left runs alive"
    return asyncio.run(sequential_runs(Echo()))


def test_10000_sequential_runs_of_one_workflow_object_all_give_their_own_result(
    ten_thousand_runs: SequentialRuns,
) -> None:
    assert ten_thousand_runs.wrong_results == 0


def test_a_finished_runs_objects_are_freed_while_the_loop_still_runs(
    ten_thousand_runs: SequentialRuns,
) -> None:
    assert ten_thousand_runs.first_run_alive == {
        "Run": False,
        "result future": False,
        "start event": False,
        "streamed Ping": False,
    }


def test_no_handler_context_state_store_or_stream_of_a_finished_run_stays_alive(
    ten_thousand_runs: SequentialRuns,
) -> None:
    assert ten_thousand_runs.census_after == {}


def test_no_task_of_a_finished_run_is_left_in_the_loop(
    ten_thousand_runs: SequentialRuns,
) -> None:
    assert ten_thousand_runs.tasks_left == 0


def test_running_does_not_change_the_workflow_object(ten_thousand_runs: SequentialRuns) -> None:
    before, after = ten_thousand_runs.workflow_vars_before, ten_thousand_runs.workflow_vars_after
    assert after.keys() == before.keys()
    assert all(after[key] is before[key] for key in before)


def test_memory_traced_from_run_1000_to_run_10000_stays_bounded(
    ten_thousand_runs: SequentialRuns,
) -> None:
    assert ten_thousand_runs.growth_bytes < GROWTH_LIMIT_BYTES


# -- freed by reference counting: runs that waited, timed out, ended from inside a step ---------


class Patient(Workflow):
    """Waits for an answer that never comes, catches the timeout, and finishes."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        try:
            await ctx.wait_for_event(Ping, timeout=1)
        except TimeoutError:
            return StopEvent(result="gave up")
        return StopEvent(result="answered")


class Unwanted(Event):
    pass


class EndsThenWaits(Workflow):
    """In async mode its send ends the run (nobody takes it) just before it waits."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.send_event(Unwanted())
        await ctx.wait_for_event(Ping, timeout=None)
        return StopEvent(result="never")


def _freed_without_the_collector(make: Any) -> tuple[object, bool, int]:
    """Run once with the garbage collector off: (outcome, whether the run is gone, tasks left)."""

    async def main() -> tuple[object, bool, int]:
        handler = make().run()
        try:
            outcome: object = await handler
        except Exception as exc:
            outcome = type(exc).__name__
        run = weakref.ref(handler._run)
        del handler
        for _ in range(3):  # the run's cancelled tasks unwind
            await asyncio.sleep(0)
        return outcome, run() is None, len(asyncio.all_tasks() - {asyncio.current_task()})

    gc.collect()
    gc.disable()
    try:
        return asyncio.run(main())
    finally:
        gc.enable()


def test_a_run_whose_step_caught_a_wait_timeout_is_freed_by_reference_counting() -> None:
    from stepgraph.testing import FakeClock

    outcome, freed, _ = _freed_without_the_collector(lambda: Patient(clock=FakeClock()))
    assert outcome == "gave up"
    assert freed


def test_a_step_whose_send_ends_the_run_before_it_waits_leaves_no_task_behind() -> None:
    outcome, _, tasks_left = _freed_without_the_collector(lambda: EndsThenWaits(mode="async"))
    assert outcome == "UnroutableEventError"
    assert tasks_left == 0
