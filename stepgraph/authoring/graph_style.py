"""How executor graphs run: messages routed along their edges, results as ``RunResult``.

:class:`GraphStyle` is the ``RunStyle`` of graphs built by ``WorkflowBuilder``. Its router
is compiled from the edge groups once per graph; the runtime calls it in the shell when
an executor's messages become a tick, so edge conditions, fan-out selectors and switch
cases run next to the executor and the kernel only checks and delivers the targets.
A condition that raises fails the run with its own exception, noted with the edge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..core import RunState
from ..core.text import short_repr
from ..errors import UnknownStepError, WorkflowRuntimeError
from ..graph_events import (
    ExecutorCompletedEvent,
    ExecutorInvokedEvent,
    RequestInfoEvent,
    RunResult,
    SuperstepCompletedEvent,
    WorkflowOutputEvent,
)
from ..runtime.observers import RunObserver, StreamLifecycle
from ..runtime.stream import EventStream
from .edges import Default, EdgeGroup, label, node_id

__all__ = ["GraphStyle", "compile_router"]


class GraphStyle:
    """What executor graphs decide about their runs (``RunStyle``).

    A run's result is a :class:`RunResult` of its outputs and final shared state; a
    node's messages follow its edges (``route``); lifecycle events go on the stream once
    it is consumed; the caller may send any value.
    """

    __slots__ = ("route",)

    def __init__(self, route: Callable[[int, object], tuple[int, ...] | None]) -> None:
        self.route = route

    def result(self, state: RunState, run_id: str) -> object:
        outputs = [output.data for output in state.outputs]  # type: ignore[attr-defined]
        return RunResult(outputs, run_id, dict(state.store))

    def closing_events(self, state: RunState) -> Iterable[object]:
        return ()

    def check_external(self, event: object, where: str) -> None:
        return None

    def lifecycle(self, stream: EventStream) -> RunObserver | None:
        return StreamLifecycle(
            stream, ExecutorInvokedEvent, ExecutorCompletedEvent, SuperstepCompletedEvent
        )


def compile_router(
    groups: list[EdgeGroup], index: dict[str, int], size: int
) -> Callable[[int, object], tuple[int, ...] | None]:
    """Compile the edge groups into ``route(sender, message) -> target indexes``.

    It runs in the shell, next to the sending executor: conditions, selectors and switch
    cases are the user's code, which never runs inside the kernel. Outputs and requests
    get None: the kernel publishes them.
    """
    table: list[list[Callable[[object], tuple[int, ...]]]] = [[] for _ in range(size)]
    fixed: list[tuple[int, ...] | None] = [() for _ in range(size)]
    for group in groups:
        for source in group.sources:
            position = index[node_id(source)]
            table[position].append(_group_route(group, index))
            plain = group.kind in ("edge", "fan_in", "fan_out") and group.condition is None
            plain = plain and group.selector is None
            current = fixed[position]
            if plain and current is not None:
                if group.kind == "fan_in":
                    fixed[position] = (*current, index[node_id(group.targets[0])])
                else:
                    fixed[position] = (*current, *(index[node_id(t)] for t in group.targets))
            else:
                fixed[position] = None

    def route(sender: int, message: object) -> tuple[int, ...] | None:
        if type(message) is RequestInfoEvent:
            return None  # a request goes to the caller (the stream), never along edges
        always = fixed[sender]
        if always is not None:
            return always
        if isinstance(message, WorkflowOutputEvent):
            return None  # an output is the run's, never sent along edges (no condition sees it)
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


def _group_route(group: EdgeGroup, index: dict[str, int]) -> Callable[[object], tuple[int, ...]]:
    targets = tuple(index[node_id(t)] for t in group.targets)
    if group.kind == "fan_in":
        join = (index[node_id(group.targets[0])],)
        return lambda message: join
    source = node_id(group.sources[0])
    if group.kind == "edge":
        if group.condition is None:
            return lambda message: targets
        condition = _noted(
            group.condition,
            f"the condition {label(group.condition)!r} of the edge "
            f"{source!r} -> {node_id(group.targets[0])!r}",
        )
        return lambda message: targets if condition(message) else ()
    if group.kind == "fan_out":
        if group.selector is None:
            return lambda message: targets
        selector = _noted(
            group.selector,
            f"the selector {label(group.selector)!r} of the fan-out from {source!r}",
        )
        ids = [node_id(t) for t in group.targets]
        by_id = dict(zip(ids, targets, strict=True))

        name = label(group.selector)

        def select(message: object) -> tuple[int, ...]:
            picked = selector(message, list(ids))
            if not isinstance(picked, list | tuple | set | frozenset):  # None, a str, ...
                raise WorkflowRuntimeError(
                    f"the selector {name!r} of the fan-out from {source!r} returned "
                    f"{short_repr(picked)}; it must return a list of target ids, out of {ids}"
                )
            chosen = []
            for target_id in picked:
                if not isinstance(target_id, str) or target_id not in by_id:
                    raise UnknownStepError(
                        f"the selector {name!r} of the fan-out from {source!r} chose "
                        f"{short_repr(target_id)}, which is not one of its targets {ids}"
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
                f"the case {label(case.condition)!r} of the switch from {source!r} "
                f"to {node_id(case.target)!r}",
            ),
            index[node_id(case.target)],
        )
        for case in group.cases
    ]

    def switch(message: object) -> tuple[int, ...]:
        for condition, target in branches:
            if condition is None or condition(message):
                return (target,)
        return ()

    return switch
