"""The thread bridge: letting a ``def`` body in a worker thread reach its run's loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["LoopBridge"]

T = TypeVar("T")


class LoopBridge:
    """Runs calls on one event loop's thread, from that thread or from any other."""

    __slots__ = ("loop", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()

    def on_loop(self) -> bool:
        """Whether the caller runs on the loop's thread."""
        return threading.get_ident() == self.thread

    def post(self, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop: now when on its thread, else soon."""
        if threading.get_ident() == self.thread:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def call(self, fn: Callable[[], T]) -> T:
        """Call ``fn()`` on the loop and return its result (blocking a worker thread)."""
        if threading.get_ident() == self.thread:
            return fn()
        answer: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                answer.set_result(fn())
            except BaseException as exc:
                answer.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return answer.result()
