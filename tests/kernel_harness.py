"""A fake shell for the pure kernel: it drives ``apply`` synchronously, one tick at a time.

The harness plays the part of ``stepgraph.runtime``: it keeps the invocations the kernel
started, lets a test decide which one completes next and what it emits, and records every
tick it fed and every command it got back. Like the kernel, it does no IO, reads no clock
and never touches asyncio, so kernel tests are plain synchronous functions.

A graph with explicit edges is routed by the shell, not the kernel: give the harness the
``router`` the shell would use, and it resolves the targets of what an invocation emits
before feeding it, as the shell does.

Example::

    h = KernelHarness(graph)
    h.start(Go())
    (first,) = h.runnable()
    h.complete(first.invocation, Work(n=1))     # routed by type
    h.complete(h.only("worker"), Done())        # the one invocation running at "worker"
    assert h.ended is not None and h.ended.status is RunStatus.FINISHED
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from stepgraph.core import (
    ArmTimer,
    AttemptFailed,
    CancelRequested,
    CancelTimer,
    CollectRequested,
    CollectResult,
    Command,
    Emission,
    EventsSent,
    ExternalEventReceived,
    Failure,
    FailWait,
    ForwardResponse,
    Graph,
    MergeState,
    Mode,
    PublishEvent,
    ResolveWait,
    RunEnded,
    RunStarted,
    RunState,
    RunStatus,
    StartStep,
    StepCompleted,
    StepFailed,
    SuperstepEnded,
    Tick,
    TimerFired,
    WaitStarted,
    apply,
)

Router = Callable[[int, object], tuple[int, ...] | None]

__all__ = ["Emitted", "KernelHarness", "Outcome", "Started", "first_ready", "to"]


def to(target: int, message: object) -> Emission:
    """An emission sent to one node (``ctx.send_event(ev, step=...)``), for ``complete``."""
    return (message, (target,))


@dataclass(frozen=True, slots=True)
class Started:
    """A ``StartStep`` the kernel issued, with the superstep the shell was in when it came."""

    invocation: int
    node: int
    message: object
    superstep: int


@dataclass(frozen=True, slots=True)
class Emitted:
    """One message an invocation emitted, in the order the harness fed it to the kernel."""

    sender: int
    invocation: int
    position: int
    message: object
    target: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a scripted invocation does when the harness drives it (see ``drive``).

    Attributes:
        emit: what it emits when it completes.
        send: what it sends first, while running (``EventsSent``), before anything else.
        error: when set, the invocation fails with it instead of completing.
        wait_for: when set, it first waits for a message of these types; once woken it
            completes (or fails, when the wait timed out).
        collect: when set, it hands its message to its collector expecting these types,
            and emits ``emit`` only when that releases a batch.
    """

    emit: tuple[Emission, ...] = ()
    send: tuple[Emission, ...] = ()
    error: BaseException | None = None
    wait_for: tuple[type, ...] = ()
    collect: tuple[type, ...] = ()


def first_ready(ready: Sequence[StartStep]) -> int:
    """Completion order for ``drive``: always the oldest runnable invocation."""
    return 0


def _emission(item: object) -> Emission:
    if isinstance(item, tuple):
        message, targets = item
        return (message, targets)
    return (item, None)


class KernelHarness:
    """Drive one kernel ``RunState`` as a shell would, synchronously.

    Attributes:
        state: the kernel state being driven.
        ticks: every tick fed, in order (a journal: replaying it rebuilds ``state``).
        commands: every command the kernel returned, in order.
        in_flight: invocations started and not yet completed or failed, by id, in start order
            (waiting ones included).
        waiting: the in-flight invocations suspended in a wait.
        waited: invocations that ever started a wait (``drive`` waits once per invocation).
        sent_first: invocations whose mid-step sends ``drive`` already fed.
        started: every ``StartStep``, with the superstep it belongs to.
        emitted: every message fed back to the kernel by ``complete``/``send``, in order.
        resolved: what each resolved wait received, by invocation.
        failed_waits: invocations whose wait timed out (``FailWait``), in order.
        published: events the kernel asked to publish on the stream.
        barriers: the supersteps whose barrier passed (``SuperstepEnded``), in order.
        timers: the timers armed and not yet fired or cancelled, with their delay.
        collected: ``(node, message, expected)`` for every collect request the collector
            took, in order.
        rejected: ``(node, message, expected)`` for every collect request refused because
            the message is of none of the expected types.
        batches: ``(node, expected, batch)`` for every batch a collector released, in order.
        peak_per_node: the most invocations ever in flight at once at each node.
        peak_running_at_start: the most non-waiting invocations in flight when one started.
        superstep: the superstep the shell is in (barriers seen so far).
        ended: the ``RunEnded`` command, once the run ends.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        mode: Mode = Mode.SUPERSTEP,
        max_supersteps: int = 10_000,
        max_concurrency: int | None = None,
        timeout: float | None = None,
        router: Router | None = None,
    ) -> None:
        self.graph = graph
        self.router = router
        self.state = RunState(
            graph,
            mode=mode,
            max_supersteps=max_supersteps,
            max_concurrency=max_concurrency,
            timeout=timeout,
        )
        self.ticks: list[Tick] = []
        self.commands: list[Command] = []
        self.in_flight: dict[int, StartStep] = {}
        self.waiting: set[int] = set()
        self.waited: set[int] = set()
        self.sent_first: set[int] = set()
        self.started: list[Started] = []
        self.emitted: list[Emitted] = []
        self.resolved: dict[int, object] = {}
        self.failed_waits: list[int] = []
        self.published: list[object] = []
        self.barriers: list[int] = []
        self.timers: dict[str, float] = {}
        self.collected: list[tuple[int, object, tuple[type, ...]]] = []
        self.rejected: list[tuple[int, object, tuple[type, ...]]] = []
        self.batches: list[tuple[int, tuple[type, ...], list[object]]] = []
        self.peak_per_node: Counter[int] = Counter()
        self.peak_running_at_start = 0
        self.superstep = 0
        self.ended: RunEnded | None = None

    # -- the one path into the kernel -------------------------------------------------------

    def feed(self, tick: Tick) -> list[Command]:
        """Apply ``tick``, carry out the commands as a shell would, and return them."""
        self.ticks.append(tick)
        commands = apply(self.state, tick)
        self.commands.extend(commands)
        for command in commands:
            self._carry_out(command)
        return commands

    def _carry_out(self, command: Command) -> None:
        if isinstance(command, StartStep):
            retry = command.attempt > 1
            assert (command.invocation in self.in_flight) == retry, f"started twice: {command}"
            self.in_flight[command.invocation] = command
            self.started.append(
                Started(command.invocation, command.node, command.message, self.superstep)
            )
            at_node = sum(1 for c in self.in_flight.values() if c.node == command.node)
            self.peak_per_node[command.node] = max(self.peak_per_node[command.node], at_node)
            running = len(self.in_flight) - len(self.waiting)
            self.peak_running_at_start = max(self.peak_running_at_start, running)
        elif isinstance(command, ResolveWait):
            assert command.invocation in self.waiting, f"resolved a wait nobody has: {command}"
            self.waiting.discard(command.invocation)
            self.resolved[command.invocation] = command.event
        elif isinstance(command, FailWait):
            assert command.invocation in self.waiting, f"failed a wait nobody has: {command}"
            self.waiting.discard(command.invocation)
            self.failed_waits.append(command.invocation)
        elif isinstance(command, PublishEvent):
            self.published.append(command.event)
        elif isinstance(command, SuperstepEnded):
            assert command.superstep == self.superstep, f"barrier out of order: {command}"
            self.barriers.append(command.superstep)
            self.superstep = command.superstep + 1
        elif isinstance(command, RunEnded):
            assert self.ended is None, f"the run ended twice: {self.ended} then {command}"
            self.ended = command
        elif isinstance(command, ArmTimer):
            self.timers[command.timer] = command.delay
        elif isinstance(command, CancelTimer):
            del self.timers[command.timer]
        else:
            assert isinstance(command, CollectResult | MergeState | ForwardResponse), (
                f"unknown command {command!r}"
            )

    # -- ticks, by what the shell saw -------------------------------------------------------

    def start(self, message: object, run_id: str = "run-1") -> list[Command]:
        """The run starts with ``message``."""
        return self.feed(RunStarted(run_id=run_id, start=message))

    def complete(
        self, invocation: int, *messages: object, emitted: Sequence[Emission] = ()
    ) -> list[Command]:
        """Invocation ``invocation`` returns, having emitted ``messages`` then ``emitted``.

        A message given as ``to(node, message)`` targets one node; others are routed.
        """
        out = self._routed(invocation, (*(_emission(m) for m in messages), *emitted))
        self._record(invocation, out)
        self._leave(invocation)
        return self.feed(StepCompleted(invocation=invocation, emitted=out))

    def send(self, invocation: int, *messages: object) -> list[Command]:
        """Invocation ``invocation`` sends ``messages`` while still running (``EventsSent``)."""
        out = self._routed(invocation, tuple(_emission(m) for m in messages))
        self._record(invocation, out)
        return self.feed(EventsSent(invocation=invocation, emitted=out))

    def fail(self, invocation: int, error: BaseException) -> list[Command]:
        """Invocation ``invocation`` raised ``error`` after its retries."""
        self._leave(invocation)
        return self.feed(StepFailed(invocation=invocation, failure=Failure.from_error(error)))

    def fail_attempt(
        self, invocation: int, error: BaseException, retry_in: float = 0.0
    ) -> list[Command]:
        """An attempt of ``invocation`` raised ``error``; it is retried after ``retry_in``."""
        failure = Failure.from_error(error)
        return self.feed(AttemptFailed(invocation=invocation, failure=failure, retry_in=retry_in))

    def fire(self, timer: str) -> list[Command]:
        """The armed timer ``timer`` is due."""
        self.timers.pop(timer, None)
        return self.feed(TimerFired(timer=timer))

    def _routed(self, invocation: int, out: tuple[Emission, ...]) -> tuple[Emission, ...]:
        """Resolve targets along explicit edges, as the shell does before feeding."""
        if self.router is None:
            return out
        node = self.in_flight[invocation].node
        return tuple(
            (message, self.router(node, message) if targets is None else targets)
            for message, targets in out
        )

    def external(self, event: object, target: int | None = None) -> list[Command]:
        """The caller sends ``event`` into the run."""
        return self.feed(ExternalEventReceived(event=event, target=target))

    def wait(
        self,
        invocation: int,
        *types: type,
        requirements: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> list[Command]:
        """Invocation ``invocation`` starts waiting for a message of ``types``.

        With a ``timeout``, the kernel arms the wait's timer (``time_out_wait`` fires it).
        """
        self.waiting.add(invocation)
        self.waited.add(invocation)
        return self.feed(
            WaitStarted(
                invocation=invocation,
                types=types,
                requirements=dict(requirements or {}),
                timeout=timeout,
            )
        )

    def time_out_wait(self, invocation: int) -> list[Command]:
        """The wait of ``invocation`` reached its timeout (its timer fires)."""
        return self.fire(f"wait:{invocation}")

    def collect(
        self, invocation: int, message: object, expected: Sequence[type]
    ) -> list[object] | None:
        """Invocation ``invocation`` calls ``collect_events(message, expected)``.

        Returns the released batch, or None (incomplete, or refused: see ``rejected``).
        """
        node = self.in_flight[invocation].node
        kinds = tuple(expected)
        commands = self.feed(
            CollectRequested(invocation=invocation, message=message, expected=kinds)
        )
        results = [c for c in commands if isinstance(c, CollectResult)]
        assert len(results) == 1, f"a collect request must be answered once: {commands}"
        batch = results[0].batch
        if not results[0].accepted:
            assert batch is None, f"a refused message released a batch: {commands}"
            self.rejected.append((node, message, kinds))
            return None
        self.collected.append((node, message, kinds))
        if batch is not None:
            self.batches.append((node, kinds, batch))
        return batch

    def cancel(self, reason: str = "cancelled by the caller") -> list[Command]:
        """The caller cancels the run."""
        return self.feed(CancelRequested(reason=reason))

    def time_out(self) -> list[Command]:
        """The run's own timeout elapsed (its timer fires; create the harness with one)."""
        return self.fire("run")

    def _leave(self, invocation: int) -> None:
        if invocation not in self.in_flight:
            raise AssertionError(f"invocation {invocation} is not in flight: {self.in_flight}")
        assert invocation not in self.waiting, f"invocation {invocation} is waiting"
        del self.in_flight[invocation]

    def _record(self, invocation: int, out: Sequence[Emission]) -> None:
        if invocation not in self.in_flight:
            raise AssertionError(f"invocation {invocation} is not in flight: {self.in_flight}")
        sender = self.in_flight[invocation].node
        for position, (message, target) in enumerate(out):
            self.emitted.append(Emitted(sender, invocation, position, message, target))

    # -- queries ----------------------------------------------------------------------------

    @property
    def status(self) -> RunStatus:
        """The run's status in the kernel."""
        return self.state.status

    def node(self, name: str) -> int:
        """The index of the node named ``name``."""
        return self.graph.index_of[name]

    def runnable(self) -> list[StartStep]:
        """In-flight invocations that are not waiting, oldest first."""
        return [c for i, c in self.in_flight.items() if i not in self.waiting]

    def running_at(self, node: int | str) -> list[int]:
        """The ids of the invocations in flight at ``node`` (an index or a name), oldest first."""
        index = self.node(node) if isinstance(node, str) else node
        return [i for i, c in self.in_flight.items() if c.node == index]

    def only(self, node: int | str) -> int:
        """The id of the one invocation in flight at ``node``; fails if there are 0 or several."""
        found = self.running_at(node)
        assert len(found) == 1, f"expected one invocation at {node!r}, found {found}"
        return found[0]

    def messages_started_at(self, node: int | str) -> list[object]:
        """The messages node ``node`` was started on, in start order."""
        index = self.node(node) if isinstance(node, str) else node
        return [s.message for s in self.started if s.node == index]

    # -- scripted runs ----------------------------------------------------------------------

    def drive(
        self,
        outcome_of: Callable[[StartStep], Outcome],
        choose: Callable[[Sequence[StartStep]], int] = first_ready,
        *,
        max_ticks: int = 20_000,
    ) -> int:
        """Complete runnable invocations until the run ends or nothing can run.

        Args:
            outcome_of: what each invocation does; called each time it is picked.
            choose: picks the index (taken modulo the length) of the runnable invocation
                that makes progress next, so a test can try many completion orders.
            max_ticks: a bound on the ticks fed; reaching it fails the test.

        Returns:
            How many invocations made progress.
        """
        for count in range(max_ticks):
            if self.ended is not None:
                return count
            ready = self.runnable()
            if not ready:
                return count
            command = ready[choose(ready) % len(ready)]
            self._advance(command, outcome_of(command))
        raise AssertionError(f"the run did not settle within {max_ticks} ticks")

    def _advance(self, command: StartStep, outcome: Outcome) -> None:
        invocation = command.invocation
        if outcome.send and invocation not in self.sent_first:
            self.sent_first.add(invocation)
            self.send(invocation, *outcome.send)
            if self.ended is not None:
                return
        if outcome.wait_for and invocation not in self.waited:
            self.wait(invocation, *outcome.wait_for, timeout=1.0)
            return
        if invocation in self.failed_waits:
            self.fail(invocation, TimeoutError(f"wait of invocation {invocation} timed out"))
            return
        if outcome.error is not None:
            self.fail(invocation, outcome.error)
            return
        emit = outcome.emit
        if outcome.collect:
            if self.collect(invocation, command.message, outcome.collect) is None:
                emit = ()
            if self.ended is not None:
                return
        self.complete(invocation, emitted=emit)
