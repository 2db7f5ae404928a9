"""The invocation a piece of step code runs in (a context variable set by the worker)."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ports import StepPort

__all__ = ["WORKER", "IdempotencyKey", "Scope", "current_scope", "idempotency_key", "set_scope"]


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

WORKER: contextvars.ContextVar[int] = contextvars.ContextVar("stepgraph_worker", default=0)
"""The number (1, 2, ...) of the run's worker that runs the current step attempt."""

set_scope = _scope.set


def current_scope() -> Scope | None:
    """The invocation the calling code runs in, or None outside a step."""
    return _scope.get(None)


def idempotency_key(scope: Scope) -> str:
    """``run:step:invocation``: the same for every attempt of one step on one message in one
    run, resumes included (an invocation keeps its number across a resume); different for
    any other step, message or run (a fork is another run)."""
    run = scope.run
    return f"{run.run_id}:{run.graph.nodes[scope.node].name}:{scope.invocation}"


class IdempotencyKey:
    """``ctx.idempotency_key``, for both contexts (they define ``_scope``)."""

    __slots__ = ()

    def _scope(self, what: str) -> Scope:
        raise NotImplementedError

    @property
    def idempotency_key(self) -> str:
        """A key for making this step's side effects idempotent.

        The same for every attempt of this step on this message in this run, and when the
        run is resumed after a crash (the steps of an interrupted superstep run again: at
        least once); different for another step, message or run. Pass it to the service
        you call (an idempotency key header, a unique constraint) so that doing it twice
        has the effect of doing it once.

        Raises:
            WorkflowRuntimeError: called outside a step of this run.
        """
        return idempotency_key(self._scope("idempotency_key"))
