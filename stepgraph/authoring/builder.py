"""WorkflowBuilder: executor graphs with explicit edges, compiled to the kernel's Graph.

Edges are grouped by kind (single, fan-out, fan-in, switch). Routing a message
evaluates the groups of its sender in the order they were added; each group adds
its targets. A fan-in group holds messages until every source has sent one (G9).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence

from ..backends.base import Backend
from ..core import FanIn, Graph, Node
from ..errors import WorkflowValidationError
from ..graph_events import RequestInfoEvent, WorkflowOutputEvent
from ..limits import Limiter
from ..runtime.clock import Clock
from ..runtime.observers import RunObserver
from ..runtime.plan import RunPlan
from ..runtime.workflow_context import WorkflowContext
from ..state.reducers import Reducer
from ..stores.base import Store
from ..telemetry.event_log import EventLog
from .edges import Case, Condition, Default, EdgeGroup, NodeRef, Selector, label, node_id
from .executor import Executor, ExecutorProgram, compile_executor
from .graph_style import GraphStyle, compile_router
from .graph_workflow import GraphWorkflow
from .introspect import check_reducers

__all__ = ["Case", "Default", "WorkflowBuilder"]


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
        self._groups: list[EdgeGroup] = []
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
        group = EdgeGroup("edge", (self._register(source),), (self._register(target),), condition)
        self._groups.append(group)
        return self

    def add_fan_out(
        self, source: NodeRef, targets: Sequence[NodeRef], selector: Selector | None = None
    ) -> WorkflowBuilder:
        """Each message from ``source`` goes to every target, or to those ``selector`` picks.

        ``selector(message, target_ids)`` returns the ids of the targets to use.
        """
        if not targets:
            raise WorkflowValidationError(f"add_fan_out({node_id(source)!r}, []): no targets")
        group = EdgeGroup(
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
            raise WorkflowValidationError(f"add_fan_in([], {node_id(target)!r}): no sources")
        group = EdgeGroup(
            "fan_in", tuple(self._register(s) for s in sources), (self._register(target),)
        )
        self._groups.append(group)
        return self

    def add_switch(self, source: NodeRef, cases: Sequence[Case | Default]) -> WorkflowBuilder:
        """Each message from ``source`` goes to the first Case that holds, else to Default."""
        defaults = [c for c in cases if isinstance(c, Default)]
        if len(defaults) > 1 or (defaults and not isinstance(cases[-1], Default)):
            raise WorkflowValidationError(
                f"add_switch({node_id(source)!r}, ...): at most one Default, and it comes last"
            )
        for case in cases:
            self._register(case.target)
        group = EdgeGroup(
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
        verbose: bool = False,
        observers: Sequence[RunObserver] = (),
        journal: RunObserver | None = None,
        clock: Clock | None = None,
        store: Store | None = None,
        serializer: str = "json",
        backends: Mapping[str, Backend] | None = None,
        event_log: str | os.PathLike[str] | EventLog | None = None,
        limiters: Sequence[Limiter] = (),
    ) -> GraphWorkflow:
        """Validate the graph and compile it.

        The keywords are the run options, as on ``Workflow(...)``: ``mode``, ``timeout``,
        ``max_supersteps``, ``max_concurrency``, ``verbose``, ``observers``, ``journal``,
        ``clock``, ``store`` (durable runs), ``serializer`` and ``backends`` (by name,
        for executors made with ``backend="name"``); ``name`` names the workflow in
        messages and exports.

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
        start_id = node_id(self._start)
        given = name or self._name
        name = given or f"{start_id}-graph"
        order = self._node_order(name, start_id)
        index = {ident: i for i, ident in enumerate(order)}
        executors = [self._executors[ident] for ident in order]
        programs = tuple(compile_executor(node) for node in executors)
        self._check_reachable(name, order, index)
        self._check_types(name, programs, index)
        nodes = tuple(
            Node(name=p.name, index=i, accepts=p.accepts, num_workers=p.config.num_workers)
            for i, p in enumerate(programs)
        )
        fan_ins = tuple(
            FanIn(
                target=index[node_id(g.targets[0])],
                sources=tuple(index[node_id(s)] for s in g.sources),
                label=f"fan-in into {node_id(g.targets[0])!r}",
            )
            for g in self._groups
            if g.kind == "fan_in"
        )
        graph = Graph(
            name=name,
            nodes=nodes,
            stop_types=(),
            input_request_types=(RequestInfoEvent,),
            finish_when_idle=True,
            entry=(index[start_id],),
            node_kind="executor",
            output_types=(WorkflowOutputEvent,),
            fan_ins=fan_ins,
        )
        plan = RunPlan(
            name=name,
            telemetry_name=given or GraphWorkflow.__qualname__,
            graph=graph,
            programs=programs,
            context_type=WorkflowContext,
            style=GraphStyle(compile_router(self._groups, index, len(order))),
            reducers=check_reducers(name, self._reducers),
        )
        return GraphWorkflow(
            plan,
            edges=tuple(self._edge_views()),
            start=start_id,
            mode=mode,
            timeout=timeout,
            max_supersteps=max_supersteps,
            max_concurrency=max_concurrency,
            verbose=verbose,
            observers=observers,
            journal=journal,
            clock=clock,
            store=store,
            serializer=serializer,
            backends=backends,
            event_log=event_log,
            limiters=limiters,
        )

    def _node_order(self, name: str, start_id: str) -> list[str]:
        for group in self._groups:
            for ref in (*group.sources, *group.targets):
                if node_id(ref) not in self._executors:
                    raise WorkflowValidationError(
                        f"workflow {name!r}: an edge names executor {node_id(ref)!r}, which is not "
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
                out[index[node_id(source)]].update(index[node_id(t)] for t in group.targets)
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
                receiver = programs[index[node_id(group.targets[0])]]
                if not any(issubclass(list, t) for t in receiver.accepts):
                    raise WorkflowValidationError(
                        f"workflow {name!r}: fan-in target {receiver.name!r} has no "
                        f"handler for a list (annotate it `messages: list[...]`)"
                    )
                continue
            for source in group.sources:
                program = programs[index[node_id(source)]]
                sent = _declared_outputs(program)
                if sent is None:
                    continue
                for target in group.targets:
                    receiver = programs[index[node_id(target)]]
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
                    node_id(group.sources[0]),
                    node_id(group.targets[0]),
                    label(group.condition),
                    "edge",
                )
            elif group.kind == "fan_out":
                for target in group.targets:
                    yield (
                        node_id(group.sources[0]),
                        node_id(target),
                        label(group.selector),
                        "fan_out",
                    )
            elif group.kind == "fan_in":
                for source in group.sources:
                    yield (node_id(source), node_id(group.targets[0]), "", "fan_in")
            else:
                for case in group.cases:
                    text = "default" if isinstance(case, Default) else label(case.condition)
                    yield (node_id(group.sources[0]), node_id(case.target), text, "switch")


def _declared_outputs(program: ExecutorProgram) -> tuple[type, ...] | None:
    """What a node's handlers declare they send; None when any handler does not say."""
    found: list[type] = []
    for spec in (*program.handlers, *program.responses):
        if spec.output_types is None:
            return None
        found.extend(spec.output_types)
    return tuple(found)
