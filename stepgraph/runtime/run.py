"""The in-process runtime: one :class:`Run` per run, driving its kernel on an event loop.

A Run feeds ticks to the kernel and carries out the commands it returns. It implements
both run ports (``stepgraph.runtime.ports``) on one object, so a context's call reaches
it with no extra hop; the jobs around it live in their own modules: the worker pool
(``workers``), one attempt of a body (``attempts``), waits and collects (``waits``),
requests (``requests``), timers on the run's clock (``timers``), the thread bridge
(``bridge``) and bodies that run elsewhere (``effects``).

Rules of this module:

* All asyncio objects of a run are created inside the loop that runs it (G1), when
  the run is created; the workflow object holds none of them.
* ``feed`` is the only path into the kernel, and it stamps each tick with the clock's
  wall time. It never re-enters itself: a command that needs an answer from the shell
  (``MergeState``) queues its answer tick, which ``feed`` applies once the current
  commands are carried out.
* No user code runs inside ``apply``: edge conditions run here, when a step's messages
  are turned into a tick (``completed``), and reducers when the kernel asks for a merge.
* When the run ends, every worker, wait and timer is cancelled and the run drops its
  context, so a finished run holds nothing alive but its result.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from threading import get_ident
from typing import TYPE_CHECKING, Any

from ..core import (
    ArmTimer,
    CancelRequested,
    CancelTimer,
    CollectResult,
    Command,
    Emission,
    EventsSent,
    ExternalEventReceived,
    FailWait,
    ForwardResponse,
    InputRequested,
    MergeState,
    Mode,
    OpenRequest,
    PublishEvent,
    ResolveWait,
    RunAborted,
    RunEnded,
    RunStarted,
    RunState,
    RunStatus,
    StartStep,
    StateMerged,
    StateWritten,
    StepCompleted,
    StepFailed,
    SuperstepEnded,
    Tick,
    TimerFired,
    apply,
)
from ..core.state import request_order
from ..core.text import short_repr
from ..errors import RequestNotFoundError, StepgraphError, WorkflowRuntimeError
from ..limits import limited
from ..state.reducers import merge_writes
from ..state.store import StateStore
from ..telemetry.tracing import run_tracer
from .bridge import LoopBridge
from .effects import Effects
from .failures import failure_of
from .observers import RunObserver, Verbose, heard_by
from .requests import Requests, check_repeated_answer
from .scope import Scope, current_scope
from .stream import EventStream
from .timers import Timers
from .waits import Waits, collect
from .workers import WorkerPool

if TYPE_CHECKING:
    from .launch import RunOptions
    from .plan import RunPlan

__all__ = ["IN_PROCESS", "InProcessRuntime", "Run", "new_run_id", "settle_like"]

_RUN_ID_PREFIX = uuid.uuid4().hex[:16]
_run_counter = itertools.count(1)


def _new_run_id_prefix() -> None:
    """A process of its own, its own run ids: a forked child (``multiprocessing`` on Linux)
    starts with its parent's prefix and counter, and would make the same ids."""
    global _RUN_ID_PREFIX, _run_counter
    _RUN_ID_PREFIX = uuid.uuid4().hex[:16]
    _run_counter = itertools.count(1)


os.register_at_fork(after_in_child=_new_run_id_prefix)


# Read on every run (an enum member read off its class is a descriptor call in Python 3.11).
SUPERSTEP = Mode.SUPERSTEP
FINISHED = RunStatus.FINISHED


def new_run_id() -> str:
    """A unique run id: a random per-process prefix and a counter (cheaper than uuid4)."""
    return f"{_RUN_ID_PREFIX}{next(_run_counter):016x}"


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Run:
    """One run on the running event loop: its kernel state, workers, stream and store."""

    __slots__ = (
        "__weakref__",
        "_awaited",
        "_closes",
        "_draining",
        "_feeding",
        "_flush_scheduled",
        "_followups",
        "_lifecycle",
        "_requests",
        "_route",
        "_store",
        "_stream",
        "_timers",
        "_unflushed",
        "_waiters",
        "_waits",
        "_wall",
        "bridge",
        "clock",
        "context",
        "done",
        "graph",
        "limiters",
        "loop",
        "mode",
        "name",
        "observers",
        "outcome",
        "owner",
        "parent_run_id",
        "plan",
        "programs",
        "request_prefix",
        "run_id",
        "state",
        "superstep_mode",
        "telemetry_name",
        "workers",
    )

    def __init__(self, plan: RunPlan, owner: object, options: RunOptions) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self.plan = plan
        self.name = plan.name
        self.telemetry_name = plan.telemetry_name or plan.name
        graph = self.graph = plan.graph
        self.programs = plan.programs
        self.owner = owner
        self.run_id = new_run_id()
        scope = current_scope()  # a run started by a step of another: a sub-workflow's
        self.request_prefix = _request_prefix(self.run_id, scope)  # (a fork keeps its parent's)
        self.parent_run_id: str | None = None if scope is None else scope.run.run_id
        self.mode = options.mode
        self.state = RunState(
            graph,
            mode=options.mode,
            max_supersteps=options.max_supersteps,
            max_concurrency=options.max_concurrency,
            timeout=options.timeout,
        )
        self.clock = options.clock
        self._wall = options.clock.wall
        self.limiters = options.limiters
        self.outcome: asyncio.Future[Any] = loop.create_future()
        self._stream: EventStream | None = None  # made on first use
        self._closes = False  # the run finished: its style's closing events end the stream
        self.superstep_mode = options.mode is SUPERSTEP
        self.observers: list[RunObserver] = list(options.observers)
        traced = run_tracer(self)  # None unless tracing is set up: then spans for this run
        if traced is not None:
            self.observers.append(traced)
        if options.verbose:
            self.observers.insert(0, Verbose())
        if scope is not None:  # the outer run's event log records this one too
            for observer in getattr(scope.run, "observers", ()):
                if getattr(observer, "follows_sub_runs", False) and not heard_by(
                    self.observers, observer
                ):
                    self.observers.append(observer)
        self._route = plan.style.route if graph.entry is not None else None
        self.done = False
        self.bridge = LoopBridge(loop)
        self.workers = WorkerPool()
        # Made on first use: most runs never arm a timer, wait, ask, or touch ctx.store.
        self._store: StateStore | None = None
        self._timers: Timers | None = None
        self._waits: Waits | None = None
        self._requests: Requests | None = None
        self._awaited = False  # an await waits on the outcome itself
        self._waiters: list[asyncio.Future[Any]] | None = None  # the awaits made meanwhile
        self._followups: deque[Tick] = deque()
        self._feeding = False  # carrying out commands: a tick fed now waits in _followups
        self._draining = False
        self._unflushed: list[Scope] = []  # async mode: steps whose sends await delivery
        self._flush_scheduled = False
        self._lifecycle = False
        # The run holds its context only while it runs: Context -> Run is the lasting
        # direction, so a finished run is freed by reference counting, not by the GC.
        self.context: Any = plan.context_type(self)

    # -- the parts made on first use ------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        """The shared state (``ctx.store``), over the kernel's own dict."""
        store = self._store
        if store is None:
            store = self._store = StateStore.attached(self.state.store, self.plan.reducers, self)
            if self.done:
                store.close()
        return store

    @property
    def stream(self) -> EventStream:
        """The run's event stream (made when first written to or read)."""
        stream = self._stream
        if stream is None:
            stream = self._stream = EventStream()
            if self.done:  # ended before anyone looked: what it streamed last, then the end
                if self._closes:
                    for event in self.plan.style.closing_events(self.state):
                        stream.push(event)
                stream.close()
        return stream

    @property
    def timers(self) -> Timers:
        if self._timers is None:
            self._timers = Timers(self.clock)
        return self._timers

    @property
    def waits(self) -> Waits:
        if self._waits is None:
            self._waits = Waits()
        return self._waits

    @property
    def requests(self) -> Requests:
        if self._requests is None:
            self._requests = Requests()
        return self._requests

    # -- the caller's port ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return not self.done

    @property
    def detached(self) -> bool:
        """Whether it stopped here without ending (a durable run goes on in its store)."""
        return False

    @property
    def status(self) -> RunStatus:
        return self.state.status

    @property
    def feeding(self) -> bool:
        """Whether the run is carrying out commands (a tick fed now waits for them)."""
        return self._feeding

    def waiter(self) -> asyncio.Future[Any]:
        """The future an await of the run waits on.

        The first await gets the outcome itself; one made while it is pending gets a future
        of its own, resolved with the outcome, so that cancelling one await cannot cancel
        the future the others wait on.
        """
        outcome = self.outcome
        if outcome.cancelled() and not self.done:  # an await was cancelled: end the run now
            self.cancel("the result was cancelled (an await of the run was cancelled)")
            outcome = self._renewed_outcome()  # (its end may be on its way to a store)
        if outcome.done() or not self._awaited:
            self._awaited = True
            return outcome
        waiter: asyncio.Future[Any] = self.loop.create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        return waiter

    def start(self, message: object) -> None:
        """Start the run with ``message`` as its first message."""
        if self.observers:
            try:
                for observer in self.observers:
                    observer.run_started(self)
            except Exception as exc:  # the run fails, through its handler like any failure
                self._end(RunStatus.FAILED, None, exc)
                return
        self.feed(RunStarted(run_id=self.run_id, start=message))

    def send_external(self, event: object, step: str | None) -> None:
        if self.answered(event):
            return  # the same answer again: nothing to do
        target = None if step is None else self.graph.target("the caller", step, event)
        self.bridge.post(self.feed, ExternalEventReceived(event=event, target=target))

    def answered(self, event: object) -> bool:
        """Whether ``event`` is an answer given already (it changes nothing then).

        Raises:
            RequestAnsweredError: its request has another answer.
            RequestNotFoundError: it names a request the run does not have open.
        """
        graph = self.graph
        if not (graph.answer_types and graph.is_answer(event)):
            return False  # not an answer
        request_id = getattr(event, "request_id", None)
        if request_id is None:
            return False  # it answers the oldest open request, if there is one
        state = self.state
        if request_id in state.answers:
            check_repeated_answer(self, request_id, event)
            return True
        if request_id not in state.inputs:
            raise RequestNotFoundError(
                f"run {self.run_id} of workflow {self.name!r} has no open request "
                f"{request_id!r} (open: {sorted(state.inputs, key=request_order) or 'none'}): the "
                f"{type(event).__name__} naming it is not delivered"
            )
        return False

    def respond(self, request_id: str, response: object) -> Awaitable[None] | None:
        return self.requests.respond(self, request_id, response)

    def open_request(self, request_id: str) -> OpenRequest | None:
        return self.state.requests.get(request_id)

    def cancel(self, reason: str = "cancelled by the caller") -> None:
        self.feed(CancelRequested(reason=reason))

    def task_cancelled(self, reason: str) -> None:
        """A worker's task was cancelled while a step ran (not by the caller): cancel the run."""
        self.cancel(reason)

    async def stopped(self) -> None:
        """Wait until the run has ended (whatever its outcome) and let go of what it held."""
        while not self.done:
            await asyncio.wait((self._renewed_outcome(),))

    def flushed(self) -> Awaitable[None]:
        """Done at once: what the caller sends a run of this process reaches it as sent."""
        done: asyncio.Future[None] = self.loop.create_future()
        done.set_result(None)
        return done

    def _renewed_outcome(self) -> asyncio.Future[Any]:
        """The outcome; in place of one an await cancelled before the run ended, a new one,
        that its end resolves (its error marked seen: whoever cancelled the await knows)."""
        outcome = self.outcome
        if outcome.cancelled() and not self.done:
            outcome = self.outcome = self.loop.create_future()
            outcome.add_done_callback(_seen)
        return outcome

    def events(self, *, lifecycle: bool) -> AsyncIterator[Any]:
        if lifecycle and not self._lifecycle:
            self._lifecycle = True
            observer = self.plan.style.lifecycle(self.stream)
            if observer is not None:
                self.observers.append(observer)
        return self.stream.events(self.run_id)

    # -- the one path into the kernel -----------------------------------------------------------

    def feed(self, tick: Tick) -> list[Command]:
        """Apply ``tick``, carry out the commands it produces, and apply what they queued.

        Never re-entered: a tick fed while commands are being carried out (by an observer,
        say) is queued and applied once they are all carried out.
        """
        if self.done:
            return []
        if self._feeding:
            self._followups.append(tick)
            return []
        tick.at = self._wall()  # (``_applied`` inlined: this is every hop's path)
        try:
            commands = apply(self.state, tick)
        except Exception as exc:  # a tick the kernel refuses: a bug of the shell's
            commands = self._refused(tick, exc)
        if not commands and not self.observers:
            return commands  # a plain state write, say: nothing to carry out
        self._carry_out(tick, commands)
        return commands

    def _applied(self, tick: Tick) -> list[Command]:
        """Stamp ``tick`` with the time and apply it; a refused tick fails the run."""
        tick.at = self._wall()
        try:
            return apply(self.state, tick)
        except Exception as exc:  # a tick the kernel refuses: a bug of the shell's
            return self._refused(tick, exc)

    def _carry_out(self, tick: Tick, commands: list[Command]) -> None:
        """Tell the observers about ``tick`` and carry out its ``commands``, in order."""
        self._feeding = True
        try:  # an observer, or carrying out a command, that raises fails the run
            if self.observers:
                for observer in self.observers:
                    observer.tick(self, tick, commands)
            for command in commands:  # by exact type, the commonest first (cheaper than match)
                if type(command) is StartStep:
                    self.workers.dispatch(self, command)
                elif type(command) is SuperstepEnded:
                    for observer in self.observers:
                        observer.superstep_ended(self, command.superstep)
                elif type(command) is RunEnded:
                    self._end(command.status, command.result, command.error)
                elif type(command) is PublishEvent:
                    self.stream.push(command.event)
                elif type(command) is ResolveWait:
                    self.waits.resolve(command.invocation, command.event)
                elif type(command) is ArmTimer:
                    self.timers.arm(command.timer, command.delay, self._timer_due)
                elif type(command) is CancelTimer:
                    self.timers.cancel(command.timer)
                elif type(command) is FailWait:
                    self.waits.fail(self, command.invocation)
                elif type(command) is MergeState:
                    self._merge(command.writes)
                elif type(command) is ForwardResponse:
                    self.requests.forward(command.request_id, command.response)
                elif type(command) is not CollectResult:  # (a collect reads its result itself)
                    raise StepgraphError(f"the run cannot carry out {short_repr(command, 200)}")
        except Exception as exc:
            if self.done:
                pass
            elif self.state.status is RunStatus.RUNNING:
                self._followups.append(RunAborted(failure=failure_of(exc)))
            else:  # the kernel has ended the run already: end it here with what it decided
                self._end_after(exc)
        finally:
            self._feeding = False
        if self._followups and not self._draining:
            self._drain()

    def _refused(self, tick: Tick, error: BaseException) -> list[Command]:
        """The kernel refused ``tick``: fail the run in the kernel too, so both agree."""
        error.add_note(f"stepgraph: the kernel refused {short_repr(tick, 300)}")
        try:
            return apply(self.state, RunAborted(failure=failure_of(error), at=tick.at))
        except Exception:  # not even that: the kernel's state cannot be trusted any more
            self._end(RunStatus.FAILED, None, error)
            return []

    def _end_after(self, error: BaseException) -> None:
        """Carrying out failed after the kernel ended the run: end as the kernel did.

        A run the kernel finished fails with ``error`` instead (its outcome could not be
        carried out); a run that had failed or been cancelled keeps its own error.
        """
        state = self.state
        if state.status is RunStatus.FINISHED:
            self._end(RunStatus.FAILED, None, error)
        else:
            self._end(state.status, None, error if state.failure is None else state.failure.error)

    def _drain(self) -> None:
        """Apply the ticks that carrying out commands queued (``StateMerged``, ``RunAborted``)."""
        self._draining = True
        try:
            followups = self._followups
            while followups:
                self.feed(followups.popleft())
        finally:
            self._draining = False

    def abort(self, error: BaseException) -> None:
        """The shell could not go on: fail the run with ``error``."""
        self.feed(RunAborted(failure=failure_of(error)))
        if not self.done:  # the kernel could not take it (it had not started)
            self._end(RunStatus.FAILED, None, error)

    def _timer_due(self, timer: str) -> None:
        self.feed(TimerFired(timer=timer))

    def _merge(self, writes: tuple[tuple[str, object], ...]) -> None:
        """``MergeState``: run the reducers, in order; the kernel takes the values next."""
        try:
            values = tuple(merge_writes(self.state.store, writes, self.plan.reducers))
        except Exception as exc:
            self._followups.append(StateMerged(failure=failure_of(exc)))
        else:
            self._followups.append(StateMerged(values=values))

    # -- what steps send ------------------------------------------------------------------------

    def limit(self, scope: Scope | None, name: str) -> AbstractAsyncContextManager[float]:
        """``ctx.limit(name)``: hold the run's limiter ``name`` for a block."""
        return limited(name, dict(self.limiters), self.where(scope)).hold()

    def where(self, scope: Scope | None) -> str:
        """Who is acting, for messages: the caller, or a step of this run."""
        if scope is None or scope.run is not self:
            return "the caller"
        node = self.graph.nodes[scope.node].name
        return f"{self.graph.node_kind} {node!r} of workflow {self.name!r}"

    def emit(self, scope: Scope, message: object, targets: tuple[int, ...] | None = None) -> None:
        """Emit from a step: buffered until it returns (superstep mode) or delivered soon."""
        if not scope.active or scope.invocation not in self.state.invocations:
            raise WorkflowRuntimeError(
                f"{self.where(scope)} sent {type(message).__name__} after the step had "
                f"returned (from a task it started?); send before the step returns, or "
                f"await that task inside the step"
            )
        if self.graph.answer_types:  # input requests of @step workflows get their ids here
            self.stamp(scope, message)
        if self.superstep_mode:
            scope.sent.append((message, targets))
        elif get_ident() != self.bridge.thread:  # a sync step in a thread: deliver now
            self.loop.call_soon_threadsafe(self._send_now, scope, [(message, targets)])
        else:
            # Async mode delivers no later than the step's next suspension: nothing else
            # can run before it, so buffering until then is not observable, and a step that
            # sends several messages and returns costs one kernel call instead of several.
            if not scope.sent:
                self._unflushed.append(scope)
                if not self._flush_scheduled:  # one callback per loop turn, not per send
                    self._flush_scheduled = True
                    self.loop.call_soon(self._flush_all)
            scope.sent.append((message, targets))

    def send(self, scope: Scope | None, message: object, step: str | None) -> None:
        """Send from a step or from the caller, to the routed nodes or to node ``step``."""
        if scope is None or scope.run is not self:
            self.send_external(message, step)
            return
        targets = None if step is None else (self.graph.target(self.where(scope), step, message),)
        self.emit(scope, message, targets)

    def _routed(
        self, node: int, sent: Sequence[tuple[object, tuple[int, ...] | None]]
    ) -> tuple[Emission, ...]:
        """Resolve the targets of a node's messages along its edges (its conditions run here)."""
        route = self._route
        if route is None:
            return tuple(sent)
        return tuple([(m, route(node, m) if t is None else t) for m, t in sent])

    def completed(
        self, invocation: int, node: int, sent: Sequence[tuple[object, tuple[int, ...] | None]]
    ) -> Tick:
        """The tick of a step that returned having sent ``sent`` (a failure if routing raised)."""
        route = self._route
        if route is None:
            return StepCompleted(invocation=invocation, emitted=tuple(sent))
        try:
            if len(sent) == 1:  # the common case, without building a list
                message, targets = sent[0]
                emitted: tuple[Emission, ...] = (
                    (message, route(node, message) if targets is None else targets),
                )
            else:
                emitted = self._routed(node, sent)
        except Exception as exc:  # an edge condition or selector raised: the step fails
            return StepFailed(invocation=invocation, failure=failure_of(exc))
        return StepCompleted(invocation=invocation, emitted=emitted)

    def _send_now(self, scope: Scope, sent: list[tuple[object, tuple[int, ...] | None]]) -> None:
        """Deliver what a still-running step sent (``EventsSent``)."""
        if self.done or not scope.active or scope.invocation not in self.state.invocations:
            return
        try:
            emitted = self._routed(scope.node, sent)
        except Exception as exc:
            self.feed(StepFailed(invocation=scope.invocation, failure=failure_of(exc)))
            return
        self.feed(EventsSent(invocation=scope.invocation, emitted=emitted))

    def flush(self, scope: Scope) -> None:
        """Deliver what ``scope`` sent so far (before it waits or asks the caller)."""
        if scope.sent:
            sent, scope.sent = scope.sent, []
            self._send_now(scope, sent)

    def _flush_all(self) -> None:
        """Deliver what still-running steps sent (async mode), once they have suspended."""
        self._flush_scheduled = False
        scopes, self._unflushed = self._unflushed, []
        for scope in scopes:
            if scope.sent:
                sent, scope.sent = scope.sent, []
                self._send_now(scope, sent)

    def publish(self, scope: Scope | None, event: object) -> None:
        """Put ``event`` on the stream; an input request a caller answers with an event pauses.

        The kernel announces an input request (once: a step that runs again after a resume
        asks with the same id), so that the run waits for its answer.
        """
        graph = self.graph
        if (
            graph.answer_types
            and graph.is_input_request(event)
            and scope is not None
            and scope.run is self
        ):
            self.stamp(scope, event)
            self.bridge.post(self.feed, InputRequested(invocation=scope.invocation, event=event))
        else:
            self._stream_event(scope, event)

    def _stream_event(self, scope: Scope | None, event: object) -> None:
        """Put what a step wrote on the stream (on the run's loop)."""
        self.bridge.post(self.stream.push, event)

    def request_id(self, scope: Scope) -> str:
        """The id of the next request ``scope``'s attempt makes: the same when it runs again."""
        asked = scope.asked
        scope.asked = asked + 1
        return f"{self.request_prefix}:{scope.invocation}:{asked}"

    def stamp(self, scope: Scope, message: object) -> None:
        """Give an input request a step emits its id (unless it has one)."""
        if self.graph.is_input_request(message) and getattr(message, "request_id", 0) is None:
            message.request_id = self.request_id(scope)  # type: ignore[attr-defined]

    # -- what steps ask -------------------------------------------------------------------------

    def collect(self, scope: Scope, event: object, expected: Sequence[type]) -> list[Any] | None:
        return collect(self, scope, event, expected)

    def wait_for(
        self,
        scope: Scope,
        types: tuple[type, ...],
        requirements: Mapping[str, object],
        timeout: float | None,
    ) -> Awaitable[Any]:
        return self.waits.wait_for(self, scope, types, requirements, timeout)

    def request(
        self,
        scope: Scope,
        request_id: str,
        data: object,
        response_type: Any,
        event: object,
        forward: Callable[[object], Awaitable[None] | None] | None = None,
    ) -> str:
        program = self.programs[scope.node]
        if forward is None and not any(
            issubclass(response_type, h.types) for h in getattr(program, "responses", ())
        ):
            raise WorkflowRuntimeError(
                f"executor {program.name!r} asked for a {response_type.__name__} with "
                f"request_info but has no @response_handler taking {response_type.__name__}"
            )
        return self.bridge.call(
            lambda: self.requests.open(self, scope, request_id, data, response_type, event, forward)
        )

    # -- the shared state (the store's sink) ----------------------------------------------------

    def writer(self) -> object | None:
        """The invocation whose reducer writes wait for the barrier, or None: merge now."""
        if not self.superstep_mode:
            return None
        scope = current_scope()
        if scope is None or scope.run is not self or scope.invocation not in self.state.invocations:
            return None
        return scope.invocation

    def commit(
        self,
        writes: tuple[tuple[str, Any], ...],
        deletes: tuple[str, ...],
        merges: tuple[tuple[str, Any], ...],
        writer: object | None,
    ) -> None:
        """A store change becomes a ``StateWritten`` tick."""
        invocation = writer if isinstance(writer, int) else None
        if invocation is None and self.state.undo_writes:  # a durable run logs its writers
            scope = current_scope()
            if scope is not None and scope.run is self and scope.active:
                invocation = scope.invocation
        tick = StateWritten(invocation=invocation, writes=writes, deletes=deletes, merges=merges)
        if get_ident() == self.bridge.thread:
            self.feed(tick)
        else:
            self.bridge.call(lambda: self.feed(tick))

    def carry_out_effects(self, effects: Effects) -> None:
        """Carry out what a body that ran elsewhere did, in its invocation's scope."""
        scope = current_scope()
        assert scope is not None and scope.run is self
        for op, first, second in effects.ops:
            if op == "send":
                self.send(scope, first, second)  # type: ignore[arg-type]
            elif op == "stream":
                self.publish(scope, first)
            elif op == "set":
                self.store._commit([(first, second)])  # type: ignore[list-item]
            else:
                self.store._commit([], (first,))  # type: ignore[arg-type]

    # -- the end --------------------------------------------------------------------------------

    def _end(self, status: RunStatus, result: object, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        self.workers.stop()
        if self._timers is not None:
            self._timers.cancel_all()
        if self._waits is not None:
            self._waits.cancel_all()
        if self._requests is not None:
            self._requests.clear()
        if self._store is not None:
            self._store.close()  # its sink was this run: no cycle left behind
        self.context = None  # Context -> Run stays; Run -> Context goes
        if self.observers:
            status, result, error = self._tell_end(status, result, error)
        outcome = self.outcome
        replaced = outcome.cancelled()
        if replaced:  # an await was cancelled: later awaits get WorkflowCancelled
            self.outcome = outcome = self.loop.create_future()
        stream = self._stream
        if status is FINISHED:
            style = self.plan.style
            try:
                value = self._result_value()
            except Exception as exc:
                outcome.set_exception(exc)
            else:
                outcome.set_result(value)
                self._closes = True
                if stream is not None:
                    for event in style.closing_events(self.state):
                        stream.push(event)
        elif status is RunStatus.CANCELLED:
            outcome.set_exception(error or StepgraphError(f"run {self.run_id} was cancelled"))
        else:
            outcome.set_exception(error or StepgraphError(f"run {self.run_id} failed"))
        if replaced and not outcome.cancelled():
            outcome.exception()  # whoever cancelled knows; later awaits still get it
        if self._waiters:
            self._resolve_waiters()
        if stream is not None:
            stream.close()

    def _result_value(self) -> object:
        """What awaiting a finished run gives."""
        return self.plan.style.result(self.state, self.run_id)

    def _tell_end(
        self, status: RunStatus, result: object, error: BaseException | None
    ) -> tuple[RunStatus, object, BaseException | None]:
        """Tell the observers the run ended (attempts cut short first); a finished run whose
        end an observer could not record fails with that observer's error."""
        failed: BaseException | None = None
        watched = self.workers.watched
        if watched:
            self.workers.watched = {}
        for command in watched.values():  # attempts cut short end before the run does
            name = self.programs[command.node].name
            for observer in self.observers:
                try:
                    observer.step_ended(self, name, command.invocation, command.attempt, None)
                except Exception as exc:
                    failed = failed or exc
        for observer in self.observers:  # every observer is told the same outcome
            try:
                observer.run_ended(self, status, result, error)
            except Exception as exc:
                failed = failed or exc
        if failed is not None and status is RunStatus.FINISHED:
            return RunStatus.FAILED, None, failed
        return status, result, error

    def _resolve_waiters(self) -> None:
        """Each await's own future gets the outcome: at once, with no extra loop turn."""
        waiters, self._waiters = self._waiters, None
        if not waiters:
            return
        outcome = self.outcome
        for waiter in waiters:
            settle_like(waiter, outcome)


def settle_like(waiter: asyncio.Future[Any], outcome: asyncio.Future[Any]) -> None:
    """Give ``waiter`` (unless done) what the done ``outcome`` holds."""
    if waiter.done():
        return
    if outcome.cancelled():
        waiter.cancel()
    elif outcome.exception() is not None:
        waiter.set_exception(outcome.exception())  # type: ignore[arg-type]
    else:
        waiter.set_result(outcome.result())


class InProcessRuntime:
    """Runs a plan's runs in this process, on the running event loop (the default)."""

    def create(self, plan: RunPlan, owner: object, options: RunOptions) -> Run:
        return Run(plan, owner, options)

    def __repr__(self) -> str:
        return "InProcessRuntime()"


IN_PROCESS = InProcessRuntime()
"""The runtime ``run()`` uses unless given another."""


def _request_prefix(run_id: str, scope: Scope | None) -> str:
    """What the ids of a new run's requests start with: its id; for a run started by a
    step of another (a sub-workflow; ``scope``: that step's), that step's place in its
    run, which stays the same when the step runs again (a retry, a resume), so that the
    requests do too."""
    if scope is None:
        return run_id
    outer = scope.run
    return f"{outer.request_prefix}:{outer.graph.nodes[scope.node].name}:{scope.invocation}"
