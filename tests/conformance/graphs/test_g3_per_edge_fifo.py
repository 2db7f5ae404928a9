"""G3 per-edge FIFO in executor graphs: one sender's messages arrive in the order sent.

Checks, in both modes, that the messages one executor sends along one edge are
processed in send order (also when the sender yields between sends, when it sends
across several invocations, when the edge is conditional, and when the receiver
has several workers: then they are *started* in send order); that with two
senders into one receiver, each sender's messages keep their order; and that the
messages the caller sends into a run (``handler.send_event``) keep their order.
"""

import asyncio

from stepgraph import (
    Executor,
    RequestInfoEvent,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    response_handler,
)

from ._helpers import both_modes, finish

COUNT = 50


class Sender(Executor):
    """Given a list, sends its items one by one, yielding to the loop between sends."""

    @handler
    async def on_list(self, items: list[int], ctx: WorkflowContext) -> None:
        for item in items:
            await ctx.send_message((self.id, item))
            await asyncio.sleep(0)  # let the receiver run between sends (async mode)


class Recorder(Executor):
    """Records (sender, item) in arrival order; suspends inside, so messages queue up."""

    def __init__(self, id: str, log: list[tuple[str, int]], num_workers: int = 1) -> None:
        super().__init__(id, num_workers=num_workers)
        self.log = log

    @handler
    async def on_item(self, item: tuple[str, int], ctx: WorkflowContext) -> None:
        self.log.append(item)  # recorded before the first await: the start order
        await asyncio.sleep(0)


@both_modes
async def test_messages_along_one_edge_are_processed_in_send_order(mode: str) -> None:
    log: list[tuple[str, int]] = []
    sender = Sender(id="sender")
    wf = WorkflowBuilder(start=sender).add_edge(sender, Recorder("rec", log)).build(mode=mode)
    await finish(wf.run(list(range(COUNT))))
    assert log == [("sender", i) for i in range(COUNT)]


@both_modes
async def test_messages_to_a_multi_worker_receiver_are_started_in_send_order(mode: str) -> None:
    log: list[tuple[str, int]] = []
    sender = Sender(id="sender")
    receiver = Recorder("rec", log, num_workers=4)
    wf = WorkflowBuilder(start=sender).add_edge(sender, receiver).build(mode=mode)
    await finish(wf.run(list(range(COUNT))))
    assert log == [("sender", i) for i in range(COUNT)]


@both_modes
async def test_messages_sent_across_several_invocations_arrive_in_send_order(mode: str) -> None:
    log: list[tuple[str, int]] = []

    class Splitter(Executor):
        @handler
        async def on_batches(self, batches: list[list[int]], ctx: WorkflowContext) -> None:
            for batch in batches:
                await ctx.send_message(batch)

    splitter = Splitter(id="splitter")
    sender = Sender(id="sender")  # serial: its invocations run one after another
    wf = (
        WorkflowBuilder(start=splitter)
        .add_edge(splitter, sender)
        .add_edge(sender, Recorder("rec", log))
        .build(mode=mode)
    )
    batches = [list(range(i, i + 5)) for i in range(0, COUNT, 5)]
    await finish(wf.run(batches))
    assert log == [("sender", i) for i in range(COUNT)]


@both_modes
async def test_a_conditional_edge_keeps_the_order_of_the_messages_it_takes(mode: str) -> None:
    log: list[tuple[str, int]] = []
    others: list[tuple[str, int]] = []
    sender = Sender(id="sender")
    wf = (
        WorkflowBuilder(start=sender)
        .add_edge(sender, Recorder("odd", log), condition=lambda m: m[1] % 2 == 1)
        .add_edge(sender, Recorder("even", others), condition=lambda m: m[1] % 2 == 0)
        .build(mode=mode)
    )
    await finish(wf.run(list(range(COUNT))))
    assert log == [("sender", i) for i in range(1, COUNT, 2)]
    assert others == [("sender", i) for i in range(0, COUNT, 2)]


@both_modes
async def test_each_of_two_senders_keeps_its_order_into_a_shared_receiver(mode: str) -> None:
    log: list[tuple[str, int]] = []

    class Start(Executor):
        @handler
        async def on_count(self, count: int, ctx: WorkflowContext) -> None:
            await ctx.send_message(list(range(count)), target="left")
            await ctx.send_message(list(range(count)), target="right")

    start = Start(id="start")
    left, right = Sender(id="left"), Sender(id="right")
    receiver = Recorder("rec", log)
    wf = (
        WorkflowBuilder(start=start)
        .add_edge(start, left)
        .add_edge(start, right)
        .add_edge(left, receiver)
        .add_edge(right, receiver)
        .build(mode=mode)
    )
    await finish(wf.run(COUNT))
    assert [i for who, i in log if who == "left"] == list(range(COUNT))
    assert [i for who, i in log if who == "right"] == list(range(COUNT))
    assert len(log) == 2 * COUNT


@both_modes
async def test_messages_from_the_caller_are_processed_in_send_order(mode: str) -> None:
    log: list[tuple[str, int]] = []

    class Holder(Executor):
        """Keeps the run open with a request, and records what the caller sends."""

        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.request_info(text, response_type=bool)

        @handler
        async def on_number(self, n: int, ctx: WorkflowContext) -> None:
            log.append(("caller", n))
            await asyncio.sleep(0)

        @response_handler
        async def on_done(self, question: str, done: bool, ctx: WorkflowContext) -> None:
            await ctx.yield_output(len(log))

    handler_ = WorkflowBuilder(start=Holder(id="holder")).build(mode=mode).run("open")
    async with asyncio.timeout(5):
        async for event in handler_.stream_events():
            if isinstance(event, RequestInfoEvent):
                for n in range(COUNT):
                    handler_.send_event(n)
                await handler_.send_response(event.request_id, True)
    result = await finish(handler_)
    assert log == [("caller", n) for n in range(COUNT)]
    assert result.outputs == [COUNT]
