"""The benchmark harness runs end to end (its figures are not asserted: no timing in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.__main__ import CHOICES, parse_args
from bench.report import markdown_table
from tests.pg import pg_available

ROOT = Path(__file__).resolve().parents[2]
SEPARATE = ("tasks", "telemetry", "distributed")


def _bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in the repository, its output captured."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_benchmark_harness_runs_every_workload_and_writes_its_json(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    done = _bench(
        *("-X", "faulthandler", "-m", "bench", "--quick", "--reps", "1"),
        *("--max-size", "10000", "--output", str(output)),
        # W4 (tasks), telemetry and distributed have tests of their own, below, at a tiny size
        *("--only", ",".join(c for c in CHOICES if c not in SEPARATE)),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(output.read_text())
    entries = {(r["workload"], r["mode"]) for r in document["results"]}
    for workload in ("w1", "w2", "w2c-1k", "w2c-10k", "w1g", "w2g", "w3", "memory_pending", "w1d"):
        for mode in ("superstep", "async"):
            assert (workload, mode) in entries
    assert ("cp-size", "superstep") in entries and ("cp-write", "superstep") in entries
    timed = [r for r in document["results"] if "ratio" in r]
    assert all(r["us_per_unit"] > 0 and r["baseline_us_per_unit"] > 0 for r in timed)
    baselines = ("asyncio_task", "asyncio_gather", "raw commit + hop")
    assert all(r["baseline"] in baselines for r in timed)
    assert "w1g" in done.stdout and "@step" in done.stdout
    assert ("w2c-10k / w2c-1k", "async") in entries  # the scale row
    assert ("w2c-100k", "async") not in entries  # larger than --max-size: skipped


def test_the_task_dag_group_runs_at_a_tiny_size_and_renders(tmp_path: Path) -> None:
    """W4 (``--only tasks``) with 2-layer DAGs: a few seconds, most of it Dask's start."""
    output = tmp_path / "tasks.json"
    done = _bench(
        *("-m", "bench", "--only", "tasks", "--quick", "--reps", "1"),
        *("--task-layers", "2", "--output", str(output)),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(output.read_text())["results"]
    entries = {(r["workload"], r["mode"]): r for r in results}
    assert set(entries) == {
        ("w4", "inline"),
        ("w4", "thread"),
        ("w4", "dask"),
        ("w4-mem", "inline"),
        ("w4-100k", "inline"),
    }
    timed = [r for r in results if "ratio" in r]
    assert all(r["us_per_unit"] > 0 and r["baseline_us_per_unit"] > 0 for r in timed)
    assert {r["baseline"] for r in timed} == {
        "asyncio_task_dag",
        "AsyncFlow threads (reference)",
        "client.submit",
    }
    assert all(r["size"] == 200 and r["unit"] == "task" for r in timed)
    assert entries[("w4", "thread")]["executor_us_per_unit"] > 0
    memory = entries[("w4-mem", "inline")]
    assert memory["tasks_per_s"] > 0 and memory["peak_mb_per_10k"] > 0
    scale = entries[("w4-100k", "inline")]
    assert scale["size"] == 2_000 and scale["time_ratio"] > 0 and scale["peak_mb"] > 0
    assert "w4-mem" in done.stdout and "peak memory per 10k tasks" in done.stdout

    table = markdown_table(results)
    assert table.count("\n") == 1 + len(results)  # header, rule, one line per entry
    assert "RADICAL AsyncFlow" in table and "tasks/s" in table


def test_the_telemetry_group_runs_at_a_tiny_size_and_renders(tmp_path: Path) -> None:
    """``--only telemetry``: W1 and a 2-layer W4 with spans and the event log on and off."""
    output = tmp_path / "telemetry.json"
    done = _bench(
        *("-m", "bench", "--only", "telemetry", "--quick", "--reps", "1"),
        *("--task-layers", "2", "--output", str(output)),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(output.read_text())["results"]
    assert {(r["workload"], r["mode"]) for r in results} == {
        ("tel-w1", "superstep"),
        ("tel-w1", "async"),
        ("tel-w4", "inline"),
    }
    assert all(r["spans_us_per_unit"] > 0 and r["log_us_per_unit"] > 0 for r in results)
    assert all(r["sdk_us_per_unit"] > 0 and r["floor_ratio"] > 1 for r in results)
    assert "spans only" in done.stdout and "event log only" in done.stdout
    assert "SDK floor" in done.stdout
    assert "spans only:" in markdown_table(results) and "SDK's own spans" in markdown_table(results)


def test_the_distributed_group_runs_at_a_tiny_size_and_renders(tmp_path: Path) -> None:
    """``--only distributed`` with batches of 5 runs, one worker and no kill: a few seconds
    (a skipped entry, with the reason, when no PostgreSQL server answers)."""
    output = tmp_path / "distributed.json"
    done = _bench(
        *("-m", "bench", "--only", "distributed", "--quick", "--reps", "1"),
        *("--dist-runs", "5", "--dist-workers", "1", "--dist-kills", "0"),
        *("--output", str(output)),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(output.read_text())["results"]
    table = markdown_table(results)
    assert table.count("\n") == 1 + len(results)
    if pg_available() is not None:
        assert [r["workload"] for r in results] == ["distributed"] and results[0]["skipped"]
        assert "skipped" in done.stdout
        return
    entries = {(r["workload"], r["mode"]): r for r in results}
    assert set(entries) == {
        ("dist-throughput", "1 worker"),
        ("dist-pickup", "2 workers"),
        ("dist-limiter", "1 process"),
        ("dist-limiter", "3 processes"),
    }
    assert entries[("dist-limiter", "3 processes")]["us_per_acquisition"] > 0
    throughput = entries[("dist-throughput", "1 worker")]
    assert throughput["runs_per_s"] > 0 and throughput["baseline_runs_per_s"] > 0
    assert throughput["transactions_per_run"] > 0 and throughput["size"] == 5
    pickup = entries[("dist-pickup", "2 workers")]
    assert 0 < pickup["p50_ms"] <= pickup["p99_ms"] and pickup["baseline_p50_ms"] > 0
    assert "transactions per run" in done.stdout and "runs/s" in table


def test_a_subset_run_never_writes_over_the_full_runs_figures() -> None:
    assert parse_args([]).output.name == "latest.json"
    assert parse_args(["--only", ",".join(CHOICES)]).output.name == "latest.json"
    assert parse_args(["--only", "distributed"]).output.name == "distributed.json"
    assert parse_args(["--only", "w1,memory"]).output.name == "only.json"
    assert parse_args(["--only", "w1", "--output", "x.json"]).output == Path("x.json")


def test_the_durable_peer_comparison_runs_with_the_peers_at_hand(tmp_path: Path) -> None:
    """``python -m bench.peers --only w1d --here``: stepgraph's durable W1 in both modes,
    then each peer installed here (a missing one is skipped with its reason)."""
    output = tmp_path / "peers.json"
    done = _bench(
        *("-m", "bench.peers", "--here", "--only", "w1d", "--reps", "1"),
        *("--output", str(output)),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(output.read_text())
    ours = {r["mode"]: r for r in document["results"] if r["contender"] == "stepgraph"}
    assert set(ours) == {"superstep", "async"}
    assert all(
        r["workload"] == "w1d" and r["size"] == 200 and r["us_per_unit"] > 0 for r in ours.values()
    )
    peers = [r for r in document["results"] if r["contender"] != "stepgraph"]
    assert all(r["stepgraph_speedup"]["superstep"] > 0 for r in peers)
    assert "w1d stepgraph (superstep)" in done.stdout
