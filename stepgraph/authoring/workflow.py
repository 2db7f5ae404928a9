"""``Workflow``: a class of ``@step`` methods, compiled once per class to a kernel Graph."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ValidationError

from ..backends.base import Backend
from ..core import Graph, Node, RunState
from ..core.text import short_repr
from ..durability.launch import attach_run, launch_run, resume_run, submit_run
from ..errors import InvalidStartEventError, WorkflowRuntimeError, WorkflowValidationError
from ..events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from ..limits import Limiter
from ..runtime.clock import Clock
from ..runtime.context import Context
from ..runtime.handler import WorkflowHandler
from ..runtime.launch import RunOptions, launch, run_in_new_loop
from ..runtime.observers import RunObserver
from ..runtime.plan import RunPlan, placed
from ..runtime.stream import EventStream
from ..stores.base import Store
from ..telemetry.event_log import EventLog
from .export import CALLER, END, Edge, to_dot, to_mermaid
from .introspect import caller_locals, check_reducers
from .step import STEP_ATTRIBUTE, StepSpec, awaited_types, inspect_step

__all__ = ["CompiledWorkflow", "StepStyle", "Workflow"]

_COMPILED = "_stepgraph_compiled_"


class _CompiledCache:
    """Where a workflow class keeps its compiled plan: ``_stepgraph_compiled_`` on the class.

    The plan holds what cannot be pickled (the thread backend of ``def`` steps, with its
    lock), and cloudpickle pickles a class it cannot import (one defined in ``__main__``
    or in a function) by value, with the attributes of its ``__dict__``, when a workflow
    goes to another process (a step on a process pool). So the cache pickles empty: a
    copy of the class compiles its own plan if it is ever asked for it. Kept on the class
    (not in a module-level table keyed by class), it lives and dies with its class.
    """

    __slots__ = ("compiled",)

    def __init__(self, compiled: CompiledWorkflow | None = None) -> None:
        self.compiled = compiled

    def __reduce__(self) -> tuple[type[_CompiledCache], tuple[()]]:
        return (_CompiledCache, ())


class StepStyle:
    """What ``@step`` workflows decide about their runs (``RunStyle``).

    A run's result is its StopEvent's ``result`` (a StopEvent subclass is returned whole),
    and the StopEvent is the last event on the stream. Messages are routed by type, in
    the kernel; the caller sends Event instances.
    """

    __slots__ = ()

    def result(self, state: RunState, run_id: str) -> object:
        stop = state.result
        return stop.result if type(stop) is StopEvent else stop

    def closing_events(self, state: RunState) -> Iterable[object]:
        return () if state.result is None else (state.result,)

    def check_external(self, event: object, where: str) -> None:
        if not isinstance(event, Event):
            raise WorkflowRuntimeError(
                f"handler.send_event({short_repr(event, 200)}): {where} takes Event instances"
            )

    def route(self, sender: int, message: object) -> tuple[int, ...] | None:
        return None

    def lifecycle(self, stream: EventStream) -> RunObserver | None:
        return None


STEP_STYLE = StepStyle()


@dataclass(frozen=True, slots=True)
class CompiledWorkflow:
    """A validated workflow class: its run plan, its steps in graph order, its start event."""

    plan: RunPlan
    specs: tuple[StepSpec, ...]
    start_type: type[StartEvent]
    who: str  # how messages name the run call: "MyWorkflow.run()"

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def graph(self) -> Graph:
        return self.plan.graph


def _renamed(plan: RunPlan, name: str) -> RunPlan:
    graph = copy.copy(plan.graph)
    graph.name = name
    return dataclasses.replace(plan, name=name, graph=graph)


class Workflow:
    """Base class of event-driven workflows: subclass it and add ``@step`` methods.

    Args:
        timeout: seconds the whole run may take (``None``: no limit).
        mode: ``"superstep"`` (default: deterministic delivery behind a barrier) or
            ``"async"`` (deliver as soon as possible; highest throughput).
        max_supersteps: bound on supersteps (async mode: on message generations);
            exceeding it raises ``SuperstepLimitExceeded``.
        max_concurrency: at most this many step invocations run at once (``None``: no bound).
        verbose: print each step as it runs and the events it produces.
        observers: :class:`~stepgraph.RunObserver` objects told about every run.
        journal: a :class:`~stepgraph.journal.Journal` recording every run's ticks.
        clock: the clock of every timer (``stepgraph.testing.FakeClock`` in tests).
        store: where runs are kept (``stepgraph.stores.SqliteStore("runs.db")``, say):
            with one, runs write a checkpoint at every superstep barrier (async mode: a
            journal of every step) and survive a crash or a restart (:meth:`resume`).
        serializer: how a durable run's events and state are written: ``"json"``
            (through pydantic; the default) or ``"pickle"`` (any picklable value; unsafe
            with a store others can write to, since loading a pickle runs code).
        backends: backends by name, for steps that name one (``@step(backend="cpu")``).
        event_log: a path (or a ``stepgraph.telemetry.EventLog``) to append a JSON line
            per event of every run to.
        name: the workflow's name in messages, records, spans and stores (default: its
            class's qualified name).
        limiters: the :class:`~stepgraph.Limiter` objects its steps hold
            (``@step(limiter="llm")``, ``async with ctx.limit("llm")``).

    The workflow object holds its definition only: one object can run many times,
    concurrently, and in different event loops.

    Example::

        class Echo(Workflow):
            @step
            async def start(self, ev: StartEvent) -> StopEvent:
                return StopEvent(result=ev.text)

        assert await Echo().run(text="hi") == "hi"
    """

    reducers: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._stepgraph_localns_ = caller_locals()  # type: ignore[attr-defined]

    def __init__(
        self,
        timeout: float | None = None,
        mode: str = "superstep",
        max_supersteps: int = 10_000,
        max_concurrency: int | None = None,
        verbose: bool = False,
        *,
        observers: Sequence[RunObserver] = (),
        journal: RunObserver | None = None,
        clock: Clock | None = None,
        store: Store | None = None,
        serializer: str = "json",
        backends: Mapping[str, Backend] | None = None,
        event_log: str | os.PathLike[str] | EventLog | None = None,
        limiters: Sequence[Limiter] = (),
        name: str | None = None,
    ) -> None:
        self.options = RunOptions.checked(
            type(self).__name__,
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
        if name is not None and (not isinstance(name, str) or not name):
            raise WorkflowValidationError(
                f"{type(self).__name__}(name={name!r}): a name is a non-empty string"
            )
        self._stepgraph_name = name
        self.mode = self.options.mode
        self.timeout = timeout
        self.max_supersteps = max_supersteps
        self.max_concurrency = max_concurrency
        self.verbose = verbose

    # -- definition ---------------------------------------------------------------------------

    @classmethod
    def _compiled(cls) -> CompiledWorkflow:
        cache: _CompiledCache | None = cls.__dict__.get(_COMPILED)  # its own, not a base's
        if cache is not None:
            compiled = cache.compiled
            if compiled is not None:
                return compiled
        compiled = _compile(cls)
        setattr(cls, _COMPILED, _CompiledCache(compiled))
        return compiled

    def validate(self) -> None:
        """Check the definition; raises ``WorkflowValidationError`` naming step and event."""
        self._compiled()

    @property
    def steps(self) -> list[str]:
        """The names of the steps, in graph order."""
        return [spec.name for spec in self._compiled().specs]

    def _edges(self) -> list[Edge]:
        """Edges implied by the annotations: each returned type to the steps accepting it."""
        specs = self._compiled().specs
        edges: list[Edge] = []
        for spec in specs:
            for produced in spec.returns:
                name = produced.__name__
                if issubclass(produced, StopEvent):
                    edges.append((spec.name, END, name, "edge"))
                    continue
                if issubclass(produced, InputRequiredEvent):
                    edges.append((spec.name, CALLER, name, "edge"))
                targets = [s.name for s in specs if issubclass(produced, s.accepts)]
                edges.extend((spec.name, target, name, "edge") for target in targets)
        for spec in specs:
            answers = [t for t in spec.accepts if issubclass(t, HumanResponseEvent)]
            edges.extend((CALLER, spec.name, t.__name__, "edge") for t in answers)
        return edges

    def _start_step(self) -> str:
        compiled = self._compiled()
        return next(s.name for s in compiled.specs if issubclass(compiled.start_type, s.accepts))

    def to_mermaid(self) -> str:
        """The steps and the events between them as a Mermaid flowchart."""
        return to_mermaid(self.steps, self._edges(), start=self._start_step())

    def to_dot(self) -> str:
        """The steps and the events between them as Graphviz DOT."""
        return to_dot(
            self._stepgraph_name or type(self).__qualname__,
            self.steps,
            self._edges(),
            start=self._start_step(),
        )

    # -- running ------------------------------------------------------------------------------

    def run(
        self, start_event: StartEvent | None = None, *, run_id: str | None = None, **kwargs: Any
    ) -> WorkflowHandler:
        """Start a run on the running event loop and return its handler at once.

        Args:
            start_event: the first event; by default built from ``kwargs`` as the
                StartEvent (sub)class the start step accepts.
            run_id: the run's id (by default a new, unique one). With a store it is an
                idempotency key: if the store has a run with this id, the handler follows
                that run (its stored result once it has completed) and nothing new starts.
            **kwargs: the start event's attributes.

        Raises:
            InvalidStartEventError: the keywords do not validate as the start event.
            WorkflowValidationError: the workflow definition is invalid.
        """
        compiled = self._compiled()
        event = self._start_event(compiled, start_event, kwargs)
        plan = self._placed(compiled)
        if self.options.store is None and run_id is None:
            return launch(plan, self, self.options, event, who=compiled.who)
        return launch_run(plan, self, self.options, event, run_id=run_id, who=compiled.who)

    def resume(
        self, run_id: str, checkpoint_id: str | None = None, *, strict: bool = True
    ) -> WorkflowHandler:
        """Go on with stored run ``run_id`` (after a crash, a restart or a cancel).

        Returns its handler at once, like :meth:`run`. From the latest checkpoint the run
        goes on as itself (same run id; the steps of the interrupted superstep run
        again); a completed run gives its stored result and runs nothing. From an earlier
        ``checkpoint_id`` it is a fork: a new run (new run id) whose record names its
        parent run and checkpoint.

        Args:
            run_id: the run to resume.
            checkpoint_id: a checkpoint of it (``await store.list_checkpoints(run_id)``).
            strict: refuse (``CheckpointError`` naming the steps) when the workflow's steps
                changed since the checkpoint; with False, the messages of removed steps are
                dropped with a warning and the others go on.

        Awaiting the handler raises ``RunNotFoundError`` for an unknown run,
        ``CheckpointNotFoundError`` for an unknown checkpoint, ``CheckpointError`` for
        one that cannot be used, and ``RunLockedError`` when another coordinator owns
        the run.
        """
        compiled = self._compiled()
        return resume_run(
            self._placed(compiled),
            self,
            self.options,
            run_id,
            checkpoint_id=checkpoint_id,
            strict=strict,
            who=f"{compiled.name}.resume()",
        )

    async def submit(
        self,
        start_event: StartEvent | None = None,
        *,
        queue: str = "default",
        run_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Store a run as queued and return its id at once; a worker runs it.

        ``stepgraph worker MODULE:ATTR --store URL --queue NAME`` (in any process with the
        store) takes it; ``await store.result(run_id)`` or ``wf.attach(run_id)`` follow it.

        Args:
            start_event: the first event; by default built from ``kwargs`` (as ``run``).
            queue: the queue to put it in (queues are made by use).
            run_id: its id (by default a new one). Submitting an id the store has already
                writes nothing and returns it (an idempotency key).
            **kwargs: the start event's attributes.

        Raises:
            StepgraphError: the workflow has no store with a run queue.
            InvalidStartEventError: the keywords do not validate as the start event.
            SerializationError: the start event cannot be stored.
        """
        compiled = self._compiled()
        event = self._start_event(compiled, start_event, kwargs, "submit")
        return await submit_run(
            self._placed(compiled),
            self,
            self.options,
            event,
            queue=queue,
            run_id=run_id,
            who=f"{compiled.name}.submit()",
        )

    def attach(self, run_id: str) -> WorkflowHandler:
        """A handler on run ``run_id``, started here or in another process (by a worker).

        Its ``stream_events()`` gives the run's stored stream from its start, in order,
        ending with the ``StopEvent``; ``send_event``, ``send_response`` and ``cancel``
        reach the run through its store; awaiting it gives the result once the run ends
        (a failed run raises its stored error).

        Raises:
            StepgraphError: the workflow has no store with a run queue, or no event loop runs.
        """
        compiled = self._compiled()
        return attach_run(
            self._placed(compiled), self.options, run_id, who=f"{compiled.name}.attach()"
        )

    def _placed(self, compiled: CompiledWorkflow) -> RunPlan:
        """The plan of this instance: its name, if given; steps that name a backend on
        this instance's backends."""
        options = self.options
        where = f"workflow {compiled.name!r}"
        plan = placed(compiled.plan, options.backends, where, options.limiters)
        name = self._stepgraph_name
        if name is None:
            return plan
        if plan is not compiled.plan:  # placed on this instance's backends
            return _renamed(plan, name)
        # the class's plan under a name: made once, for every run
        return plan.derive(f"named {name}", lambda: _renamed(plan, name))

    def __getstate__(self) -> dict[str, Any]:
        """What a copy of the workflow sent to another process holds: its own attributes,
        without its run options (stores, backends, observers stay with the runs)."""
        return {k: v for k, v in self.__dict__.items() if k != "options"}

    def _stepgraph_plan(self) -> RunPlan:
        """The compiled plan runs of this workflow follow (validates the definition).

        A name no subclass uses by accident: ``plan`` could be a user's attribute or step.
        """
        return self._compiled().plan

    @staticmethod
    def _start_event(
        compiled: CompiledWorkflow,
        start_event: StartEvent | None,
        kwargs: dict[str, Any],
        method: str = "run",
    ) -> StartEvent:
        if start_event is not None:
            if kwargs:
                raise InvalidStartEventError(
                    f"{compiled.name}.{method}(): pass either start_event=... or keywords, "
                    f"not both (got keywords {sorted(kwargs)})"
                )
            if not isinstance(start_event, compiled.start_type):
                raise InvalidStartEventError(
                    f"{compiled.name}.{method}(start_event=...): expected a "
                    f"{compiled.start_type.__name__}, got {type(start_event).__name__}"
                )
            return start_event
        try:
            return compiled.start_type(**kwargs)
        except ValidationError as exc:
            raise InvalidStartEventError(
                f"{compiled.name}.{method}() arguments {sorted(kwargs)} are not a valid "
                f"{compiled.start_type.__name__}: {exc}"
            ) from exc

    def run_sync(self, start_event: StartEvent | None = None, **kwargs: Any) -> Any:
        """Run to completion in a new event loop (for scripts) and return the result."""
        return run_in_new_loop(type(self).__name__, lambda: self.run(start_event, **kwargs))


def _collect_steps(cls: type) -> list[Any]:
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, staticmethod | classmethod) and (
                hasattr(value, STEP_ATTRIBUTE) or hasattr(value.__func__, STEP_ATTRIBUTE)
            ):
                kind = type(value).__name__
                raise WorkflowValidationError(
                    f"step {name!r} of workflow {cls.__name__!r} is a {kind}; a step is a "
                    f"plain method: `async def {name}(self, ctx: Context, ev: ...) -> ...`"
                )
            if callable(value) and hasattr(value, STEP_ATTRIBUTE):
                found[name] = value
            elif name in found and not hasattr(value, STEP_ATTRIBUTE):
                del found[name]  # a subclass replaced the step by a plain attribute
    return list(found.values())


def _names(types: tuple[type, ...]) -> str:
    return " | ".join(t.__name__ for t in types)


def _compile(cls: type) -> CompiledWorkflow:
    name = cls.__qualname__
    localns: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        localns.update(vars(klass).get("_stepgraph_localns_") or {})
    specs = tuple(
        inspect_step(name, func, Context, localns or None) for func in _collect_steps(cls)
    )
    if not specs:
        raise WorkflowValidationError(
            f"workflow {name!r} has no steps: decorate methods with @step"
        )
    start_types = {t for s in specs for t in s.accepts if issubclass(t, StartEvent)}
    if not start_types:
        raise WorkflowValidationError(
            f"workflow {name!r}: no step accepts StartEvent; add a step whose event "
            f"parameter is annotated with StartEvent (or a subclass)"
        )
    start_type = _most_specific(name, start_types)
    if not any(issubclass(t, StopEvent) for s in specs for t in s.returns):
        raise WorkflowValidationError(
            f"workflow {name!r}: no step returns StopEvent, so no run could end; annotate "
            f"the step that finishes with `-> StopEvent` (or a union including it)"
        )
    accepted = tuple(t for s in specs for t in s.accepts)
    awaited = tuple({t for s in specs for t in awaited_types(s.func, localns or None)})
    free = (StopEvent, InputRequiredEvent, HumanResponseEvent, *awaited)
    for spec in specs:
        for produced in spec.returns:
            if produced is Event or issubclass(produced, free):
                continue
            if not issubclass(produced, accepted):
                raise WorkflowValidationError(
                    f"workflow {name!r}: step {spec.name!r} returns {produced.__name__}, but no "
                    f"step accepts {produced.__name__}; add a step taking `ev: "
                    f"{produced.__name__}`, wait for it with ctx.wait_for_event, or remove it "
                    f"from the return annotation (-> {_names(spec.returns)})"
                )
    nodes = tuple(
        Node(name=s.name, index=i, accepts=s.accepts, num_workers=s.config.num_workers)
        for i, s in enumerate(specs)
    )
    graph = Graph(
        name=name,
        nodes=nodes,
        stop_types=(StopEvent,),
        input_request_types=(InputRequiredEvent,),
        held_types=(HumanResponseEvent, *awaited),  # kept for a wait_for_event, never lost
        answer_types=(HumanResponseEvent,),
    )
    reducers = check_reducers(name, getattr(cls, "reducers", None))
    plan = RunPlan(
        name=name,
        graph=graph,
        programs=specs,
        context_type=Context,
        style=STEP_STYLE,
        reducers=reducers,
    )
    return CompiledWorkflow(plan=plan, specs=specs, start_type=start_type, who=f"{name}.run()")


def _most_specific(name: str, types: set[type]) -> type[StartEvent]:
    leaves = [t for t in types if not any(o is not t and issubclass(o, t) for o in types)]
    if len(leaves) > 1:
        raise WorkflowValidationError(
            f"workflow {name!r}: steps accept unrelated start events "
            f"{sorted(t.__name__ for t in leaves)}; use one StartEvent subclass"
        )
    return leaves[0]
