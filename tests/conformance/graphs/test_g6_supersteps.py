"""G6 supersteps in executor graphs: messages of superstep k are delivered at its barrier.

In superstep mode (the default) a message sent during superstep k is not delivered
while its sender still runs, nor while any other invocation of superstep k runs;
at the barrier the messages are delivered in a deterministic order (sender
executor order, then the sender's invocation order, then send order), whatever
order the invocations finished in; outputs are ordered by (superstep, executor
order, invocation, yield order); ``SuperstepCompletedEvent(k)`` and the shell's
barrier hook come after every invocation of k and before any of k + 1; a
``RequestInfoEvent`` is published at the barrier. Completion order is forced
with ``asyncio.Event`` chains, never with sleeps.
"""

import asyncio
from typing import Any

import pytest

from stepgraph import (
    Executor,
    ExecutorCompletedEvent,
    ExecutorInvokedEvent,
    RequestInfoEvent,
    RunObserver,
    SuperstepCompletedEvent,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowOutputEvent,
    handler,
    response_handler,
)
from stepgraph.runtime.observers import RunInfo

from ._helpers import drain, finish, node_state, reached, spin, superstep_of


class Fork(Executor):
    """The start executor: sends its input on along its out-edges."""

    @handler
    async def on_any(self, message: Any, ctx: WorkflowContext) -> None:
        await ctx.send_message(message)


class Record(Executor):
    """Appends (superstep, message) to a shared list; one worker, so in arrival order."""

    def __init__(self, id: str, log: list[tuple[int, Any]]) -> None:
        super().__init__(id)
        self.log = log

    @handler
    async def on_any(self, message: Any, ctx: WorkflowContext) -> None:
        self.log.append((superstep_of(ctx), message))


async def test_a_message_is_not_delivered_while_its_sender_still_runs() -> None:
    sent = asyncio.Event()
    gate = asyncio.Event()
    log: list[tuple[int, Any]] = []

    class Sender(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(text)
            sent.set()
            await gate.wait()

    sender = Sender(id="sender")
    wf = WorkflowBuilder(start=sender).add_edge(sender, Record("rec", log)).build()
    handler_ = wf.run("m")
    await reached(sent, "the sender sent its message")
    await spin()  # the receiver would have started by now, were the message delivered
    assert log == []
    assert node_state(handler_, "rec") == (0, 0)

    gate.set()
    await finish(handler_)
    assert log == [(1, "m")]


async def test_a_message_waits_for_every_invocation_of_its_superstep_to_end() -> None:
    fast_done = asyncio.Event()
    gate = asyncio.Event()
    log: list[tuple[int, Any]] = []

    class Fast(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message("from fast")
            fast_done.set()

    class Slow(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await gate.wait()

    fork, fast, slow = Fork(id="fork"), Fast(id="fast"), Slow(id="slow")
    wf = (
        WorkflowBuilder(start=fork)
        .add_fan_out(fork, [fast, slow])
        .add_edge(fast, Record("rec", log))
        .build()
    )
    handler_ = wf.run("go")
    await reached(fast_done, "the fast executor finished")
    await spin()  # the receiver would have started by now, were there no barrier
    assert log == []
    assert node_state(handler_, "fast") == (0, 0)
    assert node_state(handler_, "slow") == (1, 0)
    assert handler_._run.state.superstep == 1

    gate.set()
    await finish(handler_)
    assert log == [(2, "from fast")]


@pytest.mark.parametrize("finishing_first", ["first", "second"])
async def test_delivery_at_the_barrier_follows_sender_order_not_completion_order(
    finishing_first: str,
) -> None:
    log: list[tuple[int, Any]] = []
    done = {"first": asyncio.Event(), "second": asyncio.Event()}

    class Sender(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            if self.id != finishing_first:  # finish only after the other one has
                other = "second" if self.id == "first" else "first"
                await reached(done[other], f"{other} finished")
            for n in range(3):
                await ctx.send_message(f"{self.id}.{n}")
            done[self.id].set()

    fork, first, second = Fork(id="fork"), Sender(id="first"), Sender(id="second")
    rec = Record("rec", log)
    wf = (
        WorkflowBuilder(start=fork)
        .add_executor(first)  # executor order: fork, first, second, rec
        .add_executor(second)
        .add_fan_out(fork, [second, first])  # edge order does not matter, executor order does
        .add_edge(first, rec)
        .add_edge(second, rec)
        .build()
    )
    assert wf.executor_ids == ["fork", "first", "second", "rec"]
    await finish(wf.run("go"))
    expected = [f"{who}.{n}" for who in ("first", "second") for n in range(3)]
    assert log == [(2, text) for text in expected]


async def test_invocations_of_one_sender_deliver_in_the_order_they_started() -> None:
    log: list[tuple[int, Any]] = []
    finished: dict[int, asyncio.Event] = {n: asyncio.Event() for n in range(3)}

    class Spray(Executor):
        @handler
        async def on_count(self, count: int, ctx: WorkflowContext) -> None:
            for n in range(count):
                await ctx.send_message(n)

    class Worker(Executor):
        @handler
        async def on_number(self, n: int, ctx: WorkflowContext) -> None:
            if n < 2:  # invocation n finishes after invocation n + 1: reverse completion
                await reached(finished[n + 1], f"invocation {n + 1} finished")
            await ctx.send_message(f"{n}a")
            await ctx.send_message(f"{n}b")
            finished[n].set()

    spray, worker = Spray(id="spray"), Worker(id="worker", num_workers=3)
    wf = (
        WorkflowBuilder(start=spray)
        .add_edge(spray, worker)
        .add_edge(worker, Record("rec", log))
        .build()
    )
    await finish(wf.run(3))
    assert log == [(2, text) for text in ["0a", "0b", "1a", "1b", "2a", "2b"]]


@pytest.mark.parametrize("finishing_first", ["a", "b"])
async def test_outputs_are_ordered_by_superstep_then_executor_then_yield_order(
    finishing_first: str,
) -> None:
    done = {"a": asyncio.Event(), "b": asyncio.Event()}

    class Yielder(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            if self.id != finishing_first:
                other = "b" if self.id == "a" else "a"
                await reached(done[other], f"{other} finished")
            await ctx.yield_output(f"{self.id}1 s{superstep_of(ctx)}")
            await ctx.yield_output(f"{self.id}2 s{superstep_of(ctx)}")
            done[self.id].set()
            if text == "again":
                return
            await ctx.send_message("again")

    class Early(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output(f"fork s{superstep_of(ctx)}")
            await ctx.send_message(text)

    early, a, b = Early(id="fork"), Yielder(id="a"), Yielder(id="b")
    wf = (
        WorkflowBuilder(start=early)
        .add_executor(a)  # executor order: fork, a, b
        .add_executor(b)
        .add_fan_out(early, [b, a])
        .add_edge(a, a)
        .add_edge(b, b)
        .build()
    )
    result = await finish(wf.run("go"))
    # the second round runs with the order events already set: it is ordered anyway
    assert result.outputs == [
        "fork s0",
        "a1 s1",
        "a2 s1",
        "b1 s1",
        "b2 s1",
        "a1 s2",
        "a2 s2",
        "b1 s2",
        "b2 s2",
    ]


async def test_a_chain_runs_one_executor_per_superstep() -> None:
    seen: list[tuple[str, int]] = []

    class Link(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            seen.append((self.id, superstep_of(ctx)))
            if self.id != "c":
                await ctx.send_message(text)

    a, b, c = Link(id="a"), Link(id="b"), Link(id="c")
    await finish(WorkflowBuilder(start=a).add_chain([a, b, c]).build().run("m"))
    assert seen == [("a", 0), ("b", 1), ("c", 2)]


async def test_superstep_completed_events_separate_the_supersteps_on_the_stream() -> None:
    class Link(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            if self.id == "c":
                await ctx.yield_output(text)
            else:
                await ctx.send_message(text)

    a, b, c = Link(id="a"), Link(id="b"), Link(id="c")
    handler_ = WorkflowBuilder(start=a).add_chain([a, b, c]).build().run("m")
    events = await drain(handler_)
    await finish(handler_)

    def describe(event: Any) -> str:
        if isinstance(event, ExecutorInvokedEvent):
            return f"invoked {event.executor_id}"
        if isinstance(event, ExecutorCompletedEvent):
            return f"completed {event.executor_id}"
        if isinstance(event, SuperstepCompletedEvent):
            return f"superstep {event.superstep}"
        if isinstance(event, WorkflowOutputEvent):
            return f"output {event.data} from {event.executor_id}"
        return repr(event)

    assert [describe(e) for e in events] == [
        "invoked a",
        "completed a",
        "superstep 0",
        "invoked b",
        "completed b",
        "superstep 1",
        "invoked c",
        "completed c",
        "superstep 2",
        "output m from c",  # outputs of superstep 2 are delivered at its barrier
    ]


async def test_the_barrier_hook_runs_after_superstep_k_and_before_k_plus_1() -> None:
    started: list[int] = []
    completed: list[int] = []
    at_barrier: list[tuple[int, list[int], list[int]]] = []

    class Link(Executor):
        @handler
        async def on_count(self, n: int, ctx: WorkflowContext) -> None:
            started.append(superstep_of(ctx))
            await asyncio.sleep(0)
            if n > 0:
                await ctx.send_message(n - 1)
            completed.append(superstep_of(ctx))

    fork = Fork(id="fork")
    links = [Link(id=f"l{i}") for i in range(3)]
    builder = WorkflowBuilder(start=fork).add_fan_out(fork, links)
    for link in links:
        builder.add_edge(link, link)

    class AtBarriers(RunObserver):
        def superstep_ended(self, run: RunInfo, superstep: int) -> None:
            at_barrier.append((superstep, list(started), list(completed)))

    handler_ = builder.build(observers=[AtBarriers()]).run(2)
    await finish(handler_)

    # superstep 3 sends nothing: the run ends when it does, with no barrier after it
    assert [k for k, _, _ in at_barrier] == [0, 1, 2]
    for k, seen, done in at_barrier:
        # every link of supersteps 1..k started and completed, and none of k + 1 started
        assert seen == done == sorted(s for s in started if s <= k)
    assert started == [1, 1, 1, 2, 2, 2, 3, 3, 3]


async def test_a_request_for_information_is_published_at_the_barrier() -> None:
    asked = asyncio.Event()
    gate = asyncio.Event()
    got_request = asyncio.Event()
    events: list[Any] = []

    class Asker(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.request_info(text, response_type=int)
            asked.set()
            await gate.wait()

        @response_handler
        async def on_answer(self, question: str, answer: int, ctx: WorkflowContext) -> None:
            await ctx.yield_output((question, answer))

    handler_ = WorkflowBuilder(start=Asker(id="asker")).build().run("how many?")

    async def consume() -> None:
        async for event in handler_.stream_events():
            events.append(event)
            if isinstance(event, RequestInfoEvent):
                got_request.set()

    consumer = asyncio.create_task(consume())
    await reached(asked, "the executor asked")
    await spin()  # the request would be on the stream by now, were it published at once
    assert not any(isinstance(e, RequestInfoEvent) for e in events)

    gate.set()
    await reached(got_request, "the request was published")
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("SuperstepCompletedEvent") < kinds.index("RequestInfoEvent")
    request = next(e for e in events if isinstance(e, RequestInfoEvent))
    await handler_.send_response(request.request_id, 3)
    result = await finish(handler_)
    await consumer
    assert result.outputs == [("how many?", 3)]
