"""The workloads ``python -m bench`` runs: sizes, units, baselines and targets in one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench import baselines, workloads
from bench.timing import Runner
from bench.workloads import Mode


@dataclass(frozen=True)
class Workload:
    """One timed workload: stepgraph's runner per mode against one plain-asyncio baseline."""

    key: str
    title: str
    unit: str
    size: int
    baseline: str
    baseline_runner: Runner
    stepgraph_runner: Callable[[Mode], Runner]
    target_ratio: float
    step_runner: Callable[[Mode], Runner] | None = None
    """For executor graphs: the same workload in ``@step`` style, timed in the same run."""
    step_target_ratio: float = 1.2


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        key="w1",
        title="chain",
        unit="hop",
        size=1_000,
        baseline="asyncio_task",
        baseline_runner=baselines.chain_task_per_hop,
        stepgraph_runner=workloads.chain_runner,
        target_ratio=3.0,
    ),
    Workload(
        key="w2",
        title="fan-out/fan-in",
        unit="item",
        size=1_000,
        baseline="asyncio_gather",
        baseline_runner=baselines.fan_out_gather,
        stepgraph_runner=workloads.fan_out_runner,
        target_ratio=3.0,
    ),
    Workload(
        key="w1g",
        title="chain, executor graph",
        unit="hop",
        size=1_000,
        baseline="asyncio_task",
        baseline_runner=baselines.chain_task_per_hop,
        stepgraph_runner=workloads.graph_chain_runner,
        target_ratio=3.0,
        step_runner=workloads.chain_runner,
    ),
    Workload(
        key="w2g",
        title="fan-out/fan-in, executor graph",
        unit="item",
        size=1_000,
        baseline="asyncio_gather",
        baseline_runner=baselines.fan_out_gather,
        stepgraph_runner=workloads.graph_fan_out_runner,
        target_ratio=3.0,
        step_runner=workloads.fan_out_runner,
    ),
    Workload(
        key="w3",
        title="start-up",
        unit="run",
        size=500,
        baseline="asyncio_task",
        baseline_runner=baselines.startup_task_per_run,
        stepgraph_runner=workloads.startup_runner,
        target_ratio=8.0,
    ),
)


def by_key(key: str) -> Workload:
    """The workload called ``key`` (``w1``, ``w2``, ``w1g``, ``w2g`` or ``w3``)."""
    for workload in WORKLOADS:
        if workload.key == key:
            return workload
    raise KeyError(key)
