"""A body's effects as data, for bodies that run away from their run.

A backend that is not in-process (a process pool, a cluster) cannot hand a body the live
context of its run. The body gets a context over a :class:`RecordingPort` instead: what
it sends, writes to the stream and writes to the shared state is recorded, in order, in
:class:`Effects` and travels back with its result; the shell then carries the effects
out in the invocation's scope, as if the body had run in-process.

What such a body can and cannot do:

* ``send_event`` / ``send_message`` (a named target is checked at once, in the body),
  ``write_event_to_stream``, ``yield_output``, and the shared state: it reads the state
  as of its start, sees its own plain writes, and its writes reach the run when it
  returns (last writer wins; use a reducer key for writes that must all count).
* ``collect_events``, ``wait_for_event`` and ``request_info`` need round trips to the
  live run while the body runs: they are refused with a clear error.

A recording port holds data only (names, the graph's types, the reducers, a copy of the
state), never the run or its plan.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..core import Graph
from ..errors import WorkflowRuntimeError
from ..state.store import StateStore
from .scope import Scope, set_scope

__all__ = ["Effects", "RecordingPort", "run_recorded"]


@dataclass(slots=True)
class Effects:
    """What a body did to its run, in the order it did it.

    Attributes:
        ops: ``("send", message, step or None)``, ``("stream", event, None)``,
            ``("set", key, value)`` or ``("delete", key, None)``.
    """

    ops: list[tuple[str, object, object]] = field(default_factory=list)


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
        ops = self.effects.ops
        for key, value in writes:
            self.data[key] = value
            ops.append(("set", key, value))
        for key, value in merges:
            ops.append(("set", key, value))
        for key in deletes:
            self.data.pop(key, None)
            ops.append(("delete", key, None))


class RecordingPort:
    """The step port of a body that runs away from its run: it records the body's effects."""

    def __init__(
        self,
        *,
        run_id: str,
        request_prefix: str,
        name: str,
        graph: Graph,
        reducers: Mapping[str, Callable[[Any, Any], Any]],
        context_type: Callable[[Any], Any],
        backend: str,
        store: Mapping[str, Any],
    ) -> None:
        self.run_id = run_id
        self.request_prefix = request_prefix
        self.name = name
        self.graph = graph
        self.context_type = context_type
        self.backend = backend
        self.effects = Effects()
        data = dict(store)
        self.store = StateStore.attached(data, reducers, _RecordingSink(data, self.effects))

    @property
    def running(self) -> bool:
        return True

    def where(self, scope: Scope | None) -> str:
        if scope is None:
            return "the caller"
        node = self.graph.nodes[scope.node].name
        return f"{self.graph.node_kind} {node!r} of workflow {self.name!r}"

    def emit(self, scope: Scope, message: object) -> None:
        self.effects.ops.append(("send", message, None))

    def send(self, scope: Scope | None, message: object, step: str | None) -> None:
        if step is not None:
            self.graph.target(self.where(scope), step, message)  # raises in the body, as live
        self.effects.ops.append(("send", message, step))

    def publish(self, scope: Scope | None, event: object) -> None:
        self.effects.ops.append(("stream", event, None))

    def limit(self, scope: Scope | None, name: str) -> NoReturn:
        assert scope is not None
        self._refuse(scope, "limit")

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

    def request_id(self, scope: Scope) -> str:
        self._refuse(scope, "request_info")

    def request(
        self,
        scope: Scope,
        request_id: str,
        data: object,
        response_type: Any,
        event: object,
        forward: Callable[[object], Awaitable[None] | None] | None = None,
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
    result = body(owner, port.context_type(port), message)
    if inspect.isawaitable(result):
        awaitable = result

        async def finish() -> Any:
            return await awaitable

        result = asyncio.run(finish())
    return result, port.effects
