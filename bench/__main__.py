"""``python -m bench``: stepgraph against plain asyncio, and the memory of pending events.

Examples::

    python -m bench                    # every workload, 11 repetitions after 2 warm-ups
    python -m bench --quick            # 3 repetitions after 1 warm-up (a smoke run)
    python -m bench --only w1,memory   # a subset: w1, w2, w1g, w2g, w3, memory, durable, tasks
    python -m bench --only tasks       # W4, task DAGs on TaskFlow's backends (bench/tasks.py)
    python -m bench --only telemetry   # W1 and W4 with spans and the event log on, against off
    python -m bench --only distributed # worker processes on PostgreSQL (bench/distributed.py)
    python -m bench --check            # exit with status 1 when a target is missed
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from bench import distributed, durability, report, tasks, telemetry
from bench.memory import TARGET_BYTES, MemoryResult, measure_pending
from bench.suite import WORKLOADS, Workload
from bench.timing import Runner, measure, median, paired_ratio
from bench.workloads import MODES, Mode

CHOICES = (
    *(w.key for w in WORKLOADS),
    "memory",
    "durable",
    "tasks",
    "telemetry",
    "distributed",
)


def default_output(only: list[str] | None) -> str:
    """The results file of a run of the groups ``only`` (None: all), in bench/results."""
    if only is None or sorted(only) == sorted(CHOICES):
        return "latest.json"
    if only == ["distributed"]:
        return "distributed.json"
    return "only.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").partition("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="3 repetitions, 1 warm-up")
    parser.add_argument("--reps", type=int, help="timed repetitions per workload (default 11)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up calls (default 2)")
    parser.add_argument(
        "--only", help=f"comma-separated subset of {','.join(CHOICES)} (default: all)"
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated stepgraph modes (default: both)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the JSON results (default: bench/results/latest.json for a "
        "full run, distributed.json for --only distributed, only.json for another subset: "
        "a subset never replaces the full run's figures)",
    )
    parser.add_argument(
        "--max-size", type=int, help="skip the workloads larger than this (a quick smoke run)"
    )
    parser.add_argument(
        "--task-layers",
        type=int,
        default=tasks.LAYERS,
        help=f"layers of W4's task DAGs (default {tasks.LAYERS}; fewer: a smoke run)",
    )
    parser.add_argument(
        "--dist-runs",
        type=int,
        default=distributed.RUNS,
        help=f"runs per throughput batch of --only distributed (default {distributed.RUNS})",
    )
    parser.add_argument(
        "--dist-workers",
        default=",".join(map(str, distributed.WORKERS)),
        help="worker process counts of the throughput batches (default: "
        f"{','.join(map(str, distributed.WORKERS))})",
    )
    parser.add_argument(
        "--dist-kills",
        type=int,
        help=f"kill -9s of the recovery measurement (default {distributed.KILLS}, "
        f"--quick {distributed.KILLS_QUICK}; 0: skip it)",
    )
    parser.add_argument(
        "--dist-concurrency",
        type=int,
        default=distributed.CONCURRENCY,
        help=f"stepgraph worker --concurrency (default {distributed.CONCURRENCY})",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, write no JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--verbose", action="store_true", help="also print every repetition")
    args = parser.parse_args(argv)
    args.reps = args.reps or (3 if args.quick else 11)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    subset = bool(args.only)
    args.only = _split(args.only, CHOICES) if args.only else list(CHOICES)
    if args.output is None:
        args.output = report.RESULTS_DIR / default_output(args.only if subset else None)
    if args.task_layers < 1:
        parser.error("--task-layers must be at least 1")
    args.modes = _split(args.modes, MODES)
    try:
        args.dist_workers = [int(n) for n in args.dist_workers.split(",") if n.strip()]
    except ValueError:
        parser.error("--dist-workers takes numbers, such as 1,2,4")
    if args.dist_runs < 1 or args.dist_concurrency < 1 or not args.dist_workers:
        parser.error("--dist-runs, --dist-workers and --dist-concurrency must be at least 1")
    if min(args.dist_workers) < 1 or (args.dist_kills is not None and args.dist_kills < 0):
        parser.error("--dist-workers must be at least 1 and --dist-kills at least 0")
    return args


def _split(value: str, allowed: tuple[str, ...]) -> list[Any]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise SystemExit(f"unknown choice(s) {', '.join(unknown)}; pick from {', '.join(allowed)}")
    return items


async def run_workload(
    workload: Workload, modes: list[Mode], reps: int, warmup: int, verbose: bool
) -> list[dict[str, Any]]:
    """Time stepgraph in each mode and the baseline, interleaved, and build the entries."""
    runners: dict[str, Runner] = {mode: workload.stepgraph_runner(mode) for mode in modes}
    runners["baseline"] = workload.baseline_runner
    if workload.step_runner is not None:
        for mode in modes:
            runners[f"step-{mode}"] = workload.step_runner(mode)
    reps = min(reps, workload.reps) if workload.reps else reps
    warmup = min(warmup, 1) if workload.reps else warmup
    samples = await measure(
        runners, workload.size, reps=reps, warmup=warmup, gc_paused=workload.gc_paused
    )
    base = median(samples["baseline"])
    if verbose:
        for name, values in samples.items():
            shown = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {workload.key} {name}: [{shown}] µs/{workload.unit}", file=sys.stderr)
    entries = []
    for mode in modes:
        ours = median(samples[mode])
        ratio = paired_ratio(samples[mode], samples["baseline"])
        entry: dict[str, Any] = {}
        if workload.step_runner is not None:
            vs_step = paired_ratio(samples[mode], samples[f"step-{mode}"])
            entry = {
                "step_us_per_unit": round(median(samples[f"step-{mode}"]), 3),
                "vs_step": round(vs_step, 3),
                "vs_step_target": workload.step_target_ratio,
                "vs_step_passed": vs_step <= workload.step_target_ratio,
            }
        entries.append(
            {
                **entry,
                "workload": workload.key,
                "mode": mode,
                "us_per_unit": round(ours, 3),
                "baseline": workload.baseline,
                "baseline_us_per_unit": round(base, 3),
                "ratio": round(ratio, 3),
                "unit": workload.unit,
                "target_ratio": workload.target_ratio,
                "passed": ratio <= workload.target_ratio and entry.get("vs_step_passed", True),
                "title": workload.title,
                "size": workload.size,
                "gc_paused": workload.gc_paused,
            }
        )
    return entries


def scale_entries(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-unit cost at a large size against the same workload at its smallest size."""
    found: dict[tuple[str, str], dict[str, Any]] = {
        (r["workload"], r["mode"]): r for r in results if "ratio" in r
    }
    entries = []
    for workload in WORKLOADS:
        if workload.scale_of is None:
            continue
        for (key, mode), large in found.items():
            small = found.get((workload.scale_of, mode))
            if key != workload.key or small is None:
                continue
            growth = large["us_per_unit"] / small["us_per_unit"]
            base_growth = large["baseline_us_per_unit"] / small["baseline_us_per_unit"]
            entries.append(
                {
                    "workload": f"{workload.key} / {workload.scale_of}",
                    "mode": mode,
                    "scale": round(growth, 3),
                    "baseline_scale": round(base_growth, 3),
                    "scale_target": workload.scale_target,
                    "passed": growth <= workload.scale_target,
                    "unit": large["unit"],
                }
            )
    return entries


def memory_entry(result: MemoryResult) -> dict[str, Any]:
    """The JSON entry of one mode's memory measurement."""
    return {
        "workload": "memory_pending",
        "mode": result.mode,
        "bytes_per_pending_event": round(result.bytes_per_pending_event, 1),
        "target_bytes": TARGET_BYTES,
        "passed": result.bytes_per_pending_event < TARGET_BYTES,
        "pending_events": result.pending,
        "event_object_bytes": round(result.event_object_bytes, 1),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every selected workload, then the memory measurement."""
    results: list[dict[str, Any]] = []
    for workload in WORKLOADS:
        if args.max_size is not None and workload.size > args.max_size:
            continue
        if workload.key in args.only:
            started = time.perf_counter()
            results += await run_workload(
                workload, args.modes, args.reps, args.warmup, args.verbose
            )
            elapsed = time.perf_counter() - started
            print(f"{workload.key} {workload.title}: {elapsed:.1f} s", file=sys.stderr)
    results += scale_entries(results)
    if "durable" in args.only:
        started = time.perf_counter()
        results += await durability.run(args.modes, args.reps, args.warmup)
        print(f"durable: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if "tasks" in args.only:
        results += await tasks.run(
            args.reps, args.warmup, layers=args.task_layers, max_size=args.max_size
        )
    if "telemetry" in args.only:
        started = time.perf_counter()
        results += await telemetry.telemetry_costs(
            args.modes, args.reps, args.warmup, layers=args.task_layers
        )
        print(f"telemetry: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if "distributed" in args.only:
        results += await distributed.run(
            quick=args.quick,
            reps=args.reps,
            warmup=args.warmup,
            runs=args.dist_runs,
            workers=args.dist_workers,
            kills=args.dist_kills,
            concurrency=args.dist_concurrency,
        )
    if "memory" in args.only:
        for mode in args.modes:
            measured = await measure_pending(mode, reps=1 if args.quick else 3)
            results.append(memory_entry(measured))
            if args.verbose:
                for site, size in measured.top_sites:
                    print(f"  memory {mode}: {size:>9} B at {site}", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON; the exit status reflects ``--check``."""
    args = parse_args(argv)
    started = time.perf_counter()
    results = asyncio.run(run(args))
    print()
    report.print_report(results)
    elapsed = time.perf_counter() - started
    print(
        f"\nMedians of {args.reps} repetitions after {args.warmup} warm-up(s), interleaved; "
        "a ratio is the median of the per-repetition ratios.\n"
        f"Took {elapsed:.1f} s."
    )
    if not args.no_write:
        document = {
            **report.run_metadata(reps=args.reps, warmup=args.warmup, quick=args.quick),
            "results": results,
        }
        report.write_json(args.output, document)
        print(f"wrote {report.display_path(args.output)}")
    missed = [r for r in results if not r["passed"]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
