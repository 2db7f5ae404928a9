"""The ``stepgraph`` command line: run workflows, manage stored runs, read event logs.

``stepgraph run MODULE:ATTR``, ``stepgraph runs list|show|resume|cancel|fork``,
``stepgraph graph``, ``stepgraph events tail`` and ``stepgraph plot``; ``stepgraph
--help`` and ``stepgraph COMMAND --help`` describe them. Also ``python -m stepgraph.cli``.
The live progress display needs rich (``pip install 'stepgraph[cli]'``).
"""

from __future__ import annotations

from .app import build_parser, main

__all__ = ["build_parser", "main"]
