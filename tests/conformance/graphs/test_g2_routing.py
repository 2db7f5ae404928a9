"""G2 routing in executor graphs: messages follow the edges, handlers are chosen by type.

A message goes along every out-edge of its sender whose condition holds; a switch
takes the first Case that holds, else its Default; a fan-out goes to every target
or to those its selector picks; ``send_message(x, target=id)`` goes to that
executor only; the caller's ``handler.send_event(x)`` goes to the start executor,
or with ``step=id`` to that one. Inside an executor the handler is chosen by the
message's type (the first matching handler in definition order; subclasses and
unions match, ``list[str]`` takes any list, ``Any`` takes everything). A message
that no edge takes, a target with no handler for it, an unknown target id, and (at
build time) an edge whose target cannot handle what ``WorkflowContext[T]``
declares, are all errors that name the executors and the type.
"""

import asyncio
from typing import Any

import pytest

from stepgraph import (
    Case,
    Default,
    Executor,
    RequestInfoEvent,
    RunResult,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
    response_handler,
)
from stepgraph.errors import UnknownStepError, UnroutableEventError, WorkflowValidationError

from ._helpers import both_modes, failure, finish


class Animal:
    def __init__(self, name: str) -> None:
        self.name = name


class Dog(Animal):
    pass


class Forward(Executor):
    """Sends every message it receives on, unchanged, along its out-edges."""

    @handler
    async def on_any(self, message: Any, ctx: WorkflowContext) -> None:
        await ctx.send_message(message)


class Sink(Executor):
    """Yields every message it receives as an output tagged with its id."""

    @handler
    async def on_any(self, message: Any, ctx: WorkflowContext) -> None:
        await ctx.yield_output((self.id, message))


async def outputs(handler_: Any) -> list[Any]:
    result: RunResult = await finish(handler_)
    return result.outputs


@both_modes
async def test_a_message_goes_along_every_out_edge_of_its_sender(mode: str) -> None:
    source = Forward(id="source")
    wf = (
        WorkflowBuilder(start=source)
        .add_edge(source, Sink(id="b"))
        .add_edge(source, Sink(id="c"))
        .add_edge(source, Sink(id="d"))
        .build(mode=mode)
    )
    assert sorted(await outputs(wf.run("m"))) == [("b", "m"), ("c", "m"), ("d", "m")]


@both_modes
async def test_an_edge_condition_selects_the_messages_that_take_it(mode: str) -> None:
    source = Forward(id="source")

    class Split(Executor):
        @handler
        async def on_list(self, numbers: list[int], ctx: WorkflowContext) -> None:
            for n in numbers:
                await ctx.send_message(n)

    split = Split(id="split")
    wf = (
        WorkflowBuilder(start=split)
        .add_edge(split, source)
        .add_edge(source, Sink(id="even"), condition=lambda n: n % 2 == 0)
        .add_edge(source, Sink(id="small"), condition=lambda n: n < 3)
        .build(mode=mode)
    )
    got = await outputs(wf.run([0, 1, 2, 4, 6]))  # each takes at least one edge
    assert sorted(n for who, n in got if who == "even") == [0, 2, 4, 6]
    assert sorted(n for who, n in got if who == "small") == [0, 1, 2]
    assert len(got) == 7  # 0 and 2 took both edges


@both_modes
async def test_a_message_that_no_edge_takes_fails_the_run_naming_sender_and_type(
    mode: str,
) -> None:
    source = Forward(id="source")
    wf = (
        WorkflowBuilder(start=source)
        .add_edge(source, Sink(id="even"), condition=lambda n: n % 2 == 0)
        .build(mode=mode)
    )
    exc = await failure(wf.run(5))
    assert isinstance(exc, UnroutableEventError)
    assert "'source'" in str(exc)
    assert "int" in str(exc)
    assert "no edge out of 'source'" in str(exc)


@both_modes
async def test_a_sender_with_no_out_edge_cannot_send(mode: str) -> None:
    wf = WorkflowBuilder(start=Forward(id="lonely")).build(mode=mode)
    exc = await failure(wf.run("m"))
    assert isinstance(exc, UnroutableEventError)
    assert "'lonely'" in str(exc)
    assert "str" in str(exc)


@both_modes
@pytest.mark.parametrize(
    ("value", "taken"), [(-5, "negative"), (0, "zero"), (7, "other"), (-1, "negative")]
)
async def test_a_switch_takes_the_first_case_that_holds_else_the_default(
    mode: str, value: int, taken: str
) -> None:
    source = Forward(id="source")
    wf = (
        WorkflowBuilder(start=source)
        .add_switch(
            source,
            [
                Case(lambda n: n < 0, Sink(id="negative")),
                Case(lambda n: n <= 0, Sink(id="zero")),  # also holds for negatives: not taken
                Default(Sink(id="other")),
            ],
        )
        .build(mode=mode)
    )
    assert await outputs(wf.run(value)) == [(taken, value)]


@both_modes
async def test_a_switch_with_no_matching_case_and_no_default_fails_naming_the_sender(
    mode: str,
) -> None:
    source = Forward(id="source")
    wf = (
        WorkflowBuilder(start=source)
        .add_switch(source, [Case(lambda n: n < 0, Sink(id="negative"))])
        .build(mode=mode)
    )
    exc = await failure(wf.run(3))
    assert isinstance(exc, UnroutableEventError)
    assert "no edge out of 'source'" in str(exc)
    assert "int" in str(exc)


@both_modes
async def test_a_fan_out_goes_to_every_target_without_a_selector(mode: str) -> None:
    source = Forward(id="source")
    targets = [Sink(id=f"t{i}") for i in range(4)]
    wf = WorkflowBuilder(start=source).add_fan_out(source, targets).build(mode=mode)
    assert sorted(await outputs(wf.run("m"))) == [(f"t{i}", "m") for i in range(4)]


@both_modes
async def test_a_fan_out_selector_picks_the_targets_of_each_message(mode: str) -> None:
    source = Forward(id="source")

    def by_parity(n: int, target_ids: list[str]) -> list[str]:
        assert target_ids == ["even", "odd", "all"]  # in declaration order
        return ["even" if n % 2 == 0 else "odd", "all"]

    class Split(Executor):
        @handler
        async def on_list(self, numbers: list[int], ctx: WorkflowContext) -> None:
            for n in numbers:
                await ctx.send_message(n)

    split = Split(id="split")
    wf = (
        WorkflowBuilder(start=split)
        .add_edge(split, source)
        .add_fan_out(source, [Sink(id="even"), Sink(id="odd"), Sink(id="all")], by_parity)
        .build(mode=mode)
    )
    got = await outputs(wf.run([1, 2, 3]))
    assert sorted(got) == [("all", 1), ("all", 2), ("all", 3), ("even", 2), ("odd", 1), ("odd", 3)]


@both_modes
async def test_a_fan_out_selector_choosing_an_unknown_target_fails_naming_it(mode: str) -> None:
    source = Forward(id="source")
    wf = (
        WorkflowBuilder(start=source)
        .add_fan_out(source, [Sink(id="a"), Sink(id="b")], lambda m, ids: ["nowhere"])
        .build(mode=mode)
    )
    exc = await failure(wf.run("m"))
    assert isinstance(exc, UnknownStepError)
    assert "'nowhere'" in str(exc)
    assert "'source'" in str(exc)


@both_modes
async def test_send_message_with_a_target_goes_to_that_executor_only(mode: str) -> None:
    class Direct(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(text.upper(), target="c")

    direct = Direct(id="direct")
    wf = (
        WorkflowBuilder(start=direct)
        .add_edge(direct, Sink(id="b"))
        .add_edge(direct, Sink(id="c"))
        .build(mode=mode)
    )
    assert await outputs(wf.run("m")) == [("c", "M")]


@both_modes
async def test_send_message_to_an_unknown_target_raises_in_the_handler(mode: str) -> None:
    raised: list[BaseException] = []

    class Direct(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            try:
                await ctx.send_message(text, target="nowhere")
            except UnknownStepError as exc:
                raised.append(exc)
                raise

    exc = await failure(WorkflowBuilder(start=Direct(id="direct")).build(mode=mode).run("m"))
    assert isinstance(exc, UnknownStepError)
    assert raised == [exc]
    assert "'nowhere'" in str(exc)
    assert "'direct'" in str(exc)


@both_modes
async def test_send_message_to_a_target_without_a_handler_for_the_type_raises(mode: str) -> None:
    class Direct(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.send_message(42, target="texts")

    @executor(id="texts")
    async def texts(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(text)

    direct = Direct(id="direct")
    wf = WorkflowBuilder(start=direct).add_edge(direct, texts).build(mode=mode)
    exc = await failure(wf.run("m"))
    assert isinstance(exc, UnroutableEventError)
    assert "'texts'" in str(exc)
    assert "int" in str(exc)


@both_modes
async def test_an_edge_target_without_a_handler_for_the_type_fails_naming_all_three(
    mode: str,
) -> None:
    @executor(id="texts")
    async def texts(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(text)

    source = Forward(id="source")
    wf = WorkflowBuilder(start=source).add_edge(source, texts).build(mode=mode)
    exc = await failure(wf.run(3.5))
    assert isinstance(exc, UnroutableEventError)
    assert "'source'" in str(exc)
    assert "'texts'" in str(exc)
    assert "float" in str(exc)


def test_a_declared_output_type_no_edge_target_handles_is_rejected_at_build() -> None:
    class Counter(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext[int]) -> None:
            await ctx.send_message(len(text))

    @executor(id="texts")
    async def texts(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(text)

    counter = Counter(id="counter")
    with pytest.raises(WorkflowValidationError) as info:
        WorkflowBuilder(start=counter).add_edge(counter, texts).build()
    assert "'counter'" in str(info.value)
    assert "'texts'" in str(info.value)
    assert "int" in str(info.value)


@both_modes
async def test_the_handler_is_chosen_by_the_type_of_the_message(mode: str) -> None:
    class Typed(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output(("text", text))

        @handler
        async def on_number(self, number: int | float, ctx: WorkflowContext) -> None:
            await ctx.yield_output(("number", number))

        @handler
        async def on_animal(self, animal: Animal, ctx: WorkflowContext) -> None:
            await ctx.yield_output(("animal", animal.name))

        @handler
        async def on_list(self, items: list[str], ctx: WorkflowContext) -> None:
            await ctx.yield_output(("list", items))

    class Spray(Executor):
        @handler
        async def on_start(self, go: bytes, ctx: WorkflowContext) -> None:
            for message in ["a", 1, 2.5, Dog("rex"), Animal("cat"), [1, 2]]:
                await ctx.send_message(message)

    spray = Spray(id="spray")
    wf = WorkflowBuilder(start=spray).add_edge(spray, Typed(id="typed")).build(mode=mode)
    got = await outputs(wf.run(b"go"))
    assert sorted(map(repr, got)) == sorted(
        map(
            repr,
            [
                ("text", "a"),
                ("number", 1),
                ("number", 2.5),
                ("animal", "rex"),  # a subclass matches its base's handler
                ("animal", "cat"),
                ("list", [1, 2]),  # list[str] takes any list: the item type is not checked
            ],
        )
    )


@both_modes
async def test_the_first_matching_handler_in_definition_order_wins(mode: str) -> None:
    class Overlapping(Executor):
        @handler
        async def on_dog(self, dog: Dog, ctx: WorkflowContext) -> None:
            await ctx.yield_output("dog")

        @handler
        async def on_animal(self, animal: Animal, ctx: WorkflowContext) -> None:
            await ctx.yield_output("animal")

        @handler
        async def on_anything(self, message: object, ctx: WorkflowContext) -> None:
            await ctx.yield_output("anything")

    class Spray(Executor):
        @handler
        async def on_start(self, go: bytes, ctx: WorkflowContext) -> None:
            for message in [Dog("rex"), Animal("cat"), "text"]:
                await ctx.send_message(message, target="overlapping")

    spray = Spray(id="spray")
    wf = (
        WorkflowBuilder(start=spray).add_edge(spray, Overlapping(id="overlapping")).build(mode=mode)
    )
    assert sorted(await outputs(wf.run(b"go"))) == ["animal", "anything", "dog"]


@both_modes
async def test_a_handler_may_omit_ctx_and_be_a_plain_function(mode: str) -> None:
    seen: list[str] = []

    class NoCtx(Executor):
        @handler
        async def on_text(self, text: str) -> None:
            seen.append(f"no-ctx {text}")

    @executor(id="fn")
    async def fn(text: str, ctx: WorkflowContext) -> None:
        seen.append(f"fn {text}")
        await ctx.send_message(text)

    wf = WorkflowBuilder(start=fn).add_edge(fn, NoCtx(id="no_ctx")).build(mode=mode)
    await finish(wf.run("m"))
    assert seen == ["fn m", "no-ctx m"]


@both_modes
async def test_the_callers_messages_go_to_the_start_executor_or_to_a_named_one(
    mode: str,
) -> None:
    class Holder(Executor):
        """Keeps the run open with a request; yields what the caller sends it."""

        @handler
        async def on_list(self, items: list[str], ctx: WorkflowContext) -> None:
            await ctx.request_info("done?", response_type=bool)

        @handler
        async def on_text(self, text: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output(("holder", text))

        @response_handler
        async def on_done(self, question: str, done: bool, ctx: WorkflowContext) -> None:
            pass

    holder = Holder(id="holder")
    wf = WorkflowBuilder(start=holder).add_edge(holder, Sink(id="sink")).build(mode=mode)
    handler_ = wf.run([])
    async with asyncio.timeout(5):
        async for event in handler_.stream_events():
            if isinstance(event, RequestInfoEvent):
                handler_.send_event("to the start")
                handler_.send_event("to the sink", step="sink")
                with pytest.raises(UnknownStepError):
                    handler_.send_event("lost", step="nowhere")
                await handler_.send_response(event.request_id, True)
    assert sorted(await outputs(handler_)) == [("holder", "to the start"), ("sink", "to the sink")]
