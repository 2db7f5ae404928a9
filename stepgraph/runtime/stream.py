"""The run's event stream: what steps write with ``ctx.write_event_to_stream``, in order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from ..errors import WorkflowRuntimeError

__all__ = ["EventStream"]


class EventStream:
    """An unbounded single-consumer stream that closes when the run ends (G12).

    Nothing is dropped: events written before anyone listens are kept until read.
    """

    __slots__ = ("_buffer", "_closed", "_consumed", "_waiter")

    def __init__(self) -> None:
        self._buffer: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._consumed = False

    def push(self, event: Any) -> None:
        """Append ``event``; ignored once the stream is closed."""
        if self._closed:
            return
        self._buffer.append(event)
        self._wake()

    def close(self) -> None:
        """End the stream: the consumer reads what is buffered, then stops."""
        self._closed = True
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def events(self, owner: str) -> AsyncIterator[Any]:
        """Iterate the events in order until the stream closes. One consumer per run."""
        if self._consumed:
            raise WorkflowRuntimeError(
                f"the event stream of run {owner!r} is already being consumed; "
                "call stream_events() once per run"
            )
        self._consumed = True
        buffer = self._buffer
        while True:
            while buffer:
                yield buffer.popleft()
            if self._closed:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            await waiter
