"""Timing helpers: warm up, then time several repetitions and keep the median.

Every contender of one workload is timed in the same event loop, repetitions interleaved
(contender A, B, C, then A, B, C again ...), so that drift of the machine affects all alike.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping

Runner = Callable[[int], Awaitable[object]]
"""Does ``size`` units of one workload's work (hops, items or runs) and returns when done."""


async def time_once(run: Runner, size: int, *, gc_paused: bool = False) -> float:
    """Microseconds per unit of one call of ``run(size)``, after a full garbage collection.

    With ``gc_paused``, the collector is off while it runs (and on again after).
    """
    gc.collect()
    if gc_paused:
        gc.disable()
    try:
        start = time.perf_counter()
        await run(size)
        return (time.perf_counter() - start) * 1e6 / size
    finally:
        if gc_paused:
            gc.enable()


async def measure(
    runners: Mapping[str, Runner],
    size: int,
    *,
    reps: int,
    warmup: int,
    gc_paused: bool = False,
) -> dict[str, list[float]]:
    """Each runner's µs per unit over ``reps`` interleaved repetitions, after ``warmup`` calls."""
    for _ in range(warmup):
        for run in runners.values():
            await run(size)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(reps):
        for name, run in runners.items():
            samples[name].append(await time_once(run, size, gc_paused=gc_paused))
    return samples


def median(samples: list[float]) -> float:
    """The median of the repetitions (the figure that is reported)."""
    return statistics.median(samples)


def paired_ratio(ours: list[float], baseline: list[float]) -> float:
    """The median over repetitions of ``ours[i] / baseline[i]``.

    Repetition ``i`` of both was timed back to back, so a slow spell of the machine slows both
    alike: the per-repetition ratio cancels it, where a ratio of two medians would not.
    """
    return statistics.median(a / b for a, b in zip(ours, baseline, strict=True))
