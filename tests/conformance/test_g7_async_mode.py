"""G7 async mode: no barrier, yet per-edge FIFO (G3) and serial nodes (G4) still hold.

In ``mode="async"`` a message is delivered the moment it is sent, so a step can
receive a message from a step that is still running; ``max_supersteps`` then
bounds message generations, so runaway loops still end with a clear error.
"""

import asyncio

import pytest
from _helpers_b import failure, finish

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step
from stepgraph.errors import SuperstepLimitExceeded


class Ping(Event):
    n: int = 0


class Pong(Event):
    n: int = 0


class Go(Event):
    pass


class Loop(Event):
    n: int


async def test_a_step_receives_a_message_while_its_sender_is_still_running() -> None:
    acked = asyncio.Event()
    sender_running = False
    seen_while_sender_ran: list[bool] = []

    class NoBarrier(Workflow):
        @step
        async def sender(self, ctx: Context, ev: StartEvent) -> StopEvent:
            nonlocal sender_running
            sender_running = True
            ctx.send_event(Ping(n=1))
            await acked.wait()  # only the receiver sets it: it must run before we return
            sender_running = False
            return StopEvent(result="acknowledged")

        @step
        async def receiver(self, ev: Ping) -> None:
            seen_while_sender_ran.append(sender_running)
            acked.set()

    assert await finish(NoBarrier(mode="async").run()) == "acknowledged"
    assert seen_while_sender_ran == [True]


async def test_siblings_of_one_generation_exchange_messages_without_a_barrier() -> None:
    left_saw_right = asyncio.Event()
    right_saw_left = asyncio.Event()

    class Siblings(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Go(), step="left")
            ctx.send_event(Go(), step="right")

        @step(num_workers=2)
        async def left(self, ctx: Context, ev: Go | Pong) -> StopEvent | None:
            if isinstance(ev, Pong):
                left_saw_right.set()
                return None
            ctx.send_event(Ping(), step="right")
            await right_saw_left.wait()  # both siblings block until the other's message arrives
            await left_saw_right.wait()
            return StopEvent(result="both met")

        @step(num_workers=2)
        async def right(self, ctx: Context, ev: Go | Ping) -> None:
            if isinstance(ev, Ping):
                right_saw_left.set()
                return
            ctx.send_event(Pong(), step="left")
            await right_saw_left.wait()

    assert await finish(Siblings(mode="async").run()) == "both met"


async def test_messages_from_one_sender_are_processed_in_send_order_in_async_mode() -> None:
    count = 200
    received: list[tuple[str, int]] = []

    class Fifo(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Go(), step="pings")
            ctx.send_event(Go(), step="pongs")

        @step
        async def pings(self, ctx: Context, ev: Go) -> None:
            for i in range(count):
                ctx.send_event(Ping(n=i))
                if i % 7 == 0:
                    await asyncio.sleep(0)  # yield so the two senders interleave

        @step
        async def pongs(self, ctx: Context, ev: Go) -> None:
            for i in range(count):
                ctx.send_event(Pong(n=i))
                if i % 5 == 0:
                    await asyncio.sleep(0)

        @step
        async def sink(self, ev: Ping | Pong) -> StopEvent | None:
            received.append((type(ev).__name__, ev.n))
            if len(received) == 2 * count:
                return StopEvent(result=len(received))
            return None

    assert await finish(Fifo(mode="async").run()) == 2 * count
    for kind in ("Ping", "Pong"):
        assert [n for k, n in received if k == kind] == list(range(count))
    kinds = [k for k, _ in received]
    assert kinds != sorted(kinds), "the two senders should interleave (cross-sender arrival)"


async def test_a_node_processes_one_message_at_a_time_in_async_mode() -> None:
    count = 50
    in_flight = 0
    peak = 0
    order: list[int] = []

    class Serial(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for i in range(count):
                ctx.send_event(Ping(n=i))

        @step
        async def work(self, ev: Ping) -> StopEvent | None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0)  # a yield point: a second invocation could start here
            await asyncio.sleep(0)
            order.append(ev.n)
            in_flight -= 1
            return StopEvent(result="done") if len(order) == count else None

    assert await finish(Serial(mode="async").run()) == "done"
    assert peak == 1
    assert order == list(range(count))


async def test_num_workers_bounds_and_fills_concurrency_in_fifo_order_in_async_mode() -> None:
    count = 12
    workers = 3
    in_flight = 0
    peak = 0
    started: list[int] = []
    finished: list[int] = []
    full = asyncio.Event()

    class Pool(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for i in range(count):
                ctx.send_event(Ping(n=i))

        @step(num_workers=workers)
        async def work(self, ev: Ping) -> StopEvent | None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            started.append(ev.n)
            if in_flight == workers:
                full.set()
            await full.wait()  # the first invocations hold until all workers are busy
            await asyncio.sleep(0)
            in_flight -= 1
            finished.append(ev.n)
            return StopEvent(result="done") if len(finished) == count else None

    assert await finish(Pool(mode="async").run()) == "done"
    assert peak == workers
    assert started == list(range(count))


async def test_max_supersteps_bounds_a_runaway_loop_in_async_mode() -> None:
    class Runaway(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Loop:
            return Loop(n=0)

        @step
        async def spin(self, ev: Loop) -> Loop | StopEvent:
            return Loop(n=ev.n + 1)

    exc = await failure(Runaway(mode="async", max_supersteps=20).run())
    assert isinstance(exc, SuperstepLimitExceeded)
    assert "max_supersteps=20" in str(exc)
    assert "spin" in str(exc)


@pytest.mark.parametrize("rounds", [1, 15])
async def test_a_loop_shorter_than_max_supersteps_finishes_in_async_mode(rounds: int) -> None:
    class Bounded(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Loop:
            return Loop(n=0)

        @step
        async def spin(self, ev: Loop) -> Loop | StopEvent:
            if ev.n == rounds:
                return StopEvent(result=ev.n)
            return Loop(n=ev.n + 1)

    assert await finish(Bounded(mode="async", max_supersteps=20).run()) == rounds


class Signal(Event):
    value: int


class Ready(Event):
    pass


class EarlySignal(Workflow):
    """``announce`` sends a Signal before ``listen`` starts waiting for it; no step takes it."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Ready:
        ctx.send_event(Signal(value=7))  # nobody waits yet, and no step accepts a Signal
        return Ready()

    @step
    async def listen(self, ctx: Context, ev: Ready) -> StopEvent:
        got = await ctx.wait_for_event(Signal, timeout=None)
        return StopEvent(result=got.value)


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_an_event_only_a_wait_takes_is_kept_until_the_wait_begins(mode: str) -> None:
    assert await finish(EarlySignal(mode=mode).run()) == 7
