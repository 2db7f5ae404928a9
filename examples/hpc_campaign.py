"""An HPC-style campaign as a task DAG: an ensemble of simulations, then training on them.

    per member:  write_deck (executable) -> simulate (process pool, 1 cpu) -> analyze (1 gpu)
    then:        train (on every analysis, 1 gpu) -> evaluate (1 cpu)
    beside:      count_lines (executable: ``wc -l`` over the input decks)

Calling a task returns a future at once; futures passed as arguments are the DAG's
edges, and a task runs once its arguments are done. The flow has 2 "cpu" slots and 1
"gpu" slot: at most 2 simulations run at once, and the analyses take the gpu one after
the other, whatever the backends could run. The executables' output is captured
(``capture_stdio=True``) into files under a temporary work_dir. Tasks are grouped in
blocks (``@flow.block``: ``async def`` bodies that call and await tasks) and created in
``flow.workflow_scope("campaign-1")``, so every future carries that workflow id.

The physics is a toy: each member is a particle in a harmonic well of stiffness k at its
own temperature T (an overdamped Langevin walk), whose position has variance T / k.
Training fits k to the ensemble's variances; evaluation compares it with the true k.

Where the work runs is ONE line, in ``backends()``: threads for most tasks, a pool of
worker processes for ``simulate``. ``examples/hpc_campaign_dask.py`` runs this same
campaign on Dask by replacing that line.

Run it with ``python examples/hpc_campaign.py``. A process pool's workers re-import this
script, so it starts the campaign only under the ``__main__`` guard at its end.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from stepgraph.backends import Backend, ProcessBackend, ThreadBackend
from stepgraph.tasks import TaskFlow

MEMBERS = 4  # ensemble members: member m runs at temperature 1 + m / 2
TRUE_K = 2.0  # the stiffness the simulations use, which training should find
STEPS = 50_000  # time steps per simulation
RESOURCES = {"cpu": 2, "gpu": 1}  # the flow's slots; tasks claim them with resources=
UID = "run-1"  # the flow's id: captured output goes to <work_dir>/run-1/


def backends() -> dict[str, Backend]:
    """Where tasks run: on the backend they name (``backend="process"``) or on "default"."""
    return {"default": ThreadBackend(4), "process": ProcessBackend(2)}  # <- the one line


async def campaign(
    where: Mapping[str, Backend], work_dir: Path, members: int = MEMBERS
) -> dict[str, Any]:
    """Run the campaign on the backends ``where``; return what it found."""
    kinds = ", ".join(f"{name}={type(backend).__name__}" for name, backend in where.items())
    print(f"campaign-1: {members} members on {kinds}; slots {RESOURCES}")
    async with TaskFlow(where, resources=RESOURCES, work_dir=work_dir, uid=UID) as flow:

        @flow.executable_task(capture_stdio=True)
        def write_deck(member: int) -> list[str]:
            # A stand-in for an input generator: a program whose output is the input deck
            # (captured to <work_dir>/run-1/<task uid>.stdout; the result is that path).
            deck = f"member {member}\ntemperature {1 + member / 2}\nk {TRUE_K}\nsteps {STEPS}"
            return [sys.executable, "-c", f"print({deck!r})"]

        @flow.function_task(backend="process", resources={"cpu": 1})
        def simulate(deck_path: str) -> dict[str, Any]:
            # Runs in a worker process (pickled by value): it imports what it uses.
            import os
            import random
            import time

            started = time.time()
            with open(deck_path) as f:
                deck = dict(line.split() for line in f)
            temperature, k, steps = float(deck["temperature"]), float(deck["k"]), int(deck["steps"])
            rng = random.Random(int(deck["member"]))  # seeded: every run gives the same numbers
            dt, x, samples = 0.01, 0.0, []
            kick = (2 * temperature * dt) ** 0.5
            for step in range(steps):
                x += -k * x * dt + kick * rng.gauss(0.0, 1.0)
                if step >= 1000 and step % 10 == 0:  # skip the warm-up, thin the samples
                    samples.append(x)
            return {
                "member": int(deck["member"]),
                "temperature": temperature,
                "deck": deck_path,
                "samples": samples,
                "pid": os.getpid(),
                "span": (started, time.time()),
            }

        @flow.function_task(resources={"gpu": 1})
        def analyze(sim: dict[str, Any]) -> dict[str, Any]:
            started = time.time()
            xs = sim["samples"]
            mean = sum(xs) / len(xs)
            variance = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
            time.sleep(0.02)  # a stand-in for the GPU kernel
            spans = {"simulate": sim["span"], "analyze": (started, time.time())}
            return {**sim, "samples": len(xs), "variance": variance, "spans": spans}

        @flow.function_task(resources={"gpu": 1})
        def train(analyses: list[dict[str, Any]]) -> float:
            # Least squares through the origin for variance = T / k: the fitted k.
            tt = sum(a["temperature"] ** 2 for a in analyses)
            tv = sum(a["temperature"] * a["variance"] for a in analyses)
            return float(tt / tv)

        @flow.function_task(resources={"cpu": 1})
        def evaluate(k: float) -> float:
            return abs(k - TRUE_K) / TRUE_K  # the relative error

        @flow.executable_task(capture_stdio=True)
        def count_lines(analyses: list[dict[str, Any]]) -> list[str]:
            return ["wc", "-l", *(a["deck"] for a in analyses)]

        @flow.block
        async def member(m: int) -> dict[str, Any]:
            deck = write_deck(m)  # futures, at once: nothing has run yet
            sim = simulate(deck)
            analysis = analyze(sim)
            print(f"  member {m}: {deck.name} -> {sim.name} -> {analysis.name} (DAG built)")
            scopes = {deck.workflow_id, sim.workflow_id, analysis.workflow_id}
            return {**await analysis, "scopes": scopes}

        @flow.block
        async def ensemble(n: int) -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(member(m) for m in range(n))))

        @flow.block
        async def learn(analyses: list[dict[str, Any]]) -> tuple[float, float]:
            k = train(analyses)
            error = evaluate(k)  # waits for `train`: its argument is train's future
            return await k, await error

        async with flow.workflow_scope("campaign-1"):
            analyses = ensemble(members)  # a block: write_deck -> simulate -> analyze per member
            learned = learn(analyses)  # runs once every analysis is in (its argument)
            counted = count_lines(analyses)  # runs beside `learn`
            results, (k, error), wc_path = await asyncio.gather(analyses, learned, counted)
    scopes = {analyses.workflow_id, learned.workflow_id, counted.workflow_id}
    scopes.update(*(a["scopes"] for a in results))
    return {"members": results, "k": k, "error": error, "wc_path": wc_path, "scopes": scopes}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans that overlap."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak


def report(found: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Print what the campaign found; return the figures a test checks."""
    results = found["members"]
    for a in results:
        where_ran = "this process" if a["pid"] == os.getpid() else "a worker process"
        print(
            f"  member {a['member']}: T = {a['temperature']:.1f}, variance {a['variance']:.3f} "
            f"(T/k = {a['temperature'] / TRUE_K:.3f}), simulated in {where_ran}"
        )
    print(f"train:    fitted k = {found['k']:.2f} (true k = {TRUE_K})")
    print(f"evaluate: relative error {found['error']:.1%}")
    wc_total = int(Path(found["wc_path"]).read_text().splitlines()[-1].split()[0])  # "16 total"
    captured = sorted(path.name for path in (work_dir / UID).iterdir())
    print(f"wc -l:    {wc_total} lines in {len(results)} input decks")
    print(f"captured: {len(captured)} stdout/stderr files of executables in <work_dir>/{UID}/")
    sims = most_at_once([a["spans"]["simulate"] for a in results])
    gpus = most_at_once([a["spans"]["analyze"] for a in results])
    print(f"slots:    simulate ran {sims} at once at most (cpu slots: {RESOURCES['cpu']}),")
    print(f"          analyze {gpus} at once (gpu slots: {RESOURCES['gpu']})")
    print(f"scope:    every future carries workflow id {', '.join(map(repr, found['scopes']))}")
    return {
        "k": found["k"],
        "error": found["error"],
        "variances": [a["variance"] for a in results],
        "pids": {a["pid"] for a in results},
        "captured": captured,
        "wc_total": wc_total,
        "most_at_once": {"simulate": sims, "analyze": gpus},
        "scopes": found["scopes"],
    }


def main(
    make_backends: Callable[[], Mapping[str, Backend]] = backends, work_dir: str | None = None
) -> dict[str, Any]:
    """Run the campaign in a temporary work_dir (or in ``work_dir``) and report on it."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(work_dir or scratch)
        summary = report(asyncio.run(campaign(make_backends(), folder)), folder)
    print(f"done in {time.perf_counter() - started:.1f} s")
    return summary


if __name__ == "__main__":
    main()
