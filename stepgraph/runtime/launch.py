"""Starting runs: option checks and the launch shared by every authoring style."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..backends.base import named
from ..core import Mode
from ..errors import StepgraphError, WorkflowValidationError
from ..limits import Limiter, LimiterGate, gate_for
from ..stores.base import lacking_methods
from ..telemetry.event_log import event_log_of
from .backends import Backend
from .clock import SYSTEM_CLOCK, Clock
from .handler import WorkflowHandler
from .observers import RunObserver
from .plan import RunPlan
from .run import IN_PROCESS

if TYPE_CHECKING:
    from .ports import Runtime

__all__ = ["RunOptions", "launch", "run_in_new_loop"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How runs of a workflow behave: delivery mode, bounds, observers and clock.

    Checked once, when made (:meth:`checked`).
    """

    mode: Mode
    timeout: float | None
    max_supersteps: int
    max_concurrency: int | None
    verbose: bool = False
    observers: tuple[RunObserver, ...] = ()
    clock: Clock = SYSTEM_CLOCK
    store: Any = None  # a stepgraph.stores.Store: the runs are durable
    serializer: str = "json"
    backends: Mapping[str, Backend] = field(default_factory=dict)  # by name, for nodes
    limiters: Mapping[str, LimiterGate] = field(default_factory=dict)  # by name: their gates
    source: str = ""  # where the workflow is (MODULE:ATTR), kept with its durable runs

    def on_store(self, store: object) -> RunOptions:
        """These options with runs kept in ``store`` (and its limiter gates)."""
        gates = {name: gate_for(store, gate.limiter) for name, gate in self.limiters.items()}
        return dataclasses.replace(self, store=store, limiters=gates)

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
        observers: Sequence[RunObserver] = (),
        journal: RunObserver | None = None,
        clock: Clock | None = None,
        store: object = None,
        serializer: str = "json",
        backends: Mapping[str, object] | None = None,
        event_log: object = None,
        limiters: Sequence[object] = (),
    ) -> RunOptions:
        """Validate the options; errors read ``where(option=value): ...``."""
        try:
            parsed = Mode(mode)
        except ValueError:
            raise WorkflowValidationError(
                f"{where}(mode={mode!r}): mode must be 'superstep' or 'async'"
            ) from None
        if timeout is not None and not _positive_number(timeout):
            raise WorkflowValidationError(
                f"{where}(timeout={timeout!r}): must be a number of seconds > 0, or None"
            )
        if not _whole(max_supersteps) or max_supersteps < 1:
            raise WorkflowValidationError(
                f"{where}(max_supersteps={max_supersteps!r}): must be a whole number >= 1"
            )
        if max_concurrency is not None and (not _whole(max_concurrency) or max_concurrency < 1):
            raise WorkflowValidationError(
                f"{where}(max_concurrency={max_concurrency!r}): must be a whole number >= 1, "
                f"or None"
            )
        if not isinstance(verbose, bool):
            raise WorkflowValidationError(f"{where}(verbose={verbose!r}): must be True or False")
        watchers = tuple(observers)
        for observer in watchers:
            if not isinstance(observer, RunObserver):
                raise WorkflowValidationError(
                    f"{where}(observers=[..., {observer!r}]): an observer is an instance of "
                    f"a RunObserver subclass"
                )
        if journal is not None:
            if not isinstance(journal, RunObserver):
                raise WorkflowValidationError(
                    f"{where}(journal={journal!r}): expected a stepgraph.journal.Journal"
                )
            watchers += (journal,)
        log = event_log_of(event_log, where)
        if log is not None:
            watchers += (log,)
        if clock is not None and not all(
            callable(getattr(clock, name, None)) for name in ("monotonic", "wall", "call_later")
        ):
            raise WorkflowValidationError(
                f"{where}(clock={clock!r}): a clock has monotonic(), wall() and call_later()"
            )
        lacks = [] if store is None else lacking_methods(store)
        if lacks:
            raise WorkflowValidationError(
                f"{where}(store={store!r}): expected a store (stepgraph.stores.SqliteStore, "
                f"MemoryStore, PostgresStore, or an implementation of stepgraph.stores.Store); "
                f"it has no {', '.join(lacks)}"
            )
        if serializer not in ("json", "pickle"):
            raise WorkflowValidationError(
                f"{where}(serializer={serializer!r}): must be 'json' (the default) or 'pickle' "
                f"(unsafe with a store others can write to: loading a pickle runs code)"
            )
        chosen: dict[str, Backend] = {}
        for name, backend in (backends or {}).items():
            if not isinstance(name, str) or not isinstance(backend, Backend):
                lacks = _lacking(backend, _BACKEND_MEMBERS)
                raise WorkflowValidationError(
                    f"{where}(backends={{{name!r}: {backend!r}}}): backends maps names to "
                    f"backends (stepgraph.backends.ThreadBackend(), ProcessBackend(), ...)"
                    + (f"; it has no {', '.join(lacks)}" if lacks else "")
                )
            chosen[name] = backend
        named(chosen)  # messages name each backend as the workflow does
        gates: dict[str, LimiterGate] = {}
        for limiter in limiters:
            if not isinstance(limiter, Limiter):
                raise WorkflowValidationError(
                    f"{where}(limiters=[..., {limiter!r}]): expected stepgraph.Limiter(...)"
                )
            gates[limiter.name] = gate_for(store, limiter)
        return cls(
            parsed,
            timeout,
            max_supersteps,
            max_concurrency,
            verbose,
            watchers,
            SYSTEM_CLOCK if clock is None else clock,
            store,
            serializer,
            chosen,
            gates,
        )


def _positive_number(value: object) -> bool:
    """A real number of seconds, finite and > 0 (not a bool, a string or NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value > 0


def _whole(value: object) -> bool:
    """An int (not a bool, not 1.5)."""
    return isinstance(value, int) and not isinstance(value, bool)


def require_loop(who: str, call: str = "run(...)") -> None:
    """Raise unless an event loop runs here; ``who`` names the call in the message.

    Raises:
        StepgraphError: no running event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise StepgraphError(
            f"{who} needs a running event loop: call it from async code "
            f"(`await wf.{call}`) or use run_sync(...) in a script"
        ) from None


def launch(
    plan: RunPlan,
    owner: object,
    options: RunOptions,
    start: object,
    *,
    runtime: Runtime | None = None,
    who: str = "",
) -> WorkflowHandler:
    """Create a run in the running loop, start it with ``start`` and return its handler.

    ``runtime`` runs it (the in-process runtime by default).
    """
    require_loop(who or f"workflow {plan.name!r}: run()")
    if runtime is None:
        runtime = IN_PROCESS
    port = runtime.create(plan, owner, options)
    handler = WorkflowHandler(port)
    port.start(start)
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


# what a backend must have (its protocol's members), to name what one lacks
_BACKEND_MEMBERS = ("name", "in_process", "submit", "run_command", "start", "shutdown")


def _lacking(value: object, names: tuple[str, ...]) -> list[str]:
    """The members of ``names`` that ``value`` does not have (a method: not callable); a
    member whose lookup raises (a property, a wrapper's ``__getattr__``) is missing too."""
    lacking = []
    for name in names:
        try:
            found = getattr(value, name, _ABSENT)
        except Exception:
            found = _ABSENT
        if found is _ABSENT or (name not in ("name", "in_process") and not callable(found)):
            lacking.append(name)
    return lacking


_ABSENT = object()
