"""Task flows at their edges: errors that cannot be printed, blocks that raise
StopIteration, dependencies in container subclasses, backends shared by flows or named
twice, backends that fail to shut down, executables on a thread backend, and bodies
from modules beside the caller's script in child Pythons."""

from __future__ import annotations

import asyncio
import collections
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from stepgraph.backends import BackendBase, InlineBackend, SubprocessBackend, ThreadBackend
from stepgraph.errors import ResourceError
from stepgraph.tasks import DependencyFailed, TaskFailed, TaskFlow, TaskObserver


class Unprintable(Exception):
    def __str__(self) -> str:
        raise AttributeError("no detail")


def unprintable() -> None:
    raise Unprintable()


@pytest.mark.parametrize("backend", [InlineBackend, ThreadBackend])
async def test_an_error_whose_str_raises_still_fails_its_task_and_its_dependents(
    backend: Callable[[], Any],
) -> None:
    async with asyncio.timeout(10), TaskFlow({"default": backend()}) as flow:
        failing = flow.function_task(unprintable)()
        after = flow.function_task(lambda x: x)(failing)
        with pytest.raises(TaskFailed, match="its str\\(\\) raised AttributeError") as raised:
            await failing
        assert isinstance(raised.value.__cause__, Unprintable)
        with pytest.raises(DependencyFailed):
            await after


async def test_a_block_raising_stop_iteration_fails_with_a_runtime_error() -> None:
    async with asyncio.timeout(10), TaskFlow({"default": InlineBackend()}) as flow:
        block = flow.block(lambda items: next(iter(items)))
        with pytest.raises(RuntimeError, match="raised StopIteration") as raised:
            await block([])
        assert isinstance(raised.value.__cause__, StopIteration)


class Pair(NamedTuple):
    a: int
    b: int


class Numbers(list[int]):
    pass


async def test_futures_inside_container_subclasses_are_dependencies() -> None:
    gate = asyncio.Event()

    async def later(n: int) -> int:
        await gate.wait()
        return n

    async with TaskFlow({"default": InlineBackend()}) as flow:
        value = flow.function_task(later)
        seen = flow.function_task(lambda x: x)
        shown = [
            seen(Pair(value(1), 2)),
            seen(collections.OrderedDict(k=value(3))),
            seen(collections.defaultdict(list, k=value(4))),
            seen(Numbers([value(5), 6])),
        ]
        gate.set()
        pair, ordered, default, numbers = await asyncio.gather(*shown)
    assert pair == Pair(1, 2) and type(pair) is Pair
    assert ordered == {"k": 3} and type(ordered) is collections.OrderedDict
    assert default == {"k": 4} and default.default_factory is list
    assert numbers == [5, 6] and type(numbers) is Numbers


async def test_a_container_that_holds_itself_is_an_argument_like_any_other() -> None:
    async with TaskFlow({"default": InlineBackend()}) as flow:
        one = flow.function_task(lambda: 1)
        same = flow.function_task(lambda x, y=None: x)
        alone: list[Any] = []
        alone.append(alone)  # no future in it: passed as it is
        assert await same(alone) is alone
        looped: list[Any] = [one()]
        looped.append({"again": looped, "pair": (looped, 2)})  # a future in a cycle
        got = await same(looped, y=looped)
    assert got[0] == 1 and got is not looped
    assert got[1]["again"] is got and got[1]["pair"][0] is got  # the cycle, rebuilt once


class Counting(BackendBase):
    """Runs bodies on the loop; counts its shutdowns (and fails them, if told to)."""

    in_process = True

    def __init__(self, fail: bool = False) -> None:
        self.name = "counting"
        self.shutdowns = 0
        self.fail = fail

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        done = asyncio.get_running_loop().create_future()
        done.set_result(fn(*args, **kwargs))
        return done

    async def shutdown(self, *, cancel: bool = False) -> None:
        self.shutdowns += 1
        if self.fail:
            raise RuntimeError("shutdown broke")


async def test_a_backend_shared_by_two_flows_is_shut_down_by_the_last_to_end() -> None:
    shared = Counting()
    async with TaskFlow({"default": shared}) as outer:
        async with TaskFlow({"default": shared}) as inner:
            assert await inner.function_task(abs)(-1) == 1
        assert shared.shutdowns == 0  # the outer flow still uses it
        assert await outer.function_task(abs)(-2) == 2
    assert shared.shutdowns == 1


async def test_leaving_on_an_error_raises_that_error_even_when_a_backend_fails_to_shut_down() -> (
    None
):
    mine = KeyError("mine")
    with pytest.raises(KeyError) as raised:
        async with TaskFlow({"default": Counting(fail=True)}):
            raise mine
    assert raised.value is mine
    assert any("shutdown broke" in note for note in raised.value.__notes__)


class Peak(TaskObserver):
    def __init__(self) -> None:
        self.now = self.peak = 0

    def task_started(self, flow: TaskFlow, future: Any) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def task_resolved(self, flow: TaskFlow, future: Any) -> None:
        self.now -= 1


async def test_one_backend_under_two_names_is_one_pool_and_its_places_are_not_claimable() -> None:
    shared, peak = ThreadBackend(max_workers=1), Peak()
    release = threading.Event()
    async with TaskFlow(
        {"default": shared, "other": shared}, observers=[peak], resources={"gpu": 1}
    ) as flow:
        one = flow.function_task(release.wait)
        two = flow.function_task(backend="other")(release.wait)
        running = [one(10), two(10)]
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*running)
        with pytest.raises(ResourceError, match=r"\(it has: gpu\)"):
            flow.function_task(resources={"tpu": 1})(abs)
        assert flow.resources == {"gpu": 1}
    assert peak.peak == 1


async def test_executables_on_a_thread_backend_run_as_many_at_once_as_it_has_threads() -> None:
    peak = Peak()
    async with TaskFlow({"default": ThreadBackend(max_workers=2)}, observers=[peak]) as flow:
        run = flow.executable_task(lambda i: [sys.executable, "-c", "pass"])
        await asyncio.gather(*(run(i) for i in range(6)))
    assert peak.peak == 2


async def test_a_child_python_imports_a_body_from_a_module_beside_the_callers_script(
    tmp_path: Path,
) -> None:
    (tmp_path / "beside_script.py").write_text("def square(x):\n    return x * x\n")
    sys.path.insert(0, str(tmp_path))  # as a script's own folder is
    try:
        from beside_script import square  # type: ignore[import-not-found]

        async with TaskFlow({"default": SubprocessBackend(1)}) as flow:
            assert await flow.function_task(square)(7) == 49
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("beside_script", None)


class Point(tuple[int, int]):
    """A tuple subclass built from two arguments, not from one iterable."""

    def __new__(cls, a: int, b: int) -> Point:
        return super().__new__(cls, (a, b))


async def test_a_container_subclass_without_futures_is_passed_as_it_is() -> None:
    async with TaskFlow({"default": InlineBackend()}) as flow:
        one = flow.function_task(lambda: 1)
        seen = flow.function_task(lambda x, p: (x, p))
        x, point = await seen(one(), Point(2, 3))  # a dependency beside it: still itself
    assert x == 1 and point == (2, 3) and type(point) is Point


async def test_a_flow_whose_start_is_cancelled_does_not_keep_a_shared_backend_up() -> None:
    class Slow(Counting):
        async def start(self) -> None:
            await asyncio.Event().wait()  # never starts: the start is cancelled

    shared = Slow()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05), TaskFlow({"default": shared}):
            pass
    Slow.start = BackendBase.start  # type: ignore[method-assign]  # (it starts now)
    async with TaskFlow({"default": shared}):
        pass
    assert shared.shutdowns == 1  # the only flow that used it shut it down


async def test_a_limited_task_starts_when_its_body_does_once_its_limiter_lets_it() -> None:
    """Let through by its limiter, it waits for a worker in the flow, as any task does: it
    is not reported started while its body waits in the pool's queue."""
    from stepgraph import Limiter

    peak, release = Peak(), threading.Event()
    async with TaskFlow(
        {"default": ThreadBackend(1)},
        observers=[peak],
        limiters=[Limiter("five", max_concurrency=5)],
    ) as flow:
        limited = flow.function_task(limiter="five")(release.wait)
        running = [limited(10) for _ in range(3)]
        await asyncio.sleep(0)
        release.set()
        async with asyncio.timeout(10):
            assert await asyncio.gather(*running) == [True] * 3
        assert flow.function_task(abs)(-1).uid == "task.000004"  # waits take no task's number
    assert peak.peak == 1  # never more started than the pool runs


async def test_a_limited_task_cancelled_while_it_waits_for_a_worker_gives_its_turn_back() -> None:
    from stepgraph import Limiter

    release = threading.Event()
    async with TaskFlow(
        {"default": ThreadBackend(1)}, limiters=[Limiter("five", max_concurrency=5)]
    ) as flow:
        limited = flow.function_task(limiter="five")(release.wait)
        first = limited(10)
        waiting = limited(10)
        for _ in range(5):
            await asyncio.sleep(0)
        waiting.cancel()
        release.set()
        async with asyncio.timeout(10):
            assert await first is True
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert await limited(10) is True  # the place was given back


async def test_limited_tasks_cancelled_together_give_every_worker_place_back() -> None:
    """The one running and the one waiting for its place, cancelled in one go (as a
    timeout over a gather does): the place goes to the waiting one as it is cancelled, and
    must come back."""
    from stepgraph import Limiter

    release = threading.Event()
    async with TaskFlow(
        {"default": ThreadBackend(1)}, limiters=[Limiter("five", max_concurrency=5)]
    ) as flow:
        limited = flow.function_task(limiter="five")(release.wait)
        running, waiting = limited(10), limited(10)
        for _ in range(5):
            await asyncio.sleep(0)
        running.cancel()
        waiting.cancel()
        release.set()
        async with asyncio.timeout(10):
            assert await flow.function_task(lambda: "plain")() == "plain"


async def test_a_limited_task_waiting_for_its_limiter_holds_no_worker() -> None:
    from stepgraph import Limiter

    async with TaskFlow(
        {"default": ThreadBackend(1)}, limiters=[Limiter("one-at-a-time", max_concurrency=1)]
    ) as flow:
        limited = flow.function_task(limiter="one-at-a-time")(lambda: "limited")
        plain = flow.function_task(lambda: "plain")
        async with flow.limiters["one-at-a-time"].hold():  # held by code that needs a worker
            waiting = limited()  # it waits for the limiter, not on the only thread
            async with asyncio.timeout(10):
                assert await plain() == "plain"
        assert await waiting == "limited"


def gives_up() -> None:
    raise asyncio.CancelledError


async def gives_up_later() -> None:
    raise asyncio.CancelledError


@pytest.mark.parametrize(
    ("backend", "body"),
    [(InlineBackend, gives_up), (InlineBackend, gives_up_later), (ThreadBackend, gives_up)],
    ids=["inline-def", "inline-async", "thread"],
)
async def test_a_body_raising_cancelled_error_cancels_its_task_and_its_dependents(
    backend: Callable[[], Any], body: Callable[[], Any]
) -> None:
    async with asyncio.timeout(10), TaskFlow({"default": backend()}) as flow:
        cancelled = flow.function_task(body)()
        after = flow.function_task(lambda x: x)(cancelled)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert cancelled.cancelled()
        with pytest.raises(asyncio.CancelledError):
            await after
