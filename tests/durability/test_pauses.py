"""Pauses that survive a restart: a pause is stored before it is announced; a waiting step
starts again and gets its answer; answers carry the request id, are kept before they act,
and a second, different answer is refused.

Every test runs on MemoryStore, SqliteStore and PostgresStore (``conftest.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stepgraph import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    RequestInfoEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from stepgraph.errors import RequestAnsweredError, RequestNotFoundError, StepgraphError
from stepgraph.testing import crash, settled

from .conftest import StoreFactory
from .flows import (
    CALLS,
    Interview,
    NumberedQuestion,
    TwoAskers,
    TwoQuestions,
    Waiting,
    asker_graph,
)

modes = pytest.mark.parametrize("mode", ["superstep", "async"])


async def first_request(handler: object) -> InputRequiredEvent:
    async for event in handler.stream_events():  # type: ignore[attr-defined]
        if isinstance(event, InputRequiredEvent):
            return event
    raise AssertionError("the run ended without asking")


async def requests(handler: object, count: int) -> list[Any]:
    """The ids of the first ``count`` input requests on the stream."""
    asked: list[Any] = []
    async with asyncio.timeout(10):
        async for event in handler.stream_events():  # type: ignore[attr-defined]
            if isinstance(event, InputRequiredEvent):
                asked.append(event.request_id)
                if len(asked) == count:
                    return asked
    raise AssertionError(f"the run ended having asked only {asked}")


@modes
async def test_a_pause_is_stored_before_its_request_reaches_the_stream(
    stores: StoreFactory, mode: str
) -> None:
    store = stores()
    handler = Interview(store=store, mode=mode).run()
    request = await first_request(handler)
    record = await store.get_run(handler.run_id)
    assert record is not None and record.status == "paused"
    assert (await store.list_checkpoints(handler.run_id))[-1].status == "paused"
    assert [r.run_id for r in await store.list_runs(status="paused")] == [handler.run_id]
    handler.send_event(HumanResponseEvent(response="Ada", request_id=request.request_id))
    assert await handler == "hello Ada"
    assert (await store.get_run(handler.run_id)).status == "completed"  # type: ignore[union-attr]


@modes
async def test_a_step_that_asks_and_waits_pauses_in_a_checkpoint_of_its_own(
    stores: StoreFactory, mode: str
) -> None:
    store = stores()
    handler = Waiting(store=store, mode=mode).run()
    request = await first_request(handler)  # asked between two barriers (or in async mode)
    infos = await store.list_checkpoints(handler.run_id)
    assert [info.status for info in infos][-1] == "paused"
    assert [info.superstep for info in infos] == sorted(info.superstep for info in infos)
    await crash(handler)
    resumed = Waiting(store=stores(), mode=mode).resume(handler.run_id)
    resumed.send_event(HumanResponseEvent(response="Al", request_id=request.request_id))
    assert await resumed == "hello Al"
    assert CALLS[f"{handler.run_id}:ask"] == 2  # in flight when it paused: it ran again


@modes
async def test_an_input_request_gets_an_id_that_a_resumed_run_keeps(
    stores: StoreFactory, mode: str
) -> None:
    handler = Interview(store=stores(), mode=mode).run()
    request = await first_request(handler)
    assert isinstance(request.request_id, str) and request.request_id
    await crash(handler)
    resumed = Interview(store=stores(), mode=mode).resume(handler.run_id)
    again = await first_request(resumed)  # announced again to the new caller, same id
    assert again.request_id == request.request_id
    resumed.send_event(HumanResponseEvent(response="Bo", request_id=request.request_id))
    assert await resumed == "hello Bo"
    assert CALLS[f"{handler.run_id}:ask"] == 1  # the asking step did not run again


@modes
async def test_a_paused_run_left_by_its_loop_stays_paused_and_resumes_in_a_new_loop(
    stores: StoreFactory, mode: str, store_kind: str
) -> None:
    if store_kind == "postgres":
        pytest.skip("a PostgreSQL lease lives as long as its loop's session: see test_leases")
    store = stores()

    def first_loop() -> tuple[str, str]:
        async def ask() -> tuple[str, str]:
            handler = Waiting(store=store, mode=mode).run()
            request = await first_request(handler)
            return handler.run_id, request.request_id

        return asyncio.run(ask())  # the loop ends with the run waiting in its step

    run_id, request_id = await asyncio.to_thread(first_loop)
    record = await store.get_run(run_id)
    assert record is not None and record.status == "paused"

    resumed = Waiting(store=stores(), mode=mode).resume(run_id)
    resumed.send_event(HumanResponseEvent(response="Cy", request_id=request_id))  # at once
    assert await resumed == "hello Cy"
    assert CALLS[f"{run_id}:ask"] == 2  # the waiting step ran again from its start
    assert (await store.get_run(run_id)).status == "completed"  # type: ignore[union-attr]


@modes
async def test_a_step_waiting_for_an_answer_runs_again_after_a_crash_and_gets_it(
    stores: StoreFactory, mode: str
) -> None:
    handler = Waiting(store=stores(), mode=mode).run()
    request = await first_request(handler)
    await crash(handler)
    resumed = Waiting(store=stores(), mode=mode).resume(handler.run_id)
    resumed.send_event(HumanResponseEvent(response="Di", request_id=request.request_id))
    assert await resumed == "hello Di"


@modes
async def test_an_answer_is_kept_before_it_acts_so_a_crash_then_never_asks_again(
    stores: StoreFactory, mode: str
) -> None:
    handler = Waiting(store=stores(), mode=mode).run()
    request = await first_request(handler)
    handler.send_event(HumanResponseEvent(response="Ed", request_id=request.request_id))
    await settled(handler)  # the answer is in the store (it is, at once, with an embedded one)
    await crash(handler)  # before the waiting step has acted on the answer
    resumed = Waiting(store=stores(), mode=mode).resume(handler.run_id)
    asked = [e async for e in resumed.stream_events() if isinstance(e, InputRequiredEvent)]
    assert await resumed == "hello Ed"
    assert asked == []  # answered already: not announced again, not asked again


@modes
async def test_the_same_answer_twice_changes_nothing_and_another_answer_is_refused(
    stores: StoreFactory, mode: str
) -> None:
    handler = Interview(store=stores(), mode=mode).run()
    request = await first_request(handler)
    answer = HumanResponseEvent(response="Fa", request_id=request.request_id)
    handler.send_event(answer)
    handler.send_event(HumanResponseEvent(response="Fa", request_id=request.request_id))
    with pytest.raises(RequestAnsweredError, match=str(request.request_id)):
        handler.send_event(HumanResponseEvent(response="Gi", request_id=request.request_id))
    assert issubclass(RequestAnsweredError, StepgraphError)
    assert await handler == "hello Fa"
    assert CALLS[f"{handler.run_id}:greet"] == 1


@modes
async def test_an_answer_sent_without_an_id_is_the_same_answer_sent_again_naming_it(
    stores: StoreFactory, mode: str
) -> None:
    handler = Interview(store=stores(), mode=mode).run()
    request = await first_request(handler)
    handler.send_event(HumanResponseEvent(response="Fa"))  # answers the only open request
    handler.send_event(HumanResponseEvent(response="Fa", request_id=request.request_id))
    with pytest.raises(RequestAnsweredError, match=str(request.request_id)):
        handler.send_event(HumanResponseEvent(response="Gi", request_id=request.request_id))
    assert await handler == "hello Fa"
    assert CALLS[f"{handler.run_id}:greet"] == 1


@modes
async def test_a_paused_graph_resumed_after_a_crash_takes_the_response_sent_at_once(
    stores: StoreFactory, mode: str
) -> None:
    handler = asker_graph(store=stores(), mode=mode).run("how many?")  # type: ignore[attr-defined]
    request_id = None
    async for event in handler.stream_events():
        if isinstance(event, RequestInfoEvent):
            request_id = event.request_id
            break
    assert request_id is not None
    assert (await stores().get_run(handler.run_id)).status == "paused"  # type: ignore[union-attr]
    await crash(handler)
    resumed = asker_graph(store=stores(), mode=mode).resume(handler.run_id)  # type: ignore[attr-defined]
    await resumed.send_response(request_id, 3)  # before its state is restored: it waits
    result = await resumed
    assert result.outputs == [("how many?", 3)]
    assert result.state == {"asked": "how many?"}


async def test_an_answer_naming_a_request_the_run_does_not_have_is_refused(
    stores: StoreFactory,
) -> None:
    handler = Waiting(store=stores()).run()
    request = await first_request(handler)
    with pytest.raises(RequestNotFoundError, match="no-such-request") as refused:
        handler.send_event(HumanResponseEvent(response="Mallory", request_id="no-such-request"))
    assert str(request.request_id) in str(refused.value)  # the open one, named
    handler.send_event(HumanResponseEvent(response="Ed", request_id=request.request_id))
    assert await handler == "hello Ed"


async def test_another_answer_sent_while_a_run_is_restored_is_refused_and_logged(
    stores: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = stores()
    handler = TwoQuestions(store=store).run()
    asked: list[InputRequiredEvent] = []
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            asked.append(event)
            if len(asked) == 2:
                break
            handler.send_event(HumanResponseEvent(response="A", request_id=event.request_id))
    await settled(handler)
    await crash(handler)
    resumed = TwoQuestions(store=stores()).resume(handler.run_id)
    resumed.send_event(HumanResponseEvent(response="other", request_id=asked[0].request_id))
    resumed.send_event(HumanResponseEvent(response="B", request_id=asked[1].request_id))
    assert await resumed == "A+B"  # the first answer stands
    refused = [r.getMessage() for r in caplog.records if r.name == "stepgraph.durability"]
    assert len(refused) == 1 and str(asked[0].request_id) in refused[0]


async def _asked_then_left(make: StoreFactory, graph: bool) -> tuple[str, str]:
    """In an event loop of its own (another thread): start a run, see its prompt, and
    let the loop end behind it (``asyncio.run`` returns), as a caller that exits."""

    async def ask() -> tuple[str, str]:
        store = make()
        handler = (
            asker_graph(store=store).run("how many?")  # type: ignore[attr-defined]
            if graph
            else Interview(store=store).run()
        )
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent | RequestInfoEvent):
                return handler.run_id, str(event.request_id)
        raise AssertionError("no prompt")

    return await asyncio.to_thread(asyncio.run, ask())


@pytest.mark.parametrize("graph", [False, True], ids=["steps", "graph"])
async def test_a_run_whose_loop_ended_at_its_prompt_is_resumed_by_another_store_object(
    stores: StoreFactory, store_kind: str, graph: bool
) -> None:
    if store_kind == "memory":
        pytest.skip("one MemoryStore object is the store: no other object to resume from")
    run_id, request_id = await _asked_then_left(stores, graph)
    store = stores()  # another store object, in this live process: a lease left would say no
    assert (await store.get_run(run_id)).status == "paused"  # type: ignore[union-attr]
    if graph:
        resumed = asker_graph(store=store).resume(run_id)  # type: ignore[attr-defined]
        await resumed.send_response(request_id, 3)
        assert (await resumed).outputs == [("how many?", 3)]
    else:
        resumed = Interview(store=store).resume(run_id)
        resumed.send_event(HumanResponseEvent(response="Li", request_id=request_id))
        assert await resumed == "hello Li"


@modes
async def test_every_request_of_a_pause_is_stored_before_it_is_announced(
    stores: StoreFactory, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The second request of a pause too: answered right after a resume, it is open."""
    handler = TwoAskers(store=stores(), mode=mode).run()
    asked = await requests(handler, 2)
    await crash(handler)
    resumed = TwoAskers(store=stores(), mode=mode).resume(handler.run_id)
    for request_id in reversed(asked):  # before the state is restored
        resumed.send_event(HumanResponseEvent(response=request_id, request_id=request_id))
    async with asyncio.timeout(10):
        assert await resumed in asked
    assert "not delivered" not in caplog.text


@modes
async def test_a_request_id_that_is_an_integer_survives_a_restart_as_one(
    stores: StoreFactory, mode: str
) -> None:
    """Announced once again after the resume (not twice: as 7 and as "7"), answered by 7."""
    handler = NumberedQuestion(store=stores(), mode=mode).run()
    assert (await first_request(handler)).request_id == 7
    await crash(handler)
    resumed = NumberedQuestion(store=stores(), mode=mode).resume(handler.run_id)
    asked: list[object] = []
    async with asyncio.timeout(10):
        async for event in resumed.stream_events():
            if isinstance(event, InputRequiredEvent):
                asked.append(event.request_id)
                resumed.send_event(HumanResponseEvent(response="Ada", request_id=7))
    assert await resumed == "hello Ada"
    assert asked == [7]


def test_a_request_id_is_a_string_or_an_integer() -> None:
    from pydantic import ValidationError

    for bad in ([1, 2], {"id": 1}, 1.5, True):
        with pytest.raises(ValidationError, match="request_id"):
            InputRequiredEvent(prefix="?", request_id=bad)
        with pytest.raises(ValidationError, match="request_id"):
            HumanResponseEvent(response="?", request_id=bad)


class MixedIds(Workflow):
    """Asks two questions, one with an integer id of its own, one with the run's id."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="n?", request_id=7))
        ctx.write_event_to_stream(InputRequiredEvent(prefix="s?"))
        first = await ctx.wait_for_event(HumanResponseEvent)
        second = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=[first.response, second.response])


@modes
async def test_an_unknown_id_among_integer_and_string_ones_is_not_found_naming_them(
    stores: StoreFactory, mode: str
) -> None:
    handler = MixedIds(store=stores(), mode=mode).run()
    asked = await requests(handler, 2)
    with pytest.raises(RequestNotFoundError, match=r"no open request 'nope' \(open: \[7, '"):
        handler.send_event(HumanResponseEvent(response="?", request_id="nope"))
    for request_id in asked:
        handler.send_event(HumanResponseEvent(response=str(request_id), request_id=request_id))
    async with asyncio.timeout(10):
        assert await handler == ["7", asked[1]]
