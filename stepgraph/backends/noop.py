"""Dry runs: a backend that runs nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .base import BackendBase
from .commands import Command, CommandResult

__all__ = ["NoopBackend"]


class NoopBackend(BackendBase):
    """Runs no body, starts no command, sends no request: every result is ``result``.

    Route a flow's tasks here to check it without running it (a dry run): the DAG, the
    routing, the resource claims and the order are exercised; block bodies still run
    (they are the flow's structure). ``calls`` counts what it was given.

    Args:
        result: what every task gives (default None).
        name: the backend's name in messages.
    """

    in_process = True

    def __init__(self, *, result: Any = None, name: str = "noop") -> None:
        self.name = name
        self.result = result
        self.calls = 0

    def _done(self, value: Any) -> Awaitable[Any]:
        self.calls += 1
        future = asyncio.get_running_loop().create_future()
        future.set_result(value)
        return future

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self._done(self.result)

    def run_command(self, command: Command) -> Awaitable[CommandResult]:
        return self._done(CommandResult(returncode=0, stdout="", stderr_tail=""))
