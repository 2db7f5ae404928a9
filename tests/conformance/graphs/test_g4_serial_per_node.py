"""G4 serial per node in executor graphs: an executor handles one message at a time.

Checks, in both modes, that an executor (a class or an ``@executor`` function) is
never entered twice at once, even with messages from several senders queued and
real suspensions inside its handler; that two sources sending to one executor in
the same superstep have their messages processed one after another, measured by
the invocations' time windows (no two overlap); that ``num_workers=N`` runs
exactly N at once when more are queued; and that a sync ``def`` handler, run in a
thread, is serial too. Invocations are held open by an ``asyncio.Event`` gate
that the test opens only after checking, so no timing is involved.
"""

import asyncio
import threading
from typing import Any

import pytest

from stepgraph import Executor, WorkflowBuilder, WorkflowContext, executor, handler

from ._helpers import Gauge, Windows, both_modes, finish, node_state, reached, rendezvous, spin

MESSAGES = 12


class Start(Executor):
    @handler
    async def on_start(self, go: str, ctx: WorkflowContext) -> None:
        for name in ("a", "b", "c"):
            await ctx.send_message(0, target=name)


class Feeder(Executor):
    @handler
    async def on_go(self, go: int, ctx: WorkflowContext) -> None:
        for n in range(MESSAGES // 3):
            await ctx.send_message(f"{self.id}{n}")


def three_senders(worker: Executor) -> WorkflowBuilder:
    """``start`` wakes a, b and c; each sends MESSAGES // 3 texts to ``worker``."""
    start = Start(id="start")
    builder = WorkflowBuilder(start=start)
    for name in ("a", "b", "c"):
        feeder = Feeder(id=name)
        builder.add_edge(start, feeder).add_edge(feeder, worker)
    return builder


def gauged_worker(gauge: Gauge, kind: str, workers: int = 1) -> Executor:
    if kind == "function":

        @executor(id="worker", num_workers=workers)
        async def worker(text: str, ctx: WorkflowContext) -> None:
            await gauge.hold()

        return worker

    class Worker(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await gauge.hold()

    return Worker(id="worker", num_workers=workers)


@both_modes
@pytest.mark.parametrize("kind", ["class", "function"])
async def test_an_executor_is_never_entered_twice_at_once_by_default(mode: str, kind: str) -> None:
    gauge = Gauge(full_at=1)
    handler_ = three_senders(gauged_worker(gauge, kind)).build(mode=mode).run("go")

    await reached(gauge.full, "the worker started")
    await spin()  # a second invocation would have entered by now, were it allowed to
    assert gauge.active == 1
    in_flight, queued = node_state(handler_, "worker")
    assert in_flight == 1
    assert queued >= 1  # others are waiting their turn, not running

    gauge.gate.set()
    await finish(handler_)
    assert gauge.max_active == 1
    assert gauge.done == MESSAGES


@both_modes
@pytest.mark.parametrize("workers", [2, 4])
async def test_num_workers_n_runs_exactly_n_at_once_when_enough_messages_are_queued(
    mode: str, workers: int
) -> None:
    gauge = Gauge(full_at=workers)
    handler_ = three_senders(gauged_worker(gauge, "class", workers)).build(mode=mode).run("go")

    await reached(gauge.full, f"{workers} invocations of the worker at once")
    await spin()  # one more invocation would have entered by now, were it allowed to
    assert gauge.active == workers
    in_flight, queued = node_state(handler_, "worker")
    assert in_flight == workers
    assert queued >= 1

    gauge.gate.set()
    await finish(handler_)
    assert gauge.max_active == workers
    assert gauge.done == MESSAGES


@both_modes
async def test_two_sources_sending_in_one_superstep_are_processed_serially_by_the_target(
    mode: str,
) -> None:
    windows = Windows()
    inside = {"s1": asyncio.Event(), "s2": asyncio.Event()}
    queued_behind: list[int] = []

    class Source(Executor):
        @handler
        async def on_go(self, go: str, ctx: WorkflowContext) -> None:
            other = "s2" if self.id == "s1" else "s1"
            # both sources are inside at once: they run in the same superstep
            await rendezvous(inside[self.id], inside[other], f"{other} runs beside {self.id}")
            for n in range(3):
                await ctx.send_message(f"{self.id}.{n}")

    class Target(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            windows.start(text)
            queued_behind.append(node_state(ctx, "t")[1])
            for _ in range(10):
                await asyncio.sleep(0)  # real suspensions: a parallel invocation would enter
            windows.end(text)

    class Go(Executor):
        @handler
        async def on_go(self, go: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(go)

    go, s1, s2, target = Go(id="go"), Source(id="s1"), Source(id="s2"), Target(id="t")
    wf = (
        WorkflowBuilder(start=go)
        .add_fan_out(go, [s1, s2])
        .add_edge(s1, target)
        .add_edge(s2, target)
        .build(mode=mode)
    )
    await finish(wf.run("go"))

    labels = [f"{s}.{n}" for s in ("s1", "s2") for n in range(3)]
    assert sorted(windows.spans) == labels
    windows.assert_disjoint(labels)
    assert max(queued_behind) >= 1, "no message ever waited: the test did not exercise queuing"


@both_modes
async def test_a_sync_handler_runs_in_a_thread_and_is_serial_too(mode: str) -> None:
    lock = threading.Lock()
    active = 0
    max_active = 0
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()
    gate = threading.Event()
    done: list[int] = []
    threads: set[int] = set()

    class Spray(Executor):
        @handler
        async def on_start(self, count: int, ctx: WorkflowContext) -> None:
            for n in range(count):
                await ctx.send_message(n)

    class SyncWorker(Executor):
        @handler
        def on_number(self, n: int, ctx: WorkflowContext) -> None:
            nonlocal active, max_active
            threads.add(threading.get_ident())
            with lock:
                active += 1
                max_active = max(max_active, active)
            loop.call_soon_threadsafe(entered.set)
            opened = gate.wait(timeout=5.0)  # bounded: the test opens it at once
            with lock:
                active -= 1
                done.append(n)
            if not opened:
                raise AssertionError("the gate was never opened")

    spray = Spray(id="spray")
    wf = WorkflowBuilder(start=spray).add_edge(spray, SyncWorker(id="work")).build(mode=mode)
    handler_: Any = wf.run(4)
    await reached(entered, "the sync handler started")
    await spin()
    assert node_state(handler_, "work") == (1, 3)

    gate.set()
    await finish(handler_)
    assert max_active == 1
    assert done == [0, 1, 2, 3]
    assert threading.get_ident() not in threads, "the sync handler ran on the event loop"
