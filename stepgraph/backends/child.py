"""The child side of :class:`~stepgraph.backends.SubprocessBackend`: one body, one process.

It reads a cloudpickled ``(fn, args, kwargs)`` from standard input, runs it, and writes
its outcome (``process.run_outcome``) to its original standard output. While the
body runs, standard output goes to standard error, so what the body prints cannot mix
with its result.
"""

from __future__ import annotations

import os
import sys

PATH_VARIABLE = "STEPGRAPH_PARENT_SYS_PATH"
"""The parent's ``sys.path``: a body from a module beside the parent's script imports
here as it did there (as a process pool's spawned workers get it)."""


def main() -> None:
    parent = os.environ.pop(PATH_VARIABLE, "")
    if parent:
        entries = parent.split(os.pathsep)
        sys.path[:] = entries + [entry for entry in sys.path if entry not in entries]
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the body's prints go to stderr
    sys.stdout = sys.stderr
    payload = sys.stdin.buffer.read()
    from .process import run_outcome

    data = run_outcome(payload)
    channel.write(data)
    channel.flush()


if __name__ == "__main__":
    main()
