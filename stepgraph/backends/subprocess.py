"""Each body in a child process of its own: executables directly, Python functions in a
fresh interpreter."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import WorkerDiedError
from .base import BackendBase, LoopSemaphores
from .child import PATH_VARIABLE
from .commands import Command, CommandResult, run_command_async, terminate
from .process import dumps, load_outcome

__all__ = ["SubprocessBackend"]


class SubprocessBackend(BackendBase):
    """Every body in a child process of its own.

    An executable is started directly (no shell unless asked); a Python function runs
    in a fresh interpreter (``python -m stepgraph.backends.child``), pickled with
    cloudpickle (the extra ``process``): it costs an interpreter start, so it suits
    long bodies and bodies that must not share a process. Cancelling a body terminates
    its process group: SIGTERM, then SIGKILL after ``grace`` seconds.

    Args:
        max_workers: how many children run at once (None: the number of CPUs).
        grace: seconds between SIGTERM and SIGKILL.
        name: the backend's name in messages.
    """

    in_process = False

    def __init__(
        self, max_workers: int | None = None, *, grace: float = 3.0, name: str = "subprocess"
    ) -> None:
        self.name = name
        self.max_workers = max_workers or os.cpu_count() or 1
        self.grace = grace
        self._slots = LoopSemaphores(self.max_workers)

    def slots(self, kind: str, fn: Callable[..., Any]) -> tuple[str, int] | None:
        """Functions and executables share ``max_workers`` places."""
        return ("children", self.max_workers) if kind in ("function", "executable") else None

    async def _bounded(self, work: Callable[[], Awaitable[Any]]) -> Any:
        async with self._slots.get():
            return await work()

    def run_command(self, command: Command) -> Awaitable[CommandResult]:
        if command.grace != self.grace:
            command = dataclasses.replace(command, grace=self.grace)
        return self._bounded(lambda: run_command_async(command))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        payload = dumps((fn, args, kwargs))
        what = getattr(fn, "__name__", repr(fn))
        return self._bounded(lambda: self._run(payload, what))

    async def _run(self, payload: bytes, what: str) -> Any:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stepgraph.backends.child",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, PATH_VARIABLE: os.pathsep.join(sys.path)},  # its imports too
        )
        try:
            out, err = await child.communicate(payload)
        except asyncio.CancelledError:
            await terminate(child, self.grace)
            raise
        if not out:
            tail = "\n".join(err.decode(errors="replace").rstrip().splitlines()[-10:])
            raise WorkerDiedError(
                f"the child process running {what} on backend {self.name!r} died with exit "
                f"code {child.returncode}" + (f": {tail}" if tail else "")
            )
        return load_outcome(out, what, self.name)
