"""The benchmark harness runs end to end (its figures are not asserted: no timing in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_harness_runs_every_workload_and_writes_its_json(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "--quick", "--reps", "1"),
            *("--max-size", "10000", "--output", str(output)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
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
