"""``handler.flush()`` on a durable run: it returns once what was sent is committed, or
once the run has ended (never before, and it never hangs).

Every test runs on MemoryStore, SqliteStore and PostgresStore (``conftest.py``), unless
it makes a store of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from stepgraph import HumanResponseEvent
from stepgraph.errors import StoreUnavailableError, WorkflowCancelled
from stepgraph.stores import MemoryStore
from stepgraph.stores.base import Commit
from stepgraph.testing import crash

from .conftest import StoreFactory
from .flows import Interview, asked

modes = pytest.mark.parametrize("mode", ["superstep", "async"])


@modes
async def test_an_answer_sent_while_a_resume_restores_the_run_is_committed_once_flush_returns(
    stores: StoreFactory, mode: str
) -> None:
    first = Interview(store=stores(), mode=mode).run()
    request = await asked(first)
    await first.detach()
    resumed = Interview(store=stores(), mode=mode).resume(first.run_id)
    resumed.send_event(HumanResponseEvent(response="ada", request_id=request.request_id))
    async with asyncio.timeout(10):
        await resumed.flush()
    await crash(resumed)  # the process dies now: what flush waited for is stored
    again = Interview(store=stores(), mode=mode).resume(first.run_id)
    async with asyncio.timeout(10):
        assert await again == "hello ada"  # not asked again


class FailingLater(MemoryStore):
    """Commits land a moment later (as across a network); once ``fail`` is set, they
    fail instead (the server went away)."""

    fail = False

    def commit(self, batch: Commit) -> Awaitable[None]:
        async def later() -> None:
            await asyncio.sleep(0)
            if self.fail:
                raise StoreUnavailableError("the server went away")
            MemoryStore.commit(self, batch)

        return later()


@modes
async def test_flush_returns_when_the_run_ends_with_a_commit_on_its_way(mode: str) -> None:
    store = FailingLater()
    handler = Interview(store=store, mode=mode).run()
    request = await asked(handler)
    store.fail = True
    handler.send_event(HumanResponseEvent(response="ada", request_id=request.request_id))
    async with asyncio.timeout(10):
        await handler.flush()  # the run failed: nothing is left to write
    with pytest.raises(StoreUnavailableError):
        await handler


@modes
async def test_flush_returns_when_the_run_is_detached_with_a_commit_on_its_way(
    mode: str,
) -> None:
    store = FailingLater()
    handler = Interview(store=store, mode=mode).run()
    request = await asked(handler)
    handler.send_event(HumanResponseEvent(response="ada", request_id=request.request_id))
    flushing = asyncio.ensure_future(handler.flush())
    await handler.detach()
    async with asyncio.timeout(10):
        await flushing
    with pytest.raises(WorkflowCancelled):
        await handler
