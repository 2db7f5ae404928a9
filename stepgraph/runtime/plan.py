"""RunPlan: everything a run needs from its definition, built once per workflow.

An authoring style (``@step`` workflows, executor graphs) compiles to a :class:`RunPlan`:
the kernel graph, one :class:`NodeProgram` per node, and a :class:`RunStyle` that says
what is particular to the style (how a finished run's result is shaped, how a message
from the caller is checked, how a node's messages are routed along explicit edges,
which events tell a stream consumer about the run's life). The runtime has no other
knowledge of the authoring styles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..core import Graph, RunState
from ..errors import WorkflowValidationError
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .backends import Backend
    from .observers import RunObserver
    from .stream import EventStream

__all__ = ["NodeProgram", "RunPlan", "RunStyle", "StepConfig", "backend_name", "placed"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class StepConfig:
    """A node's options: ``@step(...)`` or ``Executor(...)`` keywords."""

    num_workers: int = 1
    retry_policy: RetryPolicy | None = None
    timeout: float | None = None
    backend: str | None = None  # the name of the backend its body runs on (None: default)
    limiter: str | None = None  # the name of the limiter its body holds (None: none)


class NodeProgram(Protocol):
    """What the runtime needs of a node: its name, its options, and how to call it.

    ``call(owner, ctx, message)`` returns an awaitable of the body's result. ``backend``
    is where the body runs when it is not the default (inline for ``async def``, a thread
    for ``def``); a backend that is not in-process gets a recording context instead of
    the live one, and the body's effects come back as data.
    """

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> StepConfig: ...
    @property
    def call(self) -> Callable[[Any, Any, Any], Awaitable[Any]]: ...
    @property
    def body(self) -> Callable[[Any, Any, Any], Any]:
        """``body(owner, ctx, message)``: the body itself, sync or async, on no backend."""
        ...

    def is_async_for(self, message: Any) -> bool:
        """Whether ``body`` gives a coroutine for ``message`` (``body`` may be a plain
        function around an ``async def``: a backend cannot tell from it)."""
        ...

    @property
    def returns_events(self) -> bool: ...
    @property
    def backend(self) -> Backend | None: ...
    @property
    def asks(self) -> bool:
        """Whether the body may return an input request (its id is set as it returns)."""
        ...


class RunStyle(Protocol):
    """What an authoring style decides about its runs (see the module docstring)."""

    def result(self, state: RunState, run_id: str) -> object:
        """The value awaiting the handler gives when the run finished."""
        ...

    def closing_events(self, state: RunState) -> Iterable[object]:
        """Events put on the stream when the run finished, before it closes."""
        ...

    def check_external(self, event: object, where: str) -> None:
        """Raise when ``event`` cannot be sent into a run from outside."""
        ...

    def route(self, sender: int, message: object) -> tuple[int, ...] | None:
        """The targets of a node's message along explicit edges; None: by type (kernel)."""
        ...

    def lifecycle(self, stream: EventStream) -> RunObserver | None:
        """An observer putting lifecycle events on ``stream`` once it is consumed, or None."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """A compiled workflow, ready to run.

    Attributes:
        name: the workflow's name, used in messages and stores.
        telemetry_name: its name in spans, metrics and event logs where that is not
            ``name``: a built graph without a name is ``"<start id>-graph"`` in messages
            and stores (two graphs keep apart there) and its class's ``__qualname__`` in
            telemetry, as for every workflow given no name. None: ``name``.
        graph: the kernel graph.
        programs: one per node, in graph order.
        context_type: the facade given to node code (``Context`` or ``WorkflowContext``).
        style: what the authoring style decides (result, routing, lifecycle events).
        reducers: shared-state keys whose writes merge (see ``stepgraph.state``).
        derived: what other layers compute from the plan once, by their own key (a
            durable run's checkpoint header, say: see :meth:`derive`); a plan made by
            ``dataclasses.replace`` starts with none.
    """

    name: str
    telemetry_name: str | None = None
    graph: Graph
    programs: tuple[NodeProgram, ...]
    context_type: Callable[[Any], Any]
    style: RunStyle
    reducers: Mapping[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    retried: tuple[bool, ...] = field(init=False)  # which nodes have a retry policy
    named_backends: bool = field(init=False)  # whether a node names its backend
    named_limiters: bool = field(init=False)  # whether a node names a limiter
    derived: dict[str, Any] = field(init=False, default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        retried = tuple(p.config.retry_policy is not None for p in self.programs)
        object.__setattr__(self, "retried", retried)
        named = any(p.config.backend is not None for p in self.programs)
        object.__setattr__(self, "named_backends", named)
        limited = any(p.config.limiter is not None for p in self.programs)
        object.__setattr__(self, "named_limiters", limited)

    def derive(self, key: str, make: Callable[[], _T]) -> _T:
        """What ``make()`` computes from the plan, made at the first call with ``key``
        and kept with the plan for the runs that follow."""
        found = self.derived.get(key)
        if found is None:
            found = self.derived[key] = make()
        return found


def backend_name(program: NodeProgram) -> str:
    """The name of the backend ``program`` runs on, as its workflow calls it (the key of
    ``backends=`` the step names: one backend object may go by several names, in one
    workflow or in several)."""
    backend = program.backend
    assert backend is not None
    return program.config.backend or backend.name


def placed(
    plan: RunPlan,
    backends: Mapping[str, Backend],
    where: str,
    limiters: Mapping[str, object] | None = None,
) -> RunPlan:
    """``plan`` with each node that names a backend (``@step(backend=...)``,
    ``Executor(backend=...)``) on that backend, taken from ``backends``.

    Raises:
        WorkflowValidationError: a node names a backend that ``backends`` does not have.
    """
    for program in plan.programs if plan.named_limiters else ():  # named limiters: declared
        name = program.config.limiter
        if name is not None and name not in (limiters or {}):
            known = ", ".join(repr(n) for n in limiters or {}) or "none"
            raise WorkflowValidationError(
                f"{plan.graph.node_kind} {program.name!r} of {where} holds limiter {name!r}, "
                f"which is not declared (declared: {known}); pass "
                f"limiters=[Limiter({name!r}, ...)]"
            )
    if not plan.named_backends:
        return plan
    programs = list(plan.programs)
    changed = False
    for position, program in enumerate(programs):
        name = program.config.backend
        if name is None:
            continue
        backend = backends.get(name)
        if backend is None:
            known = ", ".join(repr(n) for n in backends) or "none"
            raise WorkflowValidationError(
                f"{plan.graph.node_kind} {program.name!r} of {where} runs on backend {name!r}, "
                f"which is not among its backends (it has: {known}); pass "
                f"backends={{{name!r}: ...}}"
            )
        programs[position] = dataclasses.replace(program, backend=backend)  # type: ignore[type-var]
        changed = True
    return dataclasses.replace(plan, programs=tuple(programs)) if changed else plan
