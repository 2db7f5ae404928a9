"""Crash testing of durable runs: kill -9 a run at a random point, resume it, compare.

- :mod:`tests.crash.flows`: the workflows (module level, so that the child process that
  runs them and the process that resumes them name their classes alike), each with the
  result an uninterrupted run gives, computed without stepgraph;
- :mod:`tests.crash.child`: the child process (``python -m tests.crash.child ...``), which
  runs one flow on a store and prints a line per step;
- :mod:`tests.crash.harness`: the driver: per seed, start a child, SIGKILL it at a point
  the seed chooses, resume the run here and classify the outcome;
- ``python -m tests.crash [N]``: N seeds (default 1000), a table of the outcomes.

``STEPGRAPH_CRASH_JOURNAL_SPAN=N`` in the environment makes async runs write a checkpoint
every N journal entries (``DurableRun.journal_span``), in the child and when resumed, so
that the kills land around those checkpoints too.
"""

import os

from stepgraph.durability.run import DurableRun

if os.environ.get("STEPGRAPH_CRASH_JOURNAL_SPAN"):
    DurableRun.journal_span = int(os.environ["STEPGRAPH_CRASH_JOURNAL_SPAN"])
