"""The compiled graph: the kernel's read-only view of a workflow definition.

Both authoring styles compile to a :class:`Graph`, which is data only: names, indexes
and types, never a function of the user's. The kernel only needs to know, for a
message, which nodes receive it by type (:meth:`Graph.route`), whether a message ends
the run (:meth:`Graph.is_stop`), and whether it asks the outside world for input
(:meth:`Graph.is_input_request`). Routing by type is cached per concrete message type,
so a hop costs one dict lookup. Graphs with explicit edges (``entry`` set) are routed by
the shell, which runs the edges' conditions next to the step and hands the kernel the
targets inside the tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import UnknownStepError, UnroutableEventError

__all__ = ["EXTERNAL", "FanIn", "Graph", "Node"]

EXTERNAL = -1
"""Sender index used for messages that come from outside the run (start, send_event)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One node (a step or an executor) of a compiled graph.

    Attributes:
        name: unique name, used in every message about the node.
        index: position in the graph's node order (the order of deterministic delivery).
        accepts: message types the node accepts; subclasses match.
        num_workers: how many messages the node may process at once (G4).
    """

    name: str
    index: int
    accepts: tuple[type, ...]
    num_workers: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class FanIn:
    """A fan-in edge: ``target`` receives one list per complete set, one message per source.

    Attributes:
        target: index of the node receiving the batches.
        sources: indexes of the source nodes, in batch order.
        label: name used in stall messages.
    """

    target: int
    sources: tuple[int, ...]
    label: str = ""


@dataclass(slots=True, kw_only=True, eq=False)
class Graph:
    """A compiled, validated workflow graph.

    Attributes:
        name: the workflow's name, used in error messages.
        nodes: the nodes, in graph order.
        stop_types: message types that end the run when emitted.
        input_request_types: message types that ask the caller for input; when no node
            accepts one, it is published on the stream and the run waits (a pause, not a stall).
        held_types: message types that may arrive with no accepting node (for example a
            human response); they are held for a later ``wait_for_event`` instead of failing.
        answer_types: message types from the caller that answer an input request; only
            they end a pause for input.
        finish_when_idle: when true, a run with nothing left to do ends successfully
            (executor graphs) instead of raising ``WorkflowStalled``.
        entry: for graphs with explicit edges, the nodes that receive messages from the
            caller; the shell resolves every other message's targets along the edges and
            the kernel checks that each target accepts it. ``None``: messages are routed
            by type to every accepting node.
        node_kind: what a node is called in messages (``"step"``, ``"executor"``).
        output_types: message types that are run outputs: recorded in order and published
            on the stream, never routed.
        fan_ins: fan-in edges; a message from a source to a fan-in's target is held until
            every source has sent one, then the target gets them as one list (G9).
    """

    name: str
    nodes: tuple[Node, ...]
    stop_types: tuple[type, ...]
    input_request_types: tuple[type, ...] = ()
    held_types: tuple[type, ...] = ()
    answer_types: tuple[type, ...] = ()
    finish_when_idle: bool = False
    entry: tuple[int, ...] | None = None
    node_kind: str = "step"
    output_types: tuple[type, ...] = ()
    fan_ins: tuple[FanIn, ...] = ()
    index_of: dict[str, int] = field(init=False)
    node_names: tuple[str, ...] = field(init=False)  # each node's name, by index
    fan_in_of: dict[tuple[int, int], tuple[int, int]] = field(init=False)
    limits: tuple[int, ...] = field(init=False)  # each node's num_workers, by index
    _routes: dict[type, tuple[int, ...]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.index_of = {node.name: node.index for node in self.nodes}
        self.node_names = tuple(node.name for node in self.nodes)
        self.limits = tuple(node.num_workers for node in self.nodes)
        self.fan_in_of = {
            (source, fan_in.target): (group, position)
            for group, fan_in in enumerate(self.fan_ins)
            for position, source in enumerate(fan_in.sources)
        }
        for position, node in enumerate(self.nodes):
            if node.index != position:
                raise ValueError(f"node {node.name!r} has index {node.index}, expected {position}")

    @property
    def explicit_routing(self) -> bool:
        """Whether messages follow explicit edges (resolved by the shell) rather than types."""
        return self.entry is not None

    def route(self, sender: int, message: object) -> tuple[int, ...]:
        """The nodes that receive ``message`` from ``sender`` when the tick names no targets.

        By type; in a graph with explicit edges, the entry nodes for the caller's messages
        and no node for a node's (the shell resolves those).
        """
        if self.entry is not None:
            return self.entry if sender == EXTERNAL else ()
        kind = type(message)
        targets = self._routes.get(kind)
        if targets is None:
            targets = tuple(node.index for node in self.nodes if issubclass(kind, node.accepts))
            self._routes[kind] = targets
        return targets

    def target(self, where: str, step: str, message: object) -> int:
        """The index of node ``step``, which ``message`` is sent to by ``where``.

        Raises:
            UnknownStepError: the graph has no node named ``step``.
            UnroutableEventError: node ``step`` does not accept the message (a stop
                message goes anywhere: it ends the run).
        """
        kind = self.node_kind
        index = self.index_of.get(step)
        if index is None:
            raise UnknownStepError(
                f"{where} sent {type(message).__name__} to {kind} {step!r}, but workflow "
                f"{self.name!r} has no such {kind}; it has {sorted(self.index_of)}"
            )
        if not self.accepts(index, message) and not self.is_stop(message):
            accepted = [t.__name__ for t in self.nodes[index].accepts]
            raise UnroutableEventError(
                f"{where} sent {type(message).__name__} to {kind} {step!r}, which does not "
                f"accept it (it accepts {accepted})"
            )
        return index

    def accepts(self, index: int, message: object) -> bool:
        """Whether node ``index`` accepts ``message``."""
        return isinstance(message, self.nodes[index].accepts)

    def is_stop(self, message: object) -> bool:
        """Whether ``message`` ends the run."""
        return isinstance(message, self.stop_types)

    def is_input_request(self, message: object) -> bool:
        """Whether ``message`` asks the caller for input."""
        return isinstance(message, self.input_request_types)

    def is_output(self, message: object) -> bool:
        """Whether ``message`` is a run output."""
        return isinstance(message, self.output_types)

    def is_answer(self, message: object) -> bool:
        """Whether ``message`` (from the caller) answers an input request."""
        return isinstance(message, self.answer_types)

    def is_held(self, message: object) -> bool:
        """Whether ``message`` may wait, unaccepted, for a ``wait_for_event``."""
        return isinstance(message, self.held_types)

    def names(self, indexes: Sequence[int]) -> list[str]:
        """The names of the nodes at ``indexes``."""
        return [self.nodes[i].name for i in indexes]
