"""W4, task DAGs on TaskFlow's backends: ``python -m bench --only tasks``.

The DAG: ``layers`` layers of :data:`WIDTH` tasks (100 x 100 = 10,000 tasks); a task of
layer 0 returns its index, task ``i`` of a later layer takes the results of tasks ``i``
and ``(i + 1) % WIDTH`` of the layer before and adds them (modulo :data:`MODULUS`, so
that the numbers stay small). Every contender submits the whole DAG at once, awaits the
last layer and checks it against :func:`expected`. Figures are µs per task.

- **w4 InlineBackend** against ``asyncio_task_dag``: plain asyncio with one Task per task,
  each awaiting its two parent Tasks, then adding. Target: within 3x.
- **w4 ThreadBackend** (bodies in its thread pool) against :data:`ASYNCFLOW_THREAD_US`,
  the figure of RADICAL AsyncFlow's local thread backend on this DAG (a reference: AsyncFlow
  runs only in ``python -m bench.peers``). Target: at least 10x cheaper. Plain asyncio
  handing each body to a thread pool of the same default size (``run_in_executor``) is
  measured beside it, without a target.
- **w4 DaskBackend** on a ``LocalCluster(processes=False)`` against raw ``client.submit``
  of the same DAG on the same cluster (each task submitted with its two parents' Dask
  futures as arguments, the last layer gathered). Target: within 1.5x. Raw Dask costs
  about 1.5 ms a task here (15 s for 10,000), so this entry uses :data:`DASK_LAYERS` layers
  and at most :data:`DASK_REPS` repetitions (its title says so).
  The cluster is started once, outside the timing; each repetition connects a client
  (both contenders alike: the DaskBackend is given the cluster's address).
- **w4-mem**: tasks per second on InlineBackend (from the w4 timing) and the memory of
  one 10,000-task run: the tracemalloc peak during the run, above what was traced before
  it (Python allocations only: deterministic, unlike a resident-set delta, which the
  allocator's reuse of freed memory blurs). Target: < 50 MB.
- **w4-100k**: 1,000 layers (100,000 tasks) on InlineBackend: time and tracemalloc peak.
  Target: the time for 100k within 12x of the time for 10k (each repetition times both
  back to back; the figure is the median ratio), so nothing grows quadratically. The
  target's ratio is timed with the garbage collector paused, as the w2c rows are: with
  100,000 tasks pending, its full collections traverse the whole heap and slow every
  contender (plain asyncio's DAG takes 20x for 10x the tasks with the collector running,
  11x with it paused, on the development machine), which says nothing about the engine.
  The same ratios with the collector running are reported beside it.

The 10,000-task entries run with the collector on, as W1 to W3 do.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.timing import Runner, measure, median, paired_ratio, time_once
from stepgraph.backends import Backend, DaskBackend, InlineBackend, ThreadBackend
from stepgraph.tasks import TaskFlow

WIDTH = 100
"""Tasks per layer."""
LAYERS = 100
"""Layers of the DAG: 100 x 100 = 10,000 tasks."""
DASK_LAYERS = 10
"""Layers of the Dask entry (1,000 tasks): a Dask task costs milliseconds here."""
SCALE_FACTOR = 10
"""The scale entry has ten times the layers: 1,000 x 100 = 100,000 tasks."""
MODULUS = 1_000_003

INLINE_TARGET = 3.0
DASK_TARGET = 1.5
ASYNCFLOW_THREAD_US = 2_646.0
"""µs per task of RADICAL AsyncFlow's local thread backend (``LocalExecutionBackend`` on a
``ThreadPoolExecutor``) on this 10,000-task DAG: the peer figure of the project's issue.
A reference, not measured here: AsyncFlow is not a dependency of the bench; it runs only
in ``python -m bench.peers --only w4``, which measured radical.asyncflow 0.6.0 at about
1,360 µs per task on the 2-core development machine."""
THREAD_TARGET = 0.1
"""ThreadBackend's figure over the AsyncFlow reference: at least 10x cheaper."""
MEMORY_TARGET_MB = 50.0
"""Peak MB (10^6 bytes) of one 10,000-task run on InlineBackend."""
SCALE_TARGET = 12.0
"""Time for 100,000 tasks over time for 10,000 (10x the tasks)."""
DASK_REPS = 5
SCALE_REPS = 3


# -- the DAG ------------------------------------------------------------------------------------


def seed(i: int) -> int:
    """A task of layer 0."""
    return i


def combine(a: int, b: int) -> int:
    """A task of a later layer: its two parents' results, added."""
    return (a + b) % MODULUS


@functools.cache
def expected(layers: int) -> tuple[int, ...]:
    """The last layer's results, computed without any engine."""
    row = list(range(WIDTH))
    for _ in range(layers - 1):
        row = [combine(row[i], row[(i + 1) % WIDTH]) for i in range(WIDTH)]
    return tuple(row)


def layers_of(size: int) -> int:
    """The layers of a DAG of ``size`` tasks (a multiple of :data:`WIDTH`)."""
    layers, rest = divmod(size, WIDTH)
    assert layers >= 1 and rest == 0, size
    return layers


def check(layers: int, result: Sequence[int]) -> None:
    """A wrong answer never passes for a fast one."""
    assert tuple(result) == expected(layers), f"wrong last layer of a {layers}-layer DAG"


# -- stepgraph ----------------------------------------------------------------------------------


def taskflow_runner(backend: Callable[[], Backend]) -> Runner:
    """W4 on a TaskFlow whose ``"default"`` backend is a new ``backend()`` each run."""

    async def run(size: int) -> None:
        layers = layers_of(size)
        async with TaskFlow({"default": backend()}) as flow:
            first, then = flow.function_task(seed), flow.function_task(combine)
            row = [first(i) for i in range(WIDTH)]
            for _ in range(layers - 1):
                row = [then(row[i], row[(i + 1) % WIDTH]) for i in range(WIDTH)]
            result = await asyncio.gather(*row)
        check(layers, result)

    return run


# -- plain asyncio ------------------------------------------------------------------------------


async def _seed(i: int) -> int:
    return i


async def _combine(a: asyncio.Task[int], b: asyncio.Task[int]) -> int:
    return combine(await a, await b)


def asyncio_task_dag() -> Runner:
    """``asyncio_task_dag``: one Task per task, awaiting its two parent Tasks, then adding."""

    async def run(size: int) -> None:
        layers = layers_of(size)
        create = asyncio.get_running_loop().create_task
        row = [create(_seed(i)) for i in range(WIDTH)]
        for _ in range(layers - 1):
            row = [create(_combine(row[i], row[(i + 1) % WIDTH])) for i in range(WIDTH)]
        result = await asyncio.gather(*row)
        check(layers, result)

    return run


def asyncio_executor_dag() -> Runner:
    """Plain asyncio, each body in a ``ThreadPoolExecutor`` of the default size (the pool a
    ``ThreadBackend()`` has), a new pool each run as the ThreadBackend's."""

    async def run(size: int) -> None:
        layers = layers_of(size)
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor() as pool:

            async def first(i: int) -> int:
                return await loop.run_in_executor(pool, seed, i)

            async def then(a: asyncio.Task[int], b: asyncio.Task[int]) -> int:
                return await loop.run_in_executor(pool, combine, await a, await b)

            row = [loop.create_task(first(i)) for i in range(WIDTH)]
            for _ in range(layers - 1):
                row = [loop.create_task(then(row[i], row[(i + 1) % WIDTH])) for i in range(WIDTH)]
            result = await asyncio.gather(*row)
        check(layers, result)

    return run


def dask_raw_dag(address: str) -> Runner:
    """Raw Dask: ``client.submit`` per task with its parents' futures, gather the last layer."""
    from distributed import Client

    async def run(size: int) -> None:
        layers = layers_of(size)
        async with Client(address, asynchronous=True) as client:
            row = [client.submit(seed, i, pure=False) for i in range(WIDTH)]
            for _ in range(layers - 1):
                row = [
                    client.submit(combine, row[i], row[(i + 1) % WIDTH], pure=False)
                    for i in range(WIDTH)
                ]
            result = await client.gather(row)
        check(layers, result)

    return run


# -- the entries --------------------------------------------------------------------------------


def _shape(layers: int) -> str:
    return f"{layers}x{WIDTH} DAG"


def _entry(
    key: str,
    title: str,
    backend: str,
    layers: int,
    samples: dict[str, list[float]],
    ours: str,
    baseline: str,
    target: float,
) -> dict[str, Any]:
    ratio = paired_ratio(samples[ours], samples[baseline])
    return {
        "workload": key,
        "title": title,
        "mode": backend,
        "us_per_unit": round(median(samples[ours]), 3),
        "baseline": baseline,
        "baseline_us_per_unit": round(median(samples[baseline]), 3),
        "ratio": round(ratio, 3),
        "unit": "task",
        "target_ratio": target,
        "passed": ratio <= target,
        "size": layers * WIDTH,
        "layers": layers,
        "width": WIDTH,
        "gc_paused": False,
    }


async def w4_inline(layers: int, reps: int, warmup: int) -> list[dict[str, Any]]:
    """W4 on InlineBackend against one asyncio Task per task."""
    runners = {"inline": taskflow_runner(InlineBackend), "asyncio_task_dag": asyncio_task_dag()}
    samples = await measure(runners, layers * WIDTH, reps=reps, warmup=warmup)
    title = f"{_shape(layers)}, InlineBackend"
    return [
        _entry("w4", title, "inline", layers, samples, "inline", "asyncio_task_dag", INLINE_TARGET)
    ]


async def w4_thread(layers: int, reps: int, warmup: int) -> list[dict[str, Any]]:
    """W4 on ThreadBackend against AsyncFlow's reference figure; plain asyncio on a pool."""
    runners = {"thread": taskflow_runner(ThreadBackend), "executor": asyncio_executor_dag()}
    samples = await measure(runners, layers * WIDTH, reps=reps, warmup=warmup)
    ours = median(samples["thread"])
    ratio = ours / ASYNCFLOW_THREAD_US
    return [
        {
            "workload": "w4",
            "title": f"{_shape(layers)}, ThreadBackend",
            "mode": "thread",
            "us_per_unit": round(ours, 3),
            "baseline": "AsyncFlow threads (reference)",
            "baseline_us_per_unit": ASYNCFLOW_THREAD_US,
            "ratio": round(ratio, 4),
            "unit": "task",
            "target_ratio": THREAD_TARGET,
            "passed": ratio <= THREAD_TARGET,
            "size": layers * WIDTH,
            "layers": layers,
            "width": WIDTH,
            "gc_paused": False,
            "executor_us_per_unit": round(median(samples["executor"]), 3),
            "executor_ratio": round(paired_ratio(samples["thread"], samples["executor"]), 3),
        }
    ]


async def w4_dask(layers: int, reps: int, warmup: int, *, fewer: bool) -> list[dict[str, Any]]:
    """W4 on DaskBackend against raw ``client.submit``, one in-process LocalCluster;
    ``fewer``: fewer layers than the other entries (the title says so)."""
    from distributed import LocalCluster

    cluster = await LocalCluster(
        asynchronous=True,
        processes=False,
        n_workers=1,
        threads_per_worker=2,
        dashboard_address=None,
    )
    try:
        address = cluster.scheduler_address
        runners = {
            "dask": taskflow_runner(lambda: DaskBackend(address)),
            "client.submit": dask_raw_dag(address),
        }
        samples = await measure(
            runners, layers * WIDTH, reps=min(reps, DASK_REPS), warmup=min(warmup, 1)
        )
    finally:
        await cluster.close()
    title = f"{_shape(layers)}, DaskBackend(processes=False)"
    if fewer:
        title = f"{_shape(layers)} (fewer layers: Dask is slow), DaskBackend(processes=False)"
    entry = _entry("w4", title, "dask", layers, samples, "dask", "client.submit", DASK_TARGET)
    return [{**entry, "reps": len(samples["dask"])}]


async def peak_bytes(run: Runner, size: int) -> int:
    """The tracemalloc peak of one ``run(size)``, above what was traced when it started."""
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        gc.collect()
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        await run(size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if started_here:
            tracemalloc.stop()
    return peak - before


async def w4_memory(layers: int, timed: dict[str, Any], reps: int) -> list[dict[str, Any]]:
    """Tasks per second (from the w4 entry ``timed``) and the peak memory of one run on
    InlineBackend, with plain asyncio's beside it."""
    size = layers * WIDTH
    ours, base = taskflow_runner(InlineBackend), asyncio_task_dag()
    await ours(size)  # warm-up: lazy imports and caches are not the run's memory
    await base(size)
    peaks: dict[str, list[int]] = {"inline": [], "asyncio": []}
    for _ in range(reps):
        peaks["inline"].append(await peak_bytes(ours, size))
        peaks["asyncio"].append(await peak_bytes(base, size))
    per_10k = {name: statistics.median(p) * 10_000 / size / 1e6 for name, p in peaks.items()}
    return [
        {
            "workload": "w4-mem",
            "title": f"{_shape(layers)}, InlineBackend",
            "mode": "inline",
            "tasks_per_s": round(1e6 / timed["us_per_unit"]),
            "baseline": "asyncio_task_dag",
            "baseline_tasks_per_s": round(1e6 / timed["baseline_us_per_unit"]),
            "peak_mb": round(statistics.median(peaks["inline"]) / 1e6, 2),
            "peak_mb_per_10k": round(per_10k["inline"], 2),
            "baseline_peak_mb_per_10k": round(per_10k["asyncio"], 2),
            "memory_measure": "tracemalloc peak during one run, above what was traced before it",
            "target_mb": MEMORY_TARGET_MB,
            "passed": per_10k["inline"] < MEMORY_TARGET_MB,
            "size": size,
        }
    ]


async def w4_scale(layers: int, reps: int) -> list[dict[str, Any]]:
    """100,000 tasks against 10,000 on InlineBackend: time ratio, time, peak memory.

    Each repetition times 10k then 100k back to back (a slow spell of the machine hits
    both), with the garbage collector paused (the target's figure, as for the w2c rows)
    and again with it running (reported beside it).
    """
    small, large = layers * WIDTH, layers * SCALE_FACTOR * WIDTH
    runners = {"inline": taskflow_runner(InlineBackend), "asyncio": asyncio_task_dag()}
    times: dict[tuple[str, bool], list[tuple[float, float]]] = {
        (name, paused): [] for name in runners for paused in (True, False)
    }
    for _ in range(reps):
        for (name, paused), pairs in times.items():
            run = runners[name]
            at_small = await time_once(run, small, gc_paused=paused) * small / 1e6
            at_large = await time_once(run, large, gc_paused=paused) * large / 1e6
            pairs.append((at_small, at_large))

    def ratio(name: str, paused: bool) -> float:
        return median([big / little for little, big in times[name, paused]])

    def seconds(name: str, paused: bool) -> float:
        return round(median([big for _, big in times[name, paused]]), 3)

    peak = await peak_bytes(runners["inline"], large)
    time_ratio = ratio("inline", True)
    return [
        {
            "workload": "w4-100k",
            "title": f"{_shape(layers * SCALE_FACTOR)}, InlineBackend",
            "mode": "inline",
            "seconds": seconds("inline", True),
            "us_per_unit": round(seconds("inline", True) * 1e6 / large, 3),
            "peak_mb": round(peak / 1e6, 2),
            "time_ratio": round(time_ratio, 3),
            "baseline": "asyncio_task_dag",
            "baseline_seconds": seconds("asyncio", True),
            "baseline_time_ratio": round(ratio("asyncio", True), 3),
            "gc_paused": True,
            "gc_seconds": seconds("inline", False),
            "gc_time_ratio": round(ratio("inline", False), 3),
            "gc_baseline_seconds": seconds("asyncio", False),
            "gc_baseline_time_ratio": round(ratio("asyncio", False), 3),
            "size_ratio": SCALE_FACTOR,
            "target_time_ratio": SCALE_TARGET,
            "passed": time_ratio <= SCALE_TARGET,
            "size": large,
            "unit": "task",
            "reps": reps,
        }
    ]


def _dask_missing() -> str | None:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        return f"dask.distributed is not installed ({exc})"
    return None


async def run(
    reps: int, warmup: int, *, layers: int = LAYERS, max_size: int | None = None
) -> list[dict[str, Any]]:
    """Every W4 measurement. ``layers`` shrinks the DAGs (a smoke run); an entry of more
    than ``max_size`` tasks is skipped (with the defaults, ``--max-size 10000`` skips the
    100,000-task one)."""
    dask_layers = min(layers, DASK_LAYERS)
    missing = _dask_missing()
    parts: list[tuple[str, int, Callable[[], Awaitable[list[dict[str, Any]]]]]] = [
        ("w4 inline", layers, lambda: w4_inline(layers, reps, warmup)),
        ("w4 thread", layers, lambda: w4_thread(layers, reps, warmup)),
    ]
    if missing is None:
        parts.append(
            (
                "w4 dask",
                dask_layers,
                lambda: w4_dask(dask_layers, reps, warmup, fewer=dask_layers < layers),
            )
        )
    else:
        print(f"w4 dask: skipped, {missing}", file=sys.stderr)
    entries: list[dict[str, Any]] = []
    for name, part_layers, part in parts:
        if max_size is not None and part_layers * WIDTH > max_size:
            continue
        started = time.perf_counter()
        entries += await part()
        print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    inline = [e for e in entries if e["workload"] == "w4" and e["mode"] == "inline"]
    if inline:
        started = time.perf_counter()
        entries += await w4_memory(layers, inline[0], max(1, min(reps, 3)))
        print(f"w4-mem: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if max_size is None or layers * SCALE_FACTOR * WIDTH <= max_size:
        started = time.perf_counter()
        entries += await w4_scale(layers, min(reps, SCALE_REPS))
        print(f"w4-100k: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return entries
