"""The invocation a piece of step code runs in (a context variable set by the worker)."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ports import StepPort

__all__ = ["Scope", "current_scope", "set_scope"]


class Scope:
    """One attempt of one invocation: what it sent that has not been delivered yet.

    Superstep mode holds sends until the step returns; async mode until it suspends. A
    fresh scope per attempt keeps an abandoned attempt (a sync body still running in its
    thread after a timeout) from sending for the invocation.
    """

    __slots__ = ("active", "asked", "invocation", "message", "node", "run", "sent", "timed_out")

    def __init__(self, run: StepPort, invocation: int, node: int, message: object) -> None:
        self.run = run
        self.invocation = invocation
        self.node = node
        self.message = message
        self.sent: list[tuple[object, tuple[int, ...] | None]] = []
        self.active = True  # False once its attempt has failed or been abandoned
        self.timed_out = False  # its attempt's timeout expired
        self.asked = 0  # requests for input it made (numbers their ids)


_scope: contextvars.ContextVar[Scope] = contextvars.ContextVar("stepgraph_scope")

set_scope = _scope.set


def current_scope() -> Scope | None:
    """The invocation the calling code runs in, or None outside a step."""
    return _scope.get(None)
