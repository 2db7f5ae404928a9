"""G4 serial per node: a step processes one message at a time unless ``num_workers=N``.

Checks, in both modes, that a default step is never entered twice at once, even
with messages from several senders queued and real suspensions inside the step;
that with ``num_workers=N`` exactly N invocations run at once when more than N
messages are queued, and never more; and that a plain ``def`` step (run in a
thread) is serial too. Invocations are held open with an ``asyncio.Event`` gate
that the test opens only after checking the concurrency, so no timing is involved.
"""

import asyncio
import threading

import pytest
from _helpers_a import Gauge, both_modes, finish, reached, spin

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, WorkflowHandler, step

MESSAGES = 12


class Job(Event):
    n: int


def node_state(handler: WorkflowHandler, name: str) -> tuple[int, int]:
    """(invocations in flight, messages queued) of step ``name``, from the kernel state."""
    run = handler._run
    node = run.state.nodes[run.graph.index_of[name]]
    return node.in_flight, len(node.inbox)


def fan_in_workflow(gauge: Gauge, workers: int) -> type[Workflow]:
    """Three senders each send MESSAGES // 3 jobs to one ``worker`` step."""

    class FanIn(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for name in ("a", "b", "c"):
                ctx.send_event(Job(n=0), step=name)

        @step
        async def a(self, ctx: Context, ev: Job) -> None:
            self._send(ctx)

        @step
        async def b(self, ctx: Context, ev: Job) -> None:
            self._send(ctx)

        @step
        async def c(self, ctx: Context, ev: Job) -> None:
            self._send(ctx)

        def _send(self, ctx: Context) -> None:
            for n in range(MESSAGES // 3):
                ctx.send_event(Job(n=n), step="worker")

        @step(num_workers=workers)
        async def worker(self, ev: Job) -> StopEvent | None:
            await gauge.hold()
            return StopEvent(result=gauge.max_active) if gauge.done == MESSAGES else None

    return FanIn


@both_modes
async def test_a_step_is_never_entered_twice_at_once_by_default(mode: str) -> None:
    gauge = Gauge(full_at=1)
    handler = fan_in_workflow(gauge, workers=1)(mode=mode).run()

    await reached(gauge.full, "the worker step started")
    await spin()  # a second invocation would have entered by now, were it allowed to
    assert gauge.active == 1
    in_flight, queued = node_state(handler, "worker")
    assert in_flight == 1
    assert queued >= 1  # others are waiting their turn, not running

    gauge.gate.set()
    assert await finish(handler) == 1
    assert gauge.done == MESSAGES


@both_modes
@pytest.mark.parametrize("workers", [2, 4])
async def test_num_workers_n_runs_exactly_n_at_once_when_enough_messages_are_queued(
    mode: str, workers: int
) -> None:
    gauge = Gauge(full_at=workers)
    handler = fan_in_workflow(gauge, workers=workers)(mode=mode).run()

    await reached(gauge.full, f"{workers} invocations of the worker step at once")
    await spin()  # one more invocation would have entered by now, were it allowed to
    assert gauge.active == workers
    in_flight, queued = node_state(handler, "worker")
    assert in_flight == workers
    assert queued >= 1

    gauge.gate.set()
    assert await finish(handler) == workers
    assert gauge.done == MESSAGES


@both_modes
async def test_a_sync_step_runs_in_a_thread_and_is_serial_too(mode: str) -> None:
    lock = threading.Lock()
    active = 0
    max_active = 0
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()
    gate = threading.Event()
    done: list[int] = []

    class SyncSerial(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for n in range(4):
                ctx.send_event(Job(n=n))

        @step
        def work(self, ev: Job) -> StopEvent | None:
            nonlocal active, max_active
            with lock:
                active += 1
                max_active = max(max_active, active)
            loop.call_soon_threadsafe(entered.set)
            opened = gate.wait(timeout=5.0)  # bounded: the test opens it at once
            with lock:
                active -= 1
                done.append(ev.n)
            if not opened:
                raise AssertionError("the gate was never opened")
            return StopEvent(result=max_active) if len(done) == 4 else None

    handler = SyncSerial(mode=mode).run()
    await reached(entered, "the sync step started")
    await spin()
    assert node_state(handler, "work") == (1, 3)

    gate.set()
    assert await finish(handler) == 1
    assert done == [0, 1, 2, 3]
