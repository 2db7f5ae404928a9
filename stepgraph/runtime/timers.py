"""A run's kernel timers on its clock: ``ArmTimer`` and ``CancelTimer`` carried out."""

from __future__ import annotations

from collections.abc import Callable

from .clock import Clock, TimerHandle

__all__ = ["Timers"]


class Timers:
    """The clock handles of one run's armed timers, by the kernel's timer id."""

    __slots__ = ("_clock", "_handles")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._handles: dict[str, TimerHandle] = {}

    def arm(self, timer: str, delay: float, fire: Callable[[str], None]) -> None:
        """Call ``fire(timer)`` after ``delay`` seconds (re-arming replaces the earlier one)."""
        self.cancel(timer)

        def due() -> None:
            if self._handles.pop(timer, None) is not None:
                fire(timer)

        self._handles[timer] = self._clock.call_later(delay, due)

    def cancel(self, timer: str) -> None:
        """Forget ``timer``; it will not fire."""
        handle = self._handles.pop(timer, None)
        if handle is not None:
            handle.cancel()

    def cancel_all(self) -> None:
        """Forget every timer (the run ended)."""
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            handle.cancel()
