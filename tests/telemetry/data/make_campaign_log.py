"""Record ``campaign.jsonl``, the event log of a small TaskFlow campaign, kept as test data.

Two campaigns share one flow with 2 "cpu" slots and 1 "gpu" slot, each in its own
workflow scope: per member, ``prepare`` (inline) -> ``simulate`` (a thread, 1 cpu) ->
``analyze`` (a thread, 1 gpu), grouped in a ``member`` block; then ``train`` (1 gpu) on
every analysis. In ``campaign-2`` one simulation fails, so its analysis, its block and the
training never run (``DependencyFailed``), and its ``report`` task is cancelled before it
runs; ``campaign-1``'s ``report`` runs.
The bodies sleep a little so that the bars have lengths worth drawing.

Run from the repository's root::

    .venv/bin/python tests/telemetry/data/make_campaign_log.py            # records anew
    .venv/bin/python tests/telemetry/data/make_campaign_log.py --image docs/images/timeline.png

``--image`` only draws the log that is there (``plot_timeline`` with the flow's capacity).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from stepgraph.backends import InlineBackend, ThreadBackend
from stepgraph.tasks import DependencyFailed, TaskFlow

LOG = Path(__file__).with_name("campaign.jsonl")
CAPACITY = {"cpu": 2, "gpu": 1}


async def record(path: Path) -> None:
    backends = {"default": ThreadBackend(4), "inline": InlineBackend()}
    async with TaskFlow(backends, resources=CAPACITY, event_log=path, uid="campaign-flow") as flow:

        @flow.function_task(backend="inline")
        def prepare(member: int) -> float:
            return 1.0 + member / 2

        @flow.function_task(resources={"cpu": 1})
        def simulate(temperature: float, fail: bool) -> float:
            time.sleep(0.12 + 0.03 * temperature)
            if fail:
                raise RuntimeError(f"diverged at T={temperature}")
            return temperature / 2.0

        @flow.function_task(resources={"gpu": 1})
        def analyze(variance: float) -> float:
            time.sleep(0.05)
            return variance

        @flow.function_task(resources={"gpu": 1})
        def train(variances: list[float]) -> float:
            time.sleep(0.15)
            return sum(variances) / len(variances)

        @flow.function_task(backend="inline")
        def report(k: float) -> str:
            return f"k={k}"

        @flow.block
        async def member(i: int, fail: bool) -> float:
            return await analyze(simulate(prepare(i), fail))

        async def campaign(name: str, members: int, failing: int | None) -> None:
            async with flow.workflow_scope(name):
                trained = train([member(i, i == failing) for i in range(members)])
                summary = report(trained)
                if failing is not None:
                    summary.cancel()  # before it runs: it never will
                try:
                    print(name, await trained, await summary)
                except DependencyFailed as error:
                    print(name, "failed:", error)

        await asyncio.gather(campaign("campaign-1", 4, None), campaign("campaign-2", 2, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="draw the recorded log to this image")
    args = parser.parse_args()
    if args.image is None:
        LOG.unlink(missing_ok=True)
        asyncio.run(record(LOG))
        print(f"recorded {LOG}")
    else:
        from stepgraph.telemetry.plot import plot_timeline

        plot_timeline(LOG, args.image, capacity=CAPACITY)
        print(f"drew {args.image} ({args.image.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
