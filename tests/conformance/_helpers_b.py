"""Shared helpers for the conformance tests of guarantees G7-G12.

Every helper that awaits a run bounds the wait with a generous guard, so that a
run which hangs fails its test with a clear message instead of hanging the suite.
The guard is a safety net only: no test relies on it firing.
"""

import asyncio
from typing import Any

import pytest

from stepgraph import WorkflowHandler

MODES: tuple[str, ...] = ("superstep", "async")
"""Both delivery modes; guarantees that hold in either mode are tested in both."""

both_modes = pytest.mark.parametrize("mode", MODES)
"""Parametrize a test over both delivery modes (its ``mode`` argument)."""

GUARD_SECONDS = 5.0
"""Upper bound on any single run in these tests (they finish in milliseconds)."""


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


async def drain(handler: WorkflowHandler) -> list[Any]:
    """Read the whole event stream of a run; a stream that never closes fails the test."""
    seen: list[Any] = []
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            async for event in handler.stream_events():
                seen.append(event)
    except TimeoutError as exc:
        raise AssertionError(
            f"the event stream did not close within {GUARD_SECONDS}s (a hang); "
            f"read {len(seen)} events"
        ) from exc
    return seen


async def wait_until(flag: asyncio.Event, what: str) -> None:
    """Wait for ``flag`` to be set by a step; fails the test if it never is."""
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            await flag.wait()
    except TimeoutError as exc:
        raise AssertionError(f"never happened within {GUARD_SECONDS}s: {what}") from exc


def notes_of(exc: BaseException) -> str:
    """All notes attached to ``exc`` (``add_note``), joined; empty when there are none."""
    return "\n".join(getattr(exc, "__notes__", ()))
