"""The child side of :class:`~stepgraph.backends.SubprocessBackend`: one body, one process.

It reads a cloudpickled ``(fn, args, kwargs)`` from standard input, runs it, and writes
its outcome (``process.run_outcome``) to its original standard output. While the
body runs, standard output goes to standard error, so what the body prints cannot mix
with its result.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
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
