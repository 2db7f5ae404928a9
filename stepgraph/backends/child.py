"""The child side of :class:`~stepgraph.backends.SubprocessBackend`: one body, one process.

It reads a cloudpickled ``(fn, args, kwargs)`` from standard input, runs it, and writes
``("ok", result)`` or ``("error", exception)`` to its original standard output. While the
body runs, standard output goes to standard error, so what the body prints cannot mix
with its result.
"""

from __future__ import annotations

import os
import sys
import traceback


def main() -> None:
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the body's prints go to stderr
    sys.stdout = sys.stderr
    payload = sys.stdin.buffer.read()
    from .process import dumps, run_pickled

    try:
        outcome: tuple[str, object] = ("ok", run_pickled(payload))
        data = dumps(outcome)
    except BaseException as exc:
        try:
            data = dumps(("error", exc))
        except Exception:  # the exception itself cannot be pickled: its text can
            text = "".join(traceback.format_exception(exc))
            data = dumps(("unpicklable", (type(exc).__qualname__, str(exc), text)))
    channel.write(data)
    channel.flush()


if __name__ == "__main__":
    main()
