"""The asyncio shell of one run: it feeds ticks to the kernel and carries out its commands.

Rules of this module:

* All asyncio objects of a run are created inside the loop that runs it (G1), when
  the run starts; the workflow object holds none of them.
* A run has long-lived worker tasks shared by its nodes (the kernel enforces each
  node's ``num_workers``), fed through a deque and woken by a future: no Task per
  invocation, and a worker runs the step it just made ready without a hand-off.
* ``feed`` is the only path into the kernel; it never re-enters itself, because no
  command is carried out by feeding another tick synchronously.
* When the run ends every worker is cancelled and the run drops its references,
  so a finished run holds nothing alive but its result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import types
import typing
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..core import (
    AttemptFailed,
    CancelRequested,
    CollectRequested,
    CollectResult,
    Command,
    EventsSent,
    ExternalEventReceived,
    FailWait,
    Mode,
    PublishEvent,
    ResolveWait,
    RunEnded,
    RunStarted,
    RunState,
    RunStatus,
    RunTimedOut,
    StartStep,
    StepCompleted,
    StepFailed,
    SuperstepEnded,
    Tick,
    WaitCancelled,
    WaitStarted,
    WaitTimedOut,
    apply,
)
from ..errors import (
    InvalidResponseError,
    InvalidStepResultError,
    RequestNotFoundError,
    StepgraphError,
    StepTimeoutError,
    UnknownStepError,
    UnroutableEventError,
    WaitForEventTimeoutError,
    WorkflowCancelled,
    WorkflowRuntimeError,
)
from ..events import Event, StopEvent
from ..graph_events import (
    ExecutorCompletedEvent,
    ExecutorInvokedEvent,
    RequestInfoEvent,
    RunResult,
    SuperstepCompletedEvent,
)
from ..state.store import StateStore
from ._scope import Scope, current_scope, set_scope
from .context import set_current_context
from .plan import NodeProgram, RunPlan
from .stream import EventStream

if TYPE_CHECKING:
    pass

__all__ = ["Run", "current_scope"]

_RUN_ID_PREFIX = uuid.uuid4().hex[:16]
_run_counter = itertools.count(1)


def new_run_id() -> str:
    """A unique run id: a random per-process prefix and a counter (cheaper than uuid4)."""
    return f"{_RUN_ID_PREFIX}{next(_run_counter):016x}"


_YIELD_EVERY = 64
"""A worker yields to the event loop after this many steps in a row without waiting."""


def _cancelled_from_outside() -> bool:
    """Whether the current task is being cancelled (rather than the step raising it)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _is_instance(value: object, expected: Any) -> bool:
    """isinstance that understands Any/object, unions and generic aliases (list[str])."""
    if expected is Any or expected is object:
        return True
    origin = typing.get_origin(expected)
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_instance(value, arg) for arg in typing.get_args(expected))
    if origin is not None:
        expected = origin
    return isinstance(value, expected)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


class _Request:
    """An open request for information (executor graphs)."""

    __slots__ = ("data", "forward", "node", "response_type")

    def __init__(
        self,
        node: int,
        data: object,
        response_type: type,
        forward: Callable[[object], Any] | None = None,
    ) -> None:
        self.node = node
        self.data = data
        self.response_type = response_type
        self.forward = forward


class ResponseMessage:
    """The caller's answer to a request, delivered to the executor that asked."""

    __slots__ = ("data", "request_id", "response")

    def __init__(self, request_id: str, data: object, response: object) -> None:
        self.request_id = request_id
        self.data = data
        self.response = response

    def __repr__(self) -> str:
        return f"ResponseMessage(request_id={self.request_id!r}, response={self.response!r})"


class Run:
    """The shell of one run: a kernel state, its workers, its stream and its shared state."""

    def __init__(
        self,
        plan: RunPlan,
        owner: object,
        *,
        mode: Mode,
        timeout: float | None,
        max_supersteps: int,
        max_concurrency: int | None,
        journal: bool = False,
        verbose: bool = False,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.verbose = verbose
        self.plan = plan
        self.name = plan.name
        graph = self.graph = plan.graph
        self.run_id = new_run_id()
        self.state = RunState(
            graph, mode=mode, max_supersteps=max_supersteps, max_concurrency=max_concurrency
        )
        self.timeout = timeout
        self.future: asyncio.Future[Any] = self.loop.create_future()
        self.future.add_done_callback(self._future_done)
        self.stream = EventStream()
        self.superstep_mode = mode is Mode.SUPERSTEP
        self.store = StateStore(
            reducers=plan.reducers,
            order=self._writer_position if plan.reducers and self.superstep_mode else None,
        )
        # The run holds its Context only while it runs: Context -> Run is the lasting
        # direction, so a finished run is freed by reference counting, not by the GC.
        self.ctx: Any = plan.context_type(self)
        self.journal: list[Tick] | None = [] if journal else None
        self.done = False
        self._thread = threading.get_ident()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waits: dict[int, asyncio.Future[Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.on_superstep: list[Callable[[int], None]] = []
        self._specs: tuple[NodeProgram, ...] = plan.programs
        self._workflow = owner
        self.requests: dict[str, _Request] = {}
        self._unflushed: list[Scope] = []  # async mode: steps whose sends await delivery
        self._flush_scheduled = False
        self.lifecycle = False  # executor graphs: switched on when the stream is consumed
        self._pending: deque[StartStep] = deque()  # started invocations not yet on a worker
        self._idle: list[asyncio.Future[None]] = []
        self._workers = 0
        self._busy = 0  # workers executing a step body

    # -- setup ----------------------------------------------------------------------------------

    def start(self, start_event: object) -> None:
        """Start the run on the running loop."""
        if self.timeout is not None:
            self._timer = self.loop.call_later(
                self.timeout, self.feed, RunTimedOut(seconds=self.timeout)
            )
        self.feed(RunStarted(run_id=self.run_id, start=start_event))

    # -- the one path into the kernel -----------------------------------------------------------

    def feed(self, tick: Tick) -> list[Command]:
        """Apply ``tick`` and carry out the commands it produces."""
        if self.done:
            return []
        if self.journal is not None:
            self.journal.append(tick)
        try:
            commands = apply(self.state, tick)
        except Exception as exc:  # a kernel bug (or a raising edge condition) fails the run
            self._end(RunStatus.FAILED, None, exc)
            return []
        try:  # a raising reducer or hook fails the run, never hangs it
            for command in commands:
                match command:
                    case StartStep():
                        self._dispatch(command)
                    case ResolveWait():
                        waiter = self._waits.get(command.invocation)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(command.event)
                    case RunEnded():
                        self._end(command.status, command.result, command.error)
                    case SuperstepEnded():
                        self._superstep_ended(command.superstep)
                    case PublishEvent():
                        self.stream.push(command.event)
                    case FailWait():
                        self._fail_wait(command.invocation)
        except Exception as exc:
            self._end(RunStatus.FAILED, None, exc)
        return commands

    def _say(self, command: StartStep, tick: Tick) -> None:
        """verbose=True: what a step produced, as LlamaIndex Workflows prints it."""
        name = self._specs[command.node].name
        if isinstance(tick, StepFailed):
            print(f"Step {name} failed: {type(tick.error).__name__}: {tick.error}")
            return
        emitted = tick.emitted if isinstance(tick, StepCompleted) else ()
        produced = ", ".join(type(message).__name__ for message, _ in emitted) or "no event"
        print(f"Step {name} produced {produced}")

    def _superstep_ended(self, superstep: int) -> None:
        self.store.apply_pending()
        if self.lifecycle:
            self.stream.push(SuperstepCompletedEvent(superstep=superstep))
        for hook in self.on_superstep:
            hook(superstep)

    def _writer_position(self) -> tuple[int, int] | None:
        """The deterministic position of the step writing to the store (reducer order)."""
        scope = current_scope()
        if scope is None or scope.run is not self:
            return None
        return self._position_of(scope.invocation)

    def _position_of(self, invocation: int) -> tuple[int, int] | None:
        found = self.state.invocations.get(invocation)
        return None if found is None else found.order

    def feed_threadsafe(self, tick: Tick) -> None:
        """Feed from any thread (sync steps run in a thread)."""
        if threading.get_ident() == self._thread:
            self.feed(tick)
        else:
            self.loop.call_soon_threadsafe(self.feed, tick)

    def call_in_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the loop's thread and return its result (blocking a worker thread)."""
        if threading.get_ident() == self._thread:
            return fn()
        answer: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                answer.set_result(fn())
            except BaseException as exc:
                answer.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return answer.result()

    # -- workers --------------------------------------------------------------------------------

    def _dispatch(self, command: StartStep) -> None:
        """Queue a started invocation for the run's workers; wake or add one if needed.

        Workers are shared by all nodes of the run (the kernel already enforces
        num_workers per node), so a worker that finishes a step usually runs the
        step it just made ready itself, with no event-loop hand-off.
        """
        pending = self._pending
        pending.append(command)
        if self._idle:
            self._idle.pop().set_result(None)
        elif self._workers - self._busy < len(pending):
            self._workers += 1
            self._tasks.add(self.loop.create_task(self._worker()))

    async def _worker(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        set_current_context(ctx)
        try:
            await self._work()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug in the shell must fail the run, never hang it
            self._end(RunStatus.FAILED, None, exc)

    async def _work(self) -> None:
        pending = self._pending
        streak = 0
        while True:
            while pending:
                command = pending.popleft()
                self._busy += 1
                if self.lifecycle:
                    name = self._specs[command.node].name
                    self.stream.push(ExecutorInvokedEvent(executor_id=name))
                if self.verbose:
                    print(f"Running step {self._specs[command.node].name}")
                tick = await self._invoke(command)
                self._busy -= 1
                if self.verbose:
                    self._say(command, tick)
                if self.lifecycle:
                    name = self._specs[command.node].name
                    self.stream.push(ExecutorCompletedEvent(executor_id=name))
                self.feed(tick)
                tick = command = None  # type: ignore[assignment]  # hold no finished message
                if self.done:
                    return
                streak += 1
                if streak >= _YIELD_EVERY:  # let other tasks run during long chains
                    streak = 0
                    await asyncio.sleep(0)
            streak = 0
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._idle.append(waiter)
            await waiter

    async def _invoke(self, command: StartStep) -> Tick:
        spec = self._specs[command.node]
        call = spec.call
        workflow, ctx = self._workflow, self.ctx
        message = command.message
        timeout = spec.config.timeout
        policy = spec.config.retry_policy
        attempt = 1
        while True:
            # A fresh scope per attempt: an abandoned attempt (a sync step still running in
            # its thread after a timeout) can no longer send for the invocation.
            scope = Scope(self, command.invocation, command.node, message)
            set_scope(scope)
            try:
                if timeout is None:
                    result = await call(workflow, ctx, message)
                else:
                    async with asyncio.timeout(timeout) as deadline:
                        result = await call(workflow, ctx, message)
                break
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and _cancelled_from_outside():
                    raise  # the run is ending: this worker is being cancelled
                scope.active = False
                timed_out = timeout is not None and deadline.expired()
                delay = None
                if policy is not None and not isinstance(
                    exc, WorkflowRuntimeError | asyncio.CancelledError
                ):
                    delay = policy.next_delay(attempt, exc)
                if delay is None:
                    error = self._step_error(spec, message, exc, attempt, timed_out)
                    return StepFailed(invocation=command.invocation, error=error)
                # A failed attempt leaves nothing behind: its buffered sends, its reducer
                # writes, the events it collected and its undelivered flushed sends.
                self.store.discard_pending(self._position_of(command.invocation))
                self.feed(AttemptFailed(invocation=command.invocation))
                attempt += 1
                await asyncio.sleep(delay)
        sent = scope.sent
        scope.sent = []  # a pending flush (async mode) finds nothing left to deliver
        if result is None:
            return StepCompleted(invocation=command.invocation, emitted=tuple(sent))
        if isinstance(result, Event) and spec.returns_events:
            sent.append((result, None))
            return StepCompleted(invocation=command.invocation, emitted=tuple(sent))
        if spec.returns_events:
            hint = "a step returns an Event or None (send several with ctx.send_event)"
        else:
            hint = "a handler returns None; send messages with `await ctx.send_message(...)`"
        error = InvalidStepResultError(
            f"{self._kind} {spec.name!r} of workflow {self.name!r} returned {_short(result)} "
            f"({type(result).__name__}) processing {type(message).__name__}; {hint}"
        )
        return StepFailed(invocation=command.invocation, error=error)

    @property
    def _kind(self) -> str:
        return "executor" if self.plan.executor_graph else "step"

    def _step_error(
        self,
        spec: NodeProgram,
        message: object,
        exc: BaseException,
        attempt: int,
        timed_out: bool,
    ) -> BaseException:
        where = (
            f"{self._kind} {spec.name!r} of workflow {self.name!r} (run {self.run_id}) "
            f"processing {type(message).__name__}: {_short(message)}"
        )
        if timed_out:
            error: BaseException = StepTimeoutError(
                f"{where} timed out after {spec.config.timeout}s on attempt {attempt}"
            )
            error.__cause__ = exc
            return error
        if isinstance(exc, StepgraphError):
            if not any(spec.name in str(arg) for arg in exc.args):
                exc.add_note(f"raised in {where}")
            return exc
        exc.add_note(f"stepgraph: raised in {where}, attempt {attempt}")
        return exc

    # -- context services -----------------------------------------------------------------------

    def where(self, scope: Scope | None) -> str:
        """Who is acting, for messages: the caller, or a step of this run."""
        if scope is None or scope.run is not self:
            return "the caller"
        return f"{self._kind} {self.graph.nodes[scope.node].name!r} of workflow {self.name!r}"

    def send(self, scope: Scope | None, event: object, step: str | None) -> None:
        """Send from a step or from the caller, to the routed nodes or to node ``step``."""
        target = None if step is None else self._target(self.where(scope), event, step)
        if scope is None or scope.run is not self:
            self.send_external(event, target)
        else:
            self.emit(scope, event, target)

    def emit(self, scope: Scope, message: object, target: int | None = None) -> None:
        """Emit from a step: buffered until it returns (superstep mode) or delivered now."""
        if not scope.active or scope.invocation not in self.state.invocations:
            raise WorkflowRuntimeError(
                f"{self.where(scope)} sent {type(message).__name__} after the step had "
                f"returned (from a task it started?); send before the step returns, or "
                f"await that task inside the step"
            )
        if self.superstep_mode:
            scope.sent.append((message, target))
        elif threading.get_ident() != self._thread:  # a sync step in a thread: deliver now
            self.loop.call_soon_threadsafe(
                self.feed, EventsSent(invocation=scope.invocation, emitted=((message, target),))
            )
        else:
            # Async mode delivers no later than the step's next suspension: nothing else
            # can run before it, so buffering until then is not observable, and a step that
            # sends several messages and returns costs one kernel call instead of several.
            if not scope.sent:
                self._unflushed.append(scope)
                if not self._flush_scheduled:  # one callback per loop turn, not per send
                    self._flush_scheduled = True
                    self.loop.call_soon(self._flush)
            scope.sent.append((message, target))

    def _flush(self) -> None:
        """Deliver what still-running steps sent (async mode), once they have suspended."""
        self._flush_scheduled = False
        scopes, self._unflushed = self._unflushed, []
        for scope in scopes:
            sent = scope.sent
            if (
                sent
                and scope.active
                and not self.done
                and scope.invocation in self.state.invocations
            ):
                scope.sent = []
                self.feed(EventsSent(invocation=scope.invocation, emitted=tuple(sent)))

    def _target(self, where: str, event: object, step: str | None) -> int | None:
        if step is None:
            return None
        kind = self._kind
        index = self.graph.index_of.get(step)
        if index is None:
            raise UnknownStepError(
                f"{where} sent {type(event).__name__} to {kind} {step!r}, but workflow "
                f"{self.name!r} has no such {kind}; it has {sorted(self.graph.index_of)}"
            )
        if not self.graph.accepts(index, event) and not isinstance(event, StopEvent):
            raise UnroutableEventError(
                f"{where} sent {type(event).__name__} to {kind} {step!r}, which does not "
                f"accept it (it accepts {[t.__name__ for t in self.graph.nodes[index].accepts]})"
            )
        return index

    # -- requests for information (executor graphs) ---------------------------------------------

    def request(
        self,
        scope: Scope,
        data: object,
        response_type: type,
        forward: Callable[[object], Any] | None = None,
        request_id: str | None = None,
    ) -> str:
        """Open a request: publish a RequestInfoEvent; the answer comes by ``respond``."""
        request_id = request_id or uuid.uuid4().hex
        node = scope.node
        self.requests[request_id] = _Request(node, data, response_type, forward)
        event = RequestInfoEvent(
            request_id=request_id,
            data=data,
            source_executor_id=self.graph.nodes[node].name,
            response_type=getattr(response_type, "__name__", str(response_type)),
        )
        if forward is not None:
            self.stream.push(event)  # a sub-workflow's request: its run is the one waiting
        else:
            self.emit(scope, event)
        return request_id

    def respond(self, request_id: str, response: object) -> Any:
        """Answer an open request; a response of the wrong type leaves it open."""
        request = self.requests.get(request_id)
        if request is None:
            raise RequestNotFoundError(
                f"run {self.run_id} of workflow {self.name!r} has no open request "
                f"{request_id!r} (open: {sorted(self.requests) or 'none'})"
            )
        expected = request.response_type
        if not _is_instance(response, expected):
            raise InvalidResponseError(
                f"request {request_id!r} from executor "
                f"{self.graph.nodes[request.node].name!r} expects a "
                f"{getattr(expected, '__name__', expected)}, got {type(response).__name__} "
                f"({_short(response)}); the request stays open"
            )
        del self.requests[request_id]
        if request.forward is not None:
            return request.forward(response)
        message = ResponseMessage(request_id, request.data, response)
        self.feed(ExternalEventReceived(event=message, target=request.node))
        return None

    def send_external(self, event: object, target: int | None) -> None:
        self.feed_threadsafe(ExternalEventReceived(event=event, target=target))

    def collect(self, scope: Scope, event: object, expected: Sequence[type]) -> list[Any] | None:
        undoable = self._specs[scope.node].config.retry_policy is not None
        tick = CollectRequested(
            invocation=scope.invocation, message=event, expected=expected, undoable=undoable
        )
        if threading.get_ident() == self._thread:
            commands = self.feed(tick)
        else:
            commands = self.call_in_loop(lambda: self.feed(tick))
        for command in commands:
            if type(command) is CollectResult:
                if not command.accepted:
                    kinds = sorted({t.__name__ for t in expected})
                    raise WorkflowRuntimeError(
                        f"{self.where(scope)} called collect_events with a "
                        f"{type(event).__name__}, which is none of the expected types {kinds}; "
                        f"the event would be lost"
                    )
                return command.batch
        return None

    async def wait_for(
        self,
        scope: Scope,
        types: tuple[type, ...],
        requirements: Mapping[str, object],
        timeout: float | None,
    ) -> Any:
        if scope.sent:  # what the step sent before waiting must flow, or the wait could deadlock
            sent, scope.sent = tuple(scope.sent), []
            self.feed(EventsSent(invocation=scope.invocation, emitted=sent))
        if scope.invocation in self._waits:
            raise WorkflowRuntimeError(
                f"{self.where(scope)} called wait_for_event while already waiting; one step "
                f"waits for one event at a time (await the first wait, or use two steps)"
            )
        waiter: asyncio.Future[Any] = self.loop.create_future()
        self._waits[scope.invocation] = waiter
        handle = None
        if timeout is not None:
            handle = self.loop.call_later(
                timeout, self.feed, WaitTimedOut(invocation=scope.invocation)
            )
        self.feed(WaitStarted(invocation=scope.invocation, types=types, requirements=requirements))
        try:
            return await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self._waits.pop(scope.invocation, None)
            if waiter.cancelled() or not waiter.done():  # the step stopped waiting itself
                self.feed(WaitCancelled(invocation=scope.invocation))

    def _fail_wait(self, invocation: int) -> None:
        waiter = self._waits.get(invocation)
        if waiter is None or waiter.done():
            return
        inv = self.state.invocations.get(invocation)
        name = "?" if inv is None else self.graph.nodes[inv.node].name
        waiter.set_exception(
            WaitForEventTimeoutError(
                f"step {name!r} of workflow {self.name!r}: wait_for_event timed out before a "
                f"matching event arrived"
            )
        )

    # -- the end --------------------------------------------------------------------------------

    def _future_done(self, future: asyncio.Future[Any]) -> None:
        # An awaiter that is cancelled (asyncio.wait_for, asyncio.timeout) cancels the
        # future it awaits: nobody can get the result any more, so the run ends too.
        if future.cancelled() and not self.done:
            self.cancel("the result was cancelled (an await of the run was cancelled)")

    def cancel(self, reason: str = "cancelled by the caller") -> None:
        self.feed(CancelRequested(reason=reason))

    def _end(self, status: RunStatus, result: object, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        self.ctx = None
        try:
            self.store.apply_pending()
        except Exception as exc:  # a reducer raised: the run cannot report its state
            if status is RunStatus.FINISHED:
                status, result, error = RunStatus.FAILED, None, exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks.clear()
        for waiter in self._waits.values():
            waiter.cancel()
        self._waits.clear()
        self._pending.clear()
        for waiter in self._idle:
            waiter.cancel()
        self._idle.clear()
        future = self.future
        if future.done():  # cancelled by an awaiter: there is no one to report to
            self.stream.close()
            return
        if status is RunStatus.FINISHED:
            if self.plan.executor_graph:
                outputs = [output.data for output in self.state.outputs]  # type: ignore[attr-defined]
                future.set_result(RunResult(outputs, self.run_id, self.store.to_dict()))
            else:
                if result is not None:
                    self.stream.push(result)
                future.set_result(result.result if type(result) is StopEvent else result)
        elif status is RunStatus.CANCELLED:
            future.set_exception(error or WorkflowCancelled(f"run {self.run_id} was cancelled"))
        else:
            future.set_exception(error or StepgraphError(f"run {self.run_id} failed"))
        self.stream.close()
