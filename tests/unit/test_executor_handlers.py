"""Executor handlers: choice by type, sync handlers, and what a failed attempt leaves behind."""

from __future__ import annotations

import pytest

from stepgraph import Executor, RetryPolicy, WorkflowBuilder, WorkflowContext, executor, handler
from stepgraph.state import append


class Base:
    pass


class Derived(Base):
    pass


class Picky(Executor):
    @handler
    async def on_base(self, message: Base, ctx: WorkflowContext) -> None:
        await ctx.yield_output("base")

    @handler
    async def on_derived(self, message: Derived, ctx: WorkflowContext) -> None:
        await ctx.yield_output("derived")

    @handler
    async def on_anything(self, message: object, ctx: WorkflowContext) -> None:
        await ctx.yield_output("anything")


@pytest.mark.parametrize(
    ("message", "chosen"), [(Derived(), "derived"), (Base(), "base"), (42, "anything")]
)
async def test_the_most_specific_handler_wins_whatever_the_definition_order(
    message: object, chosen: str
) -> None:
    result = await WorkflowBuilder(start=Picky(id="picky")).build().run(message)
    assert result.outputs == [chosen]


class SyncUpper(Executor):
    @handler
    def on_text(self, text: str, ctx: WorkflowContext[str]) -> None:
        ctx.send_message(text.upper())
        ctx.yield_output(f"sent {text.upper()}")


@executor(id="sink")
async def sink(text: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output(f"got {text}")


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_a_sync_handler_sends_and_yields_without_await(mode: str) -> None:
    upper = SyncUpper(id="upper")
    wf = WorkflowBuilder(start=upper).add_edge(upper, sink).build(mode=mode)
    result = await wf.run("hi")
    if mode == "superstep":
        assert result.outputs == ["sent HI", "got HI"]
    else:  # async mode: outputs in arrival order, and the sink may run before the thread yields
        assert sorted(result.outputs) == ["got HI", "sent HI"]


class FlakyLogger(Executor):
    attempts = 0

    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        FlakyLogger.attempts += 1
        await ctx.store.set("log", f"attempt {FlakyLogger.attempts}")
        if FlakyLogger.attempts < 3:
            raise RuntimeError("flaky")


async def test_a_failed_attempts_reducer_writes_are_discarded_in_superstep_mode() -> None:
    FlakyLogger.attempts = 0
    node = FlakyLogger(id="flaky", retry_policy=RetryPolicy(max_attempts=3))
    wf = WorkflowBuilder(start=node, reducers={"log": append}).build(mode="superstep")
    result = await wf.run("x")
    assert result.state["log"] == ["attempt 3"]
