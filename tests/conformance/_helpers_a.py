"""Shared helpers for the conformance tests of guarantees G1-G6.

Every helper that awaits something bounds the wait with a generous guard, so that a
run which hangs fails its test with a clear message instead of hanging the suite.
The guard is a safety net only: no test relies on it firing.
"""

import asyncio
from typing import Any

import pytest

from stepgraph import Context, WorkflowHandler

MODES: tuple[str, ...] = ("superstep", "async")
"""Both delivery modes; guarantees that hold in either mode are tested in both."""

both_modes = pytest.mark.parametrize("mode", MODES)
"""Parametrize a test over both delivery modes (its ``mode`` argument)."""

GUARD_SECONDS = 5.0
"""Upper bound on any single wait in these tests (they finish in milliseconds)."""

SPINS = 20
"""How many event-loop turns :func:`spin` gives away (enough for any queued start to run)."""


async def finish(handler: WorkflowHandler) -> Any:
    """Await the run's result; a run that does not end within the guard fails the test."""
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            return await handler
    except TimeoutError as exc:
        if handler.done():
            raise  # the run itself ended with a timeout error: that is its outcome
        raise AssertionError(f"the run did not end within {GUARD_SECONDS}s (a hang)") from exc


async def failure(handler: WorkflowHandler) -> BaseException:
    """Await a run that must fail and return its exception (fails the test if it succeeds)."""
    try:
        result = await finish(handler)
    except AssertionError:
        raise
    except Exception as exc:
        return exc
    raise AssertionError(f"the run was expected to fail but returned {result!r}")


async def reached(flag: asyncio.Event, what: str) -> None:
    """Wait until a step sets ``flag``; fails the test if it never does."""
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            await flag.wait()
    except TimeoutError as exc:
        raise AssertionError(f"never happened within {GUARD_SECONDS}s: {what}") from exc


async def spin(turns: int = SPINS) -> None:
    """Give the event loop ``turns`` iterations, so that anything runnable gets to run.

    This waits for no condition and no time: it only makes sure that, if the engine
    were about to start something it must not start, it would have done so by now.
    """
    for _ in range(turns):
        await asyncio.sleep(0)


def superstep_of(ctx: Context) -> int:
    """The superstep the run is in (read from the kernel state; a test hook)."""
    return int(ctx._run.state.superstep)


class Gauge:
    """Counts the invocations inside a step or handler, keeps the maximum, holds them at a gate."""

    def __init__(self, full_at: int) -> None:
        self.active = 0
        self.max_active = 0
        self.done = 0
        self.full_at = full_at
        self.full = asyncio.Event()  # set when `full_at` invocations are inside at once
        self.gate = asyncio.Event()  # the test opens it

    async def hold(self) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if self.active == self.full_at:
            self.full.set()
        await asyncio.sleep(0)  # real suspensions: another invocation could enter here
        await self.gate.wait()
        await asyncio.sleep(0)
        self.active -= 1
        self.done += 1
