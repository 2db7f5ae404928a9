"""G2 routing: an event goes to every step whose annotation accepts its type; never dropped.

Checks that union annotations and subclasses route; that one event reaches every
accepting step (fan-out by type); that ``ctx.send_event(ev, step=...)`` reaches that
step only; that an event no step accepts is an error at build time when the return
annotation shows it, and at run time otherwise (``UnroutableEventError`` naming the
type and the sender); and that a targeted send to an unknown step, or to a step that
does not accept the type, raises at the call; and that an event sent after its step
returned (from a task the step started) raises instead of vanishing; and that an
answer to an input request goes to the wait of the step that asked it.
"""

import asyncio

import pytest
from _helpers_a import GUARD_SECONDS, both_modes, failure, finish

from stepgraph import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowHandler,
    step,
)
from stepgraph.errors import (
    UnknownStepError,
    UnroutableEventError,
    WorkflowRuntimeError,
    WorkflowValidationError,
)


class Animal(Event):
    name: str


class Dog(Animal):
    pass


class Cat(Animal):
    pass


class Fish(Event):
    name: str


class Orphan(Event):
    """No step of any workflow here accepts it."""

    tag: str = "lost"


@both_modes
async def test_a_step_annotated_with_a_union_receives_each_member_type(mode: str) -> None:
    got: list[str] = []

    class Unions(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Fish(name="nemo"))
            ctx.send_event(Cat(name="tom"))

        @step
        async def pets(self, ctx: Context, ev: Fish | Cat) -> StopEvent | None:
            got.append(f"{type(ev).__name__}:{ev.name}")
            return StopEvent(result=sorted(got)) if len(got) == 2 else None

    assert await finish(Unions(mode=mode).run()) == ["Cat:tom", "Fish:nemo"]


@both_modes
async def test_a_step_annotated_with_a_base_class_receives_its_subclasses(mode: str) -> None:
    got: list[str] = []

    class Subclasses(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> Dog:
            ctx.send_event(Cat(name="tom"))
            return Dog(name="rex")

        @step
        async def animals(self, ev: Animal) -> StopEvent | None:
            got.append(type(ev).__name__)
            return StopEvent(result=sorted(got)) if len(got) == 2 else None

    assert await finish(Subclasses(mode=mode).run()) == ["Cat", "Dog"]


@both_modes
async def test_one_event_goes_to_every_step_that_accepts_its_type(mode: str) -> None:
    got: list[str] = []

    class FanOutByType(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Dog:
            return Dog(name="rex")

        @step
        async def dogs(self, ev: Dog) -> StopEvent | None:
            return self._seen("dogs")

        @step
        async def animals(self, ev: Animal) -> StopEvent | None:
            return self._seen("animals")

        @step
        async def dogs_or_fish(self, ev: Fish | Dog) -> StopEvent | None:
            return self._seen("dogs_or_fish")

        @step
        async def cats(self, ev: Cat) -> StopEvent | None:
            return self._seen("cats")

        def _seen(self, name: str) -> StopEvent | None:
            got.append(name)
            return StopEvent(result=sorted(got)) if len(got) == 3 else None

    assert await finish(FanOutByType(mode=mode).run()) == ["animals", "dogs", "dogs_or_fish"]


@both_modes
async def test_send_event_with_step_reaches_that_step_only(mode: str) -> None:
    got: list[tuple[str, str]] = []

    class Targeted(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Dog(name="only-for-second"), step="second")
            ctx.send_event(Dog(name="for-both"))

        @step
        async def first(self, ev: Dog) -> StopEvent | None:
            return self._seen("first", ev)

        @step
        async def second(self, ev: Dog) -> StopEvent | None:
            return self._seen("second", ev)

        def _seen(self, who: str, ev: Dog) -> StopEvent | None:
            got.append((who, ev.name))
            return StopEvent(result=sorted(got)) if len(got) == 3 else None

    assert await finish(Targeted(mode=mode).run()) == [
        ("first", "for-both"),
        ("second", "for-both"),
        ("second", "only-for-second"),
    ]


@both_modes
async def test_a_sent_event_no_step_accepts_fails_the_run_naming_type_and_sender(
    mode: str,
) -> None:
    class SendsOrphan(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Dog:
            return Dog(name="rex")

        @step
        async def stray(self, ctx: Context, ev: Dog) -> StopEvent:
            ctx.send_event(Orphan())
            return StopEvent(result="must not finish")

    error = await failure(SendsOrphan(mode=mode).run())

    assert isinstance(error, UnroutableEventError)
    assert "Orphan" in str(error)
    assert "'stray'" in str(error)


@both_modes
async def test_a_returned_event_no_step_accepts_fails_the_run_naming_type_and_sender(
    mode: str,
) -> None:
    class ReturnsOrphan(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Event:  # too wide to check at build time
            return Orphan()

        @step
        async def never(self, ev: Dog) -> StopEvent:
            return StopEvent(result="unreachable")

    error = await failure(ReturnsOrphan(mode=mode).run())

    assert isinstance(error, UnroutableEventError)
    assert "Orphan" in str(error)
    assert "'start'" in str(error)


def test_a_return_annotation_no_step_accepts_is_rejected_at_build_time() -> None:
    class Dangling(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Orphan | StopEvent:
            return StopEvent(result=None)

    with pytest.raises(WorkflowValidationError, match=r"'start' returns Orphan.*no step accepts"):
        Dangling().validate()


@both_modes
async def test_send_to_an_unknown_step_raises_unknown_step_error_naming_it(mode: str) -> None:
    caught: list[UnknownStepError] = []

    class Typo(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            try:
                ctx.send_event(Dog(name="rex"), step="nosuchstep")
            except UnknownStepError as exc:  # raised at the call, not later
                caught.append(exc)
            ctx.send_event(Dog(name="rex"), step="nosuchstep")  # uncaught: fails the run
            return StopEvent(result="must not finish")

        @step
        async def dogs(self, ev: Dog) -> None:
            return None

    error = await failure(Typo(mode=mode).run())

    assert isinstance(error, UnknownStepError)
    assert "'nosuchstep'" in str(error)
    assert len(caught) == 1
    assert "'nosuchstep'" in str(caught[0])
    assert "dogs" in str(caught[0])  # the message lists the steps there are


@both_modes
async def test_send_to_a_step_that_does_not_accept_the_type_raises_at_the_call(
    mode: str,
) -> None:
    class WrongTarget(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            try:
                ctx.send_event(Cat(name="tom"), step="dogs")
            except UnroutableEventError as exc:
                return StopEvent(result=str(exc))
            return StopEvent(result="no error")

        @step
        async def dogs(self, ev: Dog) -> None:
            return None

    message = await finish(WrongTarget(mode=mode).run())

    assert "Cat" in message
    assert "'dogs'" in message


@both_modes
async def test_an_event_sent_after_its_step_returned_raises_instead_of_being_dropped(
    mode: str,
) -> None:
    waiting = asyncio.Event()
    attempted = asyncio.Event()
    outcome: list[BaseException | None] = []
    late: list[asyncio.Task[None]] = []

    class LateSend(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> Dog:
            async def send_later() -> None:
                await waiting.wait()  # by now `start` has long returned
                try:
                    ctx.send_event(Cat(name="late"))
                    outcome.append(None)
                except WorkflowRuntimeError as exc:
                    outcome.append(exc)
                attempted.set()

            late.append(asyncio.create_task(send_later()))
            return Dog(name="rex")

        @step
        async def dogs(self, ev: Dog) -> StopEvent:
            waiting.set()
            await attempted.wait()
            return StopEvent(result="finished")

        @step
        async def cats(self, ev: Cat) -> None:
            return None

    assert await finish(LateSend(mode=mode).run()) == "finished"
    await late[0]
    [error] = outcome
    assert isinstance(error, WorkflowRuntimeError)
    assert "'start'" in str(error)
    assert "after the step had returned" in str(error)


@both_modes
async def test_an_event_sent_to_a_step_is_not_taken_by_another_step_s_wait(mode: str) -> None:
    received: list[str] = []

    class Go(Event):
        pass

    class Waits(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> Go:
            return Go()

        @step
        async def waiter(self, ctx: Context, ev: Go) -> StopEvent:
            got = await ctx.wait_for_event(Fish, timeout=None)  # waits for any Fish
            return StopEvent(result=f"waiter got {got.name}")

        @step
        async def sender(self, ctx: Context, ev: Go) -> None:
            ctx.send_event(Fish(name="for target"), step="target")
            ctx.send_event(Fish(name="for anyone"))

        @step
        async def target(self, ctx: Context, ev: Fish) -> None:
            received.append(ev.name)

    assert await finish(Waits(mode=mode).run()) == "waiter got for anyone"
    assert "for target" in received  # sent to `target`: only `target` got it


class Answered(Event):
    asker: str
    response: str


class TwoQuestions(Workflow):
    """Two steps each ask a question and wait for a HumanResponseEvent, at once."""

    @step
    async def ask_a(self, ctx: Context, ev: StartEvent) -> Answered:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="a"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return Answered(asker="a", response=answer.response)

    @step
    async def ask_b(self, ctx: Context, ev: StartEvent) -> Answered:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="b"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return Answered(asker="b", response=answer.response)

    @step
    async def both(self, ctx: Context, ev: Answered) -> StopEvent | None:
        got = ctx.collect_events(ev, [Answered, Answered])
        if got is None:
            return None
        return StopEvent(result=sorted((a.asker, a.response) for a in got))


async def _asked(handler: WorkflowHandler) -> dict[str, object]:
    """The ids of the two questions, by prompt, once both are on the stream."""
    asked: dict[str, object] = {}
    async with asyncio.timeout(GUARD_SECONDS):
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                asked[event.prefix] = event.request_id
                if len(asked) == 2:
                    return asked
    raise AssertionError(f"the run ended having asked only {asked}")


@both_modes
async def test_an_answer_naming_its_request_goes_to_the_step_that_asked_it(mode: str) -> None:
    """Not to the wait that began first: b's answer, sent first, goes to b."""
    handler = TwoQuestions(mode=mode, timeout=GUARD_SECONDS).run()
    asked = await _asked(handler)
    handler.send_event(HumanResponseEvent(response="for b", request_id=asked["b"]))
    handler.send_event(HumanResponseEvent(response="for a", request_id=asked["a"]))
    assert await finish(handler) == [("a", "for a"), ("b", "for b")]


class WaitsLate(TwoQuestions):
    """``ask_a`` asks first but begins its wait after ``ask_b``'s."""

    @step
    async def ask_a(self, ctx: Context, ev: StartEvent) -> Answered:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="a"))
        await asyncio.sleep(0)  # (lets ask_b run: its wait begins before this one)
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return Answered(asker="a", response=answer.response)


@both_modes
async def test_an_answer_without_an_id_goes_to_the_step_that_asked_the_oldest_request(
    mode: str,
) -> None:
    handler = WaitsLate(mode=mode, timeout=GUARD_SECONDS).run()
    await _asked(handler)
    handler.send_event(HumanResponseEvent(response="for a"))  # a's is the oldest open
    handler.send_event(HumanResponseEvent(response="for b"))
    assert await finish(handler) == [("a", "for a"), ("b", "for b")]


class SentQuestions(TwoQuestions):
    """The same two questions, sent with ``ctx.send_event`` rather than streamed."""

    @step
    async def ask_a(self, ctx: Context, ev: StartEvent) -> Answered:
        ctx.send_event(InputRequiredEvent(prefix="a"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return Answered(asker="a", response=answer.response)

    @step
    async def ask_b(self, ctx: Context, ev: StartEvent) -> Answered:
        ctx.send_event(InputRequiredEvent(prefix="b"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return Answered(asker="b", response=answer.response)


@both_modes
async def test_an_answer_goes_to_the_step_that_sent_its_request(mode: str) -> None:
    handler = SentQuestions(mode=mode, timeout=GUARD_SECONDS).run()
    asked = await _asked(handler)
    handler.send_event(HumanResponseEvent(response="for b", request_id=asked["b"]))
    handler.send_event(HumanResponseEvent(response="for a", request_id=asked["a"]))
    assert await finish(handler) == [("a", "for a"), ("b", "for b")]


class SameIds(Workflow):
    """Two steps ask with one id of their own choosing."""

    @step
    async def ask_a(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="a", request_id="approve"))
        return StopEvent(result=(await ctx.wait_for_event(HumanResponseEvent)).response)

    @step
    async def ask_b(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="b", request_id="approve"))
        return StopEvent(result=(await ctx.wait_for_event(HumanResponseEvent)).response)


@both_modes
async def test_a_request_id_asked_by_two_steps_fails_the_run_naming_it(mode: str) -> None:
    """Not a second prompt lost, its step waiting for an answer nobody can give."""
    error = await failure(SameIds(mode=mode, timeout=GUARD_SECONDS).run())
    assert isinstance(error, WorkflowRuntimeError)
    assert "input request with id 'approve' was asked by step 'ask_b'" in str(error)
