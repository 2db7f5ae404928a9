"""The backend seam: where a node's body runs.

A :class:`Backend` runs a function with its arguments somewhere and gives back an
awaitable of its result. Two ship with the runtime: :class:`InlineBackend` (the event
loop itself: ``async def`` bodies) and :class:`ThreadBackend` (a thread pool: plain
``def`` bodies, so that they never block the loop). Both authoring styles reach threads
through :func:`body_caller` alone.

An in-process backend's bodies use the live context of their run. A backend that is
not in-process (a process pool, a cluster) runs bodies that cannot reach their run:
they get a recording context (``stepgraph.runtime.effects``) and their effects (sends,
stream writes, shared-state writes) come back with their result, as data, which the
shell turns into ticks.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor as PoolExecutor
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

__all__ = ["THREADS", "Backend", "InlineBackend", "ThreadBackend", "body_caller"]

T = TypeVar("T")


class Backend(Protocol):
    """Where bodies run.

    Attributes:
        name: a short name, used in messages.
        in_process: whether bodies run in this process and may use their run's live
            context (otherwise they get a recording one).
    """

    name: str
    in_process: bool

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Awaitable[Any]:
        """Run ``fn(*args)`` (awaiting it when it is a coroutine) and return its result."""
        ...


class InlineBackend:
    """Bodies run on the event loop: ``async def`` ones are awaited, plain ones called."""

    name = "inline"
    in_process = True

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Awaitable[Any]:
        result = fn(*args)
        if inspect.isawaitable(result):
            return result
        future = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Call ``fn`` in a worker thread, so that no exception can be lost on the way back.

    An ``async def`` body gets an event loop of its own in the thread.
    """
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            awaitable = result

            async def finish() -> Any:
                return await awaitable

            result = asyncio.run(finish())
        return result
    except StopIteration as exc:
        # asyncio cannot carry StopIteration through a future (it would hang the awaiter):
        # it reaches the step as what it is, a RuntimeError raised by the body.
        raise RuntimeError(f"{getattr(fn, '__qualname__', fn)!s} raised StopIteration") from exc


class ThreadBackend:
    """Bodies run in a thread pool: ``executor`` if given, else a pool of the backend's own.

    The body sees the caller's context variables (so ``get_context()`` works in a
    ``def`` step). The backend's own pool is not the event loop's default executor, so
    ``asyncio.run`` (``run_sync``) does not wait, at its end, for a body that outlived
    its step's timeout: that thread finishes in the background.
    """

    in_process = True

    def __init__(self, executor: PoolExecutor | None = None, name: str = "thread") -> None:
        self.name = name
        self._executor = executor
        self._lock = threading.Lock()

    def _pool(self) -> PoolExecutor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(thread_name_prefix=f"stepgraph-{self.name}")
        return self._executor

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Awaitable[Any]:
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool(), context.run, _call, fn, args)


THREADS = ThreadBackend()
"""The thread backend plain ``def`` bodies use by default."""


def body_caller(fn: Callable[..., Any], is_async: bool) -> Callable[..., Awaitable[Any]]:
    """How to call a body with its arguments: directly when async, else on ``THREADS``."""
    if is_async:
        return fn
    return functools.partial(THREADS.submit, fn)
