"""Replay golden journals in this (fresh) process: ``python -m tests.golden.check FILE...``.

Prints ``ok NAME`` for each file whose replay gives the recorded state; exits 1 (with the
reason) at the first that does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stepgraph.errors import ReplayDivergenceError

from . import files


def main(paths: list[str]) -> int:
    for path in paths:
        try:
            recorded, replayed = files.replay_file(Path(path))
        except ReplayDivergenceError as exc:
            print(f"diverged {Path(path).name}: {exc}")
            return 1
        if replayed != recorded:
            print(f"differs {Path(path).name}: the replayed state is not the recorded one")
            return 1
        print(f"ok {Path(path).stem}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
