"""No user code runs inside ``apply``: the kernel only folds ticks (docs/architecture.md).

Two checks. A compiled ``Graph`` is data only: walking it finds no function, lambda or
bound method (classes are data here: the message types). And while real runs go (edge
conditions, fan-out selectors, switch cases, custom reducers, retries, waits, requests,
a raising condition), a profiler watches every Python call made inside ``apply``: none may
land in code of this file (the user's code here). The same callables demonstrably run,
in the shell, so the check cannot pass by not running them.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stepgraph.runtime.run as run_module
from stepgraph import (
    Case,
    Context,
    Default,
    Event,
    Executor,
    HumanResponseEvent,
    InputRequiredEvent,
    RequestInfoEvent,
    RetryPolicy,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    response_handler,
    step,
)
from stepgraph.core import Graph, apply
from stepgraph.testing import FakeClock

THIS_FILE = str(Path(__file__).resolve())
CALLED: list[str] = []  # what the user's callables saw, in the shell


# -- the user's code ----------------------------------------------------------------------------


def short(text: str) -> bool:
    CALLED.append(f"condition {text}")
    return len(text) < 6


def long(text: str) -> bool:
    CALLED.append(f"condition {text}")
    return len(text) >= 6


def pick(text: str, targets: list[str]) -> list[str]:
    CALLED.append(f"selector {text}")
    if text.endswith("?"):
        return targets[1:]
    return targets if len(text) > 5 else targets[:1]


def is_question(text: str) -> bool:
    CALLED.append(f"case {text}")
    return text.endswith("?")


def longest(old: str | None, new: str) -> str:
    CALLED.append(f"reducer {new}")
    return new if old is None or len(new) > len(old) else old


class Start(Executor):
    @handler
    async def on_words(self, words: list[str], ctx: WorkflowContext[str]) -> None:
        for word in words:
            await ctx.send_message(word)


class Relay(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext[str]) -> None:
        await ctx.store.set("longest", text)
        await ctx.send_message(text)


class Sink(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext[Any]) -> None:
        await ctx.yield_output(text)


class Asker(Executor):
    @handler
    async def on_text(self, text: str, ctx: WorkflowContext[Any]) -> None:
        await ctx.request_info(text, response_type=str)

    @response_handler
    async def on_answer(self, question: str, answer: str, ctx: WorkflowContext[Any]) -> None:
        await ctx.yield_output(f"{question} {answer}")


def graph(mode: str) -> Any:
    start, a, b, sink, asker = (
        Start(id="start"),
        Relay(id="a"),
        Relay(id="b"),
        Sink(id="sink"),
        Asker(id="asker"),
    )
    return (
        WorkflowBuilder(start=start, reducers={"longest": longest})
        .add_fan_out(start, [a, b], selector=pick)
        .add_edge(a, sink, condition=short)
        .add_edge(a, b, condition=long)
        .add_switch(b, [Case(condition=is_question, target=asker), Default(sink)])
        .build(mode=mode)
    )


class Ping(Event):
    n: int


class Steps(Workflow):
    reducers = {"longest": longest}

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Ping:
        await ctx.store.set("longest", "x")
        ctx.write_event_to_stream(InputRequiredEvent(prefix="name?"))
        answer = await ctx.wait_for_event(HumanResponseEvent, timeout=30)
        await ctx.store.set("longest", answer.response)
        return Ping(n=1)

    @step(retry_policy=RetryPolicy(max_attempts=2, backoff=1))
    async def flaky(self, ctx: Context, ev: Ping) -> StopEvent:
        tries = await ctx.store.update("tries", lambda n: (n or 0) + 1)
        if tries == 1:
            raise ConnectionError("once")
        return StopEvent(result=await ctx.store.get("longest"))


# -- watching apply -----------------------------------------------------------------------------


class Watch:
    """Profiles every Python call made while ``apply`` runs, keeping those in user code."""

    def __init__(self) -> None:
        self.applied = 0
        self.user_calls: list[str] = []

    def apply(self, state: Any, tick: Any) -> Any:
        self.applied += 1
        sys.setprofile(self._profile)
        try:
            return apply(state, tick)
        finally:
            sys.setprofile(None)

    def _profile(self, frame: types.FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename == THIS_FILE:
            self.user_calls.append(f"{frame.f_code.co_name} (line {frame.f_lineno})")


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    watch = Watch()
    monkeypatch.setattr(run_module, "apply", watch.apply)
    CALLED.clear()
    yield watch


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_conditions_selectors_cases_and_reducers_run_in_the_shell_never_in_apply(
    watch: Watch, mode: str
) -> None:
    handler_ = graph(mode).run(["hi", "hello world", "why?"])
    async for event in handler_.stream_events():
        if isinstance(event, RequestInfoEvent):
            await handler_.send_response(event.request_id, "because")
    result = await handler_
    assert sorted(result.outputs) == ["hello world", "hello world", "hi", "why? because"]
    assert result.state["longest"] == "hello world"
    kinds = {called.split()[0] for called in CALLED}
    assert kinds == {"condition", "selector", "case", "reducer"}  # the user's code did run
    assert watch.applied > 10
    assert watch.user_calls == []


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_steps_with_waits_retries_and_reducers_run_no_user_code_in_apply(
    watch: Watch, mode: str
) -> None:
    handler_ = Steps(mode=mode, clock=FakeClock()).run()
    async for event in handler_.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler_.send_event(HumanResponseEvent(response="Ada"))
    assert await handler_ == "Ada"
    assert any(called.startswith("reducer") for called in CALLED)
    assert watch.user_calls == []


async def test_a_raising_condition_fails_the_run_as_data_without_running_in_apply(
    watch: Watch,
) -> None:
    def explodes(text: str) -> bool:
        raise KeyError(text)

    start, sink = Start(id="start"), Sink(id="sink")
    wf = WorkflowBuilder(start=start).add_edge(start, sink, condition=explodes).build()
    with pytest.raises(KeyError) as info:
        await wf.run(["boom"])
    assert any("'start' -> 'sink'" in note for note in info.value.__notes__)
    assert watch.user_calls == []


# -- the graph is data --------------------------------------------------------------------------


def _callables(value: object, path: str) -> Iterator[str]:
    """Paths of every function-like value reachable from ``value`` (classes are data)."""
    if isinstance(value, type) or value is None or isinstance(value, str | int | float | bool):
        return
    if dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            yield from _callables(getattr(value, field.name), f"{path}.{field.name}")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _callables(key, f"{path}[{key!r}]")
            yield from _callables(item, f"{path}[{key!r}]")
        return
    if isinstance(value, tuple | list | set | frozenset):
        for index, item in enumerate(value):
            yield from _callables(item, f"{path}[{index}]")
        return
    if callable(value):
        yield f"{path}: {value!r}"
        return
    raise AssertionError(f"{path}: unexpected {type(value).__name__} in a Graph")


@pytest.mark.parametrize("mode", ["superstep", "async"])
def test_a_compiled_graph_holds_no_callables_for_either_authoring_style(mode: str) -> None:
    graphs: list[Graph] = [graph(mode).plan.graph, Steps(mode=mode)._stepgraph_plan().graph]
    for compiled in graphs:
        assert list(_callables(compiled, compiled.name)) == []
    assert graphs[0].explicit_routing and not graphs[1].explicit_routing
