"""RunPlan: everything a run needs from its definition, built once per workflow."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..core import Graph

if TYPE_CHECKING:
    from ..authoring.step import StepConfig

__all__ = ["NodeProgram", "RunPlan"]


class NodeProgram(Protocol):
    """What the runtime needs of a node: its name, its options, and how to call it."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> StepConfig: ...
    @property
    def call(self) -> Callable[[Any, Any, Any], Awaitable[Any]]: ...
    @property
    def returns_events(self) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """A compiled workflow, ready to run.

    Attributes:
        name: the workflow's name, used in messages.
        graph: the kernel graph.
        programs: one per node, in graph order.
        context_type: the facade given to node code (``Context`` or ``WorkflowContext``).
        reducers: shared-state keys whose writes merge (see ``stepgraph.state``).
        executor_graph: whether runs end with a ``RunResult`` and stream lifecycle events.
    """

    name: str
    graph: Graph
    programs: tuple[NodeProgram, ...]
    context_type: Callable[[Any], Any]
    reducers: Mapping[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    executor_graph: bool = False
