"""DaskBackend outcomes that Dask would not carry back as they are: exceptions that do not
pickle (or not rebuild here), messages Dask would cut, results that do not pickle.

Two real LocalClusters, shared by the tests of this module (one event loop for the
module): one whose worker is another process (Dask pickles what travels: the backend
sends bodies and their outcomes as a ``ProcessBackend`` does), one whose worker runs in
this process (nothing is pickled: outcomes come back as the very objects).
"""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("distributed")

from distributed import LocalCluster

from stepgraph.backends import DaskBackend, ThreadBackend
from stepgraph.errors import RecordedError, SerializationError
from stepgraph.tasks import TaskFailed, TaskFlow

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _cluster(processes: bool) -> Any:
    return await LocalCluster(
        asynchronous=True,
        processes=processes,
        n_workers=1,
        threads_per_worker=1,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},  # never a taken 8787
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def elsewhere() -> AsyncIterator[str]:
    """The address of a cluster whose worker is another process (``tcp://``)."""
    cluster = await _cluster(processes=True)
    try:
        yield cluster.scheduler_address
    finally:
        await cluster.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def here() -> AsyncIterator[str]:
    """The address of a cluster whose worker runs in this process (``inproc://``)."""
    cluster = await _cluster(processes=False)
    try:
        yield cluster.scheduler_address
    finally:
        await cluster.close()


def flow_on(address: str) -> TaskFlow:
    """A flow whose backend ``hpc`` is a DaskBackend on the cluster at ``address``."""
    return TaskFlow(backends={"default": ThreadBackend(1), "hpc": DaskBackend(address)})


# -- bodies (module-level: a worker process imports them) -------------------------------------


class HoldsALock(Exception):
    """Does not pickle: it holds a lock."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


class Coded(ValueError):
    """Pickles, and rebuilds from its args."""

    def __init__(self, text: str, code: int = 0) -> None:
        super().__init__(text, code)
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0])


def _raise_holding_a_lock() -> None:
    raise HoldsALock("holding a lock")


class LockInItsArgs(Exception):
    """Cannot be pickled nor rebuilt: a lock is in its args."""

    def __init__(self) -> None:
        super().__init__(threading.Lock())

    def __str__(self) -> str:
        return "a lock in its args"


def _raise_a_lock_in_its_args() -> None:
    raise LockInItsArgs()


def _raise_a_class_only_the_worker_has() -> None:
    """Raise an exception of a class from a module that only the worker has (pickled by
    reference: it does not unpickle here)."""
    module = sys.modules.setdefault("only_in_the_worker", types.ModuleType("only_in_the_worker"))
    kind = type("OnlyInTheWorker", (Exception,), {"__module__": module.__name__})
    setattr(module, kind.__name__, kind)
    raise kind("defined in the worker")


def _raise_coded(text: str) -> None:
    raise Coded(text, 7)


def _return_a_lock() -> object:
    return threading.Lock()


def _pid() -> int:
    return os.getpid()


def _identity(value: object) -> object:
    return value


KEPT: dict[str, Any] = {}
"""What bodies on the in-process worker raise and return (the test finds the objects)."""


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("raised in this process")
        self.generator = (n for n in range(3))


def _return_kept() -> object:
    return KEPT["result"]


def _raise_kept() -> None:
    raise KEPT["error"]


# -- a worker in another process ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "type_name", "message"),
    [
        (_raise_a_lock_in_its_args, f"{__name__}.LockInItsArgs", "a lock in its args"),
        (
            _raise_a_class_only_the_worker_has,
            "only_in_the_worker.OnlyInTheWorker",
            "defined in the worker",
        ),
    ],
    ids=["does-not-pickle", "does-not-unpickle-here"],
)
async def test_an_exception_that_cannot_come_back_is_a_recorded_error(
    elsewhere: str, body: Any, type_name: str, message: str
) -> None:
    async with flow_on(elsewhere) as flow:
        with pytest.raises(TaskFailed) as caught:
            await flow.function_task(backend="hpc")(body)()
        assert await flow.function_task(backend="hpc")(_pid)() != os.getpid()  # it goes on
    error = caught.value
    assert error.task == body.__name__ and error.backend == "hpc"
    cause = error.__cause__
    assert isinstance(cause, RecordedError)
    assert cause.type == type_name
    name = type_name.rpartition(".")[2]
    assert cause.message == message
    assert str(cause) == f"{name}: {message}"
    assert f"in {body.__name__}" in cause.traceback  # the traceback in the worker
    assert f"{name}: {message}" in str(error)


async def test_an_exception_holding_a_lock_comes_back_of_its_type_without_it(
    elsewhere: str,
) -> None:
    async with flow_on(elsewhere) as flow:
        with pytest.raises(TaskFailed) as caught:
            await flow.function_task(backend="hpc")(_raise_holding_a_lock)()
    cause = caught.value.__cause__
    assert type(cause) is HoldsALock and str(cause) == "holding a lock"
    assert not hasattr(cause, "lock") and "'lock' could not be pickled" in cause.__notes__[0]


async def test_an_exception_that_pickles_comes_back_whole_with_its_traceback(
    elsewhere: str,
) -> None:
    long = "x" * 20_000  # longer than Dask lets an error message be
    async with flow_on(elsewhere) as flow:
        with pytest.raises(TaskFailed) as caught:
            await flow.function_task(backend="hpc")(_raise_coded)(long)
    cause = caught.value.__cause__
    assert type(cause) is Coded
    assert cause.args == (long, 7) and cause.code == 7
    assert "in _raise_coded" in str(cause.__cause__)  # its traceback in the worker


async def test_a_result_that_does_not_pickle_is_a_serialization_error(elsewhere: str) -> None:
    async with flow_on(elsewhere) as flow:
        with pytest.raises(TaskFailed) as caught:
            await flow.function_task(backend="hpc")(_return_a_lock)()
        assert await flow.function_task(backend="hpc")(_pid)() != os.getpid()  # it goes on
    error = caught.value
    assert error.task == "_return_a_lock" and error.backend == "hpc"
    assert "'_return_a_lock'" in str(error) and "'hpc'" in str(error)
    cause = error.__cause__
    assert isinstance(cause, SerializationError)
    assert "the result of _return_a_lock cannot come back" in str(cause)
    assert "lock" in str(cause)


async def test_an_argument_that_does_not_pickle_is_a_serialization_error(
    elsewhere: str,
) -> None:
    dask = DaskBackend(elsewhere)
    await dask.start()
    try:
        with pytest.raises(SerializationError, match=r"argument 1 \(a lock\)"):
            dask.submit(_identity, threading.Lock())
        assert await dask.submit(_identity, 1) == 1
    finally:
        await dask.shutdown()


# -- a worker in this process: nothing is pickled ---------------------------------------------


async def test_in_this_process_a_result_and_an_exception_come_back_as_they_are(
    here: str,
) -> None:
    KEPT["result"] = threading.Lock()
    KEPT["error"] = Unpicklable()
    try:
        async with flow_on(here) as flow:
            result = await flow.function_task(backend="hpc")(_return_kept)()
            with pytest.raises(TaskFailed) as caught:
                await flow.function_task(backend="hpc")(_raise_kept)()
        assert result is KEPT["result"]
        assert caught.value.__cause__ is KEPT["error"]
        assert caught.value.backend == "hpc"
    finally:
        KEPT.clear()


async def test_in_this_process_an_argument_arrives_as_it_is_even_one_that_does_not_pickle(
    here: str,
) -> None:
    lock = threading.Lock()
    async with flow_on(here) as flow:
        assert await flow.function_task(backend="hpc")(_identity)(lock) is lock
