"""The backends in this process: the event loop itself, and a thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor as PoolExecutor
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import BackendBase, call_to_end
from .commands import Command, CommandResult, run_command_async

__all__ = ["InlineBackend", "ThreadBackend"]


class InlineBackend(BackendBase):
    """Bodies run on the event loop: ``async def`` ones are awaited, plain ones called.

    A plain body blocks the loop while it runs: use it for quick functions, and a
    :class:`ThreadBackend` for slow ones. Cancelling an ``async def`` body cancels it.
    Executables are not run inline (use a thread or subprocess backend).
    """

    in_process = True

    def __init__(self, *, name: str = "inline") -> None:
        self.name = name

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            return result
        future = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future

    def run_command(self, command: Command) -> Awaitable[CommandResult]:
        return run_command_async(command)


_NO_KWARGS: dict[str, Any] = {}


class ThreadBackend(BackendBase):
    """Plain ``def`` bodies run in a thread pool; ``async def`` ones on the event loop.

    Args:
        max_workers: the pool's size (None: Python's default for thread pools).
        executor: a pool of your own to use instead (it is not shut down by the backend).
        name: the backend's name in messages.

    A body sees the caller's context variables. The backend's pool is not the event
    loop's default executor, so ``asyncio.run`` does not wait, at its end, for a body
    that outlived its step's timeout. A running thread cannot be stopped: cancelling
    its body stops waiting for it (it finishes in the background). Executables run as
    child processes from the event loop, so cancelling one terminates it.
    """

    in_process = True

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        executor: PoolExecutor | None = None,
        name: str = "thread",
    ) -> None:
        self.name = name
        self.max_workers = max_workers
        self._executor = executor
        self._own = executor is None
        self._lock = threading.Lock()

    def _pool(self) -> PoolExecutor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        self.max_workers, thread_name_prefix=f"stepgraph-{self.name}"
                    )
        return self._executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        if inspect.iscoroutinefunction(fn):
            return fn(*args, **kwargs)  # type: ignore[no-any-return]
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(
            self._pool(), context.run, call_to_end, fn, args, kwargs or _NO_KWARGS
        )

    def run_command(self, command: Command) -> Awaitable[CommandResult]:
        return run_command_async(command)

    def slots(self, kind: str, fn: Callable[..., Any]) -> tuple[str, int] | None:
        """A plain function takes a thread of the pool; executables, as many places of
        their own (a flow runs as many at once as the pool has threads, as a process
        backend does); an ``async def`` body runs on the loop."""
        if kind == "function" and inspect.iscoroutinefunction(fn):
            return None
        if kind not in ("function", "executable"):
            return None
        size = self.max_workers
        if size is None and self._executor is not None:
            size = getattr(self._executor, "_max_workers", None)
        if size is None and self._executor is None:
            size = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
        if size is None:
            return None
        return ("threads", size) if kind == "function" else ("commands", size)

    async def shutdown(self, *, cancel: bool = False) -> None:
        with self._lock:
            pool, self._executor = (self._executor, None) if self._own else (None, self._executor)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=cancel)
