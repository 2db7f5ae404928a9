"""GraphWorkflow: a built executor graph, ready to run any number of times."""

from __future__ import annotations

import asyncio
from typing import Any

from ..core import Mode
from ..errors import StepgraphError, WorkflowValidationError
from ..graph_events import RunResult
from ..runtime.handler import WorkflowHandler
from ..runtime.plan import RunPlan
from ..runtime.run import Run
from .export import Edge, to_dot, to_mermaid

__all__ = ["GraphWorkflow"]


class GraphWorkflow:
    """An executor graph built by ``WorkflowBuilder.build()``.

    It holds its definition only: one object can run many times, concurrently,
    and in different event loops. ``run(message)`` sends ``message`` to the start
    executor; awaiting the handler gives a :class:`RunResult` when nothing is left
    to do.
    """

    def __init__(
        self,
        plan: RunPlan,
        *,
        edges: tuple[Edge, ...],
        start: str,
        mode: str,
        timeout: float | None,
        max_supersteps: int,
        max_concurrency: int | None,
    ) -> None:
        try:
            self.mode = Mode(mode)
        except ValueError:
            raise WorkflowValidationError(
                f"build(mode={mode!r}): mode must be 'superstep' or 'async'"
            ) from None
        if timeout is not None and timeout <= 0:
            raise WorkflowValidationError(f"build(timeout={timeout!r}): must be > 0 or None")
        if max_supersteps < 1:
            raise WorkflowValidationError(f"build(max_supersteps={max_supersteps!r}): must be >= 1")
        if max_concurrency is not None and max_concurrency < 1:
            raise WorkflowValidationError(
                f"build(max_concurrency={max_concurrency!r}): must be >= 1 or None"
            )
        self.plan = plan
        self.name = plan.name
        self.edges = edges
        self.start = start
        self.timeout = timeout
        self.max_supersteps = max_supersteps
        self.max_concurrency = max_concurrency

    @property
    def executor_ids(self) -> list[str]:
        """The executors' ids, in graph order (the start executor first)."""
        return [node.name for node in self.plan.graph.nodes]

    def validate(self) -> None:
        """Nothing to do: ``build()`` already validated the graph."""

    def run(self, message: Any = None) -> WorkflowHandler:
        """Start a run with ``message`` for the start executor; returns the handler at once."""
        return self._launch(message, journal=False)

    def _launch(self, message: Any, *, journal: bool) -> WorkflowHandler:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise StepgraphError(
                f"workflow {self.name!r}: run() needs a running event loop; use run_sync() "
                f"in a script"
            ) from None
        run = Run(
            self.plan,
            None,
            mode=self.mode,
            timeout=self.timeout,
            max_supersteps=self.max_supersteps,
            max_concurrency=self.max_concurrency,
            journal=journal,
        )
        handler = WorkflowHandler(run)
        run.start(message)
        return handler

    def run_sync(self, message: Any = None) -> RunResult:
        """Run to completion in a new event loop (for scripts)."""
        from .workflow import _no_running_loop

        _no_running_loop(f"workflow {self.name!r}")

        async def main() -> RunResult:
            result: RunResult = await self.run(message)
            return result

        return asyncio.run(main())

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart."""
        return to_mermaid(self.executor_ids, self.edges, start=self.start)

    def to_dot(self) -> str:
        """The graph as Graphviz DOT."""
        return to_dot(self.name, self.executor_ids, self.edges, start=self.start)
