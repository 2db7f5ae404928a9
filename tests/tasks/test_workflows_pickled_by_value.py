"""A workflow whose class cloudpickle pickles by value runs its steps on a process pool.

A step on a process backend gets a copy of its workflow object, pickled with
cloudpickle, which pickles a class it cannot import (defined in a script's
``__main__``, or in a function) by value, with the attributes of its ``__dict__``. The
class keeps its compiled plan there, and the plan holds what cannot be pickled (the
thread backend of ``def`` steps, with its lock): the cache pickles empty, and the copy
compiles its own plan if it is asked for it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from stepgraph import StartEvent, StopEvent, Workflow, step
from stepgraph.backends.process import dumps

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import os

    from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step
    from stepgraph.backends import ProcessBackend


    class Grid(Event):
        cells: list[int]


    class Simulation(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Grid:
            return Grid(cells=list(range(ev.n)))

        @step(backend="cpu")
        def integrate(self, ctx: Context, ev: Grid) -> StopEvent:
            ctx.store.set("worker", os.getpid())
            return StopEvent(result=sum(ev.cells))


    async def main() -> None:
        backend = ProcessBackend(1)
        try:
            compiled = Simulation._compiled()
            for n in (10, 100):
                handler = Simulation(backends={"cpu": backend}).run(n=n)
                total = await handler
                elsewhere = await handler.ctx.store.get("worker") != os.getpid()
                print(f"n={n} total={total} elsewhere={elsewhere}")
            print("compiled once:", Simulation._compiled() is compiled)
        finally:
            await backend.shutdown()


    if __name__ == "__main__":
        asyncio.run(main())
    """
)


def test_a_workflow_defined_in_main_runs_a_step_on_a_process_backend(tmp_path: Path) -> None:
    script = tmp_path / "simulation.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,  # a guard against a hang only
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "n=10 total=45 elsewhere=True",
        "n=100 total=4950 elsewhere=True",
        "compiled once: True",
    ]


LANDS = """
import pickle, sys

cls = pickle.loads(sys.stdin.buffer.read())
print(cls.__qualname__.rsplit(".", 1)[-1], cls().run_sync(n=1))
"""


def test_a_compiled_workflow_class_pickled_by_value_compiles_anew_where_it_lands() -> None:
    class Local(Workflow):  # defined in a function: cloudpickle pickles it by value
        @step
        def start(self, ev: StartEvent) -> StopEvent:  # a def step: its plan holds a lock
            # cloudpickle carries the globals the code names, and annotations are strings
            # here (PEP 563): name StartEvent, so that the copy resolves its annotation
            assert isinstance(ev, StartEvent)
            return StopEvent(result=ev.n + 1)

    compiled = Local._compiled()
    payload = dumps(Local)
    done = subprocess.run(
        [sys.executable, "-c", LANDS],
        input=payload,
        capture_output=True,
        timeout=120,  # a guard against a hang only
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["Local", "2"]
    assert Local._compiled() is compiled  # the original keeps its plan
