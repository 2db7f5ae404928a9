"""FakeClock: virtual time for tests of timeouts, waits and retries.

A run's timers (its deadline, ``wait_for_event`` deadlines, retry backoff, step timeouts)
all go through its clock. With ``Workflow(clock=FakeClock())`` they run on virtual time:
time stands still while anything happens, and when the event loop has been idle for a
few turns (no tick fed, no timer armed) the clock jumps straight to the next timer and
fires it. A test of a 30-second timeout then takes no real time, and a timeout can never
fire early because the machine is slow: only idleness moves time, so the same program
sees the same times on every run.

What "idle" cannot see: time only jumps when nothing the clock knows of happens. A step
that waits for a thread (a plain ``def`` step) or for real IO looks idle to it, so a timer
due meanwhile fires at once. Keep such steps away from timers that must not fire, or use
the real clock for them. Sleeps with ``asyncio.sleep`` in your own code stay real.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
from collections.abc import Callable

__all__ = ["FakeClock"]


class _Timer:
    """One timer of a FakeClock: cancel it before it fires, like an asyncio handle."""

    __slots__ = ("callback", "cancelled", "due", "loop")

    def __init__(
        self, due: float, callback: Callable[[], object], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.due = due
        self.callback: Callable[[], object] | None = callback
        self.loop = loop
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = None


def _live(timer: _Timer) -> bool:
    return not timer.cancelled and not timer.loop.is_closed()


class FakeClock:
    """A clock whose time moves only when told to, or when the event loop is idle.

    Args:
        start: the wall-clock time (Unix seconds) at virtual time 0.
        autojump: when true, jump to the next timer once the loop has been idle for
            ``idle_turns`` turns; when false, time moves only with :meth:`advance`.
        idle_turns: how many loop turns with no activity count as idle.

    Example::

        clock = FakeClock()
        wf = Patient(clock=clock)           # waits 30 s for an answer that never comes
        assert await wf.run() == "gave up"  # at once, in real time
        assert clock.monotonic() == 30.0
    """

    def __init__(
        self, *, start: float = 1_700_000_000.0, autojump: bool = True, idle_turns: int = 24
    ) -> None:
        self.start = start
        self.autojump = autojump
        self.idle_turns = idle_turns
        self._now = 0.0
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()
        self._activity = 0
        self._jumper: asyncio.Task[None] | None = None

    # -- the Clock protocol ---------------------------------------------------------------

    def monotonic(self) -> float:
        """Virtual seconds since the clock was made."""
        self._activity += 1
        return self._now

    def wall(self) -> float:
        """``start`` plus the virtual seconds elapsed."""
        self._activity += 1
        return self.start + self._now

    def call_later(self, delay: float, callback: Callable[[], object]) -> _Timer:
        """Call ``callback()`` on the running loop once virtual time reaches now + ``delay``."""
        loop = asyncio.get_running_loop()
        self._activity += 1
        timer = _Timer(self._now + max(0.0, delay), callback, loop)
        heapq.heappush(self._timers, (timer.due, next(self._order), timer))
        jumper = self._jumper
        if self.autojump and (jumper is None or jumper.done() or jumper.get_loop() is not loop):
            # A context of its own: the caller's (a step's) would keep its run alive.
            self._jumper = loop.create_task(self._jump_when_idle(), context=contextvars.Context())
        return timer

    # -- moving time ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many timers are armed and can still fire (not cancelled, loop not closed)."""
        return sum(1 for _, _, timer in self._timers if _live(timer))

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing the timers that fall due, in order.

        Their callbacks run on their event loop, soon (as real timers' do).
        """
        if seconds < 0:
            raise ValueError(f"FakeClock.advance({seconds!r}): time does not go back")
        self._fire_until(self._now + seconds)

    def _fire_until(self, when: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= when:
            due, _, timer = heapq.heappop(timers)
            self._now = max(self._now, due)
            callback = timer.callback
            if timer.cancelled or callback is None or timer.loop.is_closed():
                continue
            timer.callback = None
            timer.loop.call_soon(callback)
        self._now = max(self._now, when)
        self._activity += 1

    def _next_due(self) -> float | None:
        timers = self._timers
        while timers and not _live(timers[0][2]):
            heapq.heappop(timers)  # cancelled, or left armed by a loop that has closed
        return timers[0][0] if timers else None

    async def _jump_when_idle(self) -> None:
        """Jump to the next timer whenever the loop has been idle for ``idle_turns`` turns."""
        while True:
            seen = self._activity
            for _ in range(self.idle_turns):
                await asyncio.sleep(0)
            due = self._next_due()
            if due is None:
                return
            if seen == self._activity:  # nothing happened: nothing will, until a timer fires
                self._fire_until(due)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, pending={self.pending})"
