"""A pause survives the end of its process: a child process starts a run that asks for
input and exits; this process finds the run paused in the same store, resumes it, answers
the request by its id and gets the result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stepgraph import HumanResponseEvent, InputRequiredEvent
from tests.pg import PG_DSN

from .flows import CALLS, Interview, Waiting
from .pause_child import close_store, open_store

ROOT = Path(__file__).resolve().parents[2]


def pause_in_a_child(where: tuple[str, str], flow: str, mode: str) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.durability.pause_child", *where, flow, mode],
        cwd=ROOT,
        env=dict(os.environ, STEPGRAPH_TEST_PG=PG_DSN),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.parametrize("mode", ["superstep", "async"])
@pytest.mark.parametrize("flow", [Interview, Waiting], ids=["event", "wait_for_event"])
async def test_a_run_paused_by_a_process_that_exited_is_resumed_and_answered_by_another(
    where: tuple[str, str], flow: type[Interview] | type[Waiting], mode: str
) -> None:
    asked = pause_in_a_child(where, flow.__name__, mode)
    store = open_store(*where)
    try:
        record = await store.get_run(asked["run_id"])
        assert record is not None and record.status == "paused"
        assert [r.run_id for r in await store.list_runs(status="paused")] == [asked["run_id"]]

        handler = flow(store=store, mode=mode).resume(asked["run_id"])
        again = []
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                again.append(event.request_id)
                handler.send_event(HumanResponseEvent(response="Ida", request_id=event.request_id))
        assert await handler == "hello Ida"
        assert again == [asked["request_id"]]  # announced again to the new caller, same id
        assert (await store.get_run(asked["run_id"])).status == "completed"  # type: ignore[union-attr]
        if flow is Interview:
            assert CALLS[f"{asked['run_id']}:ask"] == 0  # it ran in the child, not here
    finally:
        await close_store(store)
