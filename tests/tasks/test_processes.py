"""Tasks in other processes: executables, a process pool, a child Python per body.

Real child processes throughout (``echo``, ``wc``, ``sh``, Python scripts), and a real
``ProcessPoolExecutor`` whose worker is killed mid-task.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stepgraph.backends import (
    DaskBackend,
    InlineBackend,
    ProcessBackend,
    SubprocessBackend,
    ThreadBackend,
)
from stepgraph.errors import BackendError, WorkerDiedError
from stepgraph.tasks import DependencyFailed, TaskFailed, TaskFlow


class Refused(RuntimeError):
    """Raised in another process: its type and message must come back intact."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for good, not yet reaped
        return f.read().split()[2] != "Z"


async def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` ends within ``within`` seconds (told by a pidfd, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, ended.set)
    try:
        await asyncio.wait_for(ended.wait(), within)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)


class PidPipe:
    """A named pipe a child writes its pid to; reading it waits for the child to start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)

    def code(self) -> str:
        """Python code that writes the running process's pid to the pipe."""
        return f"import os; open({str(self.path)!r}, 'w').write(str(os.getpid()))"

    async def pid(self) -> int:
        return int(await asyncio.to_thread(self.path.read_text))


def _read(path: str | Path) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


async def test_executables_give_stdout_as_text_and_feed_other_tasks(
    work_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data.txt"
    data.write_text("a\nb\nc\n")
    backends = {"default": ThreadBackend(2), "sub": SubprocessBackend(2)}
    async with TaskFlow(backends=backends, work_dir=work_dir) as flow:

        @flow.function_task
        def path() -> str:
            return str(data)

        @flow.executable_task(backend="sub")
        def count(p: str) -> str:
            return f"wc -l {p}"

        @flow.executable_task
        def echo(*words: str) -> list[str]:
            return ["echo", *words]

        @flow.executable_task(backend="sub")
        def script(n: int) -> list[str]:
            return [sys.executable, "-c", f"print(sum(range({n})))"]

        @flow.function_task
        def lines(text: str) -> int:
            return int(text.split()[0])

        assert await lines(count(path())) == 3
        assert await echo("a b", "$HOME") == "a b $HOME\n"  # no shell: nothing interpreted
        assert await script(10) == "45\n"


async def test_shell_true_opts_into_the_shell(work_dir: Path) -> None:
    async with TaskFlow(backends={"default": SubprocessBackend()}, work_dir=work_dir) as flow:

        @flow.executable_task(shell=True, env={"GREETING": "hi"})
        def greet() -> str:
            return "echo $GREETING | tr a-z A-Z"

        assert await greet() == "HI\n"

        @flow.executable_task(shell=True)
        def fails() -> str:
            return "echo to-stderr >&2; exit 7"

        with pytest.raises(TaskFailed) as caught:
            await fails()
    # the shell line is what failed, not its first word
    assert "Command 'echo to-stderr >&2; exit 7' returned non-zero exit status 7" in str(
        caught.value
    )


async def test_capture_stdio_writes_files_under_the_flow_and_gives_the_stdout_path(
    work_dir: Path,
) -> None:
    async with TaskFlow(
        backends={"default": SubprocessBackend()}, work_dir=work_dir, uid="campaign"
    ) as flow:

        @flow.executable_task(capture_stdio=True)
        def both() -> list[str]:
            return ["sh", "-c", "echo out; echo err >&2"]

        future = both()
        path = await future
    assert path == str(work_dir / "campaign" / f"{future.uid}.stdout")
    assert _read(path) == "out\n"
    assert _read(work_dir / "campaign" / f"{future.uid}.stderr") == "err\n"


async def test_a_generated_flow_uid_puts_outputs_in_a_folder_of_their_own(work_dir: Path) -> None:
    async with TaskFlow(backends={"default": ThreadBackend()}, work_dir=work_dir) as flow:

        @flow.executable_task(capture_stdio=True)
        def hello() -> str:
            return "echo hello"

        path = Path(await hello())
    assert path.parent == work_dir / flow.uid and _read(path) == "hello\n"


async def test_a_non_zero_exit_fails_naming_task_program_code_and_stderr(work_dir: Path) -> None:
    async with TaskFlow(backends={"default": SubprocessBackend()}, work_dir=work_dir) as flow:

        @flow.executable_task
        def broken(code: int) -> list[str]:
            return ["sh", "-c", f"echo first >&2; echo 'the last words' >&2; exit {code}"]

        @flow.function_task(backend="default")
        def after(x: str) -> str:
            return x

        failing = broken(3)
        with pytest.raises(TaskFailed) as caught:
            await failing
        with pytest.raises(DependencyFailed, match="'broken'"):
            await after(failing)
    text = str(caught.value)
    assert "'broken'" in text and "'sh'" in text and "exit status 3" in text
    assert text.endswith("standard error ends with: first\nthe last words")
    cause = caught.value.__cause__
    assert isinstance(cause, subprocess.CalledProcessError) and cause.returncode == 3
    assert "the last words" in cause.stderr


async def test_an_executable_cannot_go_to_the_inline_backend() -> None:
    async with TaskFlow(backends={"default": InlineBackend()}) as flow:
        with pytest.raises(BackendError, match=r"'default'.*InlineBackend"):
            flow.executable_task(lambda: "true")


def _backend(kind: str) -> Any:
    if kind == "thread":
        return ThreadBackend()
    if kind == "process":
        return ProcessBackend(1)
    if kind == "dask":
        return DaskBackend(processes=False, n_workers=1, threads_per_worker=1)
    return SubprocessBackend(grace=5)


@pytest.mark.parametrize("backend", ["thread", "subprocess", "process", "dask"])
async def test_a_cancelled_executable_is_terminated(backend: str, tmp_path: Path) -> None:
    pipe = PidPipe(tmp_path / "pid")
    chosen = _backend(backend)
    async with TaskFlow(backends={"default": chosen}) as flow:

        @flow.executable_task
        def hang() -> list[str]:
            return [sys.executable, "-c", f"{pipe.code()}; import time; time.sleep(60)"]

        future = hang()
        pid = await pipe.pid()
        future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await future
        await flow.wait()  # the body ends once its child is gone (Dask: it is told to stop)
        assert await _gone(pid)


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path,
) -> None:
    pipe = PidPipe(tmp_path / "pid")
    async with TaskFlow(backends={"default": SubprocessBackend(grace=0.2)}) as flow:

        @flow.executable_task
        def stubborn() -> list[str]:
            code = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
            return [sys.executable, "-c", f"{code}; {pipe.code()}; time.sleep(60)"]

        future = stubborn()
        pid = await pipe.pid()
        future.cancel()
        await flow.wait()
        assert not _alive(pid)


def _closure_factory(k: int) -> Any:
    return lambda x: x * k


def _raise_refused(x: int) -> int:
    raise Refused(f"refused {x}")


async def test_process_backend_runs_lambdas_and_closures_and_keeps_error_types() -> None:
    async with TaskFlow(backends={"default": ThreadBackend(), "cpu": ProcessBackend(2)}) as flow:
        times3 = flow.function_task(backend="cpu")(_closure_factory(3))

        @flow.function_task(backend="cpu")
        def where(x: int) -> tuple[int, int]:
            return os.getpid(), x

        @flow.function_task(backend="cpu")
        async def async_body(x: int) -> int:
            await asyncio.sleep(0)
            return x + 1

        refused = flow.function_task(backend="cpu")(_raise_refused)
        pid, value = await where(times3(5))
        assert value == 15 and pid != os.getpid()
        assert await async_body(1) == 2
        with pytest.raises(TaskFailed) as caught:
            await refused(4)
    assert type(caught.value.__cause__) is Refused
    assert str(caught.value.__cause__) == "refused 4"
    assert "'cpu'" in str(caught.value) and "'_raise_refused'" in str(caught.value)


def _exit(code: int) -> None:
    sys.exit(code)


@pytest.mark.parametrize("backend", ["thread", "process", "subprocess"])
async def test_sys_exit_in_a_body_fails_its_task_and_the_program_goes_on(backend: str) -> None:
    async with TaskFlow(backends={"default": _backend(backend)}) as flow:
        with pytest.raises(TaskFailed) as caught:
            await flow.function_task(_exit)(3)
        assert await flow.function_task(_pid)() > 0  # the flow goes on
    assert "_exit called sys.exit(3)" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)


def _pid() -> int:
    return os.getpid()


def _kill_myself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def test_a_killed_pool_worker_fails_its_task_and_the_flow_goes_on() -> None:
    async with TaskFlow(backends={"default": ThreadBackend(), "cpu": ProcessBackend(1)}) as flow:
        die = flow.function_task(backend="cpu")(_kill_myself)
        double = flow.function_task(backend="cpu")(lambda x: 2 * x)
        local = flow.function_task(lambda x: x + 1)
        with pytest.raises(TaskFailed) as caught:
            await die()
        assert isinstance(caught.value.__cause__, WorkerDiedError)
        assert "'_kill_myself'" in str(caught.value) and "died" in str(caught.value)
        assert await local(1) == 2  # its other backends are untouched
        assert await double(21) == 42  # and the pool comes back for the next body


async def test_subprocess_backend_runs_python_functions_in_a_child_of_their_own() -> None:
    async with TaskFlow(backends={"default": SubprocessBackend(2)}) as flow:
        where = flow.function_task(lambda: os.getpid())
        refused = flow.function_task(_raise_refused)
        printing = flow.function_task(lambda: print("noise") or 7)  # prints cannot spoil results
        assert await where() != os.getpid()
        assert await printing() == 7
        with pytest.raises(TaskFailed) as caught:
            await refused(1)
    assert type(caught.value.__cause__) is Refused


async def test_leaving_on_an_error_stops_an_executable_on_an_in_process_dask_cluster(
    tmp_path: Path,
) -> None:
    pipe = PidPipe(tmp_path / "pid")
    error = KeyError("stop")
    with pytest.raises(KeyError) as caught:
        async with TaskFlow(backends={"default": _backend("dask")}) as flow:

            @flow.executable_task
            def hang() -> list[str]:
                return [sys.executable, "-c", f"{pipe.code()}; import time; time.sleep(60)"]

            future = hang()
            pid = await pipe.pid()
            raise error
    assert caught.value is error and future.cancelled()
    assert await _gone(pid)  # (the cluster closed first: it took Dask's timeout, 30 s)


async def test_leaving_on_an_error_stops_children_and_pool_processes_concurrently(
    tmp_path: Path,
) -> None:
    pipes = [PidPipe(tmp_path / f"pid{i}") for i in range(3)]
    error = KeyError("stop")
    pids: list[int] = []
    with pytest.raises(KeyError) as caught:
        async with TaskFlow(
            backends={
                "default": SubprocessBackend(grace=5),
                "cpu": ProcessBackend(1),
                "t": ThreadBackend(),
            }
        ) as flow:

            @flow.executable_task
            def hang(i: int) -> list[str]:
                return [sys.executable, "-c", f"{pipes[i].code()}; import time; time.sleep(60)"]

            @flow.function_task(backend="cpu")
            def busy(code: str) -> None:
                exec(code)
                import time

                time.sleep(60)

            futures = [hang(0), hang(1), busy(pipes[2].code())]
            pids.extend(await asyncio.gather(*(p.pid() for p in pipes)))
            raise error
    assert caught.value is error
    assert all(f.cancelled() for f in futures)
    for pid in pids:
        assert await _gone(pid), f"process {pid} is still there"
