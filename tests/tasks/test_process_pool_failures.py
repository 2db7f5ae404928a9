"""Process pools and child Pythons when things go wrong: outcomes that do not pickle back,
workers that die, and cancelled bodies (left to finish, or stopped as their flow ends).

Real worker processes throughout. Bodies in other processes report and wait through
named pipes that the test holds open both ways (so no side ever sees an end of file):
a body writes its pid as a line to one, and waits for a byte at another.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stepgraph.backends import Backend, ProcessBackend, SubprocessBackend
from stepgraph.errors import RecordedError, SerializationError, WorkerDiedError
from stepgraph.tasks import TaskFailed, TaskFlow

# -- helpers ----------------------------------------------------------------------------------


class Fifo:
    """A named pipe, held open for reading and writing by the test."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._buffer = b""

    async def line(self) -> str:
        """The next line a body wrote (waits for it without polling)."""
        loop = asyncio.get_running_loop()
        while b"\n" not in self._buffer:
            readable = asyncio.Event()
            loop.add_reader(self.fd, readable.set)
            try:
                await readable.wait()
            finally:
                loop.remove_reader(self.fd)
            self._buffer += os.read(self.fd, 4096)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def release(self, count: int = 1) -> None:
        """Let ``count`` bodies waiting at this pipe go on."""
        os.write(self.fd, b"x" * count)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def lines(tmp_path: Path) -> Iterator[Fifo]:
    fifo = Fifo(tmp_path / "lines")
    yield fifo
    fifo.close()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Fifo]:
    fifo = Fifo(tmp_path / "gate")
    yield fifo
    fifo.close()


@pytest.fixture
def doom(tmp_path: Path) -> Iterator[Fifo]:
    """A second gate: the one a body waits at before it kills its worker."""
    fifo = Fifo(tmp_path / "doom")
    yield fifo
    fifo.close()


def _say(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


def _report_and_wait(lines: str, gate: str, value: int) -> tuple[int, int]:
    """In a worker: say its pid, wait for a byte at ``gate``, say it is done."""
    _say(lines, str(os.getpid()))
    fd = os.open(gate, os.O_RDONLY)
    try:
        os.read(fd, 1)
    finally:
        os.close(fd)
    _say(lines, f"done {os.getpid()}")
    return os.getpid(), value


def _alive(pid: int) -> bool:
    """Whether ``pid`` is there, a zombie (ended, not reaped) included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _ended(pid: int) -> None:
    """Wait until process ``pid`` has ended (told by a pidfd, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, ended.set)
    try:
        await ended.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _kill_myself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _report_and_die(lines: str, gate: str) -> None:
    """In a worker: say its pid, wait for a byte at ``gate``, kill its own process."""
    _say(lines, str(os.getpid()))
    fd = os.open(gate, os.O_RDONLY)
    try:
        os.read(fd, 1)
    finally:
        os.close(fd)
    _kill_myself()


def _log(path: str, value: int) -> tuple[int, int]:
    """In a worker: append ``value`` to the file at ``path`` (a line per run)."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return os.getpid(), value


def _runs(path: Path) -> list[int]:
    """The values :func:`_log` appended, sorted."""
    return sorted(int(line) for line in path.read_text().split())


def _pid() -> int:
    return os.getpid()


# -- outcomes that do not pickle back (bug: a broken pool, PicklingError) ---------------------


class TwoArgError(Exception):
    """Pickles, but cannot be rebuilt from its args (a common shape of library errors)."""

    def __init__(self, path: str, code: int) -> None:
        super().__init__(f"{path} failed with {code}")
        self.path, self.code = path, code


def _raise_two_args(code: int) -> None:
    raise TwoArgError("in.csv", code)


class HoldsALock(Exception):
    def __init__(self) -> None:
        super().__init__("holding a lock")
        self.lock = threading.Lock()


def _raise_holding_a_lock(code: int) -> None:
    raise HoldsALock()


class LockInItsArgs(Exception):
    def __init__(self) -> None:
        super().__init__(threading.Lock())

    def __str__(self) -> str:
        return "a lock in its args"


def _raise_a_lock_in_its_args(code: int) -> None:
    raise LockInItsArgs()


def _return_a_lock() -> object:
    return threading.Lock()


def _return_two_arg_error() -> object:
    return TwoArgError("out.csv", 3)


BACKENDS: dict[str, Callable[[], Backend]] = {
    "process": lambda: ProcessBackend(2),
    "subprocess": lambda: SubprocessBackend(2),
}


@pytest.mark.parametrize("kind", BACKENDS)
async def test_an_exception_whose_init_takes_other_arguments_comes_back_of_its_own_type(
    kind: str,
) -> None:
    async with TaskFlow(backends={"default": BACKENDS[kind]()}) as flow:
        with pytest.raises(TaskFailed) as caught:
            await flow.function_task(_raise_two_args)(7)
    cause = caught.value.__cause__
    assert type(cause) is TwoArgError  # rebuilt without its __init__, which needs 2 args
    assert (str(cause), cause.path, cause.code) == ("in.csv failed with 7", "in.csv", 7)
    assert "raise TwoArgError" in str(cause.__cause__)  # the traceback in the worker


@pytest.mark.parametrize("kind", BACKENDS)
async def test_an_exception_holding_what_cannot_be_pickled_comes_back_of_its_type_without_it(
    kind: str,
) -> None:
    async with TaskFlow(backends={"default": BACKENDS[kind]()}) as flow:
        with pytest.raises(TaskFailed) as caught:
            await flow.function_task(_raise_holding_a_lock)(7)
    cause = caught.value.__cause__
    assert type(cause) is HoldsALock  # `except HoldsALock` catches it here too
    assert str(cause) == "holding a lock" and not hasattr(cause, "lock")
    assert cause.__notes__ == [
        "stepgraph: its attributes 'lock' could not be pickled in the worker process: they "
        "did not come back"
    ]
    assert "raise HoldsALock" in str(cause.__cause__)  # the traceback in the worker


@pytest.mark.parametrize(
    ("body", "type_name", "message"),
    [(_raise_a_lock_in_its_args, "LockInItsArgs", "a lock in its args")],
    ids=["args-cannot-be-pickled"],
)
@pytest.mark.parametrize("kind", BACKENDS)
async def test_an_exception_that_cannot_come_back_as_it_is_is_a_recorded_error(
    kind: str,
    body: Callable[[int], None],
    type_name: str,
    message: str,
    lines: Fifo,
    gate: Fifo,
) -> None:
    async with TaskFlow(backends={"default": BACKENDS[kind]()}) as flow:
        hold = flow.function_task(_report_and_wait)
        other = hold(lines.path, gate.path, 1)  # runs beside it, unrelated
        pid = int(await lines.line())
        with pytest.raises(TaskFailed) as caught:
            await flow.function_task(body)(7)
        assert not other.done()
        gate.release()
        assert await other == (pid, 1)  # the failure broke nothing else
    error = caught.value
    cause = error.__cause__
    assert isinstance(cause, RecordedError)
    assert cause.type == f"{__name__}.{type_name}"
    assert cause.message == message
    assert str(cause) == f"{type_name}: {message}"
    assert f"raise {type_name}" in cause.traceback  # the traceback in the worker
    assert f"'{body.__name__}'" in str(error) and f"{type_name}: {message}" in str(error)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_result_that_cannot_travel_is_a_serialization_error_naming_the_task(
    kind: str,
) -> None:
    async with TaskFlow(backends={"default": BACKENDS[kind]()}) as flow:
        lock = flow.function_task(_return_a_lock)
        error = flow.function_task(_return_two_arg_error)
        with pytest.raises(TaskFailed) as not_pickled:
            await lock()
        with pytest.raises(TaskFailed) as not_unpickled:
            await error()
        assert await flow.function_task(_pid)() != os.getpid()  # the backend goes on
    assert isinstance(not_pickled.value.__cause__, SerializationError)
    assert "'_return_a_lock'" in str(not_pickled.value)
    assert "the result of _return_a_lock cannot come back: cannot pickle (a lock)" in str(
        not_pickled.value.__cause__
    )
    assert "lock" in str(not_pickled.value.__cause__)
    cause = not_unpickled.value.__cause__
    assert isinstance(cause, SerializationError)
    assert "_return_two_arg_error on backend 'default' cannot be unpickled here" in str(cause)


class MainError(Exception):
    """As if defined in the script that runs the flow (``__main__``)."""


@dataclass
class MainPoint:
    x: int


def _fails_in_main() -> None:
    raise MainError("nope")


def _point_in_main() -> MainPoint:
    return MainPoint(3)


for _defined in (MainError, MainPoint, _fails_in_main, _point_in_main):
    _defined.__module__ = "__main__"  # cloudpickle sends them by value, as from a script


@pytest.mark.parametrize("kind", BACKENDS)
async def test_results_and_exceptions_of_classes_from_main_come_back_as_they_are(
    kind: str,
) -> None:
    async with TaskFlow(backends={"default": BACKENDS[kind]()}) as flow:
        with pytest.raises(TaskFailed) as caught:
            await flow.function_task(_fails_in_main)()
        point = await flow.function_task(_point_in_main)()
    assert type(caught.value.__cause__) is MainError
    assert str(caught.value.__cause__) == "nope"
    assert "_fails_in_main" in str(caught.value.__cause__.__cause__)  # its remote traceback
    assert type(point) is MainPoint and point == MainPoint(3)


SCRIPT = """
import asyncio
from dataclasses import dataclass

from stepgraph.backends import Backend, ProcessBackend, SubprocessBackend
from stepgraph.tasks import TaskFailed, TaskFlow


class MyError(Exception):
    pass


@dataclass
class Point:
    x: int


def fails():
    raise MyError("nope")


def point():
    return Point(3)


async def main():
    for backend in (ProcessBackend(1), SubprocessBackend(1)):
        async with TaskFlow(backends={"default": backend}) as flow:
            try:
                await flow.function_task(fails)()
            except TaskFailed as error:
                assert type(error.__cause__) is MyError, repr(error.__cause__)
            assert await flow.function_task(point)() == Point(3)
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
"""


async def run_script(tmp_path: Path, text: str, *, timeout: float | None = None) -> tuple[int, str]:
    """Run ``text`` as a script ``campaign.py``: its exit code and standard output.

    Fails the test if it runs longer than ``timeout`` seconds (killed) or writes nothing.
    """
    script = tmp_path / "campaign.py"
    script.write_text(text)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await child.communicate()
    except TimeoutError:
        child.kill()
        await child.wait()
        pytest.fail(f"the script ran longer than {timeout} s")
    assert out, err.decode()[-2000:]
    return child.returncode or 0, out.decode()


async def test_a_script_gets_its_own_classes_back_from_a_pool(tmp_path: Path) -> None:
    assert await run_script(tmp_path, SCRIPT) == (0, "ok\n")


# -- workers that die (bug: one death fails every body; an idle death breaks the backend) ----
#
# Through the backend itself: its submit hands a body to the pool at once, so the bodies
# surely wait in the pool (not started) when the worker dies. (A flow submits from tasks
# of its own, a little later.)


@pytest.fixture
async def cpu() -> AsyncIterator[ProcessBackend]:
    """A started pool of one worker, named "cpu" (shut down after the test)."""
    backend = ProcessBackend(1, name="cpu")
    await backend.start()
    yield backend
    await backend.shutdown()


async def test_a_worker_that_dies_fails_its_body_and_the_bodies_waiting_behind_it_run(
    cpu: ProcessBackend, lines: Fifo, doom: Fifo, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    dying = asyncio.ensure_future(cpu.submit(_report_and_die, lines.path, doom.path))
    pid = int(await lines.line())  # it runs: the next bodies wait for the only worker
    waiting = [asyncio.ensure_future(cpu.submit(_log, str(log), i)) for i in range(5)]
    doom.release()
    with pytest.raises(WorkerDiedError) as caught:
        await dying
    results = await asyncio.gather(*waiting)
    assert await cpu.submit(_log, str(log), 5) == (results[0][0], 5)  # the same pool
    assert "_report_and_die" in str(caught.value) and "'cpu'" in str(caught.value)
    assert [value for _, value in results] == [0, 1, 2, 3, 4]
    workers = {worker for worker, _ in results}
    assert len(workers) == 1 and pid not in workers  # one fresh pool for them all
    assert _runs(log) == [0, 1, 2, 3, 4, 5]  # each body ran once


async def _taken_as_started(backend: ProcessBackend, count: int) -> None:
    """Wait until the pool holds ``count`` bodies as running beside the one that runs
    (it hands them to its workers' queue ahead of time; nothing says when it has)."""
    pool = backend._pool
    assert pool is not None
    async with asyncio.timeout(30):
        while sum(future.running() for future in pool._pending) < count + 1:  # noqa: ASYNC110
            await asyncio.sleep(0.001)  # (the pool's thread sets no event we could await)


async def _busy(cpu: ProcessBackend, lines: Fifo, gate: Fifo) -> asyncio.Future[object]:
    """A body running in the pool's only worker, until ``gate`` lets it go."""
    running = asyncio.ensure_future(cpu.submit(_report_and_wait, lines.path, gate.path, 1))
    await lines.line()  # it runs
    return running


async def test_a_body_cancelled_before_it_starts_never_starts(
    cpu: ProcessBackend, lines: Fifo, gate: Fifo, tmp_path: Path
) -> None:
    # the pool takes the body after the running one as started, ahead of time: a cancel
    # cannot take it back from the pool; it is withdrawn, and skipped when its turn comes
    log = tmp_path / "runs"
    running = await _busy(cpu, lines, gate)
    queued = [asyncio.ensure_future(cpu.submit(_log, str(log), i)) for i in range(3)]
    await _taken_as_started(cpu, 2)  # (the pool's thread does it in its own time)
    for body in queued[:2]:
        body.cancel()
    await asyncio.gather(*queued[:2], return_exceptions=True)  # (the cancels are done)
    gate.release()
    await running
    assert (await queued[2])[1] == 2
    assert (await cpu.submit(_log, str(log), 3))[1] == 3  # after the skipped ones
    assert _runs(log) == [2, 3]  # the cancelled bodies never ran


async def test_a_body_whose_awaitable_is_cancelled_before_it_is_awaited_never_runs(
    cpu: ProcessBackend, lines: Fifo, gate: Fifo, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    running = await _busy(cpu, lines, gate)
    never = asyncio.ensure_future(cpu.submit(_log, str(log), 0))
    never.cancel()  # before its task ever ran a step
    gate.release()
    await running
    assert (await cpu.submit(_log, str(log), 1))[1] == 1
    assert never.cancelled()
    assert _runs(log) == [1]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_the_bodies_waiting_behind_a_cancelled_one_run_when_a_worker_dies(
    cpu: ProcessBackend, lines: Fifo, doom: Fifo, tmp_path: Path
) -> None:
    # Python 3.11's pool stops short when a worker dies while a cancelled body waits in it
    # (its manager thread dies of it, and says so: the warning filtered here)
    log = tmp_path / "runs"
    dying = asyncio.ensure_future(cpu.submit(_report_and_die, lines.path, doom.path))
    await lines.line()  # it runs: the next bodies wait for the only worker
    waiting = [asyncio.ensure_future(cpu.submit(_log, str(log), i)) for i in range(5)]
    await _taken_as_started(cpu, 2)  # 0 and 1 handed to the worker: 3 waits in the pool
    cancelled = waiting.pop(3)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)  # (the cancel is done)
    doom.release()
    with pytest.raises(WorkerDiedError):
        await dying
    async with asyncio.timeout(60):  # (a safety net: they used to wait for good)
        results = await asyncio.gather(*waiting)
    assert cancelled.cancelled()
    assert [value for _, value in results] == [0, 1, 2, 4]
    assert _runs(log) == [0, 1, 2, 4]  # the cancelled body never ran, the others once


async def test_the_bodies_running_beside_a_worker_that_dies_fail_and_the_waiting_ones_run(
    lines: Fifo, gate: Fifo, doom: Fifo, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    backend = ProcessBackend(2)
    await backend.start()
    try:
        running = asyncio.ensure_future(backend.submit(_report_and_wait, lines.path, gate.path, 1))
        await lines.line()
        dying = asyncio.ensure_future(backend.submit(_report_and_die, lines.path, doom.path))
        await lines.line()  # both workers are busy: the next bodies wait
        waiting = [asyncio.ensure_future(backend.submit(_log, str(log), i)) for i in range(3)]
        doom.release()
        with pytest.raises(WorkerDiedError):
            await dying
        with pytest.raises(WorkerDiedError) as caught:  # the pool stopped its worker too
            await running
        assert [value for _, value in await asyncio.gather(*waiting)] == [0, 1, 2]
    finally:
        await backend.shutdown()
    assert "_report_and_wait" in str(caught.value)
    assert _runs(log) == [0, 1, 2]


NO_GUARD = """
import asyncio

from stepgraph.backends import ProcessBackend
from stepgraph.errors import WorkerDiedError


async def main():
    backend = ProcessBackend(1)
    await backend.start()
    try:
        await backend.submit(abs, -1)
    except WorkerDiedError:
        print("died")
    await backend.shutdown()


asyncio.run(main())  # no `if __name__ == "__main__":`: each worker runs it, and dies
"""


async def test_a_body_fails_at_once_when_its_workers_die_before_running_anything(
    tmp_path: Path,
) -> None:
    # (a safety net: pool after pool would go on for good)
    _, out = await run_script(tmp_path, NO_GUARD, timeout=60)
    assert out == "died\n"


# -- cancelled bodies when the flow ends (bug: leaving waited for them) ----------------------


async def test_a_cancelled_body_goes_on_in_the_background_while_the_flow_is_open(
    lines: Fifo, gate: Fifo
) -> None:
    async with TaskFlow(backends={"default": ProcessBackend(1)}) as flow:
        hold = flow.function_task(_report_and_wait)
        future = hold(lines.path, gate.path, 0)
        pid = await lines.line()
        assert future.cancel()
        gate.release()
        assert await lines.line() == f"done {pid}"  # it was not stopped
        assert str(await flow.function_task(_pid)()) == pid  # its worker serves the next


async def test_leaving_a_flow_does_not_wait_for_a_cancelled_body_and_ends_its_worker(
    lines: Fifo, gate: Fifo
) -> None:
    pid = 0

    async def campaign() -> None:
        nonlocal pid
        async with TaskFlow(backends={"default": ProcessBackend(1)}) as flow:
            hold = flow.function_task(_report_and_wait)
            future = hold(lines.path, gate.path, 0)  # waits at the gate for good
            pid = int(await lines.line())
            assert future.cancel()

    try:
        async with asyncio.timeout(30):  # a safety net: without the fix it waits for good
            await campaign()
    except TimeoutError:
        gate.release()  # let the body end, so that the test can
        pytest.fail("leaving the flow waited for a body that was cancelled")
    assert not _alive(pid)  # terminated and reaped: no zombie is left


async def test_shutting_a_backend_down_waits_for_the_bodies_still_awaited(
    lines: Fifo, gate: Fifo
) -> None:
    backend = ProcessBackend(1)
    await backend.start()
    body = asyncio.ensure_future(backend.submit(_report_and_wait, lines.path, gate.path, 5))
    pid = int(await lines.line())
    closing = asyncio.ensure_future(backend.shutdown())
    gate.release()
    assert await body == (pid, 5)
    await closing
    assert not _alive(pid)
