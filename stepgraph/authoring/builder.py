"""WorkflowBuilder: executor graphs with explicit edges, compiled to the kernel's Graph.

Edges are grouped by kind (single, fan-out, fan-in, switch). Routing a message
evaluates the groups of its sender in the order they were added; each group adds
its targets. A fan-in group holds messages until every source has sent one (G9).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import EXTERNAL, FanIn, Graph, Node
from ..errors import UnknownStepError, WorkflowValidationError
from ..graph_events import RequestInfoEvent, WorkflowOutputEvent
from ..runtime.plan import RunPlan
from ..runtime.run import ResponseMessage
from ..runtime.workflow_context import WorkflowContext
from ..state.reducers import Reducer
from .executor import Executor, ExecutorProgram, compile_executor
from .graph_workflow import GraphWorkflow

__all__ = ["Case", "Default", "WorkflowBuilder"]

NodeRef = Executor | str
Condition = Callable[[Any], bool]
Selector = Callable[[Any, list[str]], Iterable[str]]


@dataclass(frozen=True, slots=True)
class Case:
    """A branch of ``add_switch``: messages for which ``condition`` holds go to ``target``."""

    condition: Condition
    target: NodeRef


@dataclass(frozen=True, slots=True)
class Default:
    """The branch of ``add_switch`` taken when no Case holds."""

    target: NodeRef


@dataclass(frozen=True, slots=True)
class _Group:
    """An edge group as declared: kind, sources, targets, and its routing function."""

    kind: str  # "edge" | "fan_out" | "fan_in" | "switch"
    sources: tuple[NodeRef, ...]
    targets: tuple[NodeRef, ...]
    condition: Condition | None = None
    selector: Selector | None = None
    cases: tuple[Case | Default, ...] = ()


def _label(fn: Callable[..., Any] | None) -> str:
    if fn is None:
        return ""
    name = getattr(fn, "__name__", type(fn).__name__)
    return "lambda" if name == "<lambda>" else name


class WorkflowBuilder:
    """Build an executor graph: nodes joined by edges, fan-out, fan-in, switches.

    Args:
        start: the executor that receives ``run(message)``.
        reducers: shared-state keys whose concurrent writes merge (``stepgraph.state``).
        name: the workflow's name, used in messages and exports.

    Example::

        wf = (WorkflowBuilder(start=upper)
              .add_edge(upper, rev, condition=lambda text: len(text) < 10)
              .build())
        result = await wf.run("hello")
        print(result.outputs)
    """

    def __init__(
        self,
        start: NodeRef | None = None,
        *,
        reducers: dict[str, Reducer] | None = None,
        name: str | None = None,
    ) -> None:
        self._executors: dict[str, Executor] = {}
        self._groups: list[_Group] = []
        self._start: NodeRef | None = None
        self._reducers = dict(reducers or {})
        self._name = name
        if start is not None:
            self.set_start_executor(start)

    # -- declaring ------------------------------------------------------------------------------

    def add_executor(self, node: Executor) -> WorkflowBuilder:
        """Register ``node`` (edges register their executors too)."""
        self._register(node)
        return self

    def set_start_executor(self, node: NodeRef) -> WorkflowBuilder:
        """Set the executor that receives the run's input."""
        self._start = self._register(node)
        return self

    def add_edge(
        self, source: NodeRef, target: NodeRef, condition: Condition | None = None
    ) -> WorkflowBuilder:
        """Messages from ``source`` go to ``target`` (when ``condition(message)`` holds)."""
        group = _Group("edge", (self._register(source),), (self._register(target),), condition)
        self._groups.append(group)
        return self

    def add_fan_out(
        self, source: NodeRef, targets: Sequence[NodeRef], selector: Selector | None = None
    ) -> WorkflowBuilder:
        """Each message from ``source`` goes to every target, or to those ``selector`` picks.

        ``selector(message, target_ids)`` returns the ids of the targets to use.
        """
        if not targets:
            raise WorkflowValidationError(f"add_fan_out({_id(source)!r}, []): no targets")
        group = _Group(
            "fan_out",
            (self._register(source),),
            tuple(self._register(t) for t in targets),
            selector=selector,
        )
        self._groups.append(group)
        return self

    def add_fan_in(self, sources: Sequence[NodeRef], target: NodeRef) -> WorkflowBuilder:
        """``target`` receives a list with one message from each source, in source order.

        A batch is released when every source has sent one; extra messages wait for
        the next batch and are never lost.
        """
        if len(sources) < 1:
            raise WorkflowValidationError(f"add_fan_in([], {_id(target)!r}): no sources")
        group = _Group(
            "fan_in", tuple(self._register(s) for s in sources), (self._register(target),)
        )
        self._groups.append(group)
        return self

    def add_switch(self, source: NodeRef, cases: Sequence[Case | Default]) -> WorkflowBuilder:
        """Each message from ``source`` goes to the first Case that holds, else to Default."""
        defaults = [c for c in cases if isinstance(c, Default)]
        if len(defaults) > 1 or (defaults and not isinstance(cases[-1], Default)):
            raise WorkflowValidationError(
                f"add_switch({_id(source)!r}, ...): at most one Default, and it comes last"
            )
        for case in cases:
            self._register(case.target)
        group = _Group(
            "switch",
            (self._register(source),),
            tuple(case.target for case in cases),
            cases=tuple(cases),
        )
        self._groups.append(group)
        return self

    def add_chain(self, executors: Sequence[NodeRef]) -> WorkflowBuilder:
        """Edges from each executor to the next."""
        for source, target in itertools.pairwise(executors):
            self.add_edge(source, target)
        if len(executors) == 1:
            self._register(executors[0])
        return self

    def _register(self, node: NodeRef) -> NodeRef:
        if isinstance(node, str):
            return node
        if not isinstance(node, Executor):
            raise WorkflowValidationError(
                f"expected an Executor (or an executor id), got {node!r}; wrap functions "
                f"with @executor"
            )
        known = self._executors.get(node.id)
        if known is not None and known is not node:
            raise WorkflowValidationError(
                f"two different executors have the id {node.id!r} ({known!r} and {node!r}); "
                f"give each a unique id"
            )
        self._executors[node.id] = node
        return node

    # -- building -------------------------------------------------------------------------------

    def build(
        self,
        *,
        mode: str = "superstep",
        timeout: float | None = None,
        max_supersteps: int = 10_000,
        max_concurrency: int | None = None,
        name: str | None = None,
    ) -> GraphWorkflow:
        """Validate the graph and compile it.

        Raises:
            WorkflowValidationError: no start executor, an unknown or duplicate id, an
                unreachable executor, or an edge whose target cannot handle what its
                source declares it sends (``WorkflowContext[T]``).
        """
        if self._start is None:
            raise WorkflowValidationError(
                "the graph has no start executor: WorkflowBuilder(start=...) or "
                "set_start_executor(...)"
            )
        start_id = _id(self._start)
        name = name or self._name or f"{start_id}-graph"
        order = self._node_order(name, start_id)
        index = {node_id: i for i, node_id in enumerate(order)}
        executors = [self._executors[node_id] for node_id in order]
        programs = tuple(compile_executor(node) for node in executors)
        self._check_reachable(name, order, index)
        self._check_types(name, programs, index)
        nodes = tuple(
            Node(name=p.name, index=i, accepts=p.accepts, num_workers=p.config.num_workers)
            for i, p in enumerate(programs)
        )
        fan_ins = tuple(
            FanIn(
                target=index[_id(g.targets[0])],
                sources=tuple(index[_id(s)] for s in g.sources),
                label=f"fan-in into {_id(g.targets[0])!r}",
            )
            for g in self._groups
            if g.kind == "fan_in"
        )
        graph = Graph(
            name=name,
            nodes=nodes,
            stop_types=(),
            input_request_types=(RequestInfoEvent,),
            answer_types=(ResponseMessage,),
            finish_when_idle=True,
            router=_make_router(self._groups, index, len(order), index[start_id]),
            output_types=(WorkflowOutputEvent,),
            fan_ins=fan_ins,
        )
        for key, reducer in self._reducers.items():
            if not callable(reducer):
                raise WorkflowValidationError(
                    f"workflow {name!r}: reducers[{key!r}] is {reducer!r}, not a function"
                )
        plan = RunPlan(
            name=name,
            graph=graph,
            programs=programs,
            context_type=WorkflowContext,
            reducers=dict(self._reducers),
            executor_graph=True,
        )
        return GraphWorkflow(
            plan,
            edges=tuple(self._edge_views()),
            start=start_id,
            mode=mode,
            timeout=timeout,
            max_supersteps=max_supersteps,
            max_concurrency=max_concurrency,
        )

    def _node_order(self, name: str, start_id: str) -> list[str]:
        for group in self._groups:
            for ref in (*group.sources, *group.targets):
                if _id(ref) not in self._executors:
                    raise WorkflowValidationError(
                        f"workflow {name!r}: an edge names executor {_id(ref)!r}, which is not "
                        f"in the graph; known executors: {sorted(self._executors)}"
                    )
        if start_id not in self._executors:
            raise WorkflowValidationError(
                f"workflow {name!r}: the start executor {start_id!r} is not in the graph"
            )
        return [start_id, *(i for i in self._executors if i != start_id)]

    def _successors(self, index: dict[str, int]) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {i: set() for i in index.values()}
        for group in self._groups:
            for source in group.sources:
                out[index[_id(source)]].update(index[_id(t)] for t in group.targets)
        return out

    def _check_reachable(self, name: str, order: list[str], index: dict[str, int]) -> None:
        successors = self._successors(index)
        seen = {0}
        frontier = [0]
        while frontier:
            for nxt in successors[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        unreachable = [order[i] for i in range(len(order)) if i not in seen]
        if unreachable:
            raise WorkflowValidationError(
                f"workflow {name!r}: executors {unreachable} cannot be reached from the start "
                f"executor {order[0]!r}; connect them with an edge or remove them"
            )

    def _check_types(
        self, name: str, programs: tuple[ExecutorProgram, ...], index: dict[str, int]
    ) -> None:
        for group in self._groups:
            if group.kind == "fan_in":  # a fan-in delivers lists, whatever its sources declare
                receiver = programs[index[_id(group.targets[0])]]
                if not any(issubclass(list, t) for t in receiver.accepts):
                    raise WorkflowValidationError(
                        f"workflow {name!r}: fan-in target {receiver.name!r} has no "
                        f"handler for a list (annotate it `messages: list[...]`)"
                    )
                continue
            for source in group.sources:
                program = programs[index[_id(source)]]
                sent = _declared_outputs(program)
                if sent is None:
                    continue
                for target in group.targets:
                    receiver = programs[index[_id(target)]]
                    for kind in sent:
                        if not any(issubclass(kind, t) for t in receiver.accepts):
                            raise WorkflowValidationError(
                                f"workflow {name!r}: executor {program.name!r} sends "
                                f"{kind.__name__} to {receiver.name!r}, which has no handler "
                                f"for {kind.__name__} (it handles "
                                f"{', '.join(t.__name__ for t in receiver.accepts)})"
                            )

    def _edge_views(self) -> Iterable[tuple[str, str, str, str]]:
        for group in self._groups:
            if group.kind == "edge":
                yield (
                    _id(group.sources[0]),
                    _id(group.targets[0]),
                    _label(group.condition),
                    "edge",
                )
            elif group.kind == "fan_out":
                for target in group.targets:
                    yield (_id(group.sources[0]), _id(target), _label(group.selector), "fan_out")
            elif group.kind == "fan_in":
                for source in group.sources:
                    yield (_id(source), _id(group.targets[0]), "", "fan_in")
            else:
                for case in group.cases:
                    label = "default" if isinstance(case, Default) else _label(case.condition)
                    yield (_id(group.sources[0]), _id(case.target), label, "switch")


def _id(node: NodeRef) -> str:
    return node if isinstance(node, str) else node.id


def _declared_outputs(program: ExecutorProgram) -> tuple[type, ...] | None:
    """What a node's handlers declare they send; None when any handler does not say."""
    found: list[type] = []
    for spec in (*program.handlers, *program.responses):
        if spec.output_types is None:
            return None
        found.extend(spec.output_types)
    return tuple(found)


def _make_router(
    groups: list[_Group], index: dict[str, int], size: int, start: int
) -> Callable[[int, object], tuple[int, ...]]:
    """Compile the edge groups into ``route(sender, message) -> target indexes``."""
    from_start = (start,)
    table: list[list[Callable[[object], tuple[int, ...]]]] = [[] for _ in range(size)]
    fixed: list[tuple[int, ...] | None] = [() for _ in range(size)]
    for group in groups:
        for source in group.sources:
            position = index[_id(source)]
            table[position].append(_group_route(group, index))
            plain = group.kind in ("edge", "fan_in", "fan_out") and group.condition is None
            plain = plain and group.selector is None
            current = fixed[position]
            if plain and current is not None:
                if group.kind == "fan_in":
                    fixed[position] = (*current, index[_id(group.targets[0])])
                else:
                    fixed[position] = (*current, *(index[_id(t)] for t in group.targets))
            else:
                fixed[position] = None

    def route(sender: int, message: object) -> tuple[int, ...]:
        if sender == EXTERNAL:
            return from_start
        if type(message) is RequestInfoEvent:
            return ()  # a request goes to the caller (the stream), never along edges
        always = fixed[sender]
        if always is not None:
            return always
        found: list[int] = []
        for group_route in table[sender]:
            found.extend(group_route(message))
        return tuple(found)

    return route


def _noted(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    """Wrap a user routing function so that its errors name the edge they came from."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            exc.add_note(f"stepgraph: raised by {what}")
            raise

    return call


def _group_route(group: _Group, index: dict[str, int]) -> Callable[[object], tuple[int, ...]]:
    targets = tuple(index[_id(t)] for t in group.targets)
    if group.kind == "fan_in":
        join = (index[_id(group.targets[0])],)
        return lambda message: join
    source = _id(group.sources[0])
    if group.kind == "edge":
        if group.condition is None:
            return lambda message: targets
        condition = _noted(
            group.condition,
            f"the condition {_label(group.condition)!r} of the edge "
            f"{source!r} -> {_id(group.targets[0])!r}",
        )
        return lambda message: targets if condition(message) else ()
    if group.kind == "fan_out":
        if group.selector is None:
            return lambda message: targets
        selector = _noted(
            group.selector,
            f"the selector {_label(group.selector)!r} of the fan-out from {source!r}",
        )
        ids = [_id(t) for t in group.targets]
        by_id = dict(zip(ids, targets, strict=True))

        def select(message: object) -> tuple[int, ...]:
            chosen = []
            for target_id in selector(message, list(ids)):
                if target_id not in by_id:
                    raise UnknownStepError(
                        f"the selector of the fan-out from {source!r} chose {target_id!r}, "
                        f"which is not one of its targets {ids}"
                    )
                chosen.append(by_id[target_id])
            return tuple(chosen)

        return select
    branches = [
        (
            None
            if isinstance(case, Default)
            else _noted(
                case.condition,
                f"the case {_label(case.condition)!r} of the switch from {source!r} "
                f"to {_id(case.target)!r}",
            ),
            index[_id(case.target)],
        )
        for case in group.cases
    ]

    def switch(message: object) -> tuple[int, ...]:
        for condition, target in branches:
            if condition is None or condition(message):
                return (target,)
        return ()

    return switch
