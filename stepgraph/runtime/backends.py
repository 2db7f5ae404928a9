"""The backend seam as the step runtime uses it (the backends are ``stepgraph.backends``).

Both authoring styles reach threads through :func:`body_caller` alone: an ``async def``
body is called directly, a plain one on :data:`THREADS`.

An in-process backend's bodies use the live context of their run. A backend that is
not in-process (a process pool, a cluster) runs bodies that cannot reach their run:
they get a recording context (``stepgraph.runtime.effects``) and their effects (sends,
stream writes, shared-state writes) come back with their result, as data, which the
shell turns into ticks.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from ..backends.base import Backend
from ..backends.local import InlineBackend, ThreadBackend

__all__ = ["THREADS", "Backend", "InlineBackend", "ThreadBackend", "body_caller"]


THREADS = ThreadBackend()
"""The thread backend plain ``def`` bodies use by default."""


def body_caller(fn: Callable[..., Any], is_async: bool) -> Callable[..., Awaitable[Any]]:
    """How to call a body with its arguments: directly when async, else on ``THREADS``."""
    if is_async:
        return fn
    return functools.partial(THREADS.submit, fn)
