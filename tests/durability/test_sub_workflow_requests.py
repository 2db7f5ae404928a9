"""A sub-workflow's requests (``WorkflowExecutor``) are the outer run's pauses: stored as
paused before they reach the caller, announced again with the same id after a restart,
and an answer given before a crash reaches the sub-workflow again, never asked twice.

Every test runs on MemoryStore, SqliteStore and PostgresStore (``conftest.py``).
"""

from __future__ import annotations

import pytest

from stepgraph import RequestInfoEvent
from stepgraph.testing import crash, settled

from .conftest import StoreFactory
from .flows import CALLS, asked, nested_asker_graph

modes = pytest.mark.parametrize("mode", ["superstep", "async"])


@modes
async def test_a_sub_workflow_request_is_stored_as_a_pause_before_the_caller_sees_it(
    stores: StoreFactory, mode: str
) -> None:
    store = stores()
    handler = nested_asker_graph(store=store, mode=mode).run("how many?")  # type: ignore[attr-defined]
    request = await asked(handler, RequestInfoEvent)
    assert (await store.get_run(handler.run_id)).status == "paused"  # type: ignore[union-attr]
    await handler.send_response(request.request_id, 7)
    assert (await handler).outputs == [("how many?", 7)]
    assert (await store.get_run(handler.run_id)).status == "completed"  # type: ignore[union-attr]


@modes
async def test_a_sub_workflow_request_open_at_a_crash_is_announced_again_with_its_id(
    stores: StoreFactory, mode: str
) -> None:
    handler = nested_asker_graph(store=stores(), mode=mode).run("how many?")  # type: ignore[attr-defined]
    request = await asked(handler, RequestInfoEvent)
    await settled(handler)
    await crash(handler)
    resumed = nested_asker_graph(store=stores(), mode=mode).resume(handler.run_id)  # type: ignore[attr-defined]
    await resumed.send_response(request.request_id, 8)  # at once: it waits for the restore
    assert (await resumed).outputs == [("how many?", 8)]
    again = nested_asker_graph(store=stores(), mode=mode).resume(handler.run_id)  # type: ignore[attr-defined]
    assert (await again).outputs == [("how many?", 8)]  # completed: its stored result


@modes
async def test_an_answer_to_a_sub_workflow_kept_before_a_crash_is_not_asked_for_again(
    stores: StoreFactory, mode: str
) -> None:
    handler = nested_asker_graph(store=stores(), mode=mode).run("how many?")  # type: ignore[attr-defined]
    request = await asked(handler, RequestInfoEvent)
    await handler.send_response(request.request_id, 9)
    await settled(handler)  # the answer is stored
    await crash(handler)
    resumed = nested_asker_graph(store=stores(), mode=mode).resume(handler.run_id)  # type: ignore[attr-defined]
    seen = [e async for e in resumed.stream_events() if isinstance(e, RequestInfoEvent)]
    assert (await resumed).outputs == [("how many?", 9)]
    assert seen == []  # the stored answer went to the sub-workflow's new run
    assert CALLS[f"{handler.run_id}:show"] == 1
