"""Steps and executors on named backends: ``@step(backend=...)`` with
``Workflow(backends={...})``, ``Executor(backend=...)`` with ``build(backends={...})``.

Real process pools and a real Dask LocalCluster; bodies in another process get a
recording context, and their effects come back with their result.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ConfigDict

from stepgraph import (
    Context,
    Event,
    Executor,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    step,
)
from stepgraph.backends import DaskBackend, ProcessBackend, ThreadBackend
from stepgraph.errors import SerializationError, WorkflowValidationError
from stepgraph.state import append


class Work(Event):
    n: int


class Done(Event):
    pid: int
    n: int


class Crunch(Workflow):
    """``crunch`` runs on the "cpu" backend; the other steps where steps run by default."""

    reducers = {"log": append}

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Work:
        await ctx.store.set("base", 100)
        return Work(n=ev.n)

    @step(backend="cpu")
    def crunch(self, ctx: Context, ev: Work) -> Done:
        return Done(pid=os.getpid(), n=sum(range(ev.n)))

    @step
    async def finish(self, ctx: Context, ev: Done) -> StopEvent:
        return StopEvent(result=(ev.pid, ev.n))


@pytest.fixture
async def pool() -> AsyncIterator[ProcessBackend]:
    backend = ProcessBackend(1)
    yield backend
    await backend.shutdown()


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_a_step_named_on_a_process_backend_runs_in_another_process(
    pool: ProcessBackend, mode: str
) -> None:
    wf = Crunch(backends={"cpu": pool}, mode=mode)
    pid, total = await wf.run(n=10)
    assert total == 45
    assert pid != os.getpid()


class Effects(Workflow):
    reducers = {"log": append}

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Work:
        await ctx.store.set("seed", 5)
        return Work(n=1)

    @step(backend="cpu")
    async def remote(self, ctx: Context, ev: Work) -> None:
        seed = await ctx.store.get("seed")
        await ctx.store.set("log", f"remote saw {seed}")
        ctx.send_event(Done(pid=os.getpid(), n=seed + ev.n))

    @step
    async def finish(self, ctx: Context, ev: Done) -> StopEvent:
        await ctx.store.set("log", "local")
        return StopEvent(result=ev.n)


async def test_what_a_body_in_another_process_does_reaches_the_run(pool: ProcessBackend) -> None:
    handler = Effects(backends={"cpu": pool}).run()
    assert await handler == 6
    assert await handler.ctx.store.get("log") == ["remote saw 5", "local"]


class Fails(Workflow):
    @step(backend="cpu")
    def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        raise KeyError("missing in the worker")


async def test_a_failing_body_elsewhere_fails_the_run_with_its_own_error(
    pool: ProcessBackend,
) -> None:
    with pytest.raises(KeyError, match="missing in the worker") as caught:
        await Fails(backends={"cpu": pool}).run()
    assert any("'start'" in note for note in getattr(caught.value, "__notes__", []))


class Locked(Event):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    lock: Any


class SendsALock(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Locked:
        return Locked(lock=threading.Lock())

    @step(backend="cpu")
    def far(self, ctx: Context, ev: Locked) -> StopEvent:
        return StopEvent(result="never")


async def test_an_event_that_cannot_be_pickled_fails_the_run_naming_step_and_event(
    pool: ProcessBackend,
) -> None:
    with pytest.raises(SerializationError) as caught:
        await SendsALock(backends={"cpu": pool}).run()
    text = str(caught.value)
    assert "'far'" in text and "Locked" in text and "'lock'" in text and "'cpu'" in text


class ReturnsALock(Workflow):
    @step(backend="cpu")
    def far(self, ctx: Context, ev: StartEvent) -> Locked:
        return Locked(lock=threading.Lock())

    @step
    async def end(self, ctx: Context, ev: Locked) -> StopEvent:
        return StopEvent(result="never")


async def test_an_event_returned_that_cannot_come_back_fails_the_run_naming_step_and_event(
    pool: ProcessBackend,
) -> None:
    with pytest.raises(SerializationError) as caught:
        await ReturnsALock(backends={"cpu": pool}).run()
    text = str(caught.value)
    assert text.startswith("step 'far' of workflow 'ReturnsALock'")
    assert "on backend 'cpu'" in text and "(a Locked): its field 'lock'" in text


async def test_a_step_naming_an_unknown_backend_is_a_validation_error() -> None:
    with pytest.raises(WorkflowValidationError, match=r"'crunch'.*'cpu'"):
        await Crunch(backends={"gpu": ThreadBackend()}).run(n=1)
    with pytest.raises(WorkflowValidationError, match="backend"):
        Crunch(backends={"cpu": object()})  # type: ignore[dict-item]
    with pytest.raises(WorkflowValidationError, match="backend"):

        class Bad(Workflow):
            @step(backend="")  # type: ignore[misc]
            async def start(self, ev: StartEvent) -> StopEvent:
                return StopEvent()


class OnThreads(Workflow):
    @step(backend="io")
    def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=threading.current_thread().name)


async def test_a_step_on_a_named_thread_backend_runs_in_its_pool() -> None:
    backend = ThreadBackend(1, name="io")
    try:
        name = await OnThreads(backends={"io": backend}).run()
        assert name.startswith("stepgraph-io")
    finally:
        await backend.shutdown()


class Square(Executor):
    @handler
    async def square(self, n: int, ctx: WorkflowContext[int]) -> None:
        await ctx.send_message(n * n)


class Report(Executor):
    @handler
    async def report(self, n: int, ctx: WorkflowContext[Any]) -> None:
        await ctx.yield_output((n, os.getpid()))


async def test_an_executor_named_on_a_backend_runs_there_in_a_built_graph(
    pool: ProcessBackend,
) -> None:
    square = Square("square", backend="cpu")
    report = Report("report")
    wf = (
        WorkflowBuilder(start=square)
        .add_edge(square, report)
        .build(backends={"cpu": pool}, name="squares")
    )
    outputs = (await wf.run(7)).get_outputs()
    assert outputs == [(49, os.getpid())]  # report stayed here
    with pytest.raises(WorkflowValidationError, match=r"'square'.*'cpu'"):
        WorkflowBuilder(start=square).build(backends={})


async def test_a_step_on_a_dask_backend_runs_on_the_cluster() -> None:
    dask = DaskBackend(processes=False, n_workers=1, threads_per_worker=1)
    try:
        pid, total = await Crunch(backends={"cpu": dask}).run(n=4)
        assert total == 6 and pid == os.getpid()  # processes=False: threads of this process
        assert dask.client is not None
    finally:
        await dask.shutdown()
