"""Executables: a command line to run, what it gave back, and two ways to run it.

:func:`run_command_async` runs the child from the event loop (the subprocess and thread
backends): cancelling it terminates the child's whole process group, SIGTERM first, then
SIGKILL after a grace period. :func:`run_command_blocking` runs it where a pool or a
cluster runs functions (the process and Dask backends).

A command runs without a shell unless ``shell`` is set: its arguments go to the program
as they are, so nothing in them is interpreted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Command",
    "CommandResult",
    "CommandStopped",
    "run_command_async",
    "run_command_blocking",
    "terminate",
]

TAIL_LINES = 10
"""How many of the last lines of error output a failure message quotes."""


@dataclass(frozen=True, slots=True)
class Command:
    """An executable to run.

    Attributes:
        args: the program and its arguments; with ``shell``, one string for ``/bin/sh``.
        shell: run ``args`` through the shell (off by default: no quoting surprises).
        cwd: the working directory (None: the current one).
        env: variables added to the environment (None: the environment as it is).
        stdout_path: write standard output to this file (None: capture it as text).
        stderr_path: write error output to this file (None: capture it).
        grace: seconds between SIGTERM and SIGKILL when the command is cancelled.
    """

    args: tuple[str, ...] | str
    shell: bool = False
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    grace: float = 3.0

    @property
    def program(self) -> str:
        """The program's name, for messages: a shell line whole (cut to 120 characters),
        as its first word is not what ran."""
        if isinstance(self.args, str):
            line = " ".join(self.args.split())
            return line if len(line) <= 120 else line[:117] + "..."
        return self.args[0] if self.args else ""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a command gave back.

    Attributes:
        returncode: its exit code (negative: killed by that signal).
        stdout: its standard output as text, or the path of the file holding it.
        stderr_tail: the last lines of its error output.
    """

    returncode: int
    stdout: str
    stderr_tail: str


def _environment(command: Command) -> dict[str, str] | None:
    if command.env is None:
        return None
    return {**os.environ, **command.env}


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-TAIL_LINES:])


def _file_tail(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 8192))
        return _tail(f.read().decode(errors="replace"))


def _open_outputs(command: Command, stack: contextlib.ExitStack) -> tuple[Any, Any]:
    """Files for the command's outputs, or PIPE where it is captured."""
    out: IO[bytes] | int = subprocess.PIPE
    err: IO[bytes] | int = subprocess.PIPE
    if command.stdout_path is not None:
        Path(command.stdout_path).parent.mkdir(parents=True, exist_ok=True)
        out = stack.enter_context(open(command.stdout_path, "wb"))  # noqa: SIM115
    if command.stderr_path is not None:
        Path(command.stderr_path).parent.mkdir(parents=True, exist_ok=True)
        err = stack.enter_context(open(command.stderr_path, "wb"))  # noqa: SIM115
    return out, err


def _result(command: Command, code: int, out: bytes | None, err: bytes | None) -> CommandResult:
    stdout = (
        command.stdout_path
        if command.stdout_path is not None
        else (out or b"").decode(errors="replace")
    )
    if command.stderr_path is not None:
        tail = _file_tail(command.stderr_path)
    else:
        tail = _tail((err or b"").decode(errors="replace"))
    return CommandResult(returncode=code, stdout=stdout, stderr_tail=tail)


def _options(command: Command, out: Any, err: Any) -> dict[str, Any]:
    """What ``Popen`` and asyncio's subprocess functions take, but the arguments."""
    return {
        "cwd": command.cwd,
        "env": _environment(command),
        "stdin": subprocess.DEVNULL,
        "stdout": out,
        "stderr": err,
        "start_new_session": True,  # its own process group: stopping it stops its children
    }


def _argv(command: Command) -> list[str]:
    return [command.args] if isinstance(command.args, str) else list(command.args)


class CommandStopped(Exception):
    """A command run by :func:`run_command_blocking` was stopped because it was asked to."""


def run_command_blocking(
    command: Command, stop: Callable[[], bool] | None = None, poll: float = 0.25
) -> CommandResult:
    """Run ``command`` to its end, in this thread.

    With ``stop``, it is asked every ``poll`` seconds whether to stop: when it says so,
    the command's process group is terminated (SIGTERM, SIGKILL after the grace period)
    and :class:`CommandStopped` is raised.
    """
    with contextlib.ExitStack() as stack:
        options = _options(command, *_open_outputs(command, stack))
        if command.shell:
            child = subprocess.Popen(command.args, shell=True, **options)
        else:
            child = subprocess.Popen(_argv(command), **options)
        try:
            while True:
                try:
                    stdout, stderr = child.communicate(timeout=None if stop is None else poll)
                    break
                except subprocess.TimeoutExpired:
                    assert stop is not None
                    if stop():
                        _kill_group(child.pid, signal.SIGTERM)
                        try:
                            child.wait(command.grace)
                        except subprocess.TimeoutExpired:
                            _kill_group(child.pid, signal.SIGKILL)
                        raise CommandStopped(f"{command.program} was stopped") from None
        except BaseException:
            _kill_group(child.pid, signal.SIGKILL)
            child.wait()
            raise
    return _result(command, child.returncode, stdout, stderr)


async def run_command_async(command: Command) -> CommandResult:
    """Run ``command`` from the event loop; cancelling this terminates it (see above)."""
    with contextlib.ExitStack() as stack:
        options = _options(command, *_open_outputs(command, stack))
        if command.shell:
            assert isinstance(command.args, str)
            child = await asyncio.create_subprocess_shell(command.args, **options)
        else:
            child = await asyncio.create_subprocess_exec(*_argv(command), **options)
        try:
            stdout, stderr = await child.communicate()
        except asyncio.CancelledError:
            await terminate(child, command.grace)
            raise
    assert child.returncode is not None
    return _result(command, child.returncode, stdout, stderr)


async def terminate(child: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the child's process group; SIGKILL if it is still there after ``grace``."""
    _kill_group(child.pid, signal.SIGTERM)
    try:
        await asyncio.shield(asyncio.wait_for(child.wait(), grace))
    except (TimeoutError, asyncio.CancelledError):
        _kill_group(child.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(child.wait())


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the child leads its own session: its children go too
