"""G10 no silent hang in executor graphs: a run finishes, fails, or is paused for input.

An executor graph finishes when nothing runs, nothing is queued and no request is
open. Checks, in both modes, that a run with an open request for information is
paused (neither finished nor stalled) until ``send_response`` answers it, also when
several requests are open, when an answer of the wrong type is refused, and when
the caller sends other messages meanwhile; that unknown or already answered
request ids are refused; that ``max_supersteps`` turns an endless cycle into
SuperstepLimitExceeded naming the executor, while cycles that end are fine; that
a partial fan-in and an unroutable message fail the run instead of finishing it;
and that the event stream closes however the run ends.
"""

import asyncio
from typing import Any

import pytest

from stepgraph import (
    Executor,
    RequestInfoEvent,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowHandler,
    handler,
    response_handler,
)
from stepgraph.core import RunStatus
from stepgraph.errors import (
    InvalidResponseError,
    RequestAnsweredError,
    RequestNotFoundError,
    SuperstepLimitExceeded,
    UnroutableEventError,
    WorkflowCancelled,
    WorkflowStalled,
)

from ._helpers import both_modes, drain, failure, finish, spin


class Asker(Executor):
    """Asks one question per item of its input; yields each answer with its question.

    A text (not a list) from the caller is yielded as an aside.
    """

    @handler
    async def on_questions(self, questions: list[str], ctx: WorkflowContext) -> None:
        for question in questions:
            await ctx.request_info(question, response_type=int)

    @handler
    async def on_aside(self, text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"aside {text}")

    @response_handler
    async def on_answer(self, question: str, answer: int, ctx: WorkflowContext) -> None:
        await ctx.yield_output((question, answer))


async def requests_of(handler_: WorkflowHandler, count: int) -> list[RequestInfoEvent]:
    """Read the stream until ``count`` requests were published; the run must still be on."""
    found: list[RequestInfoEvent] = []
    async with asyncio.timeout(5):
        async for event in handler_.stream_events():
            if isinstance(event, RequestInfoEvent):
                found.append(event)
                if len(found) == count:
                    return found
    raise AssertionError(f"the stream closed after {len(found)} of {count} requests")


async def assert_paused(handler_: WorkflowHandler) -> None:
    await spin()  # a finish or a stall would have been decided by now
    assert not handler_.done(), f"the run ended while paused: {handler_.exception()!r}"
    assert handler_._run.state.status is RunStatus.RUNNING


@both_modes
async def test_a_run_with_an_open_request_is_paused_and_finishes_after_the_response(
    mode: str,
) -> None:
    handler_ = WorkflowBuilder(start=Asker(id="asker")).build(mode=mode).run(["how many?"])
    [request] = await requests_of(handler_, 1)
    assert request.data == "how many?"
    assert request.source_executor_id == "asker"
    await assert_paused(handler_)

    await handler_.send_response(request.request_id, 3)
    result = await finish(handler_)
    assert result.outputs == [("how many?", 3)]


@both_modes
async def test_the_run_stays_paused_until_every_open_request_is_answered(mode: str) -> None:
    handler_ = WorkflowBuilder(start=Asker(id="asker")).build(mode=mode).run(["a?", "b?"])
    first, second = await requests_of(handler_, 2)
    await handler_.send_response(second.request_id, 2)
    await assert_paused(handler_)
    await handler_.send_response(second.request_id, 2)  # the same answer again: a no-op
    with pytest.raises(RequestAnsweredError, match=second.request_id):
        await handler_.send_response(second.request_id, 5)  # another answer: refused
    assert issubclass(RequestAnsweredError, RequestNotFoundError)  # the request is not open

    await handler_.send_response(first.request_id, 1)
    result = await finish(handler_)
    assert sorted(result.outputs) == [("a?", 1), ("b?", 2)]


@both_modes
async def test_a_response_of_the_wrong_type_is_refused_and_the_request_stays_open(
    mode: str,
) -> None:
    handler_ = WorkflowBuilder(start=Asker(id="asker")).build(mode=mode).run(["how many?"])
    [request] = await requests_of(handler_, 1)
    with pytest.raises(InvalidResponseError) as info:
        await handler_.send_response(request.request_id, "three")
    assert "int" in str(info.value)
    assert "str" in str(info.value)
    with pytest.raises(RequestNotFoundError):
        await handler_.send_response("no-such-request", 3)
    await assert_paused(handler_)

    await handler_.send_response(request.request_id, 3)
    assert (await finish(handler_)).outputs == [("how many?", 3)]


@both_modes
async def test_a_message_from_the_caller_does_not_end_the_pause(mode: str) -> None:
    handler_ = WorkflowBuilder(start=Asker(id="asker")).build(mode=mode).run(["how many?"])
    [request] = await requests_of(handler_, 1)
    handler_.send_event("meanwhile")  # not an answer: handled, and the run keeps waiting
    await assert_paused(handler_)

    await handler_.send_response(request.request_id, 3)
    result = await finish(handler_)
    assert result.outputs == ["aside meanwhile", ("how many?", 3)]


class Countdown(Executor):
    """Sends n - 1 to itself until 0."""

    def __init__(self, id: str, rounds: list[int]) -> None:
        super().__init__(id)
        self.rounds = rounds

    @handler
    async def on_count(self, n: int, ctx: WorkflowContext) -> None:
        self.rounds.append(n)
        if n > 0:
            await ctx.send_message(n - 1)


@both_modes
async def test_an_endless_cycle_raises_superstep_limit_naming_the_executor(mode: str) -> None:
    class Endless(Executor):
        @handler
        async def on_count(self, n: int, ctx: WorkflowContext) -> None:
            await ctx.send_message(n + 1)

    endless = Endless(id="endless")
    wf = (
        WorkflowBuilder(start=endless)
        .add_edge(endless, endless)
        .build(mode=mode, max_supersteps=20, name="spinner")
    )
    exc = await failure(wf.run(0))
    assert isinstance(exc, SuperstepLimitExceeded)
    assert "max_supersteps=20" in str(exc)
    assert "endless" in str(exc)
    assert "'spinner'" in str(exc)


@both_modes
async def test_cycles_that_end_are_fine(mode: str) -> None:
    rounds: list[int] = []
    loop = Countdown("loop", rounds)
    wf = WorkflowBuilder(start=loop).add_edge(loop, loop).build(mode=mode)
    result = await finish(wf.run(50))
    assert rounds == list(range(50, -1, -1))
    assert result.outputs == []


@both_modes
async def test_a_cycle_exactly_within_max_supersteps_ends(mode: str) -> None:
    rounds: list[int] = []
    loop = Countdown("loop", rounds)
    wf = WorkflowBuilder(start=loop).add_edge(loop, loop).build(mode=mode, max_supersteps=10)
    await finish(wf.run(10))  # supersteps (message generations) 0 .. 10
    assert rounds == list(range(10, -1, -1))
    exc = await failure(wf.run(11))
    assert isinstance(exc, SuperstepLimitExceeded)


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_yielding_an_output_does_not_count_against_max_supersteps(mode: str) -> None:
    class CountdownThenYield(Executor):
        @handler
        async def on_count(self, n: int, ctx: WorkflowContext) -> None:
            if n > 0:
                await ctx.send_message(n - 1)
            else:
                await ctx.yield_output("done")

    loop = CountdownThenYield(id="loop")
    wf = WorkflowBuilder(start=loop).add_edge(loop, loop).build(mode=mode, max_supersteps=10)
    result = await finish(wf.run(10))  # same message flow as the test above, plus an output
    assert result.outputs == ["done"]


@both_modes
async def test_a_partial_fan_in_fails_the_run_instead_of_finishing_it(mode: str) -> None:
    class Start(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(text, target="b")

    class Relay(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(text)

    class Join(Executor):
        @handler
        async def on_batch(self, batch: list[Any], ctx: WorkflowContext) -> None:
            await ctx.yield_output(batch)

    start, b, c = Start(id="start"), Relay(id="b"), Relay(id="c")
    wf = (
        WorkflowBuilder(start=start)
        .add_edge(start, b)
        .add_edge(start, c)
        .add_fan_in([b, c], Join(id="join"))
        .build(mode=mode)
    )
    exc = await failure(wf.run("only b sends"))
    assert isinstance(exc, WorkflowStalled)
    assert "fan-in into 'join'" in str(exc)


@both_modes
async def test_an_unroutable_message_fails_the_run_instead_of_finishing_it(mode: str) -> None:
    class Lost(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(text)  # no edge out of 'lost'

    exc = await failure(WorkflowBuilder(start=Lost(id="lost")).build(mode=mode).run("m"))
    assert isinstance(exc, UnroutableEventError)


@both_modes
@pytest.mark.parametrize("ending", ["finish", "failure", "cancel"])
async def test_the_stream_closes_however_the_run_ends(mode: str, ending: str) -> None:
    gate = asyncio.Event()

    class Ender(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output("before")
            if ending == "cancel":
                await gate.wait()  # never opened: the test cancels the run
            if ending == "failure":
                raise RuntimeError("ended by failure")

    handler_ = WorkflowBuilder(start=Ender(id="ender")).build(mode=mode).run("go")
    if ending == "cancel":
        await spin()
        await handler_.cancel()
    events = await drain(handler_)  # fails the test if the stream never closes
    assert handler_.done()
    if ending == "finish":
        assert (await finish(handler_)).outputs == ["before"]
        assert [e.data for e in events if type(e).__name__ == "WorkflowOutputEvent"] == ["before"]
    elif ending == "failure":
        assert isinstance(await failure(handler_), RuntimeError)
    else:
        assert isinstance(await failure(handler_), WorkflowCancelled)
