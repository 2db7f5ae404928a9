"""The run ports: what the code around a run may ask of it, whatever runtime runs it.

:class:`StepPort` is the internal port, used by a step's context (``Context``,
``WorkflowContext``) and the shared state: emit, collect, wait, request, stream, store,
and who is calling. :class:`CallerPort` is the external port, used by the caller's
``WorkflowHandler``: send, respond, cancel, events, result, status. :class:`Runtime`
starts runs and hands back their caller port.

The in-process runtime (``stepgraph.runtime.run``) implements both ports on one object,
so that a context's call reaches the run with no extra hop. Durable and distributed
runtimes implement the same ports: contexts and handlers never know which one they talk
to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from ..core import Graph, OpenRequest, RunStatus

if TYPE_CHECKING:
    from ..state.store import StateStore
    from .launch import RunOptions
    from .plan import RunPlan
    from .scope import Scope

__all__ = ["CallerPort", "Runtime", "StepPort"]


class StepPort(Protocol):
    """The internal port: what a step's context needs from its run.

    ``scope`` is the calling invocation (``current_scope()``), or None for the caller.
    """

    def limit(self, scope: Scope | None, name: str) -> AbstractAsyncContextManager[float]:
        """Hold limiter ``name`` for a block (``ctx.limit``)."""
        ...

    @property
    def run_id(self) -> str: ...
    @property
    def request_prefix(self) -> str:
        """What the ids of the run's requests start with (a fork keeps its origin's)."""
        ...

    @property
    def name(self) -> str: ...
    @property
    def graph(self) -> Graph:
        """The run's compiled graph (data only: node names, accepted types)."""
        ...

    @property
    def store(self) -> StateStore: ...
    @property
    def running(self) -> bool:
        """Whether the run has not ended yet."""
        ...

    def where(self, scope: Scope | None) -> str:
        """Who is acting, for messages: the caller, or a named step of this run."""
        ...

    def emit(self, scope: Scope, message: object) -> None:
        """Emit ``message`` from a step, routed by type or along its node's edges."""
        ...

    def send(self, scope: Scope | None, message: object, step: str | None) -> None:
        """Send ``message`` from a step or the caller, to the routed nodes or to ``step``."""
        ...

    def publish(self, scope: Scope | None, event: object) -> None:
        """Put ``event`` on the run's stream (an input request pauses the run)."""
        ...

    def collect(self, scope: Scope, event: object, expected: Sequence[type]) -> list[Any] | None:
        """Hold ``event`` in the step's collector; the batch once complete, else None."""
        ...

    def wait_for(
        self,
        scope: Scope,
        types: tuple[type, ...],
        requirements: Mapping[str, object],
        timeout: float | None,
    ) -> Awaitable[Any]:
        """Suspend the step until a matching message arrives (or ``timeout`` seconds pass)."""
        ...

    def request_id(self, scope: Scope) -> str:
        """The id of the next request ``scope``'s attempt makes (the same when it runs again)."""
        ...

    def request(
        self,
        scope: Scope,
        request_id: str,
        data: object,
        response_type: Any,
        event: object,
        forward: Callable[[object], Awaitable[None] | None] | None = None,
    ) -> str:
        """Open request ``request_id`` and announce it with ``event`` on the stream.

        The answer goes to the node that asked, or to ``forward`` (a sub-workflow's).
        """
        ...


class CallerPort(Protocol):
    """The external port: what a caller's handler needs from a run."""

    @property
    def run_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def plan(self) -> RunPlan: ...
    @property
    def status(self) -> RunStatus: ...
    @property
    def outcome(self) -> asyncio.Future[Any]:
        """Resolves with the run's result, or its error, when it ends."""
        ...

    def waiter(self) -> asyncio.Future[Any]:
        """A future of its own that resolves as ``outcome`` does (one per await)."""
        ...

    @property
    def context(self) -> Any:
        """The context object the run's steps get (``Context`` or ``WorkflowContext``)."""
        ...

    @property
    def running(self) -> bool:
        """Whether the run has not ended yet."""
        ...

    def start(self, message: object) -> None:
        """Start the run with ``message`` as its first message."""
        ...

    def send_external(self, event: object, step: str | None) -> None:
        """Send ``event`` into the run from outside, to the routed nodes or to ``step``."""
        ...

    def respond(self, request_id: str, response: object) -> Awaitable[None] | None:
        """Answer an open request (an awaitable when a sub-workflow takes the answer)."""
        ...

    def open_request(self, request_id: str) -> OpenRequest | None:
        """The open request ``request_id``, or None."""
        ...

    def cancel(self, reason: str) -> None:
        """End the run as cancelled."""
        ...

    async def stopped(self) -> None:
        """Wait until the run has ended and let go of what it held (a durable run: its
        end stored, its lease given up); a run carried out elsewhere: until what the
        caller sent it is stored."""
        ...

    def flushed(self) -> Awaitable[None]:
        """Done once what the caller sent the run is where the run reads it (a run in
        this process: at once; a durable one: once committed; a run carried out
        elsewhere: once stored)."""
        ...

    def events(self, *, lifecycle: bool) -> AsyncIterator[Any]:
        """The stream's events in order until the run ends (with lifecycle events if asked)."""
        ...


class Runtime(Protocol):
    """Makes runs of a plan and returns their caller port (``port.start`` starts one)."""

    def create(self, plan: RunPlan, owner: object, options: RunOptions) -> CallerPort:
        """A new run on the running event loop, not started yet."""
        ...
