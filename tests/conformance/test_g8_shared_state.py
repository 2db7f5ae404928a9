"""G8 shared state: single store operations and ``edit()`` blocks are atomic, per run.

Many invocations run at once (``num_workers=100``) and interleave at every await;
``ctx.store.update`` and ``async with ctx.store.edit()`` must lose no update. The
naive read, await, write pattern is shown to lose updates under the same load, so
the atomic tests are known to be able to fail. An ``edit()`` block that raises
leaves the state unchanged, and each run has its own store.
"""

import asyncio

import pytest
from _helpers_b import both_modes, finish, wait_until

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step

WORKERS = 100


class Bump(Event):
    n: int


class Bumped(Event):
    pass


def counting_workflow(bump_body: object) -> type[Workflow]:
    """A workflow that fans out ``WORKERS`` Bumps to ``bump`` and returns the store's ``n``."""

    class Counter(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for i in range(WORKERS):
                ctx.send_event(Bump(n=i))

        @step(num_workers=WORKERS)
        async def bump(self, ctx: Context, ev: Bump) -> Bumped:
            await bump_body(ctx, ev)  # type: ignore[operator]
            return Bumped()

        @step
        async def total(self, ctx: Context, ev: Bumped) -> StopEvent | None:
            if ctx.collect_events(ev, [Bumped] * WORKERS) is None:
                return None
            return StopEvent(result=await ctx.store.get("n"))

    return Counter


@both_modes
async def test_concurrent_updates_lose_nothing(mode: str) -> None:
    async def body(ctx: Context, ev: Bump) -> None:
        await asyncio.sleep(0)  # interleave the invocations around the update
        await ctx.store.update("n", lambda v: (v or 0) + 1)
        await asyncio.sleep(0)

    assert await finish(counting_workflow(body)(mode=mode).run()) == WORKERS


@both_modes
async def test_naive_get_await_set_loses_updates_which_update_and_edit_prevent(mode: str) -> None:
    # Contrast, documented: reading, awaiting, then writing back is NOT atomic. Every
    # invocation reads before any writes (they all wait for the last reader), so all but
    # one increment is lost. The tests around this one show update() and edit() avoid it.
    readers = 0
    all_read = asyncio.Event()

    async def body(ctx: Context, ev: Bump) -> None:
        nonlocal readers
        value = await ctx.store.get("n", 0)
        readers += 1
        if readers == WORKERS:
            all_read.set()
        await all_read.wait()
        await ctx.store.set("n", value + 1)

    assert await finish(counting_workflow(body)(mode=mode).run()) == 1


@both_modes
async def test_edit_block_with_an_await_inside_is_atomic_against_edits_and_single_ops(
    mode: str,
) -> None:
    overlaps: list[int] = []
    inside = 0

    async def body(ctx: Context, ev: Bump) -> None:
        nonlocal inside
        if ev.n % 2 == 0:
            async with ctx.store.edit() as state:
                inside += 1
                overlaps.append(inside)
                value = state.get("n", 0)
                await asyncio.sleep(0)  # other invocations run here; none may touch "n"
                await asyncio.sleep(0)
                state["n"] = value + 1
                state["edits"] = state.get("edits", 0) + 1
                inside -= 1
        else:
            await asyncio.sleep(0)
            await ctx.store.update("n", lambda v: (v or 0) + 1)

    workflow = counting_workflow(body)
    assert await finish(workflow(mode=mode).run()) == WORKERS
    assert overlaps == [1] * (WORKERS // 2), "two edit blocks overlapped"


@both_modes
async def test_edit_block_commits_several_keys_together(mode: str) -> None:
    # Each edit moves one unit from "a" to "b" with an await in between; a reader that
    # sees the state between those writes would see a + b != total.
    total = 40
    observed: list[int] = []

    class Transfer(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            await ctx.store.set("a", total)
            await ctx.store.set("b", 0)
            for i in range(total):
                ctx.send_event(Bump(n=i))

        @step(num_workers=total)
        async def move(self, ctx: Context, ev: Bump) -> Bumped:
            async with ctx.store.edit() as state:
                state["a"] = state["a"] - 1
                await asyncio.sleep(0)
                state["b"] = state["b"] + 1
            async with ctx.store.edit() as state:
                observed.append(state["a"] + state["b"])
            return Bumped()

        @step
        async def total_(self, ctx: Context, ev: Bumped) -> StopEvent | None:
            if ctx.collect_events(ev, [Bumped] * total) is None:
                return None
            return StopEvent(result=(await ctx.store.get("a"), await ctx.store.get("b")))

    assert await finish(Transfer(mode=mode).run()) == (0, total)
    assert observed == [total] * total


@both_modes
async def test_edit_block_discards_its_changes_when_it_raises(mode: str) -> None:
    class Discard(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.store.set("kept", 1)
            with pytest.raises(ValueError, match="abort the edit"):
                async with ctx.store.edit() as state:
                    state["kept"] = 2
                    state["added"] = "x"
                    del state["kept"]
                    await asyncio.sleep(0)
                    raise ValueError("abort the edit")
            # the failed block released the lock: a later edit and single ops still work
            async with ctx.store.edit() as state:
                state["after"] = True
            return StopEvent(
                result=(
                    await ctx.store.get("kept"),
                    await ctx.store.get("added", "missing"),
                    await ctx.store.get("after"),
                )
            )

    assert await finish(Discard(mode=mode).run()) == (1, "missing", True)


@both_modes
async def test_update_on_a_missing_key_passes_none(mode: str) -> None:
    passed: list[object] = []

    def first(value: object) -> int:
        passed.append(value)
        return 7

    class Missing(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            returned = await ctx.store.update("fresh", first)
            return StopEvent(result=(returned, await ctx.store.get("fresh")))

    assert await finish(Missing(mode=mode).run()) == (7, 7)
    assert passed == [None]


@both_modes
async def test_each_run_has_its_own_store(mode: str) -> None:
    first_wrote = asyncio.Event()
    second_wrote = asyncio.Event()

    class Isolated(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            if ev.who == "first":
                await ctx.store.set("who", "first")
                await ctx.store.set("only-first", True)
                first_wrote.set()
                await second_wrote.wait()  # the other run has written its keys by now
            else:
                await first_wrote.wait()
                await ctx.store.set("who", "second")
                second_wrote.set()
            return StopEvent(
                result=(await ctx.store.get("who"), await ctx.store.get("only-first", False))
            )

    wf = Isolated(mode=mode)
    first = wf.run(who="first")
    second = wf.run(who="second")
    await wait_until(second_wrote, "the second run wrote its store")
    assert await finish(first) == ("first", True)
    assert await finish(second) == ("second", False)


async def _increment_later(old: int | None) -> int:
    await asyncio.sleep(0)  # yields while the update is in progress
    return (old or 0) + 1


@both_modes
async def test_update_with_a_plain_function_returning_a_coroutine_stays_atomic(mode: str) -> None:
    class Count(Event):
        pass

    class Counter(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for _ in range(10):
                ctx.send_event(Count())

        @step(num_workers=10)
        async def count(self, ctx: Context, ev: Count) -> StopEvent | None:
            # a lambda (not a coroutine function) that returns a coroutine
            n = await ctx.store.update("n", lambda old: _increment_later(old))
            return StopEvent(result=await ctx.store.get("n")) if n == 10 else None

    assert await finish(Counter(mode=mode).run()) == 10  # ten increments, none lost


@both_modes
async def test_update_with_a_function_returning_a_coroutine_waits_its_turn_after_a_release(
    mode: str,
) -> None:
    class Bumps(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            async def bump() -> None:
                for _ in range(5):  # each again as soon as its last is done: a release
                    # wakes a waiter, and this one arrives before the waiter runs
                    await ctx.store.update("n", lambda old: _increment_later(old))

            await asyncio.gather(*(bump() for _ in range(4)))
            return StopEvent(result=await ctx.store.get("n"))

    assert await finish(Bumps(mode=mode).run()) == 20  # none lost
