"""Workflow options that change what a run shows: verbose output."""

from __future__ import annotations

import pytest

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step


class Half(Event):
    n: int


class Halve(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Half:
        return Half(n=ev.n // 2)

    @step
    async def done(self, ctx: Context, ev: Half) -> StopEvent:
        return StopEvent(result=ev.n)


@pytest.mark.parametrize("mode", ["superstep", "async"])
def test_verbose_prints_each_step_and_what_it_produced(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Halve(verbose=True, mode=mode).run_sync(n=8) == 4
    assert capsys.readouterr().out.splitlines() == [
        "Running step start",
        "Step start produced Half",
        "Running step done",
        "Step done produced StopEvent",
    ]


def test_a_quiet_workflow_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert Halve().run_sync(n=8) == 4
    assert capsys.readouterr().out == ""
