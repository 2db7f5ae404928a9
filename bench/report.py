"""Reporting: the printed table and the JSON file under ``bench/results/``."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit() -> str | None:
    """The repository's ``HEAD`` commit, or ``None`` outside git or before the first commit."""
    return _git("rev-parse", "HEAD") or None


def git_dirty() -> bool | None:
    """Whether tracked files differ from ``HEAD`` (``None`` when git cannot tell)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or ``None``."""
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        pass
    try:  # e.g. stepgraph imported from a checkout that was never pip-installed
        version = getattr(importlib.import_module(dist.replace("-", "_")), "__version__", None)
    except ImportError:
        return None
    return version if isinstance(version, str) else None


def run_metadata(**extra: Any) -> dict[str, Any]:
    """Where and when the figures were taken (no machine paths)."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "stepgraph_version": package_version("stepgraph"),
        **extra,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def display_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table; the first column is left-aligned, the others right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def timing_rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Table rows for ``python -m bench``'s timing and memory entries."""
    rows: list[list[str]] = []
    for r in results:
        if "ratio" in r:
            rows.append(
                [
                    f"{r['workload']} {r['title']}",
                    r["mode"],
                    f"{r['us_per_unit']:.2f} µs/{r['unit']}",
                    r["baseline"],
                    f"{r['baseline_us_per_unit']:.2f} µs/{r['unit']}",
                    f"{r['ratio']:.2f}x",
                    f"<= {r['target_ratio']:g}x",
                    "pass" if r["passed"] else "FAIL",
                ]
            )
            if "spans_us_per_unit" in r:
                for label, key in (("  spans only", "spans"), ("  event log only", "log")):
                    rows.append(
                        [
                            label,
                            r["mode"],
                            f"{r[key + '_us_per_unit']:.2f} µs/{r['unit']}",
                            r["baseline"],
                            f"{r['baseline_us_per_unit']:.2f} µs/{r['unit']}",
                            f"{r[key + '_ratio']:.2f}x",
                            "",
                            "info",
                        ]
                    )
            if "sdk_us_per_unit" in r:
                rows.append(
                    [
                        "  SDK floor (its spans alone, + off)",
                        r["mode"],
                        f"{r['sdk_us_per_unit']:.2f} µs/{r['unit']} + off",
                        r["baseline"],
                        f"{r['baseline_us_per_unit']:.2f} µs/{r['unit']}",
                        f"{r['floor_ratio']:.2f}x",
                        "",
                        "info",
                    ]
                )
            if "full_us_per_unit" in r:
                rows.append(
                    [
                        "  synchronous=full",
                        r["mode"],
                        f"{r['full_us_per_unit']:.2f} µs/{r['unit']}",
                        "raw commit + hop",
                        f"{r['full_baseline_us_per_unit']:.2f} µs/{r['unit']}",
                        f"{r['full_ratio']:.2f}x",
                        "",
                        "info",
                    ]
                )
                pg = r["pg_us_per_unit"]
                rows.append(
                    [
                        "  PostgresStore",
                        r["mode"],
                        "skipped" if pg is None else f"{pg:.2f} µs/{r['unit']}",
                        "",
                        "",
                        "",
                        "",
                        "info",
                    ]
                )
            if "executor_us_per_unit" in r:
                rows.append(
                    [
                        "  plain asyncio on a thread pool",
                        r["mode"],
                        f"{r['us_per_unit']:.2f} µs/{r['unit']}",
                        "run_in_executor",
                        f"{r['executor_us_per_unit']:.2f} µs/{r['unit']}",
                        f"{r['executor_ratio']:.2f}x",
                        "",
                        "info",
                    ]
                )
            if "vs_step" in r:
                rows.append(
                    [
                        f"  {r['workload']} vs @step style",
                        r["mode"],
                        f"{r['us_per_unit']:.2f} µs/{r['unit']}",
                        "@step",
                        f"{r['step_us_per_unit']:.2f} µs/{r['unit']}",
                        f"{r['vs_step']:.2f}x",
                        f"<= {r['vs_step_target']:g}x",
                        "pass" if r["vs_step_passed"] else "FAIL",
                    ]
                )
        elif r["workload"] == "cp-size":
            rows.append(
                [
                    "cp-size (10 MB state, 1 key/superstep)",
                    r["mode"],
                    f"{r['bytes_per_checkpoint']:.0f} B/checkpoint",
                    "the 10 MB",
                    f"{r['first_bytes']:.0f} B",
                    "",
                    f"< {r['target_bytes']} B",
                    "pass" if r["passed"] else "FAIL",
                ]
            )
        elif r["workload"] == "cp-write":
            rows.append(
                [
                    f"cp-write {r['store']} (10 msgs, 10 keys)",
                    r["mode"],
                    f"{r['us_per_checkpoint']:.1f} µs/checkpoint",
                    "",
                    "",
                    "",
                    "",
                    "info",
                ]
            )
        elif r["workload"] == "w4-mem":
            rows += [
                [
                    f"w4-mem {r['title']}",
                    r["mode"],
                    f"{r['tasks_per_s']:,} tasks/s",
                    r["baseline"],
                    f"{r['baseline_tasks_per_s']:,} tasks/s",
                    "",
                    "",
                    "info",
                ],
                [
                    "  peak memory per 10k tasks",
                    r["mode"],
                    f"{r['peak_mb_per_10k']:.1f} MB",
                    r["baseline"],
                    f"{r['baseline_peak_mb_per_10k']:.1f} MB",
                    "",
                    f"< {r['target_mb']:g} MB",
                    "pass" if r["passed"] else "FAIL",
                ],
            ]
        elif r["workload"] == "w4-100k":
            rows += [
                [
                    f"w4-100k {r['title']}",
                    r["mode"],
                    f"{r['seconds']:.2f} s, {r['peak_mb']:.0f} MB peak",
                    r["baseline"],
                    f"{r['baseline_seconds']:.2f} s",
                    "",
                    "",
                    "info",
                ],
                [
                    f"  time for {r['size']:,} / for {r['size'] // r['size_ratio']:,}, gc paused",
                    r["mode"],
                    f"{r['time_ratio']:.2f}x",
                    r["baseline"],
                    f"{r['baseline_time_ratio']:.2f}x",
                    "",
                    f"<= {r['target_time_ratio']:g}x",
                    "pass" if r["passed"] else "FAIL",
                ],
                [
                    "  the same, gc running",
                    r["mode"],
                    f"{r['gc_time_ratio']:.2f}x ({r['gc_seconds']:.2f} s)",
                    r["baseline"],
                    f"{r['gc_baseline_time_ratio']:.2f}x ({r['gc_baseline_seconds']:.2f} s)",
                    "",
                    "",
                    "info",
                ],
            ]
        elif r["workload"].startswith("dist") or r["workload"] == "distributed":
            rows += distributed_rows(r)
        elif "scale" in r:
            rows.append(
                [
                    f"{r['workload']} per {r['unit']}",
                    r["mode"],
                    f"{r['scale']:.2f}x",
                    "asyncio_gather",
                    f"{r['baseline_scale']:.2f}x",
                    "",
                    f"<= {r['scale_target']:g}x",
                    "pass" if r["passed"] else "FAIL",
                ]
            )
        else:
            rows.append(
                [
                    f"{r['workload']} ({r['pending_events']} queued)",
                    r["mode"],
                    f"{r['bytes_per_pending_event']:.0f} B/event",
                    "event object",
                    f"{r['event_object_bytes']:.0f} B",
                    "",
                    f"< {r['target_bytes']} B",
                    "pass" if r["passed"] else "FAIL",
                ]
            )
    return rows


def distributed_rows(r: dict[str, Any]) -> list[list[str]]:
    """Table rows of one ``--only distributed`` entry (``bench/distributed.py``)."""
    verdict = "pass" if r["passed"] else "FAIL"
    if "skipped" in r:
        return [["distributed (PostgreSQL)", "", f"skipped: {r['skipped']}", "", "", "", "", ""]]
    if r["workload"] == "dist-throughput":
        return [
            [
                f"dist-throughput {r['title']}",
                r["mode"],
                f"{r['runs_per_s']:.0f} runs/s",
                r["baseline"],
                f"{r['baseline_runs_per_s']:.0f} runs/s",
                f"{r['throughput_ratio']:.2f}x",
                f">= {r['target_throughput_ratio']:g}x",
                verdict,
            ],
            [
                f"  transactions per run (--concurrency {r['concurrency']})",
                r["mode"],
                f"{r['transactions_per_run']:.1f}",
                r["baseline"],
                f"{r['baseline_transactions_per_run']:.1f}",
                "",
                "",
                "info",
            ],
        ]
    if r["workload"] == "dist-pickup":
        return [
            [
                f"dist-pickup {r['title']}",
                r["mode"],
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms",
                r["baseline"],
                f"p50 {r['baseline_p50_ms']:.1f} ms, p99 {r['baseline_p99_ms']:.1f} ms",
                f"{r['p50_ratio']:.2f}x",
                f"<= {r['target_p50_ratio']:g}x (p50)",
                verdict,
            ]
        ]
    if r["workload"] == "dist-limiter":
        return [
            [
                f"dist-limiter {r['title']}",
                r["mode"],
                f"{r['us_per_acquisition']:.0f} µs per acquisition",
                r["baseline"],
                f"{r['baseline_us']:.1f} µs",
                "",
                "",
                "info",
            ]
        ]
    return [
        [
            f"dist-recovery {r['title']} ({r['size']} kills)",
            r["mode"],
            f"p50 {r['p50_s']:.2f} s, max {r['max_s']:.2f} s",
            "",
            "",
            "",
            f"<= {r['target_s']:g} s (max)",
            verdict,
        ]
    ]


def distributed_markdown(r: dict[str, Any]) -> str:
    """The Markdown line of one ``--only distributed`` entry."""
    if "skipped" in r:
        return f"| distributed runs on PostgreSQL | | skipped: {r['skipped']} | | | |"
    if r["workload"] == "dist-throughput":
        return (
            f"| dist-throughput {r['title']}: runs/s (transactions per run) | {r['mode']}, "
            f"`--concurrency {r['concurrency']}` | {r['runs_per_s']:.0f} "
            f"({r['transactions_per_run']:.1f}) | {r['baseline_runs_per_s']:.0f} "
            f"({r['baseline_transactions_per_run']:.1f}) ({r['baseline']}) | "
            f"{r['throughput_ratio']:.2f}x | >= {r['target_throughput_ratio']:g}x |"
        )
    if r["workload"] == "dist-pickup":
        return (
            f"| dist-pickup {r['title']}: p50, p99 | {r['mode']} | {r['p50_ms']:.1f} ms, "
            f"{r['p99_ms']:.1f} ms | {r['baseline_p50_ms']:.1f} ms, {r['baseline_p99_ms']:.1f} "
            f"ms ({r['baseline']}) | {r['p50_ratio']:.2f}x | <= {r['target_p50_ratio']:g}x (p50) |"
        )
    if r["workload"] == "dist-limiter":
        return (
            f"| dist-limiter {r['title']}: µs per acquisition | {r['mode']} | "
            f"{r['us_per_acquisition']:.0f} | {r['baseline_us']:.1f} ({r['baseline']}) | | |"
        )
    return (
        f"| dist-recovery {r['title']}: p50, max of {r['size']} kills | {r['mode']} | "
        f"{r['p50_s']:.2f} s, {r['max_s']:.2f} s | | | <= {r['target_s']:g} s (max) |"
    )


TIMING_HEADERS = (
    "workload",
    "mode",
    "stepgraph",
    "baseline",
    "baseline figure",
    "ratio",
    "target",
    "result",
)


def print_report(results: Sequence[dict[str, Any]], out: Any = None) -> None:
    """Print the results table of ``python -m bench``."""
    print(format_table(TIMING_HEADERS, timing_rows(results)), file=out or sys.stdout)


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """The results as the Markdown table the README shows (``python -m bench.markdown``)."""
    lines = [
        "| workload | mode | stepgraph | plain asyncio | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "ratio" in r:
            unit = r["unit"]
            ours = f"{r['us_per_unit']:.2f} µs/{unit}"
            if "vs_step" in r:
                ours += f" ({r['vs_step']:.2f}x the `@step` style)"
            target = f"<= {r['target_ratio']:g}x"
            if "vs_step" in r:
                target += f", <= {r['vs_step_target']:g}x of `@step`"
            base = f"{r['baseline_us_per_unit']:.2f} ({r['baseline']})"
            if "executor_us_per_unit" in r:
                base = (
                    f"{r['baseline_us_per_unit']:.0f} (RADICAL AsyncFlow's thread backend: a "
                    f"reference figure; plain asyncio on a thread pool: "
                    f"{r['executor_us_per_unit']:.2f})"
                )
            if "spans_us_per_unit" in r:
                ours += (
                    f" (spans only: {r['spans_us_per_unit']:.2f}; event log only: "
                    f"{r['log_us_per_unit']:.2f})"
                )
            if "sdk_us_per_unit" in r:
                target += (
                    f"; the SDK's own spans alone, + off: {r['floor_ratio']:.2f}x "
                    f"({r['sdk_us_per_unit']:.2f} µs/{unit})"
                )
            if "raw_commit_us" in r:
                ours += (
                    f" (synchronous=full: {r['full_us_per_unit']:.2f}; PostgreSQL: "
                    + ("skipped" if r["pg_us_per_unit"] is None else f"{r['pg_us_per_unit']:.2f}")
                    + ")"
                )
                base = (
                    f"{r['baseline_us_per_unit']:.2f} (raw SQLite commit of the same "
                    f"{r['record_bytes']} B: {r['raw_commit_us']:.2f}, + the hop)"
                )
            lines.append(
                f"| {r['workload']} {r['title']} | {r['mode']} | {ours} | {base} | "
                f"{r['ratio']:.2f}x | {target} |"
            )
        elif r["workload"] == "cp-size":
            lines.append(
                f"| checkpoint size, 10 MB of state, one small key changed | {r['mode']} | "
                f"{r['bytes_per_checkpoint']:.0f} B per checkpoint (largest "
                f"{r['largest_bytes']:.0f} B) | | | < {r['target_bytes']} B |"
            )
        elif r["workload"] == "cp-write":
            lines.append(
                f"| checkpoint write, 10 messages + 10 keys, {r['store']} | {r['mode']} | "
                f"{r['us_per_checkpoint']:.1f} µs per checkpoint | | | |"
            )
        elif r["workload"] == "w4-mem":
            lines.append(
                f"| w4 {r['title']}: tasks/s, peak memory per 10k tasks (tracemalloc) | "
                f"{r['mode']} | {r['tasks_per_s']:,} tasks/s, {r['peak_mb_per_10k']:.1f} MB | "
                f"{r['baseline_tasks_per_s']:,} tasks/s, {r['baseline_peak_mb_per_10k']:.1f} MB "
                f"({r['baseline']}) | | < {r['target_mb']:g} MB |"
            )
        elif r["workload"] == "w4-100k":
            small = r["size"] // r["size_ratio"]
            ours = (
                f"{r['time_ratio']:.2f}x ({r['seconds']:.2f} s) gc paused, "
                f"{r['gc_time_ratio']:.2f}x ({r['gc_seconds']:.2f} s) gc running; "
                f"{r['peak_mb']:.0f} MB peak"
            )
            base = (
                f"{r['baseline_time_ratio']:.2f}x ({r['baseline_seconds']:.2f} s), "
                f"{r['gc_baseline_time_ratio']:.2f}x ({r['gc_baseline_seconds']:.2f} s) "
                f"({r['baseline']})"
            )
            lines.append(
                f"| w4-100k {r['title']}: time for {r['size']:,} over time for {small:,} | "
                f"{r['mode']} | {ours} | {base} | | <= {r['target_time_ratio']:g}x (gc paused) |"
            )
        elif r["workload"].startswith("dist") or r["workload"] == "distributed":
            lines.append(distributed_markdown(r))
        elif "scale" in r:
            lines.append(
                f"| {r['workload']}, cost per {r['unit']} | {r['mode']} | {r['scale']:.2f}x | "
                f"{r['baseline_scale']:.2f}x (asyncio_gather) | | <= {r['scale_target']:g}x |"
            )
        else:
            lines.append(
                f"| memory per pending event | {r['mode']} | "
                f"{r['bytes_per_pending_event']:.0f} B beyond the event "
                f"({r['event_object_bytes']:.0f} B) | | | < {r['target_bytes']} B |"
            )
    return "\n".join(lines)
