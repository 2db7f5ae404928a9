"""Record the golden journals again: ``python -m tests.golden.record [FLOW ...]``.

Do this only when a change to the kernel's semantics is intended; the diff of the
golden files then shows what changed, and review decides whether it should.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys

from stepgraph import RunObserver
from stepgraph.core import RunState, RunStatus
from stepgraph.journal import Journal
from stepgraph.runtime.observers import RunInfo

from . import files
from .flows import FLOWS


class _FinalState(RunObserver):
    state: RunState | None = None

    def run_ended(
        self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
    ) -> None:
        self.state = run.state


async def record(name: str) -> str:
    flow = FLOWS[name]
    journal = Journal()
    workflow = flow.make(journal)
    final = _FinalState()
    observers = (*workflow.options.observers, final)
    workflow.options = dataclasses.replace(workflow.options, observers=observers)
    handler = await flow.play(workflow, flow.start())
    assert final.state is not None, f"{name}: the run did not end"
    path = files.write(name, handler.run_id, journal.records(handler.run_id), final.state)
    return f"{path.name}: {len(journal.records(handler.run_id))} ticks, {final.state.status.value}"


def main(names: list[str]) -> None:
    for name in names or list(FLOWS):
        print(asyncio.run(record(name)))


if __name__ == "__main__":
    main(sys.argv[1:])
