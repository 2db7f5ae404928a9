"""The clock seam: where the shell reads the time and arms its timers.

Every timer of a run (its deadline, ``wait_for_event`` deadlines, retry backoff, step
timeouts) and every tick's ``at`` go through one :class:`Clock`. :class:`SystemClock`
is the real one; ``stepgraph.testing.FakeClock`` is a virtual one for tests, whose
time only moves when the event loop has nothing else to do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "SystemClock", "TimerHandle"]


class TimerHandle(Protocol):
    """What arming a timer returns: it can be cancelled before it fires."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time for timers and deadlines, wall time for records.

    ``call_later`` is called from the event loop's thread; the callback runs there too.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (timers and deadlines)."""
        ...

    def wall(self) -> float:
        """Wall-clock seconds since the Unix epoch (what ticks and records carry)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Call ``callback()`` on the running event loop after ``delay`` seconds."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and the event loop's timers."""

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
"""The clock runs use unless given another."""
