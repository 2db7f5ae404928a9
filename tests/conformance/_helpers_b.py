"""Shared helpers for the conformance tests of guarantees G7-G12.

Every helper that awaits a run bounds the wait with a generous guard, so that a
run which hangs fails its test with a clear message instead of hanging the suite.
The guard is a safety net only: no test relies on it firing.
"""

import asyncio
from typing import Any

# The run helpers shared with G1-G6, re-exported for the G7-G12 modules.
from _helpers_a import GUARD_SECONDS, MODES, both_modes, failure, finish  # noqa: F401

from stepgraph import WorkflowHandler


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
