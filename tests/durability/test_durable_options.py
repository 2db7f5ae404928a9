"""Durable runs' options and rules: run ids as idempotency keys, idempotency keys for side
effects, serializers and what cannot be stored, changed graphs, several store objects and
coordinators.

Every test runs on MemoryStore, SqliteStore and PostgresStore (``conftest.py``) unless it
says otherwise.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
import warnings
from typing import Any

import pytest

from stepgraph import (
    Context,
    Event,
    Executor,
    HumanResponseEvent,
    InputRequiredEvent,
    RequestInfoEvent,
    RetryPolicy,
    RunObserver,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    step,
)
from stepgraph.durability.checkpoints import decode_value, encode_value
from stepgraph.durability.serializer import serializer_named
from stepgraph.errors import (
    CheckpointError,
    RecordedError,
    RequestNotFoundError,
    RunIdConflictError,
    RunLockedError,
    SerializationError,
    StepgraphError,
    WorkflowCancelled,
    WorkflowStalled,
)
from stepgraph.stores import PostgresStore, SqliteStore
from stepgraph.testing import crash, settled
from tests.pg import PG_DSN

from .conftest import StoreFactory
from .flows import CALLS, GATES, Chain, Done, Go, Reached, Waiting, asker_graph, gate

modes = pytest.mark.parametrize("mode", ["superstep", "async"])


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


# -- run ids ------------------------------------------------------------------------------------


@modes
async def test_a_run_id_names_the_run_and_a_second_run_with_it_follows_the_first(
    stores: StoreFactory, mode: str
) -> None:
    tag = new_tag()
    run_id = f"order-{tag}"
    first = Chain(store=stores(), mode=mode).run(run_id=run_id, tag=tag, hops=3)
    assert first.run_id == run_id
    second = Chain(store=stores(), mode=mode).run(run_id=run_id, tag=tag, hops=99)
    assert await first == 6
    assert await second == 6  # the first run's result, never a mix with new work
    assert CALLS[f"{tag}:start"] == 1
    third = Chain(store=stores(), mode=mode).run(run_id=run_id, tag=tag, hops=99)
    assert await third == 6  # completed: its stored result, nothing runs
    assert CALLS[f"{tag}:start"] == 1
    assert [r.run_id for r in await stores().list_runs()] == [run_id]


class Declined(Workflow):
    """Fails its first attempt ever (per tag), then succeeds."""

    @step
    async def pay(self, ctx: Context, ev: Go) -> StopEvent:
        CALLS[f"{ev.tag}:pay"] += 1
        if CALLS[f"{ev.tag}:pay"] == 1:
            raise ValueError("card declined")
        return StopEvent(result="paid")


async def test_a_run_id_of_a_failed_run_gives_its_failure_and_runs_nothing_until_resumed(
    stores: StoreFactory,
) -> None:
    tag = new_tag()
    with pytest.raises(ValueError, match="card declined"):
        await Declined(store=stores()).run(run_id=f"order-{tag}", tag=tag)
    with pytest.raises(RecordedError, match="ValueError: card declined"):  # as stored
        await Declined(store=stores()).run(run_id=f"order-{tag}", tag=tag)
    assert CALLS[f"{tag}:pay"] == 1
    assert (await stores().get_run(f"order-{tag}")).status == "failed"
    assert await Declined(store=stores()).resume(f"order-{tag}") == "paid"  # resume goes on
    assert await Declined(store=stores()).run(run_id=f"order-{tag}", tag=tag) == "paid"
    assert CALLS[f"{tag}:pay"] == 2


async def test_a_run_id_of_a_cancelled_run_gives_its_cancel(stores: StoreFactory) -> None:
    tag = new_tag()
    gate(tag)
    first = Chain(store=stores()).run(run_id=f"order-{tag}", tag=tag, hops=3, stop_at=1)
    async for event in first.stream_events():
        if isinstance(event, Reached) and event.n == 1:
            break
    await first.cancel()
    with pytest.raises(WorkflowCancelled):
        await Chain(store=stores()).run(run_id=f"order-{tag}", tag=tag, hops=3)
    assert CALLS[f"{tag}:hop:2"] == 0
    GATES[tag].set()
    assert await Chain(store=stores()).resume(f"order-{tag}") == 6


class Other(Workflow):
    """Another workflow (a start step as Chain has, of other types)."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result="other")


async def test_a_run_id_of_another_workflows_run_is_refused_never_answered_by_that_run(
    stores: StoreFactory,
) -> None:
    tag = new_tag()
    run_id = f"order-{tag}"
    assert await Chain(store=stores()).run(run_id=run_id, tag=tag, hops=2) == 3
    with pytest.raises(RunIdConflictError, match=f"{run_id}.*workflow 'Chain'.*'Other'"):
        await Other(store=stores()).run(run_id=run_id)
    with pytest.raises(CheckpointError, match=f"{run_id}.*of workflow 'Chain', not of 'Other'"):
        await Other(store=stores()).resume(run_id)
    assert [(r.run_id, r.workflow) for r in await stores().list_runs()] == [(run_id, "Chain")]
    assert await Chain(store=stores()).resume(run_id) == 3  # its own workflow: as before


async def test_a_run_id_of_a_run_going_on_here_of_another_workflow_is_refused(
    stores: StoreFactory,
) -> None:
    tag = new_tag()
    gate(tag)
    going = Chain(store=stores()).run(run_id=f"order-{tag}", tag=tag, hops=3, stop_at=1)
    async for event in going.stream_events():
        if isinstance(event, Reached) and event.n == 1:
            break
    with pytest.raises(RunIdConflictError, match="workflow 'Chain'"):
        Other(store=stores()).run(run_id=f"order-{tag}")
    GATES[tag].set()
    assert await going == 6


async def test_a_new_run_on_a_used_store_runs_its_steps_afresh(stores: StoreFactory) -> None:
    store = stores()
    tag = new_tag()
    one = Chain(store=store).run(tag=tag, hops=2)
    two = Chain(store=store).run(tag=tag, hops=2)
    assert await one == 3 and await two == 3
    assert one.run_id != two.run_id
    assert CALLS[f"{tag}:start"] == 2


# -- idempotency keys ---------------------------------------------------------------------------

KEYS: dict[str, list[tuple[str, int]]] = {}
"""Idempotency keys each run's steps saw, with the attempt, by run tag."""


class Tagged(StartEvent):
    tag: str


class Job(Event):
    tag: str
    n: int


class Charges(Workflow):
    """``charge`` records its key; its first attempt on job 0 fails; it is held on job 1."""

    @step
    async def start(self, ctx: Context, ev: Tagged) -> None:
        ctx.send_event(Job(tag=ev.tag, n=0))
        ctx.send_event(Job(tag=ev.tag, n=1))

    @step(num_workers=2, retry_policy=RetryPolicy(max_attempts=2))
    async def charge(self, ctx: Context, ev: Job) -> Done:
        seen = KEYS.setdefault(ev.tag, [])
        seen.append((ctx.idempotency_key, ev.n))
        if ev.n == 0 and sum(1 for _, n in seen if n == 0) == 1:
            raise ConnectionError("the payment service timed out")
        if ev.n == 1:
            ctx.write_event_to_stream(Reached(n=1))
            await GATES[ev.tag].wait()
        return Done(i=ev.n)

    @step
    async def total(self, ctx: Context, ev: Done) -> StopEvent | None:
        batch = ctx.collect_events(ev, [Done, Done])
        return None if batch is None else StopEvent(result=sorted(d.i for d in batch))


@modes
async def test_an_idempotency_key_is_stable_across_attempts_and_resumes_and_differs_otherwise(
    stores: StoreFactory, mode: str
) -> None:
    tag = new_tag()
    gate(tag)
    handler = Charges(store=stores(), mode=mode).run(start_event=Tagged(tag=tag))
    async for event in handler.stream_events():
        if isinstance(event, Reached):  # job 1 is held (job 0: failed once, retried, done)
            break
    await settled(handler)
    await crash(handler)
    gate(tag).set()
    assert await Charges(store=stores(), mode=mode).resume(handler.run_id) == [0, 1]
    by_job: dict[int, set[str]] = {}
    for key, n in KEYS[tag]:
        by_job.setdefault(n, set()).add(key)
    assert len(by_job[0]) == 1  # both attempts of job 0: one key
    assert len(by_job[1]) == 1  # job 1 before the crash and after the resume: one key
    assert by_job[0] != by_job[1]  # another message: another key
    [key] = by_job[1]
    assert key.startswith(f"{handler.run_id}:charge:")  # another run: another key


# -- serializers ----------------------------------------------------------------------------------


class Opaque:
    """A value JSON cannot hold (no codec for it), that pickle can."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.n == self.n

    __hash__ = None  # type: ignore[assignment]


class Carry(Event):
    thing: object


class Carrier(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Carry:
        return Carry(thing=Opaque(7))

    @step
    async def finish(self, ctx: Context, ev: Carry) -> StopEvent:
        return StopEvent(result=ev.thing)


class Locked(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Carry:
        await ctx.store.set("lock", threading.Lock())
        return Carry(thing=1)

    @step
    async def finish(self, ctx: Context, ev: Carry) -> StopEvent:
        return StopEvent(result="done")


@modes
async def test_pickle_stores_what_json_cannot_and_json_refuses_it_naming_the_step_and_type(
    stores: StoreFactory, mode: str
) -> None:
    store = stores()
    assert await Carrier(store=store, mode=mode, serializer="pickle").run() == Opaque(7)
    failing = Carrier(store=store, mode=mode).run()
    with pytest.raises(SerializationError) as raised:
        await failing
    message = str(raised.value)
    assert "'start'" in message and "Carry" in message and "Opaque" in message
    assert (await store.get_run(failing.run_id)).status == "failed"  # type: ignore[union-attr]


class Starts(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result="done")


@modes
async def test_a_start_event_json_cannot_hold_creates_no_run_and_the_error_names_the_run(
    stores: StoreFactory, mode: str
) -> None:
    store = stores()
    handler = Starts(store=store, mode=mode).run(thing=Opaque(1), run_id="cannot-start")
    with pytest.raises(SerializationError) as raised:
        await handler
    message = str(raised.value)
    assert "run 'cannot-start' of workflow 'Starts' cannot start" in message, message
    assert "StartEvent" in message and "Opaque" in message, message
    assert await store.get_run("cannot-start") is None  # nothing partial is stored
    with pytest.raises(SerializationError, match=r"'cannot-start'.*Opaque"):
        await Starts(store=store, mode=mode).submit(thing=Opaque(2), run_id="cannot-start")
    assert await store.list_runs() == []
    assert await Starts(store=store, mode=mode).run(run_id="cannot-start") == "done"


NOT_UTF8 = os.fsdecode(b"r\xe9sum\xe9.csv")  # a file name as os.listdir gives it


class Names(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Carry:
        return Carry(thing=NOT_UTF8)

    @step
    async def finish(self, ctx: Context, ev: Carry) -> StopEvent:
        return StopEvent(result=ev.thing)


@modes
async def test_json_refuses_a_str_utf8_cannot_hold_naming_the_step_and_event(
    stores: StoreFactory, mode: str
) -> None:
    store = stores()
    failing = Names(store=store, mode=mode).run()
    with pytest.raises(SerializationError, match="surrogates not allowed") as raised:
        await failing
    assert "'start'" in str(raised.value) and "Carry" in str(raised.value)
    assert (await store.get_run(failing.run_id)).status == "failed"  # type: ignore[union-attr]
    assert await Names(store=store, mode=mode, serializer="pickle").run() == NOT_UTF8


class AsksBadly(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix=f"open {NOT_UTF8}?"))
        await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent()


@modes
async def test_a_prompt_json_cannot_hold_fails_the_run_naming_the_step_and_event(
    stores: StoreFactory, mode: str
) -> None:
    failing = AsksBadly(store=stores(), mode=mode).run()
    with pytest.raises(SerializationError) as raised:
        await failing
    message = str(raised.value)
    assert "step 'ask'" in message and "InputRequiredEvent" in message
    assert "a str holds what UTF-8 cannot" in message


class Unparsable(Workflow):
    @step
    async def read(self, ctx: Context, ev: StartEvent) -> StopEvent:
        raise ValueError(f"cannot parse {NOT_UTF8}")


@modes
async def test_a_step_error_whose_text_utf8_cannot_hold_fails_the_run_with_that_error(
    stores: StoreFactory, mode: str
) -> None:
    """Its failure is stored with that text escaped (it is text, not a value of the run)."""
    store = stores()
    failing = Unparsable(store=store, mode=mode).run()
    with pytest.raises(ValueError, match="cannot parse"):
        await failing
    assert (await store.get_run(failing.run_id)).status == "failed"  # type: ignore[union-attr]
    with pytest.raises(RecordedError, match=r"cannot parse r\\udce9sum\\udce9\.csv"):
        await store.result(failing.run_id)


class RefusesStarts(RunObserver):
    def run_started(self, run: Any) -> None:
        raise OSError("cannot write the log")


async def test_an_observer_refusing_a_runs_start_fails_it_before_anything_is_stored(
    stores: StoreFactory,
) -> None:
    store = stores()
    with pytest.raises(OSError, match="cannot write the log"):
        await Names(store=store, observers=[RefusesStarts()]).run(run_id="refused")
    assert await store.get_run("refused") is None  # nothing a resume would run


UNPICKLED: list[str] = []


def _unpickled(what: str) -> None:
    UNPICKLED.append(what)


class Planted:
    """What someone who can write to the store plants there: a pickle that runs code."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_unpickled, ("code ran",))


async def test_a_workflow_on_json_never_unpickles_what_its_store_holds(
    stores: StoreFactory,
) -> None:
    UNPICKLED.clear()
    store = stores()
    handler = Carrier(store=store, serializer="pickle").run()
    assert await handler == Opaque(7)
    run_id = handler.run_id
    first = (await store.list_checkpoints(run_id))[0].id
    with pytest.raises(CheckpointError, match="written with pickle") as raised:
        await Carrier(store=stores()).resume(run_id, checkpoint_id=first)
    assert run_id in str(raised.value)
    with pytest.raises(CheckpointError, match="written with pickle"):
        await store.result(run_id)  # a JSON reader, by default
    assert await store.result(run_id, serializer="pickle") == Opaque(7)
    assert await Carrier(store=stores(), serializer="pickle").run(run_id=run_id) == Opaque(7)
    # a record planted with the pickle byte set is refused, and nothing of it runs
    planted = encode_value(Planted(), serializer_named("pickle"), "a planted value")
    with pytest.raises(CheckpointError, match="written with pickle"):
        decode_value(planted, "a chunk", run_id=run_id)
    assert UNPICKLED == []
    decode_value(planted, "a chunk", run_id=run_id, trusted=serializer_named("pickle"))
    assert UNPICKLED == ["code ran"]  # (what trusting pickle means)


@modes
async def test_a_state_value_that_cannot_be_stored_fails_the_run_naming_the_key(
    stores: StoreFactory, mode: str
) -> None:
    store = stores()
    handler = Locked(store=store, mode=mode).run()
    with pytest.raises(SerializationError, match="'lock'") as raised:
        await handler
    assert "lock" in str(raised.value).lower()
    assert (await store.get_run(handler.run_id)).status == "failed"  # type: ignore[union-attr]
    checkpoints = await store.list_checkpoints(handler.run_id)
    assert checkpoints, "the checkpoints before it stay"
    # nothing partial: each stored checkpoint still reads back (a fork from the first runs)
    fork = Locked(store=store, mode=mode).resume(handler.run_id, checkpoint_id=checkpoints[0].id)
    with pytest.raises(SerializationError):
        await fork


async def test_a_serialization_error_is_never_retried_by_a_retry_policy(
    stores: StoreFactory,
) -> None:
    calls: list[int] = []

    class Retrying(Workflow):
        @step(retry_policy=RetryPolicy(max_attempts=5))
        async def start(self, ctx: Context, ev: StartEvent) -> Carry:
            calls.append(1)
            return Carry(thing=Opaque(1))

        @step
        async def finish(self, ctx: Context, ev: Carry) -> StopEvent:
            return StopEvent(result=None)

    with pytest.raises(SerializationError):
        await Retrying(store=stores()).run()
    assert calls == [1]


# -- changed graphs -----------------------------------------------------------------------------


class Two(Workflow):
    """``first`` then ``second``; held in ``second`` for the test to crash it there."""

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Carry:
        return Carry(thing="x")

    @step
    async def second(self, ctx: Context, ev: Carry) -> StopEvent:
        ctx.write_event_to_stream(Reached(n=1))
        await GATE[0].wait()  # type: ignore[attr-defined]
        return StopEvent(result="two")


class TwoRenamed(Workflow):
    """``Two`` with ``second`` renamed ``other``: the stored run's step is gone (a deploy
    changed it: its runs are made with ``name="Two"``)."""

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Carry:
        return Carry(thing="x")

    @step
    async def other(self, ctx: Context, ev: Carry) -> StopEvent:
        return StopEvent(result="other")


GATE: list[object] = []


async def held_in_second(stores: StoreFactory) -> str:
    GATE[:] = [asyncio.Event()]
    handler = Two(store=stores()).run()
    async for event in handler.stream_events():
        if isinstance(event, Reached):  # second is running, held
            break
    await crash(handler)
    return handler.run_id


async def test_a_strict_resume_of_a_changed_graph_names_each_removed_step_and_runs_nothing(
    stores: StoreFactory,
) -> None:
    run_id = await held_in_second(stores)
    store = stores()
    before = await store.list_checkpoints(run_id)
    with pytest.raises(CheckpointError, match="'second'") as raised:
        await TwoRenamed(store=store, name="Two").resume(run_id)
    assert run_id in str(raised.value)
    assert await store.list_checkpoints(run_id) == before
    GATE[0].set()  # type: ignore[attr-defined]
    assert await Two(store=stores()).resume(run_id) == "two"  # the old code still can


async def test_a_lenient_resume_drops_the_removed_steps_messages_with_a_warning(
    stores: StoreFactory,
) -> None:
    run_id = await held_in_second(stores)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handler = TwoRenamed(store=stores(), name="Two").resume(run_id, strict=False)
        with pytest.raises(StepgraphError):  # second's message was dropped: nothing is left
            await handler
    assert any("'second'" in str(w.message) for w in caught)


class WaitingGone(Workflow):
    """``Waiting`` (its runs are made with ``name="Waiting"``) without the step that asks."""

    @step
    async def other(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result="other")


class Relay(Executor):
    @handler
    async def relay(self, question: str, ctx: WorkflowContext[str]) -> None:
        await ctx.yield_output(question)


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_a_lenient_resume_that_drops_the_asking_step_drops_its_prompt_and_ends(
    stores: StoreFactory, mode: str
) -> None:
    """A prompt whose asker the graph no longer has is not announced again, and the run
    does not wait for an answer nobody would take: it ends (G10)."""
    store = stores()
    paused = Waiting(store=store, mode=mode).run()  # type: ignore[arg-type]
    async for event in paused.stream_events():
        if isinstance(event, InputRequiredEvent):
            break
    await crash(paused)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handler = WaitingGone(store=stores(), name="Waiting", mode=mode).resume(  # type: ignore[arg-type]
            paused.run_id, strict=False
        )
        announced: list[object] = []
        with pytest.raises(WorkflowStalled):  # nothing is left to run, and no StopEvent
            async with asyncio.timeout(10):
                async for event in handler.stream_events():
                    announced.append(event)
                await handler
    assert any("'ask'" in str(w.message) for w in caught)
    assert not any(isinstance(e, InputRequiredEvent) for e in announced)
    assert (await stores().get_run(paused.run_id)).status == "failed"

    graph: Any = asker_graph(store=stores(), mode=mode)
    asking = graph.run("how many?")
    async for event in asking.stream_events():
        if isinstance(event, RequestInfoEvent):
            break
    await crash(asking)
    gone = WorkflowBuilder(start=Relay(id="relay"), name="asker").build(store=stores(), mode=mode)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        lenient = gone.resume(asking.run_id, strict=False)
        async with asyncio.timeout(10):
            assert [type(e) async for e in lenient.stream_events()] == []
            done = await lenient  # an edge graph ends with its outputs
        assert done.outputs == []
    assert (await stores().get_run(asking.run_id)).status == "completed"


class Announcer(Workflow):
    """``announce`` asks, then is held (the test crashes it there); ``greet`` takes the answer."""

    @step
    async def announce(self, ctx: Context, ev: StartEvent) -> None:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="name?"))
        await asyncio.Event().wait()  # held until the crash

    @step
    async def greet(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hello {ev.response}")


class Greeter(Workflow):
    """``Announcer`` without the step that asked (runs made with ``name="Announcer"``)."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        return None

    @step
    async def greet(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hello {ev.response}")


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_a_lenient_resume_keeps_a_dropped_steps_prompt_that_a_kept_step_answers(
    stores: StoreFactory, mode: str
) -> None:
    asking = Announcer(store=stores(), mode=mode).run()  # type: ignore[arg-type]
    async for event in asking.stream_events():
        if isinstance(event, InputRequiredEvent):
            break
    await crash(asking)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        handler = Greeter(store=stores(), name="Announcer", mode=mode).resume(  # type: ignore[arg-type]
            asking.run_id, strict=False
        )
        async with asyncio.timeout(10):
            async for event in handler.stream_events():
                if isinstance(event, InputRequiredEvent):  # announced again: still open
                    handler.send_event(HumanResponseEvent(response="Ada"))
            assert await handler == "hello Ada"


class Audited(Event):
    """On the stream once ``audit`` has its answer."""


class Approvals(Workflow):
    """Two steps ask at once and wait for their answers (``audit`` is removed below)."""

    @step
    async def audit(self, ctx: Context, ev: StartEvent) -> None:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="audit?"))
        await ctx.wait_for_event(HumanResponseEvent)
        ctx.write_event_to_stream(Audited())

    @step
    async def deploy(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="deploy?"))
        return StopEvent(result=(await ctx.wait_for_event(HumanResponseEvent)).response)


class DeployAsksFirst(Workflow):
    """``Approvals`` with its steps the other way round (``deploy`` asks first)."""

    deploy = Approvals.deploy
    audit = Approvals.audit


class Deploys(Workflow):
    """``Approvals`` without ``audit`` (runs made with ``name="Approvals"``)."""

    @step
    async def deploy(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="deploy?"))
        return StopEvent(result=(await ctx.wait_for_event(HumanResponseEvent)).response)


@pytest.mark.parametrize("mode", ["superstep", "async"])
@pytest.mark.parametrize("answered", [False, True], ids=["open", "answered"])
@pytest.mark.parametrize("flow", [Approvals, DeployAsksFirst], ids=["audit-first", "deploy-first"])
async def test_a_lenient_resume_gives_a_removed_steps_answer_to_no_other_step(
    stores: StoreFactory, mode: str, answered: bool, flow: type[Workflow]
) -> None:
    """The prompt of a removed step is dropped when no step takes the answer as its event
    (a wait is its own step's): its answer, given before or after the resume, never goes
    to the kept step's wait, which gets its own."""
    asking = flow(store=stores(), mode=mode, name="Approvals").run()  # type: ignore[arg-type]
    asked: dict[str, object] = {}
    async with asyncio.timeout(10):
        async for event in asking.stream_events():
            if isinstance(event, InputRequiredEvent):
                asked[event.prefix] = event.request_id
                if len(asked) == 2 and answered:
                    asking.send_event(
                        HumanResponseEvent(response="audited", request_id=asked["audit?"])
                    )
            if len(asked) == 2 and (not answered or isinstance(event, Audited)):
                break
    await crash(asking)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        handler = Deploys(store=stores(), name="Approvals", mode=mode).resume(  # type: ignore[arg-type]
            asking.run_id, strict=False
        )
        async with asyncio.timeout(10):
            async for event in handler.stream_events():
                if isinstance(event, InputRequiredEvent):
                    assert event.request_id == asked["deploy?"]  # audit's is not announced
                    if not answered:
                        with pytest.raises(RequestNotFoundError):
                            handler.send_event(
                                HumanResponseEvent(response="audited", request_id=asked["audit?"])
                            )
                    handler.send_event(
                        HumanResponseEvent(response="deployed", request_id=asked["deploy?"])
                    )
            assert await handler == "deployed"


# -- stores and coordinators --------------------------------------------------------------------


async def test_two_sqlite_store_objects_over_one_file_see_the_same_runs(tmp_path: object) -> None:
    path = f"{tmp_path}/shared.db"
    one, two = SqliteStore(path), SqliteStore(path)
    handler = Chain(store=one).run(tag=new_tag(), hops=2)
    assert await handler == 3
    assert [r.run_id for r in await two.list_runs()] == [handler.run_id]
    assert await Chain(store=two).resume(handler.run_id) == 3


async def test_a_second_coordinator_cannot_resume_a_run_another_one_owns(
    stores: StoreFactory, store_kind: str, pg_schema_name: str | None
) -> None:
    if store_kind != "postgres":
        pytest.skip("one process is one coordinator of a MemoryStore or a SQLite file")
    tag = new_tag()
    gate(tag)
    owner = Chain(store=stores()).run(tag=tag, hops=4, stop_at=1)
    async for event in owner.stream_events():
        if isinstance(event, Reached) and event.n == 1:
            break
    calls = dict(CALLS)
    # another coordinator: the same database, as another process would open it
    other = PostgresStore(f"{PG_DSN}?application_name=another", schema=pg_schema_name)
    try:
        with pytest.raises(RunLockedError, match=owner.run_id):
            await Chain(store=other).resume(owner.run_id)
    finally:
        await other.aclose()
    assert dict(CALLS) == calls  # no step ran
    GATES[tag].set()
    assert await owner == 10


async def test_a_run_going_on_on_another_event_loop_of_this_process_is_not_resumed_twice(
    stores: StoreFactory,
) -> None:
    store = stores()  # one store object: one lease owner, for both loops
    tag = new_tag()
    going, release = threading.Event(), threading.Event()
    run_ids: list[str] = []
    results: list[object] = []

    def other_loop() -> None:
        async def main() -> object:
            gate(tag)
            handler = Chain(store=store).run(tag=tag, hops=3, stop_at=1)
            async for event in handler.stream_events():
                if isinstance(event, Reached) and event.n == 1:
                    break
            run_ids.append(handler.run_id)
            going.set()
            await asyncio.to_thread(release.wait)
            GATES[tag].set()
            return await handler

        results.append(asyncio.run(main()))

    thread = threading.Thread(target=other_loop)
    thread.start()
    try:
        await asyncio.to_thread(going.wait)
        calls = dict(CALLS)
        with pytest.raises(RunLockedError, match=run_ids[0]):
            await Chain(store=store).resume(run_ids[0])
        assert dict(CALLS) == calls  # no step ran here
    finally:
        release.set()
        await asyncio.to_thread(thread.join)
    assert results == [6]


async def test_a_run_going_on_in_this_process_is_followed_not_started_twice(
    stores: StoreFactory,
) -> None:
    tag = new_tag()
    gate(tag)
    owner = Chain(store=stores()).run(tag=tag, hops=3, stop_at=1)
    follower = Chain(store=stores()).resume(owner.run_id)
    GATES[tag].set()
    assert await owner == 6 and await follower == 6
    assert CALLS[f"{tag}:hop:1"] == 1
