"""The invocation a piece of step code runs in (a context variable set by the worker)."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .run import Run

__all__ = ["Scope", "current_scope", "set_scope"]


class Scope:
    """One invocation of one step: what it sent and has not been delivered yet.

    Superstep mode holds sends until the step returns; async mode until it suspends.
    """

    __slots__ = ("active", "invocation", "message", "node", "run", "sent")

    def __init__(self, run: Run, invocation: int, node: int, message: object) -> None:
        self.run = run
        self.invocation = invocation
        self.node = node
        self.message = message
        self.sent: list[tuple[object, int | None]] = []
        self.active = True  # False once its attempt has failed or been abandoned


_scope: contextvars.ContextVar[Scope] = contextvars.ContextVar("stepgraph_scope")

set_scope = _scope.set


def current_scope() -> Scope | None:
    """The invocation the calling code runs in, or None outside a step."""
    return _scope.get(None)
