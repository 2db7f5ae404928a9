"""G9 fan-in in executor graphs: one list per complete set, in source order, nothing lost.

``add_fan_in([b, c], join)`` holds the messages of each source and hands ``join``
one list ``[from_b, from_c]`` when every source has sent one: in the declared
source order whatever the arrival order; extra messages wait for the next batch
(two from one source and one from the other give one batch, and the second batch
comes when the other source sends again); the i-th batch pairs the i-th message
of each source; a source's other edges get its message as usual, unbatched. A
fan-in still partial when the run has nothing left to do is a
stall: the run raises WorkflowStalled naming the fan-in, instead of finishing and
silently dropping the held messages. A fan-in target without a list handler is
rejected at build time when its sources declare what they send.
"""

import asyncio
from typing import Any

import pytest

from stepgraph import Executor, WorkflowBuilder, WorkflowContext, handler
from stepgraph.errors import WorkflowStalled, WorkflowValidationError

from ._helpers import both_modes, failure, finish, reached


class Join(Executor):
    """Yields every batch it receives."""

    @handler
    async def on_batch(self, batch: list[Any], ctx: WorkflowContext) -> None:
        await ctx.yield_output(batch)


class Relay(Executor):
    """Sends every message on along its out-edges."""

    @handler
    async def on_any(self, message: Any, ctx: WorkflowContext) -> None:
        await ctx.send_message(message)


@both_modes
@pytest.mark.parametrize("first", ["b", "c"])
async def test_a_batch_is_in_source_order_whatever_the_arrival_order(mode: str, first: str) -> None:
    arrived: list[str] = []
    sent = {"b": asyncio.Event(), "c": asyncio.Event()}

    class Source(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            if self.id != first:  # the other source sends only after this one did
                await reached(sent[first], f"{first} sent its message")
            arrived.append(self.id)
            await ctx.send_message(f"from {self.id}")
            sent[self.id].set()

    start, b, c = Relay(id="start"), Source(id="b"), Source(id="c")
    late_relay = Relay(id="late_relay")  # in superstep mode: the later source sends a step later
    early, late = (b, c) if first == "b" else (c, b)
    wf = (
        WorkflowBuilder(start=start)
        .add_edge(start, early)
        .add_edge(start, late_relay)
        .add_edge(late_relay, late)
        .add_fan_in([b, c], Join(id="join"))
        .build(mode=mode)
    )
    result = await finish(wf.run("go"))
    assert arrived == [first, "c" if first == "b" else "b"]
    assert result.outputs == [["from b", "from c"]]


@both_modes
async def test_the_batch_follows_the_declared_source_order_not_the_executor_order(
    mode: str,
) -> None:
    class Tag(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(f"{text} from {self.id}")

    start, b, c, d = Relay(id="start"), Tag(id="b"), Tag(id="c"), Tag(id="d")
    wf = (
        WorkflowBuilder(start=start)
        .add_fan_out(start, [b, c, d])
        .add_fan_in([d, b, c], Join(id="join"))
        .build(mode=mode)
    )
    assert wf.executor_ids == ["start", "b", "c", "d", "join"]
    result = await finish(wf.run("m"))
    assert result.outputs == [["m from d", "m from b", "m from c"]]


@both_modes
async def test_a_source_with_another_edge_sends_its_message_there_unbatched(mode: str) -> None:
    class Tag(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(f"{text} from {self.id}")

    class Side(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output(("side", text))

    start, b, c = Relay(id="start"), Tag(id="b"), Tag(id="c")
    wf = (
        WorkflowBuilder(start=start)
        .add_fan_out(start, [b, c])
        .add_edge(b, Side(id="side"))
        .add_fan_in([b, c], Join(id="join"))
        .build(mode=mode)
    )
    result = await finish(wf.run("m"))
    assert sorted(map(repr, result.outputs)) == sorted(
        map(repr, [("side", "m from b"), ["m from b", "m from c"]])
    )


@both_modes
async def test_extra_messages_wait_for_the_next_batch_and_none_is_lost(mode: str) -> None:
    held_after_first_batch: list[int] = []
    batches = 0

    class Start(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(2, target="b")  # b sends two
            await ctx.send_message(1, target="c")  # c sends one

    class Source(Executor):
        @handler
        async def on_count(self, count: int, ctx: WorkflowContext) -> None:
            for _ in range(count):
                n = await ctx.store.update(f"{self.id}_sent", lambda v: (v or 0) + 1)
                await ctx.send_message(f"{self.id}{n}")

    class Batches(Executor):
        @handler
        async def on_batch(self, batch: list[str], ctx: WorkflowContext) -> None:
            nonlocal batches
            batches += 1
            await ctx.yield_output(batch)
            if batches == 1:
                buffer = ctx._run.state.fan_in_buffers[0]  # b's second message is held
                held_after_first_batch.append(buffer.held)
                await ctx.send_message(1, target="c")  # now c sends its second one

    start, b, c, join = Start(id="start"), Source(id="b"), Source(id="c"), Batches(id="join")
    wf = (
        WorkflowBuilder(start=start)
        .add_edge(start, b)
        .add_edge(start, c)
        .add_edge(join, c)
        .add_fan_in([b, c], join)
        .build(mode=mode)
    )
    handler_ = wf.run("go")
    result = await finish(handler_)
    assert result.outputs == [["b1", "c1"], ["b2", "c2"]]
    assert held_after_first_batch == [1]
    assert not any(buffer.held for buffer in handler_._run.state.fan_in_buffers.values())


@both_modes
async def test_the_i_th_batch_pairs_the_i_th_message_of_each_source(mode: str) -> None:
    count = 20

    class Start(Executor):
        @handler
        async def on_count(self, n: int, ctx: WorkflowContext) -> None:
            await ctx.send_message(n)

    class Source(Executor):
        @handler
        async def on_count(self, n: int, ctx: WorkflowContext) -> None:
            for i in range(n):
                await ctx.send_message((self.id, i))
                await asyncio.sleep(0)  # interleave the two sources (async mode)

    start, b, c = Start(id="start"), Source(id="b"), Source(id="c")
    wf = (
        WorkflowBuilder(start=start)
        .add_fan_out(start, [b, c])
        .add_fan_in([b, c], Join(id="join"))
        .build(mode=mode)
    )
    result = await finish(wf.run(count))
    assert result.outputs == [[("b", i), ("c", i)] for i in range(count)]


@both_modes
async def test_a_partial_fan_in_when_the_run_goes_idle_raises_stalled_naming_it(
    mode: str,
) -> None:
    class Start(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message("only to b", target="b")

    start, b, c = Start(id="start"), Relay(id="b"), Relay(id="c")
    wf = (
        WorkflowBuilder(start=start)
        .add_edge(start, b)
        .add_edge(start, c)
        .add_fan_in([b, c], Join(id="join"))
        .build(mode=mode)
    )
    exc = await failure(wf.run("go"))
    assert isinstance(exc, WorkflowStalled), f"a partial fan-in ended the run with {exc!r}"
    assert "fan-in into 'join'" in str(exc)
    assert len(exc.collectors) == 1
    assert "'join'" in exc.collectors[0]
    assert "b" in exc.collectors[0] and "c" in exc.collectors[0]


def test_a_fan_in_target_without_a_list_handler_is_rejected_at_build() -> None:
    class Typed(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext[str]) -> None:
            await ctx.send_message(text)

    class NoList(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output(text)

    start, b, c = Relay(id="start"), Typed(id="b"), Typed(id="c")
    builder = (
        WorkflowBuilder(start=start)
        .add_fan_out(start, [b, c])
        .add_fan_in([b, c], NoList(id="join"))
    )
    with pytest.raises(WorkflowValidationError) as info:
        builder.build()
    assert "'join'" in str(info.value)
    assert "list" in str(info.value)
