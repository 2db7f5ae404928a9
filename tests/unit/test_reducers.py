"""Reducer keys of the shared state: the reducer functions and the store's semantics (G8).

The functions (``append``, ``extend``, ``add``, ``merge``) treat a missing value
as empty and never mutate the old value. In superstep mode a write to a reducer
key is buffered until the barrier and merged there in a deterministic order
(executor order, invocation, write order) whatever the order the writes
happened in; ``get`` sees the value as of the last barrier. In async mode a
write merges at once. ``update``, ``delete`` and deleting in an ``edit()`` block
are refused on reducer keys (a refused ``edit()`` block changes nothing).
Writes still pending when the run ends are merged into the final state. A
``@step`` workflow declares reducers with a ``reducers = {...}`` class attribute.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stepgraph import (
    Context,
    Event,
    Executor,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
    step,
)
from stepgraph.errors import WorkflowRuntimeError, WorkflowValidationError
from stepgraph.state import StateStore, add, append, extend, merge

# -- the functions ------------------------------------------------------------------------------


def test_append_adds_one_item_to_a_new_list() -> None:
    old = [1]
    assert append(None, 1) == [1]
    assert append(old, [2]) == [1, [2]]
    assert old == [1]  # not mutated


def test_extend_adds_every_item_to_a_new_list() -> None:
    old = [1]
    assert extend(None, (1, 2)) == [1, 2]
    assert extend(old, [2, 3]) == [1, 2, 3]
    assert old == [1]


def test_add_sums_numbers_and_concatenates_anything_with_plus() -> None:
    assert add(None, 5) == 5
    assert add(5, 2) == 7
    assert add("ab", "c") == "abc"
    assert add(None, 0) == 0


def test_merge_combines_mappings_and_later_keys_win() -> None:
    old = {"a": 1, "b": 1}
    assert merge(None, {"a": 1}) == {"a": 1}
    assert merge(old, {"b": 2, "c": 3}) == {"a": 1, "b": 2, "c": 3}
    assert old == {"a": 1, "b": 1}


# -- the store on its own -----------------------------------------------------------------------


async def test_buffered_writes_merge_by_writer_position_then_write_order() -> None:
    position: list[tuple[int, int] | None] = [None]
    store = StateStore(reducers={"log": append}, order=lambda: position[0])
    for writer, value in [((1, 0), "b1"), ((0, 1), "a2"), ((1, 0), "b2"), ((0, 0), "a1")]:
        position[0] = writer
        await store.set("log", value)
    assert await store.get("log") is None  # nothing merged before the barrier
    store.apply_pending()
    assert await store.get("log") == ["a1", "a2", "b1", "b2"]


async def test_a_write_from_outside_a_step_merges_at_once() -> None:
    store = StateStore({"log": ["x"]}, reducers={"log": append}, order=lambda: None)
    await store.set("log", "y")
    assert await store.get("log") == ["x", "y"]


async def test_keys_without_a_reducer_are_replaced_at_once_even_when_buffering() -> None:
    store = StateStore(reducers={"log": append}, order=lambda: (0, 0))
    await store.set("plain", 1)
    await store.set("plain", 2)
    assert await store.get("plain") == 2


@pytest.mark.parametrize("operation", ["update", "delete", "edit-delete"])
async def test_update_delete_and_edit_delete_on_a_reducer_key_raise_and_change_nothing(
    operation: str,
) -> None:
    store = StateStore({"log": [1], "plain": 0}, reducers={"log": append})
    with pytest.raises(WorkflowRuntimeError, match="key 'log' has a reducer"):
        if operation == "update":
            await store.update("log", lambda old: old)
        elif operation == "delete":
            await store.delete("log")
        else:
            async with store.edit() as state:
                state["plain"] = 99
                del state["log"]
    assert store.to_dict() == {"log": [1], "plain": 0}


# -- in a run: superstep mode -------------------------------------------------------------------


class Writer(Executor):
    """Writes ``"<id>:<n>"`` to ``log`` for each message n (first waiting for ``wait_for``)."""

    def __init__(self, id: str, *, wait_for: asyncio.Event | None = None) -> None:
        super().__init__(id)
        self.wait_for = wait_for
        self.wrote = asyncio.Event()
        self.saw: list[Any] = []

    @handler
    async def on_number(self, n: int, ctx: WorkflowContext) -> None:
        if self.wait_for is not None:
            await self.wait_for.wait()
        await ctx.store.set("log", f"{self.id}:{n}")
        self.saw.append(await ctx.store.get("log"))
        self.wrote.set()


@executor(id="start")
async def start(n: int, ctx: WorkflowContext) -> None:
    await ctx.send_message(n)
    await ctx.send_message(n + 1)


def writers_graph(mode: str, first: Writer, second: Writer, **reducers: Any) -> Any:
    return (
        WorkflowBuilder(start=start, reducers={"log": append, **reducers})
        .add_fan_out(start, [first, second])
        .build(mode=mode)
    )


async def test_superstep_writes_merge_in_executor_and_invocation_order_not_write_order() -> None:
    second = Writer("second")
    first = Writer("first", wait_for=second.wrote)  # `first` writes after `second`
    result = await writers_graph("superstep", first, second).run(0)
    assert result.state["log"] == ["first:0", "first:1", "second:0", "second:1"]


async def test_superstep_get_sees_the_value_as_of_the_last_barrier() -> None:
    first, second = Writer("first"), Writer("second")
    await writers_graph("superstep", first, second).run(0)
    assert first.saw == [None, None]  # not its own write, not the other's: merged at the barrier
    assert second.saw == [None, None]


async def test_a_later_superstep_sees_every_write_of_the_earlier_one_merged() -> None:
    seen: list[Any] = []

    class Reader(Executor):
        @handler
        async def on_list(self, parts: list[Any], ctx: WorkflowContext) -> None:
            seen.append(await ctx.store.get("total"))

    @executor(id="split")
    async def split(n: int, ctx: WorkflowContext) -> None:
        await ctx.send_message(n)

    class Adder(Executor):
        @handler
        async def on_number(self, n: int, ctx: WorkflowContext) -> None:
            await ctx.store.set("total", n + len(self.id))
            await ctx.send_message(n)

    adders = [Adder("a"), Adder("bb"), Adder("ccc")]
    reader = Reader("reader")
    wf = (
        WorkflowBuilder(start=split, reducers={"total": add})
        .add_fan_out(split, adders)
        .add_fan_in(adders, reader)
        .build()
    )
    result = await wf.run(10)
    assert seen == [36]  # 11 + 12 + 13, none lost
    assert result.state == {"total": 36}


async def test_writes_in_an_edit_block_to_a_reducer_key_are_merged_too() -> None:
    @executor(id="editor")
    async def editor(n: int, ctx: WorkflowContext) -> None:
        async with ctx.store.edit() as state:
            state["log"] = "edited"
            state["plain"] = n

    result = await WorkflowBuilder(start=editor, reducers={"log": append}).build().run(1)
    assert result.state == {"log": ["edited"], "plain": 1}


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_writes_still_pending_when_the_run_ends_are_in_the_final_state(mode: str) -> None:
    @executor(id="last")
    async def last(n: int, ctx: WorkflowContext) -> None:
        await ctx.store.set("log", n)
        await ctx.store.set("log", n + 1)

    result = await WorkflowBuilder(start=last, reducers={"log": append}).build(mode=mode).run(1)
    assert result.state == {"log": [1, 2]}


@pytest.mark.parametrize("mode", ["superstep", "async"])
@pytest.mark.parametrize("operation", ["update", "delete", "edit-delete"])
async def test_in_a_run_update_and_delete_of_a_reducer_key_fail_the_step(
    mode: str, operation: str
) -> None:
    @executor(id="misuse")
    async def misuse(n: int, ctx: WorkflowContext) -> None:
        if operation == "update":
            await ctx.store.update("log", lambda old: old)
        elif operation == "delete":
            await ctx.store.delete("log")
        else:
            async with ctx.store.edit() as state:
                del state["log"]

    @executor(id="seed")
    async def seed(n: int, ctx: WorkflowContext) -> None:
        await ctx.store.set("log", n)
        await ctx.send_message(n)

    wf = WorkflowBuilder(start=seed, reducers={"log": append}).add_edge(seed, misuse)
    with pytest.raises(WorkflowRuntimeError, match=r"ctx\.store\..*'log'.*has a reducer"):
        await wf.build(mode=mode).run(1)


async def test_a_custom_reducer_is_any_function_of_old_and_new() -> None:
    def keep_max(old: int | None, new: int) -> int:
        return new if old is None else max(old, new)

    @executor(id="scorer")
    async def scorer(n: int, ctx: WorkflowContext) -> None:
        for value in (n, n + 7, n + 3):
            await ctx.store.set("best", value)

    result = await WorkflowBuilder(start=scorer, reducers={"best": keep_max}).build().run(1)
    assert result.state == {"best": 8}


# -- in a run: async mode -----------------------------------------------------------------------


async def test_async_mode_merges_each_write_at_once_in_arrival_order() -> None:
    second = Writer("second")
    first = Writer("first", wait_for=second.wrote)
    result = await writers_graph("async", first, second).run(0)
    log = result.state["log"]
    assert sorted(log) == ["first:0", "first:1", "second:0", "second:1"]
    assert log.index("second:0") < log.index("first:0")  # second wrote first
    assert second.saw[0][-1] == "second:0"  # a writer sees its own write at once


# -- @step workflows ----------------------------------------------------------------------------


class Part(Event):
    name: str


class Done(Event):
    pass


class Gather(Workflow):
    reducers = {"parts": append}

    @step
    async def split(self, ctx: Context, ev: StartEvent) -> None:
        for name in ("a", "b", "c"):
            ctx.send_event(Part(name=name))

    @step(num_workers=3)
    async def work(self, ctx: Context, ev: Part) -> Done:
        await ctx.store.set("parts", ev.name)
        return Done()

    @step
    async def finish(self, ctx: Context, ev: Done) -> StopEvent | None:
        if ctx.collect_events(ev, [Done] * 3) is None:
            return None
        return StopEvent(result=await ctx.store.get("parts"))


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_a_step_workflow_declares_reducers_as_a_class_attribute(mode: str) -> None:
    parts = await Gather(mode=mode).run()
    assert sorted(parts) == ["a", "b", "c"]
    if mode == "superstep":
        assert parts == ["a", "b", "c"]  # invocation order, deterministic


def test_a_step_workflow_reducer_that_is_not_a_function_is_rejected() -> None:
    class Broken(Workflow):
        reducers = {"parts": "append"}

        @step
        async def only(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match="reducers\\['parts'\\] is 'append'"):
        Broken().validate()
