"""The separate environment the peers run in: ``bench/.peers-venv``.

It is created on first use with the latest release of each peer from PyPI plus stepgraph
itself (an editable install of this repository); ``--upgrade`` refreshes the peers. The
peers stay out of the project's own environment, so their dependencies cannot shadow ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_DIR = REPO_ROOT / "bench" / ".peers-venv"
STAMP = VENV_DIR / ".bench-peers-installed"
PEER_DISTS = (
    "llama-index-workflows",
    "agent-framework-core",
    "langgraph",
    "langgraph-checkpoint-sqlite",
    "radical.asyncflow",
    "distributed",
    "dbos",
)
CHILD_FLAG = "STEPGRAPH_BENCH_PEERS_CHILD"


def python_path() -> Path:
    """The environment's interpreter."""
    if sys.platform == "win32":
        return VENV_DIR / "Scripts" / "python.exe"
    return VENV_DIR / "bin" / "python"


def inside() -> bool:
    """Whether this interpreter is the environment's."""
    return Path(sys.prefix).resolve() == VENV_DIR.resolve()


def _pip(*args: str) -> bool:
    cmd = [str(python_path()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    print(f"$ pip install {' '.join(args)}", flush=True)
    return subprocess.run([*cmd, *args], cwd=REPO_ROOT, check=False).returncode == 0


def ensure(upgrade: bool) -> None:
    """Create the environment and install into it, unless it is already up to date."""
    if not python_path().exists():
        print("creating bench/.peers-venv", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV_DIR)
    wanted = {"peers": list(PEER_DISTS)}
    if not upgrade and STAMP.exists() and json.loads(STAMP.read_text()) == wanted:
        return
    failed = [dist for dist in PEER_DISTS if not _pip("--upgrade", dist)]
    for dist in failed:
        print(f"could not install {dist}; it will be skipped", file=sys.stderr)
    if not _pip("--editable", "."):
        raise SystemExit("could not install stepgraph into bench/.peers-venv")
    if not failed:
        STAMP.write_text(json.dumps(wanted))


def reexec(argv: list[str]) -> None:
    """Replace this process with ``python -m bench.peers ARGV`` inside the environment."""
    if os.environ.get(CHILD_FLAG):
        raise SystemExit(f"re-executed, but {sys.executable} is not the bench/.peers-venv python")
    os.environ[CHILD_FLAG] = "1"
    os.chdir(REPO_ROOT)
    python = str(python_path())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(python, [python, "-m", "bench.peers", *argv])
