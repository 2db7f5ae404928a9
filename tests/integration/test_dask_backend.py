"""DaskBackend against a real dask.distributed LocalCluster.

Every test starts its own cluster (in-process unless it needs worker processes), so tests
stay independent. Bodies that must block until the test lets them go wait on
``threading.Event`` objects kept in this module: with ``processes=False`` the workers run
in this process, so a module-level function finds the same events wherever Dask
unpickles it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

from distributed import (
    Client,
    KilledWorker,
    LocalCluster,
    SchedulerPlugin,
    WorkerPlugin,
    get_worker,
)

from stepgraph.backends import DaskBackend, ThreadBackend
from stepgraph.errors import DependencyFailed, MissingExtraError, TaskFailed, WorkerDiedError
from stepgraph.tasks import TaskFlow

SAFETY = 30.0
"""Seconds a blocked body waits for its release at most (so a failing test cannot hang)."""


class SpecialError(ValueError):
    """A body's own error type: it must come back as itself."""


def hpc(**kwargs: Any) -> DaskBackend:
    """An in-process LocalCluster with one worker of two threads."""
    options: dict[str, Any] = {"processes": False, "n_workers": 1, "threads_per_worker": 2}
    options.update(kwargs)
    return DaskBackend(address=None, **options)


def flow_with(dask: DaskBackend) -> TaskFlow:
    return TaskFlow(backends={"default": ThreadBackend(2), "hpc": dask})


# -- bodies that run on the in-process workers -----------------------------------------------------


class Gate:
    """Events a gated body and its test share."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go_on = threading.Event()
        self.done = threading.Event()


GATES: dict[str, Gate] = {}
"""Gates by name (a body gets the name: it finds the gate in this module)."""

RAN: dict[str, list[str]] = {}
"""Per test: the names of the bodies that ran."""


def new_gate() -> str:
    name = uuid.uuid4().hex
    GATES[name] = Gate()
    return name


def gated(gate: str, value: Any) -> Any:
    """Say it started, then wait until the test lets it go."""
    events = GATES[gate]
    events.started.set()
    try:
        if not events.go_on.wait(SAFETY):
            raise TimeoutError(f"gate {gate} was never released")
        return value
    finally:
        events.done.set()


def note(run: str, label: str, *deps: Any) -> str:
    """Record that it ran."""
    RAN[run].append(label)
    return label


async def wait_for(event: threading.Event) -> None:
    """Wait (without blocking the loop) until ``event`` is set."""
    assert await asyncio.to_thread(event.wait, SAFETY), "it never happened"


async def started(gate: str) -> None:
    await wait_for(GATES[gate].started)


def release(gate: str) -> None:
    GATES[gate].go_on.set()


def release_all() -> None:
    for events in GATES.values():
        events.go_on.set()


def fail_special(x: int) -> int:
    raise SpecialError(f"bad input {x}")


@pytest.fixture
def run() -> Iterator[str]:
    """A key into RAN for one test."""
    key = uuid.uuid4().hex
    RAN[key] = []
    yield key
    del RAN[key]


@pytest.fixture(autouse=True)
def _release_gates() -> Iterator[None]:
    """Whatever happens in a test, no body stays blocked on a gate after it."""
    before = set(GATES)
    yield
    release_all()
    for name in set(GATES) - before:
        del GATES[name]


# -- 1. function tasks, lambdas, closures, a mixed DAG ---------------------------------------------


async def test_function_tasks_lambda_closure_and_a_mixed_dag() -> None:
    async with flow_with(hpc()) as flow:

        @flow.function_task(backend="hpc")
        def inc(x: int) -> int:
            return x + 1

        @flow.function_task
        def double(x: int) -> int:
            return 2 * x

        @flow.function_task(backend="hpc")
        def where() -> tuple[int, str]:
            return os.getpid(), get_worker().address  # get_worker raises off a worker

        offset = 100

        def add_offset(x: int) -> int:  # a closure over a local
            get_worker()
            return x + offset

        closure = flow.function_task(backend="hpc")(add_offset)
        square = flow.function_task(backend="hpc")(lambda x: (get_worker(), x * x)[1])

        @flow.function_task(backend="hpc")
        def combine(parts: list[int], extra: dict[str, int], *, tail: tuple[int, int]) -> int:
            return sum(parts) + sum(extra.values()) + sum(tail)

        assert await inc(1) == 2
        assert await closure(1) == 101
        assert await square(7) == 49

        # thread -> dask -> thread -> dask, with futures nested in containers and keywords
        a = double(3)  # 6, thread
        b = inc(a)  # 7, dask
        c = double(b)  # 14, thread
        d = square(b)  # 49, dask
        e = closure(c)  # 114, dask
        total = combine([a, b, c], {"d": d}, tail=(e, inc(0)))
        assert await total == 6 + 7 + 14 + 49 + 114 + 1
        assert [await f for f in (a, b, c, d, e)] == [6, 7, 14, 49, 114]
        assert b.backend == "hpc" and a.backend == "default"

        pid, worker = await where()
        assert pid == os.getpid()  # processes=False: the worker lives in this process
        assert worker.startswith("inproc://")


# -- 2. a body's exception -------------------------------------------------------------------------


async def test_exception_in_a_dask_body_reaches_the_caller() -> None:
    async with flow_with(hpc()) as flow:
        task = flow.function_task(backend="hpc")(fail_special)
        after = flow.function_task(backend="hpc")(lambda x: x)

        failing = task(41)
        dependent = after(failing)
        with pytest.raises(TaskFailed) as caught:
            await failing
        error = caught.value
        assert type(error.__cause__) is SpecialError
        assert str(error.__cause__) == "bad input 41"
        assert error.task == "fail_special"
        assert error.backend == "hpc"
        message = str(error)
        assert "'fail_special'" in message
        assert "'hpc'" in message
        assert "SpecialError: bad input 41" in message

        with pytest.raises(DependencyFailed) as relayed:
            await dependent
        assert relayed.value.__cause__ is error  # it chains the root failure

        # the flow and the backend go on
        assert await after(5) == 5


# -- 3. a scheduler the user runs ------------------------------------------------------------------


async def test_address_connects_and_shutdown_leaves_the_users_cluster_running() -> None:
    cluster = await LocalCluster(
        asynchronous=True, processes=False, n_workers=1, dashboard_address=None
    )
    try:
        dask = DaskBackend(address=cluster.scheduler_address)
        async with flow_with(dask) as flow:

            @flow.function_task(backend="hpc")
            def inc(x: int) -> int:
                return x + 1

            assert await inc(inc(1)) == 3
            client = dask.client
            assert client.scheduler.address == cluster.scheduler_address

        assert client.status == "closed"  # the backend's own client is gone...
        assert cluster.status.name == "running"  # ...the cluster is not
        assert len(cluster.scheduler.workers) == 1
        async with Client(cluster, asynchronous=True) as other:
            assert await other.submit(lambda x: x * 3, 5) == 15
        # and a second flow can use the same cluster
        async with flow_with(DaskBackend(address=cluster.scheduler_address)) as flow:
            assert await flow.function_task(backend="hpc")(lambda: "again")() == "again"
    finally:
        await cluster.close()
    assert cluster.status.name == "closed"


# -- 4. a worker process that dies -----------------------------------------------------------------


async def test_worker_that_dies_fails_its_task_and_the_flow_goes_on(tmp_path: Any) -> None:
    dask = DaskBackend(
        address=None, processes=True, n_workers=1, threads_per_worker=1, allowed_failures=0
    )
    async with flow_with(dask) as flow:

        @flow.function_task(backend="hpc")
        def die(path: str) -> None:
            with open(path, "a") as f:
                f.write("attempt\n")
            os._exit(1)

        @flow.function_task(backend="hpc")
        def pid() -> int:
            return os.getpid()

        @flow.function_task
        def local(x: int) -> int:
            return x * 10

        first = await pid()
        assert first != os.getpid()

        attempts = tmp_path / "attempts"
        with pytest.raises(TaskFailed) as caught:
            await die(str(attempts))
        error = caught.value
        assert error.task == "die" and error.backend == "hpc"
        died = error.__cause__
        assert isinstance(died, WorkerDiedError)
        assert "worker running die on backend 'hpc' died" in str(died)
        assert "WorkerDiedError" in str(error)
        assert isinstance(died.__cause__, KilledWorker)
        assert died.__cause__.allowed_failures == 0
        assert attempts.read_text() == "attempt\n"  # allowed_failures=0: no second attempt

        assert await local(4) == 40  # the thread backend is untouched
        # the nanny started a new worker process: Dask runs bodies again, in it
        second = await pid()
        assert second != first


# -- 5. cancelling ---------------------------------------------------------------------------------

Transition = tuple[Any, str, str, str]  # key, start, finish, stimulus id


class Transitions:
    """The task transitions a plugin saw (on this loop), and a way to wait for one."""

    def __init__(self) -> None:
        self.seen: list[Transition] = []
        self._waiters: list[tuple[Callable[[Transition], bool], asyncio.Future[Transition]]] = []

    def record(self, key: Any, start: str, finish: str, stimulus_id: str) -> None:
        seen = (key, start, finish, stimulus_id)
        self.seen.append(seen)
        for match, waiter in self._waiters:
            if not waiter.done() and match(seen):
                waiter.set_result(seen)

    async def first(self, match: Callable[[Transition], bool]) -> Transition:
        """The first transition that matches, once it happens."""
        for seen in self.seen:
            if match(seen):
                return seen
        waiter: asyncio.Future[Transition] = asyncio.get_running_loop().create_future()
        self._waiters.append((match, waiter))
        return await asyncio.wait_for(waiter, SAFETY)


class OnScheduler(SchedulerPlugin):
    def __init__(self, into: Transitions) -> None:
        self.into = into

    def transition(
        self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any
    ) -> None:
        self.into.record(key, start, finish, stimulus_id)


class OnWorker(WorkerPlugin):
    def __init__(self, into: Transitions) -> None:
        self.into = into

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        self.into.record(key, start, finish, str(kwargs.get("stimulus_id", "")))


async def watched_cluster(
    threads: int,
) -> tuple[LocalCluster, Transitions, Transitions]:
    """An in-process cluster of one worker, and what its scheduler and worker do."""
    cluster = await LocalCluster(
        asynchronous=True,
        processes=False,
        n_workers=1,
        threads_per_worker=threads,
        dashboard_address=None,
    )
    scheduler, worker = Transitions(), Transitions()
    cluster.scheduler.add_plugin(OnScheduler(scheduler), name="watch")
    (only,) = cluster.workers.values()
    await only.plugin_add(OnWorker(worker), name="watch")
    return cluster, scheduler, worker


async def test_cancel_running_and_pending_dask_futures(run: str) -> None:
    cluster, on_scheduler, _ = await watched_cluster(threads=2)
    try:
        async with flow_with(DaskBackend(address=cluster.scheduler_address)) as flow:
            body = flow.function_task(backend="hpc")(gated)
            remote = flow.function_task(backend="hpc")(note)
            local = flow.function_task(note)

            gate = new_gate()
            running = body(gate, "never seen")
            pending = remote(run, "pending", running)  # waits for `running` in the flow
            after_pending = local(run, "after-pending", pending)
            after_running = local(run, "after-running", running)
            deeper = remote(run, "deeper", after_running, 1)

            await started(gate)
            assert [k.state for k in cluster.scheduler.tasks.values()] == ["processing"]

            # a task still waiting for its dependency (never submitted to Dask)
            assert pending.cancel() is True
            assert after_pending.cancelled()
            assert not running.done()
            with pytest.raises(asyncio.CancelledError):
                await pending
            with pytest.raises(asyncio.CancelledError):
                await after_pending

            # a body running on a Dask worker
            assert running.cancel() is True
            assert running.cancelled()
            assert after_running.cancelled() and deeper.cancelled()
            assert running.cancel() is False  # already cancelled
            with pytest.raises(asyncio.CancelledError):
                await running
            for dependent in (after_running, deeper):
                with pytest.raises(asyncio.CancelledError):
                    await dependent

            # the backend cancelled the body's Dask future (not merely dropped it)
            _, _, _, why = await on_scheduler.first(lambda t: t[1] == "processing")
            assert why.startswith("cancel-key"), why
            assert cluster.scheduler.tasks == {}
            release(gate)  # the worker thread itself cannot be stopped: let it end

            assert await remote(run, "free") == "free"  # the flow and the backend go on

        assert RAN[run] == ["free"]
    finally:
        release_all()  # a blocked worker thread would hold up the cluster's close
        await cluster.close()


async def test_cancel_a_body_waiting_on_dask_for_a_thread(run: str) -> None:
    cluster, on_scheduler, on_worker = await watched_cluster(threads=1)
    try:
        async with flow_with(DaskBackend(address=cluster.scheduler_address)) as flow:
            body = flow.function_task(backend="hpc")(gated)
            remote = flow.function_task(backend="hpc")(note)
            local = flow.function_task(note)

            gate = new_gate()
            blocker = body(gate, "blocker")
            await started(gate)
            (busy,) = cluster.scheduler.tasks  # it holds the worker's only thread

            queued = remote(run, "queued")
            after = local(run, "after-queued", queued)
            # Dask has it: queued on the scheduler, or sent to the worker to wait there
            await on_scheduler.first(lambda t: t[0] != busy and t[2] in ("queued", "processing"))

            assert queued.cancel() is True
            assert after.cancelled()
            with pytest.raises(asyncio.CancelledError):
                await queued
            with pytest.raises(asyncio.CancelledError):
                await after

            key, state, _, why = await on_scheduler.first(
                lambda t: t[0] != busy and t[1] in ("queued", "processing")
            )
            assert why.startswith("cancel-key"), why
            if state == "processing":  # it went to the worker: wait until the worker drops it
                await on_worker.first(lambda t: t[0] == key and t[2] == "forgotten")
            release(gate)
            assert await blocker == "blocker"
            assert await remote(run, "next") == "next"  # the worker's thread is free again

        assert RAN[run] == ["next"]  # the cancelled body never started
    finally:
        release_all()
        await cluster.close()


@pytest.mark.parametrize("leave", ["on-error", "after-cancel"])
async def test_leaving_the_flow_does_not_wait_for_a_cancelled_body_on_dask(leave: str) -> None:
    """An in-process worker's thread cannot be stopped: like a thread backend's, it is
    no longer waited for (the cluster's close used to wait for it, as long as it ran)."""
    gate = new_gate()
    with pytest.raises(RuntimeError, match="leave") if leave == "on-error" else nullcontext():
        async with flow_with(hpc(threads_per_worker=1)) as flow:
            running = flow.function_task(backend="hpc")(gated)(gate, 1)
            await started(gate)
            if leave == "on-error":
                raise RuntimeError("leave")
            running.cancel()
    assert running.cancelled()
    assert not GATES[gate].done.is_set()  # the flow is closed, the body still runs
    release(gate)
    await wait_for(GATES[gate].done)  # and ends in the background


# -- 6. async def bodies ---------------------------------------------------------------------------


async def test_async_def_function_task_on_dask() -> None:
    async with flow_with(hpc()) as flow:

        @flow.function_task(backend="hpc")
        async def fetch(x: int) -> tuple[int, str]:
            await asyncio.sleep(0)
            return x * 2, get_worker().address  # on a loop of the worker's thread

        value, worker = await fetch(21)
        assert value == 42
        assert worker.startswith("inproc://")

        @flow.function_task(backend="hpc")
        async def broken() -> None:
            await asyncio.sleep(0)
            raise SpecialError("async broke")

        with pytest.raises(TaskFailed) as caught:
            await broken()
        assert type(caught.value.__cause__) is SpecialError
        assert str(caught.value.__cause__) == "async broke"


# -- 7. executables --------------------------------------------------------------------------------


def _completed_bodies(dask_scheduler: Any) -> int:
    done = 0
    # bodies (travelling or in this process) and executables, as "<function>-<uuid>"
    for name in ("run_outcome", "_call_in_memory", "run_watched", "run_stopped_here"):
        prefix = dask_scheduler.task_prefixes.get(name)
        done += 0 if prefix is None else int(prefix.state_counts["memory"])
    return done


async def completed_on_dask(backend: DaskBackend) -> int:
    """How many bodies the backend's scheduler has seen finish."""
    return int(await backend.client.run_on_scheduler(_completed_bodies))


async def test_executable_tasks_on_dask(tmp_path: Any) -> None:
    dask = hpc()
    async with TaskFlow(
        backends={"default": ThreadBackend(2), "hpc": dask}, work_dir=tmp_path
    ) as flow:

        @flow.executable_task(backend="hpc")
        def hello(word: str) -> list[str]:
            return ["echo", "hi", word]

        @flow.executable_task(backend="hpc")
        def python_line(code: str) -> list[str]:
            return [sys.executable, "-c", code]

        @flow.executable_task(backend="hpc", capture_stdio=True)
        def captured() -> str:
            return "echo into-a-file"

        @flow.function_task
        def shout(text: str) -> str:
            return text.strip().upper()

        assert await completed_on_dask(dask) == 0
        assert await hello("there") == "hi there\n"
        assert await completed_on_dask(dask) == 1  # it ran through the Dask scheduler
        assert await shout(hello("you")) == "HI YOU"
        assert await python_line("print(6 * 7)") == "42\n"

        path = await captured()
        assert path.endswith(".stdout")
        assert await asyncio.to_thread(Path(path).read_text) == "into-a-file\n"

        with pytest.raises(TaskFailed) as caught:
            await python_line("import sys; print('oops', file=sys.stderr); sys.exit(3)")
        assert caught.value.backend == "hpc"
        assert "CalledProcessError" in str(caught.value)
        assert getattr(caught.value.__cause__, "returncode", None) == 3
        assert "oops" in (getattr(caught.value.__cause__, "stderr", "") or "")


# -- without the extra -----------------------------------------------------------------------------


async def test_without_distributed_start_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    flow = flow_with(hpc())
    with pytest.raises(MissingExtraError) as caught:
        await flow.start()
    assert caught.value.extra == "dask"
    assert "pip install 'stepgraph[dask]'" in str(caught.value)
