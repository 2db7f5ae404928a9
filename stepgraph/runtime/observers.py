"""The observer seam: watching runs without changing them.

A :class:`RunObserver` is told when a run starts, every tick the kernel applied with the
commands it produced, when a step attempt starts and ends, when a superstep passes its
barrier, and when the run ends. The shell calls observers only when a run has some, so
an unobserved run pays nothing. ``verbose=True``, the lifecycle events of executor
graphs, journals and (later) telemetry are all observers.

Observers run synchronously on the run's event loop thread, in the order given. An
observer that raises fails the run, like a raising reducer: it never hangs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..core import Command, Graph, Mode, RunState, RunStatus, StepCompleted, StepFailed, Tick
from .clock import Clock
from .plan import backend_name

if TYPE_CHECKING:
    from .plan import NodeProgram
    from .stream import EventStream

__all__ = [
    "RunInfo",
    "RunObserver",
    "StreamLifecycle",
    "Verbose",
    "heard_by",
    "step_backend",
]


class RunInfo(Protocol):
    """What an observer may read about the run it watches."""

    @property
    def run_id(self) -> str: ...
    @property
    def name(self) -> str:
        """The workflow's name, in messages and stores."""
        ...

    @property
    def telemetry_name(self) -> str:
        """The workflow's name in spans, metrics and event logs: ``name=`` where given,
        else its class's ``__qualname__`` (``name`` but for a built graph given no name)."""
        ...

    @property
    def mode(self) -> Mode: ...
    @property
    def state(self) -> RunState:
        """The kernel's state (read it; never change it)."""
        ...

    @property
    def graph(self) -> Graph:
        """The compiled graph the run follows."""
        ...

    @property
    def clock(self) -> Clock:
        """The run's clock: what observers time their records with."""
        ...

    @property
    def programs(self) -> Sequence[NodeProgram]:
        """What each node runs (its body, backend, options), in graph order."""
        ...

    @property
    def parent_run_id(self) -> str | None:
        """The run whose step started this one (a sub-workflow's), or None."""
        ...

    @property
    def detached(self) -> bool:
        """At its end (``run_ended``, status cancelled): it stopped here without ending,
        as its process would have died, and goes on as its store has it (paused, or
        resumable): ``handler.detach()``, or its event loop ended behind it."""
        ...


def heard_by(observers: Sequence[object], observer: object) -> bool:
    """Whether ``observers`` has ``observer``, or one writing where it writes (its
    ``sink``: two event logs of one file record a run, or a flow, once)."""
    sink = getattr(observer, "sink", None)
    return any(
        o is observer or (sink is not None and getattr(o, "sink", None) == sink) for o in observers
    )


def step_backend(run: RunInfo, invocation: int, message: object) -> str:
    """Where the body of ``invocation`` (a step attempt on ``message``) runs: its
    backend's name, or "inline" (an async body, on the loop) / "thread" (a plain
    function, in a thread)."""
    inv = run.state.invocations.get(invocation)
    if inv is None:
        return "inline"
    program = run.programs[inv.node]
    if program.backend is not None:
        return backend_name(program)
    return "inline" if program.is_async_for(message) else "thread"


class RunObserver:
    """Base class of run observers: override the methods you need; the others do nothing.

    Example::

        class Barriers(RunObserver):
            def superstep_ended(self, run, superstep):
                print(run.run_id, "passed superstep", superstep)

        MyFlow(observers=[Barriers()])
    """

    def run_started(self, run: RunInfo) -> None:
        """The run is about to take its first tick."""

    def tick(self, run: RunInfo, tick: Tick, commands: Sequence[Command]) -> None:
        """The kernel applied ``tick`` and produced ``commands`` (not yet carried out)."""

    def step_started(
        self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
    ) -> None:
        """Attempt ``attempt`` (1-based) of ``step`` on ``message`` begins."""

    def step_ended(
        self, run: RunInfo, step: str, invocation: int, attempt: int, outcome: Tick | None
    ) -> None:
        """An attempt ended: ``outcome`` is the tick it gives the kernel.

        ``StepCompleted`` (it returned), ``AttemptFailed`` (it will be retried) or
        ``StepFailed`` (it failed for good); None when the run ended while the attempt ran
        (it was cancelled). Every ``step_started`` gets its ``step_ended``, called in the
        same task: a context variable an observer sets in ``step_started`` (a tracing
        span, say) is seen by the step's code and can be reset here.
        """

    def superstep_ended(self, run: RunInfo, superstep: int) -> None:
        """Superstep ``superstep`` passed its barrier: its steps all finished, writes merged.

        Called while the barrier's commands are carried out: ``run.state`` already holds
        the next superstep's deliveries (its ``StartStep`` commands are not carried out
        yet). Steps suspended in ``wait_for_event`` stay in flight across barriers.
        """

    def checkpoint_written(
        self, run: RunInfo, superstep: int, seq: int, size: int, seconds: float
    ) -> None:
        """A durable run committed checkpoint ``seq`` (taken at ``superstep``'s barrier):
        ``size`` bytes (its frame and the chunks it wrote) in ``seconds``."""

    def run_ended(
        self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
    ) -> None:
        """The run ended (its handler is about to resolve).

        ``result`` is the kernel's: the stop message of a ``@step`` workflow (the
        ``StopEvent``), None for an executor graph (whose outputs are in
        ``run.state.outputs``); what awaiting the handler gives is shaped from it.
        Every observer is told the same outcome; one that raises here fails a finished
        run (its outcome could not be recorded). A durable run that stopped here without
        ending (``run.detached``) is told as cancelled: its store keeps it as it was.
        """


class Verbose(RunObserver):
    """``verbose=True``: print each step as it runs and what it produced, as LlamaIndex does."""

    def step_started(
        self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
    ) -> None:
        if attempt == 1:
            print(f"Running step {step}")

    def step_ended(
        self, run: RunInfo, step: str, invocation: int, attempt: int, outcome: Tick | None
    ) -> None:
        if isinstance(outcome, StepFailed):
            error = outcome.failure
            print(f"Step {step} failed: {error.type_name}: {error.message}")
        elif isinstance(outcome, StepCompleted):
            produced = ", ".join(type(m).__name__ for m, _ in outcome.emitted) or "no event"
            print(f"Step {step} produced {produced}")


class StreamLifecycle(RunObserver):
    """Puts an executor graph's lifecycle events on its stream (once it is consumed)."""

    __slots__ = ("completed", "invoked", "stream", "superstep")

    def __init__(
        self,
        stream: EventStream,
        invoked: type,
        completed: type,
        superstep: type,
    ) -> None:
        self.stream = stream
        self.invoked = invoked
        self.completed = completed
        self.superstep = superstep

    def step_started(
        self, run: RunInfo, step: str, invocation: int, attempt: int, message: object
    ) -> None:
        if attempt == 1:
            self.stream.push(self.invoked(executor_id=step))

    def step_ended(
        self, run: RunInfo, step: str, invocation: int, attempt: int, outcome: Tick | None
    ) -> None:
        if isinstance(outcome, StepCompleted | StepFailed):
            self.stream.push(self.completed(executor_id=step))

    def superstep_ended(self, run: RunInfo, superstep: int) -> None:
        self.stream.push(self.superstep(superstep=superstep))
