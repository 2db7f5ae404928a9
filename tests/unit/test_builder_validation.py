"""WorkflowBuilder errors: what build() rejects, and what fails a run, naming the thing at fault.

Build time (``WorkflowValidationError``): no start executor, an edge naming an
unknown id, two executors with one id, an unreachable executor, an edge whose
target cannot handle what its source declares with ``WorkflowContext[T]``, a
fan-in target with no list handler, an executor with no handlers, a malformed
switch, malformed handler signatures, bad build options.

Run time: a message its target has no handler for, a message no edge takes,
``send_message`` to an unknown target, a handler that returns a value, a
fan-out selector that picks an unknown target. Each error names the sender, the
target and the type, so the message says where to look.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from stepgraph import (
    Case,
    Default,
    Executor,
    FunctionExecutor,
    GraphWorkflow,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
    response_handler,
)
from stepgraph.errors import (
    InvalidStepResultError,
    UnknownStepError,
    UnroutableEventError,
    WorkflowRuntimeError,
    WorkflowValidationError,
)

MODES = pytest.mark.parametrize("mode", ["superstep", "async"])


def sink(id: str) -> FunctionExecutor:
    """An executor that takes a str and yields it."""

    async def take(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(text)

    return executor(take, id=id)


def forward(id: str) -> FunctionExecutor:
    """An executor that takes a str and sends it on (undeclared type: checked at run time)."""

    async def pass_on(text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(text)

    return executor(pass_on, id=id)


def sends_int(id: str) -> FunctionExecutor:
    """An executor that takes a str and declares (and sends) an int."""

    async def count(text: str, ctx: WorkflowContext[int]) -> None:
        await ctx.send_message(len(text))

    return executor(count, id=id)


def build_error(builder: Any) -> str:
    with pytest.raises(WorkflowValidationError) as info:
        builder.build()
    return str(info.value)


# -- the start executor and ids -----------------------------------------------------------------


def test_build_without_a_start_executor_says_how_to_set_one() -> None:
    message = build_error(WorkflowBuilder().add_edge(forward("a"), sink("b")))
    assert "no start executor" in message
    assert "set_start_executor" in message


def test_an_edge_naming_an_unknown_id_names_the_id_and_the_known_ones() -> None:
    a = forward("a")
    message = build_error(WorkflowBuilder(start=a).add_edge(a, "nowhere"))
    assert "'nowhere'" in message
    assert "['a']" in message


def test_a_start_executor_given_by_an_unknown_id_is_named() -> None:
    message = build_error(WorkflowBuilder(start="ghost").add_edge(forward("a"), sink("b")))
    assert "start executor 'ghost' is not in the graph" in message


def test_edges_may_name_registered_executors_by_id() -> None:
    a, b = forward("a"), sink("b")
    wf = WorkflowBuilder(start="a").add_executor(a).add_executor(b).add_edge("a", "b").build()
    assert wf.executor_ids == ["a", "b"]


def test_two_different_executors_with_one_id_are_rejected_naming_the_id() -> None:
    a = forward("a")
    with pytest.raises(WorkflowValidationError, match="two different executors have the id 'a'"):
        WorkflowBuilder(start=a).add_edge(a, sink("a"))


def test_the_same_executor_object_may_appear_in_many_edges() -> None:
    a, b, c = forward("a"), forward("b"), sink("c")
    wf = WorkflowBuilder(start=a).add_edge(a, b).add_edge(b, c).add_edge(a, c).build()
    assert wf.executor_ids == ["a", "b", "c"]


def test_executor_ids_default_to_the_class_and_function_names() -> None:
    class Shout(Executor):
        @handler
        async def on(self, text: str, ctx: WorkflowContext) -> None: ...

    @executor
    async def whisper(text: str, ctx: WorkflowContext) -> None: ...

    assert Shout().id == "Shout"
    assert whisper.id == "whisper"


def test_a_plain_function_as_a_node_is_rejected_with_a_hint_to_use_executor() -> None:
    async def loose(text: str, ctx: WorkflowContext) -> None: ...

    with pytest.raises(WorkflowValidationError, match="wrap functions with @executor"):
        WorkflowBuilder(start=loose)  # type: ignore[arg-type]


def test_an_unreachable_executor_is_named() -> None:
    a, b, island = forward("a"), sink("b"), sink("island")
    message = build_error(WorkflowBuilder(start=a).add_edge(a, b).add_executor(island))
    assert "['island'] cannot be reached from the start executor 'a'" in message


def test_a_node_reached_only_through_a_cycle_from_the_start_is_reachable() -> None:
    a, b = forward("a"), forward("b")
    wf = WorkflowBuilder(start=a).add_edge(a, b).add_edge(b, a).build()
    assert wf.executor_ids == ["a", "b"]


# -- types declared with WorkflowContext[T] -----------------------------------------------------


def test_a_declared_type_the_target_cannot_handle_names_source_target_and_type() -> None:
    a, b = sends_int("a"), sink("b")
    message = build_error(WorkflowBuilder(start=a).add_edge(a, b))
    assert "executor 'a' sends int to 'b', which has no handler for int" in message
    assert "(it handles str)" in message


def test_every_member_of_a_declared_union_is_checked() -> None:
    @executor(id="a")
    async def a(text: str, ctx: WorkflowContext[str | int]) -> None: ...

    message = build_error(WorkflowBuilder(start=a).add_edge(a, sink("b")))
    assert "sends int to 'b'" in message


def test_declared_types_are_checked_on_fan_out_and_switch_targets() -> None:
    a = sends_int("a")
    fan_out = WorkflowBuilder(start=a).add_fan_out(a, [sink("b")])
    assert "sends int to 'b'" in build_error(fan_out)
    switch = WorkflowBuilder(start=a).add_switch(a, [Case(lambda n: n > 1, sink("c"))])
    assert "sends int to 'c'" in build_error(switch)


class Base:
    pass


class Derived(Base):
    pass


def test_a_declared_type_is_accepted_by_a_handler_for_a_base_class_or_any() -> None:
    @executor(id="a")
    async def a(text: str, ctx: WorkflowContext[Derived]) -> None: ...

    @executor(id="b")
    async def b(message: Base, ctx: WorkflowContext) -> None: ...

    @executor(id="c")
    async def c(message: Any, ctx: WorkflowContext) -> None: ...

    wf = WorkflowBuilder(start=a).add_fan_out(a, [b, c]).build()  # raises if the check is wrong
    assert wf.executor_ids == ["a", "b", "c"]


def test_undeclared_and_any_sends_are_not_checked_at_build_time() -> None:
    @executor(id="a")
    async def a(text: str, ctx: WorkflowContext[Any]) -> None: ...

    assert isinstance(WorkflowBuilder(start=a).add_edge(a, sink("b")).build(), GraphWorkflow)
    b = forward("b2")
    assert isinstance(WorkflowBuilder(start=b).add_edge(b, sink("c")).build(), GraphWorkflow)


def test_a_fan_in_target_without_a_list_handler_is_rejected_naming_it() -> None:
    a, b, c = forward("a"), forward("b"), forward("c")
    builder = WorkflowBuilder(start=a).add_fan_out(a, [b, c]).add_fan_in([b, c], sink("join"))
    assert "fan-in target 'join' has no handler for a list" in build_error(builder)


def test_a_fan_in_target_is_checked_even_when_its_sources_declare_their_types() -> None:
    a, b, c = forward("a"), sends_int("b"), sends_int("c")
    builder = WorkflowBuilder(start=a).add_fan_out(a, [b, c]).add_fan_in([b, c], sink("join"))
    assert "fan-in target 'join' has no handler for a list" in build_error(builder)


def test_fan_out_and_fan_in_need_at_least_one_target_and_source() -> None:
    a = forward("a")
    with pytest.raises(WorkflowValidationError, match="no targets"):
        WorkflowBuilder(start=a).add_fan_out(a, [])
    with pytest.raises(WorkflowValidationError, match="no sources"):
        WorkflowBuilder(start=a).add_fan_in([], sink("b"))


# -- executors and handler signatures -----------------------------------------------------------


def test_an_executor_without_handlers_is_named() -> None:
    class Idle(Executor):
        async def not_a_handler(self, text: str) -> None: ...

    message = build_error(WorkflowBuilder(start=Idle(id="idle")))
    assert "executor 'idle' (Idle) has no @handler methods" in message


def test_a_handler_message_without_an_annotation_is_named() -> None:
    class Vague(Executor):
        @handler
        async def on(self, message, ctx: WorkflowContext) -> None: ...  # type: ignore[no-untyped-def]

    message = build_error(WorkflowBuilder(start=Vague()))
    assert "handler 'on' of 'Vague': annotate parameter 'message'" in message


def test_a_handler_with_two_message_parameters_or_none_is_rejected() -> None:
    class TwoValues(Executor):
        @handler
        async def on(self, text: str, count: int, ctx: WorkflowContext) -> None: ...

    class NoValue(Executor):
        @handler
        async def on(self, ctx: WorkflowContext) -> None: ...

    assert "must take (self, message: T, ctx); got 2" in build_error(
        WorkflowBuilder(start=TwoValues())
    )
    assert "must take (self, message: T, ctx); got 0" in build_error(
        WorkflowBuilder(start=NoValue())
    )


def test_a_response_handler_needs_the_request_and_the_response() -> None:
    class Asker(Executor):
        @handler
        async def on(self, text: str, ctx: WorkflowContext) -> None: ...

        @response_handler
        async def answer(self, response: bool, ctx: WorkflowContext) -> None: ...

    message = build_error(WorkflowBuilder(start=Asker()))
    assert "response handler 'answer' of 'Asker' must take (self, request, response: T, ctx)" in (
        message
    )


def test_an_annotation_that_cannot_be_resolved_is_named() -> None:
    class Broken(Executor):
        @handler
        async def on(self, text: NoSuchType, ctx: WorkflowContext) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    message = build_error(WorkflowBuilder(start=Broken()))
    assert "handler 'on' of 'Broken': cannot resolve its annotations" in message


def test_a_handler_may_omit_ctx() -> None:
    seen: list[str] = []

    class Quiet(Executor):
        @handler
        async def on(self, text: str) -> None:
            seen.append(text)

    WorkflowBuilder(start=Quiet()).build().run_sync("hi")
    assert seen == ["hi"]


def test_bad_executor_options_are_rejected_naming_the_executor() -> None:
    async def noop(text: str) -> None: ...

    with pytest.raises(
        WorkflowValidationError, match="executor 'x': num_workers must be an int >= 1"
    ):
        FunctionExecutor(noop, id="x", num_workers=0)
    with pytest.raises(WorkflowValidationError, match="executor 'y': timeout must be > 0"):
        executor(id="y", timeout=0)(noop)


# -- switches -----------------------------------------------------------------------------------


def test_a_switch_with_two_defaults_is_rejected() -> None:
    a = forward("a")
    with pytest.raises(WorkflowValidationError, match="at most one Default, and it comes last"):
        WorkflowBuilder(start=a).add_switch(a, [Default(sink("b")), Default(sink("c"))])


def test_a_switch_whose_default_is_not_last_is_rejected() -> None:
    a = forward("a")
    with pytest.raises(
        WorkflowValidationError, match=re.escape("add_switch('a', ...): at most one Default")
    ):
        WorkflowBuilder(start=a).add_switch(a, [Default(sink("b")), Case(bool, sink("c"))])


# -- build options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"mode": "eager"}, "mode must be 'superstep' or 'async'"),
        ({"timeout": 0}, "build(timeout=0): must be a number of seconds > 0, or None"),
        ({"max_supersteps": 0}, "build(max_supersteps=0): must be a whole number >= 1"),
        ({"max_concurrency": 0}, "build(max_concurrency=0): must be a whole number >= 1, or None"),
    ],
)
def test_bad_build_options_are_rejected_naming_the_option(
    options: dict[str, Any], fragment: str
) -> None:
    a = sink("a")
    with pytest.raises(WorkflowValidationError) as info:
        WorkflowBuilder(start=a).build(**options)
    assert fragment in str(info.value)


def test_a_reducer_that_is_not_a_function_is_named() -> None:
    builder = WorkflowBuilder(start=sink("a"), reducers={"total": 0})  # type: ignore[dict-item]
    assert "reducers['total'] is 0, not a function" in build_error(builder)


# -- at run time --------------------------------------------------------------------------------


async def run_error(wf: GraphWorkflow, message: object, kind: type[Exception]) -> str:
    with pytest.raises(kind) as info:
        await wf.run(message)
    return str(info.value)


@MODES
async def test_a_message_its_target_has_no_handler_for_names_sender_target_and_type(
    mode: str,
) -> None:
    @executor(id="counter")
    async def counter(text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(len(text))  # undeclared: only the run can catch it

    wf = WorkflowBuilder(start=counter).add_edge(counter, sink("printer")).build(mode=mode)
    message = await run_error(wf, "abc", UnroutableEventError)
    assert "executor 'counter' sent int (3) to 'printer', which has no handler for int" in message
    assert "(it handles str)" in message


@MODES
async def test_a_message_from_a_node_without_edges_fails_the_run_naming_the_sender(
    mode: str,
) -> None:
    wf = WorkflowBuilder(start=forward("lonely")).build(mode=mode)
    message = await run_error(wf, "hello", UnroutableEventError)
    assert "executor 'lonely' sent str ('hello') but no edge out of 'lonely' takes it" in message


@MODES
async def test_a_message_for_which_every_condition_is_false_fails_the_run(mode: str) -> None:
    a = forward("a")
    wf = (
        WorkflowBuilder(start=a)
        .add_edge(a, sink("short"), condition=lambda text: len(text) < 3)
        .add_edge(a, sink("long"), condition=lambda text: len(text) > 3)
        .build(mode=mode)
    )
    assert (await wf.run("ab")).outputs == ["ab"]
    message = await run_error(wf, "abc", UnroutableEventError)
    assert "no edge out of 'a' takes it" in message


@MODES
async def test_a_switch_with_no_matching_case_and_no_default_fails_the_run(mode: str) -> None:
    a = forward("a")
    wf = (
        WorkflowBuilder(start=a)
        .add_switch(a, [Case(lambda text: text == "x", sink("x"))])
        .build(mode=mode)
    )
    assert (await wf.run("x")).outputs == ["x"]
    assert "no edge out of 'a' takes it" in await run_error(wf, "y", UnroutableEventError)


@MODES
async def test_send_message_to_an_unknown_target_names_it_and_the_known_ones(mode: str) -> None:
    @executor(id="a")
    async def a(text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(text, target="nobody")

    message = await run_error(WorkflowBuilder(start=a).build(mode=mode), "hi", UnknownStepError)
    assert "executor 'a' of workflow 'a-graph' sent str to executor 'nobody'" in message
    assert "it has ['a']" in message


@MODES
async def test_send_message_to_a_target_without_a_handler_for_the_type_fails(mode: str) -> None:
    @executor(id="a")
    async def a(text: str, ctx: WorkflowContext) -> None:
        await ctx.send_message(len(text), target="b")

    wf = WorkflowBuilder(start=a).add_edge(a, sink("b")).build(mode=mode)
    message = await run_error(wf, "hi", UnroutableEventError)
    assert "sent int to executor 'b', which does not accept it" in message


@MODES
async def test_a_handler_that_returns_a_value_fails_the_run_naming_it(mode: str) -> None:
    @executor(id="answer")
    async def answer(text: str, ctx: WorkflowContext) -> None:
        return 42  # type: ignore[return-value]

    wf = WorkflowBuilder(start=answer).build(mode=mode)
    message = await run_error(wf, "q", InvalidStepResultError)
    assert "executor 'answer' of workflow 'answer-graph' returned 42 (int)" in message
    assert "a handler returns None" in message


@MODES
async def test_a_run_input_the_start_executor_cannot_handle_names_the_caller(mode: str) -> None:
    wf = WorkflowBuilder(start=sink("a")).build(mode=mode)
    message = await run_error(wf, 7, UnroutableEventError)
    assert "the caller sent int (7) to 'a', which has no handler for int" in message


@MODES
async def test_a_fan_out_selector_choosing_an_unknown_target_fails_the_run(mode: str) -> None:
    a = forward("a")
    wf = (
        WorkflowBuilder(start=a)
        .add_fan_out(a, [sink("b"), sink("c")], selector=lambda message, ids: ["d"])
        .build(mode=mode)
    )
    message = await run_error(wf, "hi", UnknownStepError)
    assert "the selector 'lambda' of the fan-out from 'a' chose 'd'" in message
    assert "['b', 'c']" in message


def nothing(message: object, ids: list[str]) -> Any:
    return None


def one_id(message: object, ids: list[str]) -> Any:
    return "b"  # a string, not a list: it must not be read letter by letter


@MODES
@pytest.mark.parametrize("selector", [nothing, one_id], ids=["None", "a str"])
async def test_a_fan_out_selector_returning_no_list_fails_the_run_naming_it(
    mode: str, selector: Any
) -> None:
    a = forward("a")
    wf = (
        WorkflowBuilder(start=a)
        .add_fan_out(a, [sink("b"), sink("c")], selector=selector)
        .build(mode=mode)
    )
    message = await run_error(wf, "hi", WorkflowRuntimeError)
    assert f"the selector {selector.__name__!r} of the fan-out from 'a' returned" in message
    assert "list of target ids" in message


def test_workflow_context_of_a_value_that_is_no_type_is_rejected_naming_the_executor() -> None:
    class Odd(Executor):
        @handler
        async def on_text(self, text: str, ctx: WorkflowContext[123]) -> None:  # type: ignore[valid-type]
            await ctx.send_message(text)

    with pytest.raises(WorkflowValidationError, match=r"'odd'.*WorkflowContext\[123\]"):
        WorkflowBuilder(start=Odd(id="odd")).build()
