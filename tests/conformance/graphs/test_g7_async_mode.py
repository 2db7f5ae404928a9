"""G7 async mode in executor graphs: messages are delivered the moment they are sent.

With ``build(mode="async")`` there is no barrier: a receiver starts while its
sender is still running; a fast branch runs to its end while a slow sibling is
still busy; outputs come in the order they were yielded; a ``RequestInfoEvent``
is on the stream while the asking executor still runs; and ``max_supersteps``
bounds message generations (a message's generation is its sender's + 1), so an
endless cycle fails with SuperstepLimitExceeded while a chain within the bound
passes. Every ordering is forced with ``asyncio.Event``, never with sleeps.
"""

import asyncio
from typing import Any

from stepgraph import (
    Executor,
    RequestInfoEvent,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    response_handler,
)
from stepgraph.errors import SuperstepLimitExceeded

from ._helpers import failure, finish, reached


class Fork(Executor):
    """The start executor: sends its input on along its out-edges."""

    @handler
    async def on_any(self, message: Any, ctx: WorkflowContext) -> None:
        await ctx.send_message(message)


async def test_a_receiver_runs_while_its_sender_is_still_inside() -> None:
    received = asyncio.Event()

    class Sender(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(text)
            # completes only if the receiver ran while this handler is still inside
            await reached(received, "the receiver got the message before the sender returned")
            await ctx.yield_output("sender done")

    class Receiver(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output(f"received {text}")
            received.set()

    sender = Sender(id="sender")
    wf = WorkflowBuilder(start=sender).add_edge(sender, Receiver(id="rec")).build(mode="async")
    result = await finish(wf.run("m"))
    assert result.outputs == ["received m", "sender done"]  # in the order they were yielded


async def test_a_fast_branch_runs_to_its_end_while_a_slow_sibling_is_busy() -> None:
    gate = asyncio.Event()
    branch_done = asyncio.Event()
    chain: list[str] = []

    class Slow(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await gate.wait()
            await ctx.yield_output("slow")

    class Link(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            chain.append(self.id)
            if self.id == "c":
                await ctx.yield_output("chain")
                branch_done.set()
            else:
                await ctx.send_message(text)

    fork, slow = Fork(id="fork"), Slow(id="slow")
    a, b, c = Link(id="a"), Link(id="b"), Link(id="c")
    wf = (
        WorkflowBuilder(start=fork)
        .add_fan_out(fork, [slow, a])
        .add_chain([a, b, c])
        .build(mode="async")
    )
    handler_ = wf.run("go")
    await reached(branch_done, "the fast branch reached its end while the slow one waits")
    assert chain == ["a", "b", "c"]
    assert not handler_.done()

    gate.set()
    result = await finish(handler_)
    assert result.outputs == ["chain", "slow"]  # arrival order, not executor order


async def test_outputs_come_in_the_order_they_were_yielded() -> None:
    done = {"first": asyncio.Event(), "second": asyncio.Event()}

    class Yielder(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            if self.id == "first":  # the first executor yields last
                await reached(done["second"], "the second executor yielded")
            await ctx.yield_output(f"{self.id}.1")
            await ctx.yield_output(f"{self.id}.2")
            done[self.id].set()

    fork, first, second = Fork(id="fork"), Yielder(id="first"), Yielder(id="second")
    wf = WorkflowBuilder(start=fork).add_fan_out(fork, [first, second]).build(mode="async")
    result = await finish(wf.run("go"))
    assert result.outputs == ["second.1", "second.2", "first.1", "first.2"]


async def test_a_request_is_on_the_stream_while_the_asking_executor_still_runs() -> None:
    gate = asyncio.Event()

    class Asker(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.request_info(text, response_type=int)
            await gate.wait()  # the test opens it once it has read the request

        @response_handler
        async def on_answer(self, question: str, answer: int, ctx: WorkflowContext) -> None:
            await ctx.yield_output((question, answer))

    handler_ = WorkflowBuilder(start=Asker(id="asker")).build(mode="async").run("how many?")
    async with asyncio.timeout(5):
        async for event in handler_.stream_events():
            if isinstance(event, RequestInfoEvent):
                assert not gate.is_set()  # the asker is still inside its handler
                await handler_.send_response(event.request_id, 4)
                gate.set()
    result = await finish(handler_)
    assert result.outputs == [("how many?", 4)]


class Countdown(Executor):
    """Sends n - 1 to itself until 0, then yields "done"."""

    @handler
    async def on_count(self, n: int, ctx: WorkflowContext) -> None:
        if n > 0:
            await ctx.send_message(n - 1)
        else:
            await ctx.yield_output("done")


async def test_max_supersteps_bounds_message_generations_of_an_endless_cycle() -> None:
    class Endless(Executor):
        @handler
        async def on_count(self, n: int, ctx: WorkflowContext) -> None:
            await ctx.send_message(n + 1)

    endless = Endless(id="endless")
    wf = WorkflowBuilder(start=endless).add_edge(endless, endless)
    exc = await failure(wf.build(mode="async", max_supersteps=30).run(0))
    assert isinstance(exc, SuperstepLimitExceeded)
    assert "max_supersteps=30" in str(exc)
    assert "endless" in str(exc)


async def test_a_cycle_within_max_supersteps_generations_finishes() -> None:
    loop = Countdown(id="loop")
    wf = WorkflowBuilder(start=loop).add_edge(loop, loop).build(mode="async", max_supersteps=30)
    result = await finish(wf.run(30))  # the message counting 0 is of generation 30
    assert result.outputs == ["done"]
    exc = await failure(wf.run(31))
    assert isinstance(exc, SuperstepLimitExceeded)
