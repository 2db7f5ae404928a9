"""The asyncio shell of one run: it feeds ticks to the kernel and carries out its commands.

Rules of this module:

* All asyncio objects of a run are created inside the loop that runs it (G1), when
  the run starts; the workflow object holds none of them.
* Each node has long-lived worker tasks (at most ``num_workers``), fed through a
  deque and woken by a future: one loop hand-off per hop, no Task per invocation.
* ``feed`` is the only path into the kernel; it never re-enters itself, because no
  command is carried out by feeding another tick synchronously.
* When the run ends every worker is cancelled and the run drops its references,
  so a finished run holds nothing alive but its result.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..core import (
    CollectRequested,
    CollectResult,
    Command,
    EventsSent,
    ExternalEventReceived,
    FailWait,
    Graph,
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
    WaitStarted,
    WaitTimedOut,
    apply,
)
from ..errors import (
    InvalidStepResultError,
    StepgraphError,
    StepTimeoutError,
    UnknownStepError,
    UnroutableEventError,
    WaitForEventTimeoutError,
    WorkflowCancelled,
    WorkflowRuntimeError,
)
from ..events import Event, StopEvent
from ..state.store import StateStore
from ._scope import Scope, current_scope, set_scope
from .stream import EventStream

if TYPE_CHECKING:
    from ..authoring.step import StepSpec
    from .context import Context

__all__ = ["Run", "current_scope"]

_RUN_ID_PREFIX = uuid.uuid4().hex[:16]
_run_counter = itertools.count(1)


def new_run_id() -> str:
    """A unique run id: a random per-process prefix and a counter (cheaper than uuid4)."""
    return f"{_RUN_ID_PREFIX}{next(_run_counter):016x}"


_YIELD_EVERY = 64
"""A worker yields to the event loop after this many steps in a row without waiting."""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


class Run:
    """The shell of one run of a ``@step`` workflow."""

    def __init__(
        self,
        *,
        name: str,
        graph: Graph,
        specs: Sequence[StepSpec],
        workflow: object,
        mode: Mode,
        timeout: float | None,
        max_supersteps: int,
        max_concurrency: int | None,
        journal: bool = False,
    ) -> None:
        from .context import Context

        self.loop = asyncio.get_running_loop()
        self.name = name
        self.graph = graph
        self.run_id = new_run_id()
        self.state = RunState(
            graph, mode=mode, max_supersteps=max_supersteps, max_concurrency=max_concurrency
        )
        self.superstep_mode = mode is Mode.SUPERSTEP
        self.timeout = timeout
        self.future: asyncio.Future[Any] = self.loop.create_future()
        self.stream = EventStream()
        self.store = StateStore()
        # The run holds its Context only while it runs: Context -> Run is the lasting
        # direction, so a finished run is freed by reference counting, not by the GC.
        self.ctx: Context | None = Context(self)
        self.journal: list[Tick] | None = [] if journal else None
        self.done = False
        self._thread = threading.get_ident()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waits: dict[int, asyncio.Future[Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.on_superstep: list[Callable[[int], None]] = []
        self._specs = specs
        self._workflow = workflow
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
        except Exception as exc:  # a kernel bug must fail the run, never hang it
            self._end(RunStatus.FAILED, None, exc)
            return []
        for command in commands:
            kind = type(command)
            if kind is StartStep:
                self._dispatch(command)  # type: ignore[arg-type]
            elif kind is ResolveWait:
                self._waits[command.invocation].set_result(command.event)  # type: ignore[union-attr]
            elif kind is RunEnded:
                self._end(command.status, command.result, command.error)  # type: ignore[union-attr]
            elif kind is SuperstepEnded:
                for hook in self.on_superstep:
                    hook(command.superstep)  # type: ignore[union-attr]
            elif kind is PublishEvent:
                self.stream.push(command.event)  # type: ignore[union-attr]
            elif kind is FailWait:
                self._fail_wait(command.invocation)  # type: ignore[union-attr]
        return commands

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
        import concurrent.futures

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
        from .context import set_current_context

        ctx = self.ctx
        assert ctx is not None
        set_current_context(ctx)
        pending = self._pending
        streak = 0
        while True:
            while pending:
                command = pending.popleft()
                self._busy += 1
                tick = await self._invoke(command)
                self._busy -= 1
                self.feed(tick)
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
        scope = Scope(self, command.invocation, command.node, message)
        set_scope(scope)
        timeout = spec.config.timeout
        policy = spec.config.retry_policy
        attempt = 1
        while True:
            try:
                if timeout is None:
                    result = await call(workflow, ctx, message)
                else:
                    async with asyncio.timeout(timeout) as deadline:
                        result = await call(workflow, ctx, message)
                break
            except Exception as exc:
                timed_out = timeout is not None and deadline.expired()
                delay = None
                if policy is not None and not isinstance(exc, WorkflowRuntimeError):
                    delay = policy.next_delay(attempt, exc)
                if delay is None:
                    error = self._step_error(spec, message, exc, attempt, timed_out)
                    return StepFailed(invocation=command.invocation, error=error)
                scope.sent.clear()  # a failed attempt's buffered sends are discarded
                attempt += 1
                await asyncio.sleep(delay)
        sent = scope.sent
        if result is None:
            return StepCompleted(invocation=command.invocation, emitted=tuple(sent))
        if isinstance(result, Event):
            sent.append((result, None))
            return StepCompleted(invocation=command.invocation, emitted=tuple(sent))
        error = InvalidStepResultError(
            f"step {spec.name!r} of workflow {self.name!r} returned {_short(result)} "
            f"({type(result).__name__}) processing {type(message).__name__}; a step returns "
            f"an Event or None (send several events with ctx.send_event)"
        )
        return StepFailed(invocation=command.invocation, error=error)

    def _step_error(
        self, spec: StepSpec, message: object, exc: Exception, attempt: int, timed_out: bool
    ) -> BaseException:
        where = (
            f"step {spec.name!r} of workflow {self.name!r} (run {self.run_id}) "
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

    def send(self, scope: Scope | None, event: object, step: str | None) -> None:
        """``ctx.send_event``: buffer (superstep mode) or deliver now (async mode)."""
        where = (
            "the caller"
            if scope is None
            else f"step {self.graph.nodes[scope.node].name!r} of workflow {self.name!r}"
        )
        if not isinstance(event, Event):
            raise WorkflowRuntimeError(
                f"{where} sent {_short(event)} ({type(event).__name__}); send_event takes an Event"
            )
        target = self._target(where, event, step)
        if scope is None or scope.run is not self:
            self.send_external(event, target)
        elif self.superstep_mode:
            scope.sent.append((event, target))
        else:
            self.feed_threadsafe(
                EventsSent(invocation=scope.invocation, emitted=((event, target),))
            )

    def _target(self, where: str, event: object, step: str | None) -> int | None:
        if step is None:
            return None
        index = self.graph.index_of.get(step)
        if index is None:
            raise UnknownStepError(
                f"{where} sent {type(event).__name__} to step {step!r}, but workflow "
                f"{self.name!r} has no such step; its steps are {sorted(self.graph.index_of)}"
            )
        if not self.graph.accepts(index, event) and not isinstance(event, StopEvent):
            raise UnroutableEventError(
                f"{where} sent {type(event).__name__} to step {step!r}, which does not accept "
                f"it (it accepts {[t.__name__ for t in self.graph.nodes[index].accepts]})"
            )
        return index

    def send_external(self, event: object, target: int | None) -> None:
        self.feed_threadsafe(ExternalEventReceived(event=event, target=target))

    def collect(self, scope: Scope, event: object, expected: Sequence[type]) -> list[Any] | None:
        tick = CollectRequested(invocation=scope.invocation, message=event, expected=expected)
        if threading.get_ident() == self._thread:
            commands = self.feed(tick)
        else:
            commands = self.call_in_loop(lambda: self.feed(tick))
        for command in commands:
            if type(command) is CollectResult:
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

    def cancel(self, reason: str = "cancelled by the caller") -> None:
        from ..core import CancelRequested

        self.feed(CancelRequested(reason=reason))

    def _end(self, status: RunStatus, result: object, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        self.ctx = None
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
        if status is RunStatus.FINISHED:
            if result is not None:
                self.stream.push(result)
            value = result
            if type(result) is StopEvent:
                value = result.result
            future.set_result(value)
        elif status is RunStatus.CANCELLED:
            future.set_exception(error or WorkflowCancelled(f"run {self.run_id} was cancelled"))
        else:
            future.set_exception(error or StepgraphError(f"run {self.run_id} failed"))
        self.stream.close()
