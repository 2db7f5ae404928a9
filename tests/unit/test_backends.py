"""The backend seam: where a body runs, and bodies that run away from their run.

In-process backends (``InlineBackend``, ``ThreadBackend``) give bodies the live context.
A backend that is not in-process gives a body a recording context instead: what it sends,
streams and writes to the shared state comes back as data and is carried out by the
shell, so the body needs nothing of the live run. Here such a backend runs bodies in a
thread pool of its own without copying any context variable, as a process pool would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, get_context, step
from stepgraph.backends import BackendBase
from stepgraph.errors import WorkflowRuntimeError
from stepgraph.runtime.backends import THREADS, InlineBackend, ThreadBackend
from stepgraph.runtime.launch import launch
from stepgraph.state import append


class Elsewhere(BackendBase):
    """A backend that is not in-process: its own threads, no context variables carried."""

    name = "elsewhere"
    in_process = False

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="elsewhere")
        self.ran: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Awaitable[Any]:
        self.ran.append(getattr(args[0], "__name__", "?"))
        return asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


class Part(Event):
    n: int


class Note(Event):
    text: str


SEEN: dict[str, Any] = {}


class Remote(Workflow):
    """``work`` is the node moved to the other backend; the others stay in-process."""

    reducers = {"log": append}

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Part:
        await ctx.store.set("base", 10)
        return Part(n=1)

    @step
    async def work(self, ctx: Context, ev: Part) -> Part | None:
        SEEN["port"] = type(ctx._run).__name__
        SEEN["thread"] = threading.current_thread().name
        SEEN["base"] = await ctx.store.get("base")
        ctx.write_event_to_stream(Note(text="working"))
        await ctx.store.set("log", "remote")  # a reducer key: merged at the barrier
        await ctx.store.set("plain", ev.n)
        await ctx.store.delete("base")
        ctx.send_event(Note(text="done"), step="finish")
        return None

    @step
    async def finish(self, ctx: Context, ev: Note) -> StopEvent:
        await ctx.store.set("log", "local")
        return StopEvent(result=ev.text)


def on_backend(wf: Workflow, step_name: str, backend: Any) -> Any:
    """The plan of ``wf`` with node ``step_name`` moved to ``backend``."""
    plan = wf._stepgraph_plan()
    programs = tuple(
        dataclasses.replace(p, backend=backend) if p.name == step_name else p for p in plan.programs
    )
    return dataclasses.replace(plan, programs=programs)


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_a_body_on_a_backend_that_is_not_in_process_has_its_effects_carried_out(
    mode: str,
) -> None:
    SEEN.clear()
    backend = Elsewhere()
    wf = Remote(mode=mode)
    handler = launch(on_backend(wf, "work", backend), wf, wf.options, StartEvent())
    streamed = [event async for event in handler.stream_events()]
    assert await handler == "done"
    assert backend.ran == ["work"]  # the body went to the backend, and only it
    assert SEEN["port"] == "RecordingPort"  # not the live run
    assert SEEN["thread"].startswith("elsewhere")
    assert SEEN["base"] == 10  # it read the shared state as of its start
    assert [e.text for e in streamed if isinstance(e, Note)] == ["working"]
    store = handler.ctx.store
    assert await store.get("plain") == 1
    assert await store.get("base") is None  # its delete was carried out
    assert await store.get("log") == ["remote", "local"]  # its reducer write merged in order


async def test_a_body_elsewhere_cannot_collect_wait_or_ask_and_says_why() -> None:
    class Collects(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent | None:
            if ctx.collect_events(ev, [StartEvent, StartEvent]) is None:
                return None
            return StopEvent()

    wf = Collects()
    handler = launch(on_backend(wf, "start", Elsewhere()), wf, wf.options, StartEvent())
    with pytest.raises(WorkflowRuntimeError, match=r"backend 'elsewhere'.*collect_events"):
        await handler


class InThread(Workflow):
    @step
    def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=(get_context() is ctx, threading.current_thread().name))


async def test_a_def_body_runs_on_the_thread_backend_with_its_live_context() -> None:
    is_live, thread = await InThread().run()
    assert is_live
    assert thread != threading.main_thread().name
    assert isinstance(THREADS, ThreadBackend) and THREADS.in_process


class StopsIterating(Workflow):
    @step
    def start(self, ev: StartEvent) -> StopEvent:
        return next(iter(()))  # raises StopIteration in the worker thread


async def test_stop_iteration_escaping_a_def_step_fails_the_run_instead_of_hanging() -> None:
    async with asyncio.timeout(5):  # a safety net: the run must end at once
        with pytest.raises(RuntimeError, match="StopIteration"):
            await StopsIterating().run()


async def test_the_inline_backend_awaits_coroutines_and_wraps_plain_results() -> None:
    inline = InlineBackend()

    async def double(n: int) -> int:
        return n * 2

    assert await inline.submit(double, 4) == 8
    assert await inline.submit(lambda n: n + 1, 4) == 5
    assert inline.in_process


class OnItsPool(Workflow):
    @step
    def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Note(text=threading.current_thread().name))
        return StopEvent(result=get_context() is ctx)


class AsyncOnAPool(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(0)
        return StopEvent(result=threading.current_thread() is threading.main_thread())


async def test_an_in_process_backend_set_on_a_node_runs_its_body_with_the_live_context() -> None:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="own-pool")
    try:
        wf = OnItsPool()
        plan = on_backend(wf, "start", ThreadBackend(executor=pool, name="own"))
        handler = launch(plan, wf, wf.options, StartEvent())
        streamed = [e async for e in handler.stream_events() if isinstance(e, Note)]
        assert await handler is True  # the live context, in another thread
        assert [e.text.startswith("own-pool") for e in streamed] == [True]
        # an async body stays on the event loop: a thread backend is for blocking code
        other = AsyncOnAPool()
        plan = on_backend(other, "start", ThreadBackend(executor=pool, name="own"))
        assert await launch(plan, other, other.options, StartEvent()) is True
    finally:
        pool.shutdown()


class SendsNowhere(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        try:
            ctx.send_event(Note(text="x"), step="nowhere")
        except Exception as exc:  # the body sees the error at once, as it would in-process
            return StopEvent(result=type(exc).__name__)
        return StopEvent(result="sent")


async def test_a_body_elsewhere_sending_to_an_unknown_step_gets_the_error_in_the_body() -> None:
    wf = SendsNowhere()
    handler = launch(on_backend(wf, "start", Elsewhere()), wf, wf.options, StartEvent())
    assert await handler == "UnknownStepError"
