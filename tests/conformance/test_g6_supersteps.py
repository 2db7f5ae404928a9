"""G6 supersteps (the default mode): delivery at the barrier, in a deterministic order.

Checks that superstep 0 processes the StartEvent; that a message sent during
superstep k is delivered in k + 1, never in k, even when its sender finished long
before a sibling of the same superstep; that a receiver fed by three senders gets
their messages in the senders' definition order whatever order they complete in
(the completion order is forced with ``asyncio.Event`` sequencing); that two runs
with the same input give the same trace although their steps complete in different
orders; that a StopEvent ends the run at the barrier, the earliest in delivery
order winning; that at each barrier (the checkpoint point) no step body is running
and the shared state holds every write of the superstep; and that the kernel state
captured at a barrier (what a checkpoint records) has nothing in flight and holds the
next superstep's messages.
"""

import asyncio
from collections.abc import Sequence
from typing import cast

import pytest
from _helpers_a import finish, reached, spin, superstep_of

from stepgraph import Context, Event, RunObserver, StartEvent, StopEvent, Workflow, step
from stepgraph.core import RunState, SuperstepEnded, apply
from stepgraph.journal import Journal
from stepgraph.runtime.observers import RunInfo


class Go(Event):
    pass


class Ping(Event):
    n: int


class Mark(Event):
    sender: str
    i: int


class Item(Event):
    n: int


class Part(Event):
    n: int


class Batch(StartEvent):
    items: int


async def test_superstep_0_processes_the_start_event_and_each_hop_is_one_superstep() -> None:
    seen: list[tuple[str, int]] = []

    class Chain(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> Ping:
            seen.append(("start", superstep_of(ctx)))
            return Ping(n=0)

        @step
        async def loop(self, ctx: Context, ev: Ping) -> StopEvent | None:
            seen.append((f"loop{ev.n}", superstep_of(ctx)))
            if ev.n == 3:
                return StopEvent(result="done")
            ctx.send_event(Ping(n=ev.n + 1))  # to itself: arrives in the next superstep
            return None

    assert await finish(Chain().run()) == "done"
    assert seen == [("start", 0), ("loop0", 1), ("loop1", 2), ("loop2", 3), ("loop3", 4)]


async def test_a_message_sent_in_superstep_k_is_not_delivered_until_k_has_ended() -> None:
    log: list[str] = []
    fast_done = asyncio.Event()
    gate = asyncio.Event()

    class Barrier(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Go(), step="fast")
            ctx.send_event(Go(), step="slow")

        @step
        async def fast(self, ctx: Context, ev: Go) -> Ping:
            ctx.send_event(Ping(n=1))  # sent early in superstep 1 ...
            log.append(f"fast done in {superstep_of(ctx)}")
            fast_done.set()
            return Ping(n=2)

        @step
        async def slow(self, ctx: Context, ev: Go) -> None:
            await gate.wait()  # superstep 1 lasts until the test opens the gate
            log.append(f"slow done in {superstep_of(ctx)}")

        @step
        async def sink(self, ctx: Context, ev: Ping) -> StopEvent | None:
            log.append(f"sink got {ev.n} in {superstep_of(ctx)}")  # ... delivered in 2
            return StopEvent(result=log) if ev.n == 2 else None

    handler = Barrier().run()
    await reached(fast_done, "the fast step finished")
    await spin()  # the sink would have run by now if delivery did not wait for the barrier
    assert log == ["fast done in 1"]

    gate.set()
    assert await finish(handler) == [
        "fast done in 1",
        "slow done in 1",
        "sink got 1 in 2",
        "sink got 2 in 2",
    ]


async def run_three_senders(release_order: Sequence[str]) -> tuple[list[str], list[str]]:
    """Run a workflow whose senders finish in ``release_order``; return (received, finished)."""
    entered = {name: asyncio.Event() for name in ("zulu", "alpha", "mike")}
    release = {name: asyncio.Event() for name in ("zulu", "alpha", "mike")}
    done = {name: asyncio.Event() for name in ("zulu", "alpha", "mike")}
    received: list[str] = []
    finished: list[str] = []

    class ThreeSenders(Workflow):
        # Definition order zulu, alpha, mike is the delivery order (not the names' order).
        @step
        async def start(self, ev: StartEvent) -> Go:
            return Go()

        @step
        async def zulu(self, ctx: Context, ev: Go) -> Mark:
            return await self._send(ctx, "zulu")

        @step
        async def alpha(self, ctx: Context, ev: Go) -> Mark:
            return await self._send(ctx, "alpha")

        @step
        async def mike(self, ctx: Context, ev: Go) -> Mark:
            return await self._send(ctx, "mike")

        async def _send(self, ctx: Context, name: str) -> Mark:
            entered[name].set()
            await release[name].wait()
            ctx.send_event(Mark(sender=name, i=0))
            finished.append(name)
            done[name].set()
            return Mark(sender=name, i=1)

        @step
        async def receiver(self, ev: Mark) -> StopEvent | None:
            received.append(f"{ev.sender}{ev.i}")
            return StopEvent(result=None) if len(received) == 6 else None

    handler = ThreeSenders().run()
    for name in entered:
        await reached(entered[name], f"sender {name} started")
    for name in release_order:  # force the completion order
        release[name].set()
        await reached(done[name], f"sender {name} finished")
    await finish(handler)
    return received, finished


async def test_a_receiver_gets_messages_in_sender_definition_order_not_completion_order() -> None:
    by_definition = ["zulu0", "zulu1", "alpha0", "alpha1", "mike0", "mike1"]

    received_1, finished_1 = await run_three_senders(["mike", "zulu", "alpha"])
    received_2, finished_2 = await run_three_senders(["alpha", "mike", "zulu"])

    assert finished_1 == ["mike", "zulu", "alpha"]  # the forced order really happened
    assert finished_2 == ["alpha", "mike", "zulu"]
    assert received_1 == by_definition
    assert received_2 == by_definition


async def traced_run(
    turns: dict[int, int],
) -> tuple[object, dict[str, list[tuple[int, int]]], list[str]]:
    """Run a two-level fan-out whose bodies suspend ``turns[n]`` times for item ``n``.

    Returns (result, trace: per step, the (superstep, payload) it processed, in order,
    completion order). ``turns`` changes timing only, never what a step computes.
    """
    trace: dict[str, list[tuple[int, int]]] = {"work": [], "refine": [], "join": []}
    completed: list[str] = []

    class FanOutFanIn(Workflow):
        @step
        async def start(self, ctx: Context, ev: Batch) -> None:
            for n in range(ev.items):
                ctx.send_event(Item(n=n))

        @step(num_workers=4)
        async def work(self, ctx: Context, ev: Item) -> Part:
            trace["work"].append((superstep_of(ctx), ev.n))
            for _ in range(turns[ev.n]):
                await asyncio.sleep(0)
            completed.append(f"work{ev.n}")
            ctx.send_event(Part(n=ev.n * 10))
            return Part(n=ev.n * 10 + 1)

        @step(num_workers=3)
        async def refine(self, ctx: Context, ev: Part) -> Ping:
            trace["refine"].append((superstep_of(ctx), ev.n))
            for _ in range(turns[ev.n // 10]):
                await asyncio.sleep(0)
            completed.append(f"refine{ev.n}")
            return Ping(n=ev.n)

        @step
        async def join(self, ctx: Context, ev: Ping) -> StopEvent | None:
            trace["join"].append((superstep_of(ctx), ev.n))
            pings = ctx.collect_events(ev, [Ping] * 8)
            return None if pings is None else StopEvent(result=[p.n for p in pings])

    result = await finish(FanOutFanIn().run(items=4))
    return result, trace, completed


async def test_two_runs_with_the_same_input_give_the_same_trace() -> None:
    result_1, trace_1, completed_1 = await traced_run({0: 5, 1: 0, 2: 3, 3: 1})
    result_2, trace_2, completed_2 = await traced_run({0: 0, 1: 4, 2: 1, 3: 6})

    assert completed_1 != completed_2  # the steps really completed in different orders
    assert trace_1 == trace_2
    assert result_1 == result_2 == [0, 1, 10, 11, 20, 21, 30, 31]
    assert trace_1["work"] == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert {superstep for superstep, _ in trace_1["refine"]} == {2}
    assert {superstep for superstep, _ in trace_1["join"]} == {3}


async def test_a_stop_event_ends_the_run_at_the_barrier_not_at_once() -> None:
    stopper_done = asyncio.Event()
    gate = asyncio.Event()
    after_stop: list[str] = []

    class StopAtBarrier(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Go(), step="stopper")
            ctx.send_event(Go(), step="slow")

        @step
        async def stopper(self, ev: Go) -> StopEvent:
            stopper_done.set()
            return StopEvent(result="stopped")

        @step
        async def slow(self, ev: Go) -> Ping:
            await gate.wait()
            after_stop.append("slow finished its superstep")
            return Ping(n=1)

        @step
        async def next_superstep(self, ev: Ping) -> None:
            after_stop.append("next superstep ran")  # must never happen

    handler = StopAtBarrier().run()
    await reached(stopper_done, "the stopping step returned")
    await spin()
    assert not handler.done()  # the superstep is not over: slow still runs

    gate.set()
    assert await finish(handler) == "stopped"
    assert after_stop == ["slow finished its superstep"]


@pytest.mark.parametrize("first_to_finish", ["early", "late"])
async def test_the_stop_event_earliest_in_delivery_order_wins(first_to_finish: str) -> None:
    release = {"early": asyncio.Event(), "late": asyncio.Event()}
    done = {"early": asyncio.Event(), "late": asyncio.Event()}

    class TwoStops(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Go:
            return Go()

        @step
        async def early(self, ev: Go) -> StopEvent:  # defined first: delivered first
            return await self._stop("early")

        @step
        async def late(self, ev: Go) -> StopEvent:
            return await self._stop("late")

        async def _stop(self, name: str) -> StopEvent:
            await release[name].wait()
            done[name].set()
            return StopEvent(result=name)

    handler = TwoStops().run()
    second = "late" if first_to_finish == "early" else "early"
    for name in (first_to_finish, second):
        release[name].set()
        await reached(done[name], f"{name} returned its StopEvent")

    assert await finish(handler) == "early"


async def test_at_each_barrier_no_step_runs_and_the_state_holds_the_whole_superstep() -> None:
    log: list[tuple[str, str, int]] = []
    barriers: list[tuple[int, int, dict[str, object]]] = []

    class Levels(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            await self._enter(ctx, "start")
            for n in range(3):
                ctx.send_event(Item(n=n))
            await self._leave(ctx, "start")

        @step(num_workers=3)
        async def work(self, ctx: Context, ev: Item) -> Part:
            await self._enter(ctx, f"work{ev.n}")
            for _ in range(ev.n):
                await asyncio.sleep(0)
            await self._leave(ctx, f"work{ev.n}")
            return Part(n=ev.n)

        @step
        async def join(self, ctx: Context, ev: Part) -> StopEvent | None:
            await self._enter(ctx, f"join{ev.n}")
            parts = ctx.collect_events(ev, [Part] * 3)
            await self._leave(ctx, f"join{ev.n}")
            return None if parts is None else StopEvent(result="done")

        async def _enter(self, ctx: Context, name: str) -> None:
            log.append(("enter", name, superstep_of(ctx)))

        async def _leave(self, ctx: Context, name: str) -> None:
            await ctx.store.update("finished", lambda n: (n or 0) + 1)
            log.append(("leave", name, superstep_of(ctx)))

    class AtBarriers(RunObserver):
        """Counts step attempts running, and records each barrier with the shared state."""

        running = 0

        def step_started(
            self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
        ) -> None:
            self.running += 1

        def step_ended(
            self, run: RunInfo, step: str, invocation: int, attempt: int, outcome: object
        ) -> None:
            self.running -= 1

        def superstep_ended(self, run: RunInfo, superstep: int) -> None:
            log.append(("barrier", "", superstep))
            barriers.append((superstep, self.running, dict(run.state.store)))

    handler = Levels(observers=[AtBarriers()]).run()
    assert await finish(handler) == "done"

    assert [k for k, *_ in barriers] == [0, 1]  # the run ends at the barrier of 2
    assert [running for _, running, _ in barriers] == [0, 0]  # no step runs at a barrier
    assert [state for *_, state in barriers] == [{"finished": 1}, {"finished": 4}]
    for k in (0, 1):
        at = log.index(("barrier", "", k))
        before, after = log[:at], log[at + 1 :]
        assert all(s <= k for _, _, s in before)  # nothing of k + 1 began before the barrier
        assert all(s > k for kind, _, s in after if kind != "barrier")  # nothing of k after it
        entered = {name for kind, name, _ in before if kind == "enter"}
        left = {name for kind, name, _ in before if kind == "leave"}
        assert entered == left  # every step of k had finished


class Spread(Workflow):
    """start sends three Items; a 3-worker step turns each into a Part; join collects them."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        for n in range(3):
            ctx.send_event(Item(n=n))

    @step(num_workers=3)
    async def work(self, ev: Item) -> Part:
        for _ in range(3 - ev.n):  # the last-started finishes first
            await asyncio.sleep(0)
        return Part(n=ev.n)

    @step
    async def join(self, ctx: Context, ev: Part) -> StopEvent | None:
        parts = ctx.collect_events(ev, [Part] * 3)
        return None if parts is None else StopEvent(result=[p.n for p in parts])


def delivery_order(outbox: object) -> list[object]:
    """The messages of a snapshot's outbox, in the order the barrier delivers them."""
    entries = cast(list[tuple[tuple[int, int], int, tuple[tuple[object, int | None], ...]]], outbox)
    ordered = sorted(entries, key=lambda entry: entry[0])  # (sender index, sender's count)
    return [message for _, _, emitted in ordered for message, _ in emitted]


async def test_the_checkpoint_view_at_each_barrier_has_nothing_in_flight() -> None:
    journal = Journal()
    wf = Spread(journal=journal)
    handler = wf.run()
    assert await finish(handler) == [0, 1, 2]

    # Replay the run's ticks with barrier capture on: each SuperstepEnded then carries
    # the kernel state as a checkpoint would record it.
    state = RunState(wf._stepgraph_plan().graph, capture_barriers=True)
    views = [
        command.snapshot
        for tick in journal.ticks(handler.run_id)
        for command in apply(state, tick)
        if isinstance(command, SuperstepEnded)
    ]

    assert [view["superstep"] for view in views if view is not None] == [0, 1]
    for view in views:
        assert view is not None
        assert (view["running"], view["queued"], view["invocations"]) == (0, 0, {})
    pending = [delivery_order(view["outbox"]) for view in views if view is not None]
    assert pending == [[Item(n=0), Item(n=1), Item(n=2)], [Part(n=0), Part(n=1), Part(n=2)]]
