"""Starting runs: option checks and the launch shared by both authoring styles."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core import Mode
from ..errors import StepgraphError, WorkflowValidationError
from .handler import WorkflowHandler
from .plan import RunPlan
from .run import Run

__all__ = ["RunOptions", "launch", "run_in_new_loop"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How runs of a workflow behave: delivery mode and bounds. Checked once, when made."""

    mode: Mode
    timeout: float | None
    max_supersteps: int
    max_concurrency: int | None
    verbose: bool = False

    @classmethod
    def checked(
        cls,
        where: str,
        *,
        mode: str | Mode,
        timeout: float | None,
        max_supersteps: int,
        max_concurrency: int | None,
        verbose: bool = False,
    ) -> RunOptions:
        """Validate the options; errors read ``where(option=value): ...``."""
        try:
            parsed = Mode(mode)
        except ValueError:
            raise WorkflowValidationError(
                f"{where}(mode={mode!r}): mode must be 'superstep' or 'async'"
            ) from None
        if timeout is not None and timeout <= 0:
            raise WorkflowValidationError(f"{where}(timeout={timeout!r}): must be > 0 or None")
        if max_supersteps < 1:
            raise WorkflowValidationError(
                f"{where}(max_supersteps={max_supersteps!r}): must be >= 1"
            )
        if max_concurrency is not None and max_concurrency < 1:
            raise WorkflowValidationError(
                f"{where}(max_concurrency={max_concurrency!r}): must be >= 1 or None"
            )
        return cls(parsed, timeout, max_supersteps, max_concurrency, verbose)


def launch(
    plan: RunPlan,
    owner: object,
    options: RunOptions,
    start: object,
    *,
    journal: bool = False,
    who: str = "",
) -> WorkflowHandler:
    """Create a run in the running loop, start it with ``start`` and return its handler."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        who = who or f"workflow {plan.name!r}: run()"
        raise StepgraphError(
            f"{who} needs a running event loop: call it from async code "
            f"(`await wf.run(...)`) or use run_sync(...) in a script"
        ) from None
    run = Run(
        plan,
        owner,
        mode=options.mode,
        timeout=options.timeout,
        max_supersteps=options.max_supersteps,
        max_concurrency=options.max_concurrency,
        journal=journal,
        verbose=options.verbose,
    )
    handler = WorkflowHandler(run)
    run.start(start)
    return handler


def run_in_new_loop(name: str, start: Callable[[], Awaitable[T]]) -> T:
    """``run_sync``: run to completion in a new event loop; refuse inside a running one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def main() -> Any:
            return await start()

        result: T = asyncio.run(main())
        return result
    raise StepgraphError(
        f"{name}.run_sync() was called inside a running event loop; use "
        f"`await {name}.run(...)` there (run_sync is for scripts)"
    )
