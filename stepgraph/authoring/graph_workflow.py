"""GraphWorkflow: a built executor graph, ready to run any number of times."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..backends.base import Backend
from ..durability.launch import attach_run, launch_run, resume_run, submit_run
from ..graph_events import RunResult
from ..limits import Limiter
from ..runtime.clock import Clock
from ..runtime.handler import WorkflowHandler
from ..runtime.launch import RunOptions, launch, run_in_new_loop
from ..runtime.observers import RunObserver
from ..runtime.plan import RunPlan, placed
from ..stores.base import Store
from ..telemetry.event_log import EventLog
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
        verbose: bool = False,
        observers: Sequence[RunObserver] = (),
        journal: RunObserver | None = None,
        clock: Clock | None = None,
        store: Store | None = None,
        serializer: str = "json",
        backends: Mapping[str, Backend] | None = None,
        event_log: str | os.PathLike[str] | EventLog | None = None,
        limiters: Sequence[Limiter] = (),
    ) -> None:
        self.options = RunOptions.checked(
            "build",
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
        self.mode = self.options.mode
        self.plan = placed(
            plan, self.options.backends, f"workflow {plan.name!r}", self.options.limiters
        )
        self.name = plan.name
        self.edges = edges
        self.start = start
        self.timeout = timeout
        self.max_supersteps = max_supersteps
        self.max_concurrency = max_concurrency

    def _stepgraph_plan(self) -> RunPlan:
        """The compiled plan runs of this graph follow (``replay`` reads it)."""
        return self.plan

    @property
    def executor_ids(self) -> list[str]:
        """The executors' ids, in graph order (the start executor first)."""
        return [node.name for node in self.plan.graph.nodes]

    def validate(self) -> None:
        """Nothing to do: ``build()`` already validated the graph."""

    def run(self, message: Any = None, *, run_id: str | None = None) -> WorkflowHandler:
        """Start a run with ``message`` for the start executor; returns the handler at once.

        ``run_id`` names the run; with a store it is an idempotency key (as for
        ``Workflow.run``).
        """
        if self.options.store is None and run_id is None:
            return launch(self.plan, None, self.options, message)
        return launch_run(self.plan, None, self.options, message, run_id=run_id)

    def resume(
        self, run_id: str, checkpoint_id: str | None = None, *, strict: bool = True
    ) -> WorkflowHandler:
        """Go on with stored run ``run_id``, or fork it from ``checkpoint_id``.

        As ``Workflow.resume``: returns the handler at once.
        """
        return resume_run(
            self.plan,
            None,
            self.options,
            run_id,
            checkpoint_id=checkpoint_id,
            strict=strict,
            who=f"workflow {self.name!r}: resume()",
        )

    async def submit(
        self, message: Any = None, *, queue: str = "default", run_id: str | None = None
    ) -> str:
        """Store a run with ``message`` as queued; its id at once (as ``Workflow.submit``)."""
        return await submit_run(
            self.plan,
            None,
            self.options,
            message,
            queue=queue,
            run_id=run_id,
            who=f"workflow {self.name!r}: submit()",
        )

    def attach(self, run_id: str) -> WorkflowHandler:
        """A handler on run ``run_id``, wherever it runs (as ``Workflow.attach``)."""
        return attach_run(self.plan, self.options, run_id, who=f"workflow {self.name!r}: attach()")

    def run_sync(self, message: Any = None) -> RunResult:
        """Run to completion in a new event loop (for scripts)."""
        result: RunResult = run_in_new_loop(f"workflow {self.name!r}", lambda: self.run(message))
        return result

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart."""
        return to_mermaid(self.executor_ids, self.edges, start=self.start)

    def to_dot(self) -> str:
        """The graph as Graphviz DOT."""
        return to_dot(self.name, self.executor_ids, self.edges, start=self.start)
