"""G3 per-edge FIFO: messages from one sender to one receiver are processed in send order.

Checks, in both modes, that 200 numbered events sent with ``ctx.send_event`` are
processed in send order by a serial receiver; that with ``num_workers > 1`` the
receiver's invocations start in send order; that the returned event comes after
the events the step sent; and that the order holds when each receiver invocation
suspends (so a later message could overtake an earlier one if the engine let it).
"""

import asyncio

from _helpers_a import both_modes, finish

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step

COUNT = 200


class Numbered(Event):
    n: int


class Last(Event):
    pass


@both_modes
async def test_messages_from_one_sender_are_processed_in_send_order(mode: str) -> None:
    order: list[int] = []

    class Fifo(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for n in range(COUNT):
                ctx.send_event(Numbered(n=n))

        @step
        async def receiver(self, ev: Numbered) -> StopEvent | None:
            order.append(ev.n)
            await asyncio.sleep(0)  # a suspension: a later message could overtake here
            return StopEvent(result=None) if len(order) == COUNT else None

    await finish(Fifo(mode=mode).run())

    assert order == list(range(COUNT))


@both_modes
async def test_with_several_workers_invocations_start_in_send_order(mode: str) -> None:
    started: list[int] = []
    finished: list[int] = []

    class FifoWorkers(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for n in range(COUNT):
                ctx.send_event(Numbered(n=n))

        @step(num_workers=4)
        async def receiver(self, ev: Numbered) -> StopEvent | None:
            started.append(ev.n)  # the first thing the invocation does
            for _ in range(ev.n % 3):  # uneven suspensions: completions interleave
                await asyncio.sleep(0)
            finished.append(ev.n)
            return StopEvent(result=None) if len(finished) == COUNT else None

    await finish(FifoWorkers(mode=mode).run())

    assert started == list(range(COUNT))
    assert sorted(finished) == list(range(COUNT))
    assert finished != started  # the workers really overlapped and completed out of order


@both_modes
async def test_the_returned_event_comes_after_the_events_the_step_sent(mode: str) -> None:
    order: list[str] = []

    class SendThenReturn(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> Last:
            for n in range(3):
                ctx.send_event(Numbered(n=n))
            return Last()

        @step
        async def receiver(self, ev: Numbered | Last) -> StopEvent | None:
            order.append(type(ev).__name__ if isinstance(ev, Last) else str(ev.n))
            return StopEvent(result=None) if isinstance(ev, Last) else None

    await finish(SendThenReturn(mode=mode).run())

    assert order == ["0", "1", "2", "Last"]


@both_modes
async def test_fifo_holds_on_each_edge_of_a_chain(mode: str) -> None:
    order: list[int] = []

    class Chain(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for n in range(COUNT):
                ctx.send_event(Numbered(n=n), step="relay")

        @step
        async def relay(self, ctx: Context, ev: Numbered) -> None:
            await asyncio.sleep(0)
            ctx.send_event(Numbered(n=ev.n), step="sink")

        @step
        async def sink(self, ev: Numbered) -> StopEvent | None:
            order.append(ev.n)
            return StopEvent(result=None) if len(order) == COUNT else None

    await finish(Chain(mode=mode).run())

    assert order == list(range(COUNT))
