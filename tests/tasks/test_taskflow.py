"""TaskFlow on real thread pools and the event loop: futures, dependencies, errors,
cancellation, routing, resource slots, blocks and workflow scopes."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stepgraph.backends import InlineBackend, NoopBackend, ThreadBackend
from stepgraph.errors import BackendError, ResourceError, StepgraphError
from stepgraph.tasks import (
    DependencyFailed,
    TaskFailed,
    TaskFlow,
    TaskFuture,
    TaskObserver,
    current_workflow_id,
)


class Boom(ValueError):
    pass


@pytest.fixture
async def flow() -> AsyncIterator[TaskFlow]:
    async with TaskFlow(
        backends={"default": ThreadBackend(4), "inline": InlineBackend()},
        resources={"cpu": 2, "gpu": 1},
    ) as f:
        yield f


async def test_a_call_returns_a_pending_future_at_once_and_never_blocks(flow: TaskFlow) -> None:
    release = threading.Event()

    @flow.function_task
    def slow(x: int) -> int:
        release.wait(10)
        return x * 2

    future = slow(21)
    assert isinstance(future, TaskFuture) and isinstance(future, asyncio.Future)
    assert not future.done() and not future.cancelled()
    with pytest.raises(asyncio.InvalidStateError):
        future.result()
    release.set()
    assert await future == 42
    assert future.done() and future.result() == 42
    assert (await asyncio.gather(slow(1), slow(2))) == [2, 4]


async def test_futures_as_arguments_are_dependencies_resolved_before_the_call(
    flow: TaskFlow,
) -> None:
    seen: list[tuple[Any, ...]] = []

    @flow.function_task
    def value(x: int) -> int:
        return x

    @flow.function_task(backend="inline")
    async def add(x: int, y: int, *, z: int = 0) -> int:
        seen.append((x, y, z))
        return x + y + z

    total = add(value(1), value(2), z=value(3))
    assert await total == 6
    assert seen == [(1, 2, 3)]  # values, never futures


async def test_futures_nested_in_lists_tuples_and_dicts_are_resolved(flow: TaskFlow) -> None:
    @flow.function_task
    def value(x: int) -> int:
        return x

    @flow.function_task
    def gather(items: list[int], pair: tuple[int, int], named: dict[str, Any]) -> Any:
        return items, pair, named

    result = await gather([value(1), 2, value(3)], (value(4), 5), {"a": value(6), "b": [value(7)]})
    assert result == ([1, 2, 3], (4, 5), {"a": 6, "b": [7]})


async def test_a_body_runs_once_however_many_dependents_await_it(flow: TaskFlow) -> None:
    runs: list[int] = []

    @flow.function_task
    def root() -> int:
        runs.append(1)
        return 5

    @flow.function_task
    def child(x: int, i: int) -> int:
        return x + i

    shared = root()
    results = await asyncio.gather(*(child(shared, i) for i in range(20)), shared, shared)
    assert results[:20] == [5 + i for i in range(20)]
    assert runs == [1]


async def test_the_decorators_work_bare_with_keywords_and_as_plain_calls(flow: TaskFlow) -> None:
    def triple(x: int) -> int:
        return 3 * x

    bare = flow.function_task(triple)
    keyed = flow.function_task(backend="inline")(triple)
    lam = flow.function_task(backend="inline")(lambda x: x + 1)
    assert bare is not keyed  # the same function, wrapped twice
    assert (await bare(2), await keyed(3), await lam(4)) == (6, 9, 5)
    assert bare.__name__ == "triple" and lam.name == "<lambda>"
    assert keyed.backend == "inline" and bare.backend == "default"


async def test_sync_and_async_bodies_run_where_their_backend_says(flow: TaskFlow) -> None:
    loop_thread = threading.get_ident()

    @flow.function_task
    def on_thread() -> int:
        return threading.get_ident()

    @flow.function_task(backend="inline")
    def inline_sync() -> int:
        return threading.get_ident()

    @flow.function_task(backend="inline")
    async def inline_async() -> int:
        return threading.get_ident()

    assert await on_thread() != loop_thread
    assert await inline_sync() == loop_thread
    assert await inline_async() == loop_thread


async def test_task_failed_names_the_task_the_backend_and_the_arguments(flow: TaskFlow) -> None:
    @flow.function_task
    def explode(x: int, *, label: str) -> int:
        raise Boom(f"no {x}")

    with pytest.raises(TaskFailed) as caught:
        await explode(7, label="seven")
    error = caught.value
    assert isinstance(error, StepgraphError)
    text = str(error)
    assert "'explode'" in text and "'default'" in text and "7" in text and "label='seven'" in text
    assert type(error.__cause__) is Boom and str(error.__cause__) == "no 7"
    assert error.task == "explode" and error.backend == "default"


async def test_a_partial_task_is_named_after_its_function(flow: TaskFlow) -> None:
    def scale(x: int, factor: int) -> int:
        return x * factor

    triple = flow.function_task(functools.partial(functools.partial(scale, factor=3)))
    future = triple(2)
    assert future.name == "scale" and await future == 6


async def test_task_failed_cuts_a_long_cause_which_it_chains_whole(flow: TaskFlow) -> None:
    @flow.function_task
    def verbose() -> None:
        raise Boom("x" * 100_000)

    with pytest.raises(TaskFailed) as caught:
        await verbose()
    text = str(caught.value)
    assert len(text) < 3_000 and "99,000 more characters" in text
    assert str(caught.value.__cause__) == "x" * 100_000


async def test_dependents_of_a_failure_fail_with_dependency_failed_and_never_run(
    flow: TaskFlow,
) -> None:
    ran: list[str] = []

    @flow.function_task(backend="inline")
    async def bad() -> int:
        raise Boom("root cause")

    @flow.function_task(backend="inline")
    async def middle(x: int) -> int:
        ran.append("middle")
        return x

    @flow.function_task(backend="inline")
    async def last(x: int) -> int:
        ran.append("last")
        return x

    root = bad()
    mid = middle(root)
    end = last(mid)
    with pytest.raises(DependencyFailed) as caught:
        await end
    error = caught.value
    assert error.task == "last" and error.dependency == "middle"
    assert "'last'" in str(error) and "'middle'" in str(error)
    assert isinstance(error.__cause__, TaskFailed)  # the root failure, not a relay
    assert type(error.__cause__.__cause__) is Boom
    with pytest.raises(DependencyFailed, match="'bad'"):
        await mid
    with pytest.raises(TaskFailed):
        await root
    later = last(root)  # a dependency that failed already
    with pytest.raises(DependencyFailed, match="'bad'"):
        await later
    assert ran == []


async def test_cancelling_a_future_cancels_its_running_inline_body_and_its_dependents(
    flow: TaskFlow,
) -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    @flow.function_task(backend="inline")
    async def forever() -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        return 0

    @flow.function_task
    def after(x: int) -> int:
        outcome.append("after ran")
        return x

    running = forever()
    dependent = after(running)
    await started.wait()
    assert running.cancel() is True
    assert running.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await dependent
    assert dependent.cancelled()
    await flow.wait()
    assert outcome == ["cancelled"]
    assert after(running).cancelled()  # a dependency cancelled already
    assert running.cancel() is False  # done already


async def test_cancelling_a_pending_task_means_it_never_runs(flow: TaskFlow) -> None:
    gate = asyncio.Event()
    ran: list[int] = []

    @flow.function_task(backend="inline")
    async def wait_gate() -> int:
        await gate.wait()
        return 1

    @flow.function_task(backend="inline")
    async def record(x: int) -> int:
        ran.append(x)
        return x

    first = wait_gate()
    pending = record(first)
    pending.cancel()
    gate.set()
    assert await first == 1
    await flow.wait()
    assert ran == [] and pending.cancelled()


async def test_gather_cancelling_its_children_cancels_the_tasks(flow: TaskFlow) -> None:
    started = asyncio.Event()

    @flow.function_task(backend="inline")
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    children = [hang(), hang()]
    together = asyncio.gather(*children)
    await started.wait()
    together.cancel()
    with pytest.raises(asyncio.CancelledError):
        await together
    assert all(c.cancelled() for c in children)


async def test_an_unknown_backend_is_an_error_naming_it_at_declaration(flow: TaskFlow) -> None:
    with pytest.raises(BackendError, match="'gpu-cluster'") as caught:

        @flow.function_task(backend="gpu-cluster")
        def f() -> None: ...

    assert "'default'" in str(caught.value) and "'inline'" in str(caught.value)
    with pytest.raises(BackendError, match="'nowhere'"):
        flow.block(backend="nowhere")(lambda: None)


async def test_a_flow_without_a_default_backend_names_it_for_tasks_without_one() -> None:
    async with TaskFlow(backends={"inline": InlineBackend()}) as flow:
        with pytest.raises(BackendError, match="'default'"):
            flow.function_task(lambda: 1)


async def test_resource_claims_never_exceed_the_slots(flow: TaskFlow) -> None:
    lock = threading.Lock()
    held = {"cpu": 0, "gpu": 0}
    peak = {"cpu": 0, "gpu": 0}
    overlaps: list[dict[str, int]] = []

    def claim(name: str, count: int) -> None:
        with lock:
            held[name] += count
            peak[name] = max(peak[name], held[name])
            overlaps.append(dict(held))

    def free(name: str, count: int) -> None:
        with lock:
            held[name] -= count

    @flow.function_task(resources={"cpu": 1})
    def cpu_task(i: int) -> int:
        claim("cpu", 1)
        barrier_or_timeout()
        free("cpu", 1)
        return i

    @flow.function_task(resources={"gpu": 1, "cpu": 1})
    def gpu_task(i: int) -> int:
        claim("gpu", 1)
        claim("cpu", 1)
        barrier_or_timeout()
        free("gpu", 1)
        free("cpu", 1)
        return i

    both = threading.Barrier(2)

    def barrier_or_timeout() -> None:
        try:  # two at once reach it; a third alone does not wait long
            both.wait(timeout=0.05)
        except threading.BrokenBarrierError:
            both.reset()

    results = await asyncio.gather(
        *(cpu_task(i) for i in range(6)), *(gpu_task(i) for i in range(3))
    )
    assert results == [*range(6), *range(3)]
    assert peak["cpu"] <= 2 and peak["gpu"] <= 1
    assert peak["cpu"] == 2  # the slots were used, not serialized to one
    assert all(o["cpu"] <= 2 and o["gpu"] <= 1 for o in overlaps)


async def test_a_task_that_claims_nothing_is_not_limited_by_slots(flow: TaskFlow) -> None:
    both = asyncio.Barrier(3)

    @flow.function_task(backend="inline", resources={"gpu": 1})
    async def gpu_holder() -> str:
        await both.wait()  # holds the only gpu slot while the others run
        return "gpu"

    @flow.function_task(backend="inline")
    async def free_task() -> str:
        await both.wait()
        return "free"

    assert await asyncio.gather(gpu_holder(), free_task(), free_task()) == ["gpu", "free", "free"]


async def test_impossible_claims_are_errors_naming_the_resource(flow: TaskFlow) -> None:
    with pytest.raises(ResourceError, match=r"'gpu'.*only 1"):
        flow.function_task(resources={"gpu": 2})(lambda: None)
    with pytest.raises(ResourceError, match="'tpu'"):
        flow.function_task(resources={"tpu": 1})(lambda: None)
    with pytest.raises(ResourceError, match="'cpu'"):
        flow.function_task(resources={"cpu": -1})(lambda: None)
    with pytest.raises(ResourceError, match="'cpu'"):
        TaskFlow(resources={"cpu": -2})


async def test_blocks_group_tasks_nest_and_are_dependencies(flow: TaskFlow) -> None:
    @flow.function_task
    def simulate(i: int) -> float:
        return i * 1.5

    @flow.function_task(backend="inline")
    async def analyze(x: float, y: float) -> float:
        return x + y

    @flow.block
    async def pipeline(i: int) -> float:
        a = simulate(i)
        b = simulate(i + 1)
        return await analyze(a, b)

    @flow.block
    async def campaign(n: int) -> list[float]:
        return list(await asyncio.gather(*(pipeline(i) for i in range(n))))

    @flow.function_task
    def total(values: list[float]) -> float:
        return sum(values)

    inner = campaign(4)
    assert isinstance(inner, TaskFuture) and inner.uid.startswith("block.")
    assert await total(inner) == sum(i * 1.5 + (i + 1) * 1.5 for i in range(4))


async def test_a_block_whose_argument_failed_raises_dependency_failed_without_running(
    flow: TaskFlow,
) -> None:
    ran: list[int] = []

    @flow.function_task
    def bad() -> int:
        raise Boom("no")

    @flow.block
    async def group(x: int) -> int:
        ran.append(x)
        return x

    with pytest.raises(DependencyFailed, match=r"block 'group'.*'bad'"):
        await group(bad())
    assert ran == []


async def test_a_block_body_error_reaches_its_caller_as_it_is(flow: TaskFlow) -> None:
    @flow.block
    async def group() -> int:
        raise Boom("in the block")

    with pytest.raises(Boom, match="in the block"):
        await group()


async def test_workflow_scope_stamps_futures_nests_and_isolates_siblings(flow: TaskFlow) -> None:
    @flow.function_task(backend="inline")
    async def job() -> None:
        return None

    outside = job()
    async with flow.workflow_scope("campaign-1"):
        first = job()
        async with flow.workflow_scope("inner"):
            nested = job()
        again = job()

    async def sibling(name: str) -> str | None:
        async with flow.workflow_scope(name):
            await asyncio.sleep(0)
            return job().workflow_id

    ids = await asyncio.gather(sibling("a"), sibling("b"))
    with pytest.raises(Boom):
        async with flow.workflow_scope("failing"):
            raise Boom("x")
    after = job()
    assert outside.workflow_id is None
    assert (first.workflow_id, nested.workflow_id, again.workflow_id) == (
        "campaign-1",
        "inner",
        "campaign-1",
    )
    assert ids == ["a", "b"]
    assert after.workflow_id is None


async def test_tasks_created_in_a_block_carry_the_scope_of_the_blocks_call(flow: TaskFlow) -> None:
    @flow.function_task(backend="inline")
    async def job() -> None:
        return None

    @flow.block
    async def group() -> str | None:
        return job().workflow_id

    @flow.block
    async def later(_: None) -> str | None:
        return job().workflow_id

    gate = asyncio.Event()

    @flow.function_task(backend="inline")
    async def gated() -> None:
        await gate.wait()

    dependency = gated()  # made outside the scope: it ends in no scope
    async with flow.workflow_scope("w"):
        block = group()
        waiting = later(dependency)  # starts when `dependency` ends, in no scope
    async with flow.workflow_scope("other"):
        gate.set()
        assert await waiting == "w"
    assert block.workflow_id == "w" and await block == "w"


async def test_a_normal_exit_waits_for_tasks_still_running() -> None:
    done: list[int] = []
    async with TaskFlow(backends={"default": InlineBackend()}) as flow:

        @flow.function_task
        async def later(i: int) -> int:
            await asyncio.sleep(0)
            done.append(i)
            return i

        futures = [later(i) for i in range(5)]
    assert sorted(done) == list(range(5))
    assert all(f.done() for f in futures)
    with pytest.raises(BackendError, match="closed"):
        later(9)


async def test_an_error_leaving_the_flow_cancels_tasks_and_is_raised_as_it_is() -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []
    box: dict[str, Any] = {}
    error = Boom("the caller's own error")
    with pytest.raises(Boom) as caught:
        async with TaskFlow(
            backends={"default": ThreadBackend(2), "inline": InlineBackend()}
        ) as flow:

            @flow.function_task
            def blocking() -> int:
                started.set()
                release.wait(10)
                return 1

            @flow.function_task(backend="inline")
            async def never(x: int) -> None:
                ran.append("never")

            box["running"] = blocking()
            box["pending"] = never(box["running"])
            await asyncio.to_thread(started.wait, 10)
            raise error
    release.set()
    assert caught.value is error  # the same error, not a group
    assert box["running"].cancelled() and box["pending"].cancelled()
    assert ran == []


async def test_noop_backend_runs_no_body_but_blocks_still_run() -> None:
    calls: list[str] = []
    noop = NoopBackend()
    async with TaskFlow(backends={"default": noop}, resources={"cpu": 1}) as flow:

        @flow.function_task(resources={"cpu": 1})
        def simulate(i: int) -> float:
            calls.append("simulate")
            return 1.0

        @flow.executable_task
        def command(x: Any) -> str:
            calls.append("command")
            return "false"

        @flow.block
        async def pipeline(i: int) -> Any:
            calls.append("block")
            return await command(simulate(i))

        assert await asyncio.gather(*(pipeline(i) for i in range(3))) == [None] * 3
    assert calls == ["block"] * 3
    assert noop.calls == 6


async def test_a_flow_is_used_inside_async_with() -> None:
    flow = TaskFlow(backends={"default": InlineBackend()})
    task = flow.function_task(lambda: 1)
    with pytest.raises(BackendError, match="async with TaskFlow"):
        task()


async def test_a_ten_thousand_task_dag_completes() -> None:
    async with TaskFlow(backends={"default": InlineBackend()}) as flow:

        @flow.function_task
        def node(*parents: int) -> int:
            return 1 + max(parents, default=0)

        layer = [node() for _ in range(100)]
        for _ in range(99):
            layer = [node(layer[i], layer[(i + 1) % 100]) for i in range(100)]
        depths = await asyncio.gather(*layer)
    assert depths == [100] * 100
    assert not flow._futures and not flow._dag.tasks  # nothing kept once finished


# -- regressions: nothing left pending, no slot kept ---------------------------------------------


async def test_a_task_cancelled_before_its_driver_ran_gives_its_slot_back() -> None:
    async with TaskFlow(backends={"default": InlineBackend()}, resources={"gpu": 1}) as flow:

        @flow.function_task(resources={"gpu": 1})
        async def use(x: int) -> int:
            return x

        first = use(1)
        first.cancel()  # in the same iteration: its driver never started
        assert await use(2) == 2  # the slot came back
    assert first.cancelled() and not flow._futures and not flow._drivers
    assert flow._dag.free == {"gpu": 1}


class Raising(TaskObserver):
    """An observer whose ``method`` raises."""

    def __init__(self, method: str) -> None:
        self.method = method

    def __getattribute__(self, name: str) -> Any:
        if name == object.__getattribute__(self, "method"):

            def broken(*args: Any) -> None:
                raise RuntimeError(f"bug in {name}")

            return broken
        return object.__getattribute__(self, name)


@pytest.mark.parametrize(
    "method", ["task_created", "task_submitted", "task_started", "task_resolved"]
)
async def test_an_observer_that_raises_never_hangs_the_flow_and_its_error_is_raised(
    method: str,
) -> None:
    with pytest.raises(RuntimeError, match=f"bug in {method}"):
        async with TaskFlow(
            backends={"default": ThreadBackend(1), "inline": InlineBackend()},
            resources={"cpu": 1},
            observers=[Raising(method)],
        ) as flow:
            threaded = flow.function_task(resources={"cpu": 1})(lambda x: x)
            direct = flow.function_task(backend="inline")(lambda x: x + 1)
            assert await asyncio.gather(threaded(1), threaded(2), direct(3)) == [1, 2, 4]
    assert not flow._futures and flow._dag.free == flow._dag.capacity  # all given back
    assert flow.resources == {"cpu": 1}


async def test_a_future_of_another_flow_is_refused_and_leaves_nothing_behind(
    flow: TaskFlow,
) -> None:
    async with TaskFlow(backends={"default": InlineBackend()}) as other:
        foreign = other.function_task(lambda: 1)()
        with pytest.raises(BackendError, match="another flow"):
            flow.function_task(lambda x: x)(foreign)
        assert await foreign == 1
    assert not flow._futures


async def test_a_task_waiting_for_a_slot_runs_in_the_context_of_its_call() -> None:
    seen: dict[str, str | None] = {}
    gate = asyncio.Event()
    async with TaskFlow(backends={"default": InlineBackend()}, resources={"cpu": 1}) as flow:

        @flow.function_task(resources={"cpu": 1})
        async def hold() -> None:
            await gate.wait()

        @flow.function_task(resources={"cpu": 1})
        def which(name: str) -> None:
            seen[name] = current_workflow_id()

        first = hold()
        async with flow.workflow_scope("late-caller"):
            later = which("late")  # waits for the slot `first` holds
        gate.set()
        await asyncio.gather(first, later)
    assert seen == {"late": "late-caller"}


async def test_calling_a_task_from_a_worker_thread_is_a_clear_error(flow: TaskFlow) -> None:
    inner = flow.function_task(backend="inline")(lambda: 1)

    @flow.function_task
    def outer() -> str:
        try:
            inner()
        except BackendError as exc:
            return str(exc)
        return "no error"

    assert "another thread" in await outer()
