"""A resumed run's timeout: the resuming workflow's, counted from the resume.

The time between a crash (or a process that left a paused run) and the resume is not the
run's: a run paused for a day goes on when resumed, a run that failed on its timeout goes
on too. Time is virtual (``FakeClock``). Every test runs on MemoryStore, SqliteStore and
PostgresStore (``conftest.py``).
"""

from __future__ import annotations

import asyncio

import pytest

from stepgraph import HumanResponseEvent, InputRequiredEvent, WorkflowHandler
from stepgraph.errors import WorkflowTimeoutError
from stepgraph.testing import FakeClock

from .conftest import StoreFactory
from .flows import Interview, asked, crashed_once

modes = pytest.mark.parametrize("mode", ["superstep", "async"])

DAY = 86_400.0


async def resumed_next_day(
    stores: StoreFactory, mode: str, clock: FakeClock, timeout: float
) -> tuple[WorkflowHandler, InputRequiredEvent]:
    """A run of timeout 60 s asks, its process goes away; a day later, a workflow of
    ``timeout`` resumes it: its handler, and the request it announced again."""
    first = Interview(store=stores(), mode=mode, timeout=60.0, clock=clock).run()
    await crashed_once(first, InputRequiredEvent)  # its process goes away: still paused
    clock.advance(DAY)  # the person answers the next day, to a new process
    wf = Interview(store=stores(), mode=mode, timeout=timeout, clock=clock)
    resumed = wf.resume(first.run_id)
    return resumed, await asked(resumed)


@modes
async def test_a_run_paused_for_a_day_goes_on_when_resumed_under_the_same_timeout(
    stores: StoreFactory, mode: str
) -> None:
    clock = FakeClock(autojump=False)  # (time moves only when told: a store waits on IO)
    resumed, request = await resumed_next_day(stores, mode, clock, timeout=60.0)
    clock.advance(59.0)  # a minute from the resume: not timed out
    assert not resumed.done()
    resumed.send_event(HumanResponseEvent(response="ada", request_id=request.request_id))
    async with asyncio.timeout(10):
        assert await resumed == "hello ada"


@modes
async def test_a_resumed_runs_timeout_counts_from_the_resume(
    stores: StoreFactory, mode: str
) -> None:
    clock = FakeClock(autojump=False)  # (time moves only when told: a store waits on IO)
    resumed, _ = await resumed_next_day(stores, mode, clock, timeout=30.0)
    clock.advance(29.0)
    assert not resumed.done()
    clock.advance(1.0)
    with pytest.raises(WorkflowTimeoutError, match=r"timed out after 30\.0s"):
        async with asyncio.timeout(10):
            await resumed
    [record] = [r for r in await stores().list_runs() if r.run_id == resumed.run_id]
    assert record.status == "failed"


@modes
async def test_a_run_that_failed_on_its_timeout_goes_on_when_resumed(
    stores: StoreFactory, mode: str
) -> None:
    clock = FakeClock(autojump=False)  # (time moves only when told: a store waits on IO)
    first = Interview(store=stores(), mode=mode, timeout=10.0, clock=clock).run()
    await asked(first)
    clock.advance(10.0)  # nobody answered in time
    with pytest.raises(WorkflowTimeoutError):
        async with asyncio.timeout(10):
            await first
    resumed = Interview(store=stores(), mode=mode, timeout=None, clock=clock).resume(first.run_id)
    request = await asked(resumed)
    clock.advance(DAY)  # no timeout now: it waits
    resumed.send_event(HumanResponseEvent(response="ada", request_id=request.request_id))
    async with asyncio.timeout(10):
        assert await resumed == "hello ada"


class Seconds(float):
    """A float of its own kind (as numpy's float64 is)."""


@modes
async def test_a_timeout_of_a_float_subclass_resumes_as_a_float(
    stores: StoreFactory, mode: str
) -> None:
    clock = FakeClock(autojump=False)  # (time moves only when told: a store waits on IO)
    resumed, request = await resumed_next_day(stores, mode, clock, timeout=Seconds(60.0))
    resumed.send_event(HumanResponseEvent(response="ada", request_id=request.request_id))
    async with asyncio.timeout(10):
        assert await resumed == "hello ada"
