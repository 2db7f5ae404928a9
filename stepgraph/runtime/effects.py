"""A body's effects as data, for bodies that run away from their run.

A backend that is not in-process (a process pool, a cluster) cannot hand a body the live
context of its run. The body gets a context over a :class:`RecordingPort` instead: what
it sends, writes to the stream and writes to the shared state is recorded in
:class:`Effects` and travels back with its result; the shell then carries the effects
out in the invocation's scope, as if the body had run in-process. Operations that need
a round trip to the run while the body runs (``collect_events``, ``wait_for_event``,
``request_info``) are refused with a clear error.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import WorkflowRuntimeError
from ..state.store import StateStore
from .scope import Scope, set_scope

if TYPE_CHECKING:
    from .plan import RunPlan

__all__ = ["Effects", "RecordingPort", "run_recorded"]


@dataclass(slots=True)
class Effects:
    """What a body did to its run, in order.

    Attributes:
        sends: messages sent, with the step they were sent to (None: routed).
        stream: events written to the stream.
        store: shared-state operations: ``("set", key, value)`` or ``("delete", key, None)``.
    """

    sends: list[tuple[object, str | None]] = field(default_factory=list)
    stream: list[object] = field(default_factory=list)
    store: list[tuple[str, str, object]] = field(default_factory=list)


class _RecordingSink:
    """Shared-state changes of a recorded body: applied to its copy and recorded."""

    __slots__ = ("data", "effects")

    def __init__(self, data: dict[str, Any], effects: Effects) -> None:
        self.data = data
        self.effects = effects

    def writer(self) -> object | None:
        return self  # reducer writes are recorded as written; the run merges them

    def commit(
        self,
        writes: tuple[tuple[str, Any], ...],
        deletes: tuple[str, ...],
        merges: tuple[tuple[str, Any], ...],
        writer: object | None,
    ) -> None:
        for key, value in writes:
            self.data[key] = value
            self.effects.store.append(("set", key, value))
        for key, value in merges:
            self.effects.store.append(("set", key, value))
        for key in deletes:
            self.data.pop(key, None)
            self.effects.store.append(("delete", key, None))


class RecordingPort:
    """The step port of a body that runs away from its run: it records the body's effects."""

    def __init__(
        self,
        *,
        run_id: str,
        plan: RunPlan,
        backend: str,
        store: Mapping[str, Any],
    ) -> None:
        self.run_id = run_id
        self.plan = plan
        self.name = plan.name
        self.backend = backend
        self.effects = Effects()
        data = dict(store)
        self.store = StateStore.attached(data, plan.reducers, _RecordingSink(data, self.effects))

    @property
    def running(self) -> bool:
        return True

    def where(self, scope: Scope | None) -> str:
        if scope is None:
            return "the caller"
        node = self.plan.graph.nodes[scope.node].name
        return f"{self.plan.graph.node_kind} {node!r} of workflow {self.name!r}"

    def emit(self, scope: Scope, message: object) -> None:
        self.effects.sends.append((message, None))

    def send(self, scope: Scope | None, message: object, step: str | None) -> None:
        self.effects.sends.append((message, step))

    def publish(self, scope: Scope | None, event: object) -> None:
        self.effects.stream.append(event)

    def _refuse(self, scope: Scope, what: str) -> NoReturn:
        raise WorkflowRuntimeError(
            f"{self.where(scope)} runs on backend {self.backend!r}, away from its run: "
            f"ctx.{what}() needs the live run; run this node in-process to use it"
        )

    def collect(self, scope: Scope, event: object, expected: Sequence[type]) -> list[Any] | None:
        self._refuse(scope, "collect_events")

    def wait_for(
        self,
        scope: Scope,
        types: tuple[type, ...],
        requirements: Mapping[str, object],
        timeout: float | None,
    ) -> Awaitable[Any]:
        self._refuse(scope, "wait_for_event")

    def request(
        self,
        scope: Scope,
        request_id: str,
        data: object,
        response_type: Any,
        event: object,
        forward: Callable[[object], Awaitable[None]] | None = None,
    ) -> str:
        self._refuse(scope, "request_info")


def run_recorded(
    body: Callable[[Any, Any, Any], Any],
    owner: object,
    port: RecordingPort,
    invocation: int,
    node: int,
    message: object,
) -> tuple[Any, Effects]:
    """Run ``body`` with a recording context; return its result and its effects.

    This is what a backend that is not in-process runs (in a worker thread or process):
    an ``async def`` body gets an event loop of its own there.
    """
    set_scope(Scope(port, invocation, node, message))
    result = body(owner, port.plan.context_type(port), message)
    if inspect.isawaitable(result):
        awaitable = result

        async def finish() -> Any:
            return await awaitable

        result = asyncio.run(finish())
    return result, port.effects
