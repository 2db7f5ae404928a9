"""Running example scripts as real processes, all at once, for the example tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

Script = tuple[list[str], str, list[str]]
"""(command-line arguments, standard input, lines the output must contain)."""


def run_scripts(
    scripts: Mapping[str, Script],
) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Start every script (key: ``"name.py"`` or ``"name.py variant"``), yield their results."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    started = {
        key: (
            subprocess.Popen(
                [sys.executable, str(EXAMPLES / key.split()[0]), *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            stdin,
        )
        for key, (args, stdin, _) in scripts.items()
    }
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    try:
        for key, (process, stdin) in started.items():
            out, err = process.communicate(stdin, timeout=60)
            outputs[key] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        yield outputs
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def check_script(done: subprocess.CompletedProcess[str], expected: list[str]) -> None:
    """The script exited cleanly, wrote nothing to stderr and printed every expected line."""
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    for line in expected:
        assert line in done.stdout
