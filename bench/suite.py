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
    reps: int | None = None
    """Repetitions for this workload (default: the command line's); large ones take fewer."""
    gc_paused: bool = False
    """Time with the garbage collector paused: the engine's own cost per unit, without the
    full collections a heap of 100,000 pending items triggers (in every contender alike)."""
    scale_of: str | None = None
    """The key of the same workload at its smallest size: the per-unit cost here is compared
    with it (``scale_target``), so that growth with the size shows."""
    scale_target: float = 1.5


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
        key="w2c-1k",
        title="fan-out/fan-in, count=, 1k",
        unit="item",
        size=1_000,
        baseline="asyncio_gather",
        baseline_runner=baselines.fan_out_gather,
        stepgraph_runner=workloads.fan_out_count_runner,
        target_ratio=3.0,
        gc_paused=True,
    ),
    Workload(
        key="w2c-10k",
        title="fan-out/fan-in, count=, 10k",
        unit="item",
        size=10_000,
        baseline="asyncio_gather",
        baseline_runner=baselines.fan_out_gather,
        stepgraph_runner=workloads.fan_out_count_runner,
        target_ratio=3.0,
        reps=5,
        gc_paused=True,
        scale_of="w2c-1k",
    ),
    Workload(
        key="w2c-100k",
        title="fan-out/fan-in, count=, 100k",
        unit="item",
        size=100_000,
        baseline="asyncio_gather",
        baseline_runner=baselines.fan_out_gather,
        stepgraph_runner=workloads.fan_out_count_runner,
        target_ratio=3.0,
        reps=3,
        gc_paused=True,
        scale_of="w2c-1k",
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
        target_ratio=5.0,
    ),
)


def by_key(key: str) -> Workload:
    """The workload called ``key`` (``w1``, ``w2``, ``w2c-1k``, ``w1g``, ``w3`` ...)."""
    for workload in WORKLOADS:
        if workload.key == key:
            return workload
    raise KeyError(key)
