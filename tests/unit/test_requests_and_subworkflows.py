"""Requests for information and sub-workflows in executor graphs.

``ctx.request_info`` puts a ``RequestInfoEvent`` (request id, data, source
executor, response type) on the stream and pauses the run, which is not a
stall; ``handler.send_response`` answers it: a wrong type raises
``InvalidResponseError`` and leaves the request open, an unknown or answered id
raises ``RequestNotFoundError``, an ended run raises ``RunFinishedError``, and
the executor's ``@response_handler`` gets the request's data with the answer.
Several open requests may be answered in any order. A request from an executor
with out-edges goes to the caller, never along the edges.

``WorkflowExecutor`` runs an inner graph per message: its outputs go on along
the node's out-edges, its requests surface to the outer caller with the same
id and the answers go back, its errors fail the outer run with notes naming
both workflows, and cancelling the outer run ends the inner one.
"""

from __future__ import annotations

from typing import Any

import pytest

from stepgraph import (
    Executor,
    GraphWorkflow,
    RequestInfoEvent,
    RetryPolicy,
    RunResult,
    SuperstepCompletedEvent,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowExecutor,
    WorkflowHandler,
    WorkflowOutputEvent,
    executor,
    handler,
    response_handler,
)
from stepgraph.errors import (
    InvalidResponseError,
    RequestNotFoundError,
    RunFinishedError,
    WorkflowCancelled,
    WorkflowRuntimeError,
)

MODES = pytest.mark.parametrize("mode", ["superstep", "async"])


class Approver(Executor):
    """Asks whether to approve each text; yields ``"<text>: <answer>"``.

    The ids ``request_info`` returned are recorded in ``asked``.
    """

    def __init__(self, id: str = "approver") -> None:
        super().__init__(id)
        self.asked: list[str] = []

    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        self.asked.append(await ctx.request_info(text, response_type=bool))

    @response_handler
    async def on_answer(self, text: str, approved: bool, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"{text}: {approved}")


async def next_request(events: Any) -> RequestInfoEvent:
    """Read the stream up to the next RequestInfoEvent."""
    async for event in events:
        if isinstance(event, RequestInfoEvent):
            return event
    raise AssertionError("the stream ended without a request")


@executor(id="splitter")
async def splitter(text: str, ctx: WorkflowContext[str]) -> None:
    for word in text.split():
        await ctx.send_message(word)


def approval_graph(mode: str, approver: Approver | None = None) -> GraphWorkflow:
    return WorkflowBuilder(start=approver or Approver(), name="approval").build(mode=mode)


# -- request_info -------------------------------------------------------------------------------


@MODES
async def test_request_info_puts_a_request_with_its_fields_on_the_stream(mode: str) -> None:
    approver = Approver()
    run = approval_graph(mode, approver).run("deploy")
    events = run.stream_events()
    request = await next_request(events)
    assert request.request_id == approver.asked[0]  # the id request_info returned
    assert request.data == "deploy"
    assert request.source_executor_id == "approver"
    assert request.response_type == "bool"
    await run.send_response(request.request_id, True)
    assert [e.data async for e in events if isinstance(e, WorkflowOutputEvent)] == ["deploy: True"]
    assert (await run).outputs == ["deploy: True"]


@MODES
async def test_an_open_request_pauses_the_run_instead_of_stalling_it(mode: str) -> None:
    run = approval_graph(mode).run("deploy")
    request = await next_request(run.stream_events())
    # a stall is detected in the same kernel step that publishes the request
    assert not run.done()
    await run.send_response(request.request_id, False)
    assert (await run).outputs == ["deploy: False"]


async def test_in_superstep_mode_the_request_appears_after_the_barrier_of_its_superstep() -> None:
    run = approval_graph("superstep").run("deploy")
    seen: list[str] = []
    async for event in run.stream_events():
        if isinstance(event, SuperstepCompletedEvent):
            seen.append(f"superstep {event.superstep}")
        elif isinstance(event, RequestInfoEvent):
            seen.append("request")
            await run.send_response(event.request_id, True)
    assert seen[:2] == ["superstep 0", "request"]
    await run


@MODES
async def test_a_response_of_the_wrong_type_is_rejected_and_the_request_stays_open(
    mode: str,
) -> None:
    run = approval_graph(mode).run("deploy")
    request = await next_request(run.stream_events())
    with pytest.raises(InvalidResponseError) as info:
        await run.send_response(request.request_id, "yes")
    message = str(info.value)
    assert "from executor 'approver' expects a bool, got str ('yes')" in message
    assert "the request stays open" in message
    assert isinstance(info.value, TypeError)
    await run.send_response(request.request_id, True)
    assert (await run).outputs == ["deploy: True"]


@MODES
async def test_an_unknown_request_id_is_rejected_naming_the_open_ones(mode: str) -> None:
    run = approval_graph(mode).run("deploy")
    request = await next_request(run.stream_events())
    with pytest.raises(RequestNotFoundError) as info:
        await run.send_response("no-such-id", True)
    assert "has no open request 'no-such-id'" in str(info.value)
    assert request.request_id in str(info.value)
    await run.send_response(request.request_id, True)
    await run


@MODES
async def test_a_request_answered_twice_is_not_found_the_second_time(mode: str) -> None:
    wf = WorkflowBuilder(start=splitter).add_edge(splitter, Approver()).build(mode=mode)
    run = wf.run("a b")
    events = run.stream_events()
    first = await next_request(events)
    second = await next_request(events)
    await run.send_response(first.request_id, True)
    with pytest.raises(RequestNotFoundError):
        await run.send_response(first.request_id, False)
    await run.send_response(second.request_id, False)
    assert (await run).outputs == ["a: True", "b: False"]


@MODES
async def test_answering_after_the_run_ended_raises_run_finished(mode: str) -> None:
    run = approval_graph(mode).run("deploy")
    request = await next_request(run.stream_events())
    await run.send_response(request.request_id, True)
    await run
    with pytest.raises(RunFinishedError, match="has already ended"):
        await run.send_response(request.request_id, True)


@MODES
async def test_several_open_requests_can_be_answered_in_any_order(mode: str) -> None:
    approver = Approver()
    wf = WorkflowBuilder(start=splitter).add_edge(splitter, approver).build(mode=mode)
    run = wf.run("one two three")
    events = run.stream_events()
    requests = [await next_request(events) for _ in range(3)]
    assert [r.data for r in requests] == ["one", "two", "three"]
    answers = {"one": True, "two": False, "three": True}
    for request in reversed(requests):
        await run.send_response(request.request_id, answers[request.data])
    result = await run
    assert result.outputs == ["three: True", "two: False", "one: True"]  # in answer order


@MODES
async def test_request_info_without_a_response_handler_for_the_type_raises_at_once(
    mode: str,
) -> None:
    caught: list[str] = []

    class Careless(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            try:
                await ctx.request_info(text, response_type=int)
            except WorkflowRuntimeError as exc:
                caught.append(str(exc))
                raise

        @response_handler
        async def on_answer(self, text: str, approved: bool, ctx: WorkflowContext) -> None: ...

    wf = WorkflowBuilder(start=Careless(id="careless")).build(mode=mode)
    with pytest.raises(WorkflowRuntimeError):
        await wf.run("x")
    assert caught == [
        "executor 'careless' asked for a int with request_info but has no @response_handler "
        "taking int"
    ]


@MODES
async def test_a_request_from_an_executor_with_out_edges_goes_to_the_caller_only(
    mode: str,
) -> None:
    conditions_saw: list[object] = []

    def long_text(message: object) -> bool:
        conditions_saw.append(message)
        return isinstance(message, str) and len(message) > 3

    class AskAndPass(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.request_info(text, response_type=bool)
            await ctx.send_message(text)

        @response_handler
        async def on_answer(self, text: str, ok: bool, ctx: WorkflowContext) -> None:
            await ctx.yield_output(f"answered {ok}")

    @executor(id="tail")
    async def tail(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"tail got {text}")

    ask = AskAndPass(id="ask")
    for builder in (
        WorkflowBuilder(start=ask).add_edge(ask, tail),
        WorkflowBuilder(start=ask).add_edge(ask, tail, condition=long_text),
    ):
        run = builder.build(mode=mode).run("hello")
        request = await next_request(run.stream_events())
        await run.send_response(request.request_id, True)
        result = await run
        assert sorted(result.outputs) == ["answered True", "tail got hello"]
    assert conditions_saw == ["hello"]  # the condition never saw the RequestInfoEvent


# -- sub-workflows ------------------------------------------------------------------------------


@executor(id="twice")
async def twice(text: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output(f"{text}-1")
    await ctx.yield_output(f"{text}-2")


def collector(id: str, seen: list[str]) -> Any:
    async def collect(text: str, ctx: WorkflowContext) -> None:
        seen.append(text)
        await ctx.yield_output(f"outer: {text}")

    return executor(collect, id=id)


@MODES
async def test_inner_outputs_are_sent_on_along_the_out_edges_of_the_sub_workflow_node(
    mode: str,
) -> None:
    inner = WorkflowBuilder(start=twice, name="inner").build(mode=mode)
    sub = WorkflowExecutor(inner, id="sub")
    seen: list[str] = []
    after = collector("after", seen)
    wf = WorkflowBuilder(start=splitter, name="outer").add_chain([splitter, sub, after])
    result: RunResult = await wf.build(mode=mode).run("a b")
    assert seen == ["a-1", "a-2", "b-1", "b-2"]  # per message, in yield order
    assert result.outputs == [f"outer: {text}" for text in seen]  # inner outputs are not outer's


def test_a_sub_workflow_node_is_named_after_the_inner_workflow_by_default() -> None:
    inner = WorkflowBuilder(start=twice, name="doubler").build()
    assert WorkflowExecutor(inner).id == "doubler"


async def answer_all(run: WorkflowHandler, answer: Any) -> list[RequestInfoEvent]:
    """Answer every request on the stream with ``answer(request)``; return the requests."""
    requests: list[RequestInfoEvent] = []
    async for event in run.stream_events():
        if isinstance(event, RequestInfoEvent):
            requests.append(event)
            await run.send_response(event.request_id, answer(event))
    return requests


@MODES
async def test_inner_requests_surface_to_the_outer_caller_and_answers_go_back(mode: str) -> None:
    approver = Approver("inner-approver")
    inner = approval_graph(mode, approver)
    sub = WorkflowExecutor(inner, id="sub")
    seen: list[str] = []
    after = collector("after", seen)
    wf = WorkflowBuilder(start=splitter, name="outer").add_chain([splitter, sub, after])
    run = wf.build(mode=mode).run("red green")
    requests = await answer_all(run, lambda request: request.data == "red")
    assert [r.request_id for r in requests] == approver.asked  # the same ids as inside
    assert [(r.data, r.source_executor_id, r.response_type) for r in requests] == [
        ("red", "sub", "bool"),
        ("green", "sub", "bool"),
    ]
    assert (await run).outputs == ["outer: red: True", "outer: green: False"]
    assert seen == ["red: True", "green: False"]


class AsksThenFailsOnce(Approver):
    """An Approver whose first answer handler fails (once, over all its runs)."""

    failed = False

    @response_handler
    async def on_answer(self, text: str, approved: bool, ctx: WorkflowContext) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("flaky")
        await ctx.yield_output(f"{text}: {approved}")


@MODES
async def test_a_retried_sub_workflow_gets_the_answer_already_given_and_asks_nothing_again(
    mode: str,
) -> None:
    approver = AsksThenFailsOnce("inner-approver")
    inner = WorkflowBuilder(start=approver, name="inner").build(mode=mode)
    sub = WorkflowExecutor(inner, id="sub", retry_policy=RetryPolicy(max_attempts=2))
    after = collector("after", [])
    run = WorkflowBuilder(start=sub, name="outer").add_edge(sub, after).build(mode=mode).run("x")
    requests = await answer_all(run, lambda request: True)
    assert (await run).outputs == ["outer: x: True"]
    assert approver.failed and len(requests) == 1  # the retry ran the inner workflow again:
    assert approver.asked == [requests[0].request_id] * 2  # it asked again, with the same
    # id, answered already: the answer went to it, the caller saw one request


@MODES
async def test_a_wrong_answer_to_an_inner_request_is_rejected_by_the_outer_handler(
    mode: str,
) -> None:
    sub = WorkflowExecutor(approval_graph(mode), id="sub")
    after = collector("after", [])
    run = WorkflowBuilder(start=sub, name="outer").add_edge(sub, after).build(mode=mode).run("x")
    request = await next_request(run.stream_events())
    with pytest.raises(InvalidResponseError, match="expects a bool, got int"):
        await run.send_response(request.request_id, 1)
    await run.send_response(request.request_id, True)
    assert (await run).outputs == ["outer: x: True"]


@MODES
async def test_an_inner_error_fails_the_outer_run_with_notes_naming_both_workflows(
    mode: str,
) -> None:
    @executor(id="boom")
    async def boom(text: str, ctx: WorkflowContext) -> None:
        raise ValueError(f"cannot handle {text!r}")

    inner = WorkflowBuilder(start=boom, name="inner-graph").build(mode=mode)
    sub = WorkflowExecutor(inner, id="sub")
    wf = WorkflowBuilder(start=sub, name="outer-graph").build(mode=mode)
    with pytest.raises(ValueError, match="cannot handle 'x'") as info:
        await wf.run("x")
    notes = "\n".join(info.value.__notes__)
    assert "executor 'boom' of workflow 'inner-graph'" in notes
    assert "sub-workflow 'inner-graph', run by executor 'sub' of workflow 'outer-graph'" in notes
    assert "executor 'sub' of workflow 'outer-graph'" in notes


@MODES
async def test_cancelling_the_outer_run_ends_an_inner_run_waiting_for_an_answer(
    mode: str,
) -> None:
    inner_runs: list[Any] = []

    class Recorder(Approver):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            inner_runs.append(ctx._run)  # test hook: the inner run's shell
            await ctx.request_info(text, response_type=bool)

    sub = WorkflowExecutor(WorkflowBuilder(start=Recorder(), name="inner").build(mode=mode))
    run = WorkflowBuilder(start=sub, name="outer").build(mode=mode).run("x")
    await next_request(run.stream_events())
    [inner_run] = inner_runs
    assert not inner_run.done
    await run.cancel()
    with pytest.raises(WorkflowCancelled):
        await run
    assert inner_run.done


@MODES
async def test_a_request_event_written_to_the_stream_by_hand_opens_nothing_and_pauses_nothing(
    mode: str,
) -> None:
    class Announcer(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext[Any]) -> None:
            ctx.write_event_to_stream(RequestInfoEvent(request_id="by-hand", data=text))
            await ctx.yield_output(text)

    handler_ = WorkflowBuilder(start=Announcer(id="a")).build(mode=mode).run("hi")
    seen = [ev async for ev in handler_.stream_events()]
    result = await handler_  # finished: a hand-written request is only an event
    assert result.outputs == ["hi"]
    assert [ev.request_id for ev in seen if isinstance(ev, RequestInfoEvent)] == ["by-hand"]
    with pytest.raises(RunFinishedError):
        await handler_.send_response("by-hand", 1)


@MODES
async def test_a_request_from_a_task_that_outlives_its_handler_fails_the_task_not_the_run(
    mode: str,
) -> None:
    import asyncio

    errors: list[BaseException] = []
    tasks: list[asyncio.Task[None]] = []

    class Lingers(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext[Any]) -> None:
            async def later() -> None:
                await asyncio.sleep(0)
                try:
                    await ctx.request_info(text, response_type=str)
                except WorkflowRuntimeError as exc:
                    errors.append(exc)

            tasks.append(asyncio.get_running_loop().create_task(later()))
            await ctx.yield_output(text)

        @response_handler
        async def on_answer(self, question: str, answer: str, ctx: WorkflowContext) -> None:
            raise AssertionError("never asked")

    result = await WorkflowBuilder(start=Lingers(id="l")).build(mode=mode).run("hi")
    await asyncio.gather(*tasks)
    assert result.outputs == ["hi"]  # the run finished normally
    assert len(errors) == 1 and "after the handler had returned" in str(errors[0])
