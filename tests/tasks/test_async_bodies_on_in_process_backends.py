"""Async bodies on a named in-process backend run on their run's event loop.

A thread backend runs ``def`` bodies in its threads and ``async def`` ones on the loop
(docs/backends.md), whatever the body's signature: a step without ``ctx``, or with
``ctx`` after the event, is called through a plain function that puts its arguments in
place, and an executor's handlers through its dispatch, so the runtime asks the
program whether a body is async rather than the function it hands the backend. An
async body off the loop would use its run's live context from another thread and loop
(an ``async with ctx.store.edit()`` hangs there).

Every async body here checks first that it runs on the test's thread, and raises
(without touching its context) when it does not: the run then fails with that error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from stepgraph import (
    Context,
    Event,
    Executor,
    RequestInfoEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    get_context,
    handler,
    response_handler,
    step,
)
from stepgraph.backends import InlineBackend, ThreadBackend

Where = tuple[int, asyncio.AbstractEventLoop]


def on_the_loop() -> Where:
    """The thread and the loop an async body runs on; raises off the test's thread."""
    thread = threading.current_thread()
    if thread is not threading.main_thread():
        raise AssertionError(f"an async body ran on thread {thread.name!r}, off its run's loop")
    return threading.get_ident(), asyncio.get_running_loop()


def here() -> Where:
    """The test's thread and loop: where its runs' async bodies must run."""
    return threading.get_ident(), asyncio.get_running_loop()


@pytest.fixture
async def threads() -> AsyncIterator[ThreadBackend]:
    backend = ThreadBackend(2, name="t")
    yield backend
    await backend.shutdown()


async def edited(ctx: Context) -> Where:
    """Where the body runs, after an edit of its run's shared state (a lock of the loop)."""
    where = on_the_loop()
    async with ctx.store.edit() as state:
        state["edits"] = state.get("edits", 0) + 1
    return where


class CtxFirst(Workflow):
    @step(backend="t")
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=await edited(ctx))


class NoCtx(Workflow):
    @step(backend="t")
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=await edited(get_context()))


class CtxSecond(Workflow):
    @step(backend="t")
    async def start(self, ev: StartEvent, ctx: Context) -> StopEvent:
        return StopEvent(result=await edited(ctx))


@pytest.mark.parametrize("kind", ["thread", "inline"])
@pytest.mark.parametrize("workflow", [CtxFirst, NoCtx, CtxSecond])
async def test_an_async_step_on_an_in_process_backend_runs_on_its_runs_loop(
    workflow: type[Workflow], kind: str, threads: ThreadBackend
) -> None:
    backend = threads if kind == "thread" else InlineBackend()
    handler = workflow(backends={"t": backend}).run()
    assert await handler == here()
    assert await handler.ctx.store.get("edits") == 1


class Work(Event):
    n: int


class Both(Workflow):
    """An async step without ctx and a ``def`` step on one thread backend."""

    @step(backend="t")
    async def start(self, ev: StartEvent) -> Work:
        on_the_loop()
        return Work(n=ev.n)

    @step(backend="t")
    def crunch(self, ev: Work) -> StopEvent:
        return StopEvent(result=(ev.n, threading.current_thread().name))


async def test_a_def_step_on_the_same_thread_backend_still_runs_in_its_pool(
    threads: ThreadBackend,
) -> None:
    n, thread = await Both(backends={"t": threads}).run(n=3)
    assert n == 3 and thread.startswith("stepgraph-t")


class Ping(Event):
    n: int


class Edits(Workflow):
    """The review's case: two bodies of a step without ctx contend for ``store.edit()``."""

    second_arrived: asyncio.Event

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Ping | None:
        async with ctx.store.edit() as state:  # the store's lock is made on the run's loop
            state["n"] = 0
        ctx.send_event(Ping(n=0))
        ctx.send_event(Ping(n=1))
        return None

    @step(backend="t", num_workers=2)
    async def bump(self, ev: Ping) -> StopEvent | None:
        on_the_loop()
        if ev.n == 1:
            self.second_arrived.set()
        async with get_context().store.edit() as state:
            if ev.n == 0:
                await self.second_arrived.wait()  # the other body waits for the edit meanwhile
            state["n"] += 1
            done = state["n"] == 2
        return StopEvent(result=done) if done else None


async def test_async_steps_on_a_thread_backend_share_the_runs_edit_lock(
    threads: ThreadBackend,
) -> None:
    wf = Edits(backends={"t": threads})
    wf.second_arrived = asyncio.Event()
    assert await wf.run() is True


@executor(id="where", backend="t")
async def where(text: str, ctx: WorkflowContext[str]) -> None:
    await ctx.yield_output((text, on_the_loop()))


async def test_an_async_function_executor_on_a_thread_backend_runs_on_the_loop(
    threads: ThreadBackend,
) -> None:
    wf = WorkflowBuilder(start=where).build(backends={"t": threads})
    assert (await wf.run("hi")).outputs == [("hi", here())]


class Mixed(Executor):
    """Async handlers (a message handler, a response handler) and a ``def`` one."""

    @handler
    async def on_text(self, text: str, ctx: WorkflowContext) -> None:
        on_the_loop()
        await ctx.request_info(text, response_type=bool)

    @response_handler
    async def on_answer(self, text: str, approved: bool, ctx: WorkflowContext) -> None:
        await ctx.yield_output((text, approved, on_the_loop()))

    @handler
    def on_number(self, n: int, ctx: WorkflowContext) -> None:
        ctx.yield_output((n, threading.current_thread().name))  # from a thread: no await


async def test_an_executors_handlers_on_a_thread_backend_run_each_where_its_kind_runs(
    threads: ThreadBackend,
) -> None:
    wf = WorkflowBuilder(start=Mixed("mixed", backend="t")).build(backends={"t": threads})
    run = wf.run("deploy")
    async for event in run.stream_events():
        if isinstance(event, RequestInfoEvent):
            await run.send_response(event.request_id, True)
    assert (await run).outputs == [("deploy", True, here())]
    [(n, thread)] = (await wf.run(7)).outputs
    assert n == 7 and thread.startswith("stepgraph-t")
