"""Where bodies run: the backend protocol and the backends stepgraph ships.

=======================  ===============================================================
:class:`InlineBackend`   the event loop (``async def`` bodies; quick plain ones)
:class:`ThreadBackend`   a thread pool (plain ``def`` bodies; ``async def`` on the loop)
:class:`ProcessBackend`  a pool of worker processes (cloudpickle: lambdas, closures)
:class:`SubprocessBackend`  a child process per body: executables, or a fresh Python
:class:`DaskBackend`     a Dask cluster: a LocalCluster it starts, or any scheduler
:class:`NoopBackend`     nothing (dry runs)
=======================  ===============================================================

See :mod:`stepgraph.backends.base` for the protocol a backend of your own implements.
"""

from __future__ import annotations

from .base import Backend, BackendBase
from .commands import Command, CommandResult
from .dask import DaskBackend
from .local import InlineBackend, ThreadBackend
from .noop import NoopBackend
from .process import ProcessBackend
from .subprocess import SubprocessBackend

__all__ = [
    "Backend",
    "BackendBase",
    "Command",
    "CommandResult",
    "DaskBackend",
    "InlineBackend",
    "NoopBackend",
    "ProcessBackend",
    "SubprocessBackend",
    "ThreadBackend",
]
