"""The kernel's fold of timers, attempts, time, requests, shared state and explicit routing.

Synchronous unit tests of ``apply(state, tick) -> list[Command]`` for what the kernel
gained when it closed the fold: the run's and the waits' timers (``ArmTimer`` /
``CancelTimer`` / ``TimerFired``, due at ``tick.at + delay``), attempts retried at once or
after a backoff and the undoing of a failed attempt, ``state.now`` following each tick,
open requests and their answers, shared state (writes at once, reducer writes merged
before the barrier through ``MergeState`` / ``StateMerged``), ``RunAborted``, explicit
routing (targets resolved by the shell), one ``_apply_<kind>`` handler per tick class,
and replay: the same ticks folded into a fresh ``RunState`` give the same snapshot.

Each test builds a tiny graph by hand and drives the kernel through the fake shell of
``tests.kernel_harness``, or with ``apply`` and ticks built here (with ``at=`` set where
time matters). Messages are plain dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from stepgraph.core import (
    ArmTimer,
    AttemptFailed,
    CancelTimer,
    CollectRequested,
    CollectResult,
    Command,
    EventsSent,
    Failure,
    FailWait,
    ForwardResponse,
    Graph,
    KernelError,
    MergeState,
    Mode,
    Node,
    OpenRequest,
    PublishEvent,
    RequestOpened,
    ResolveWait,
    ResponseMessage,
    ResponseReceived,
    RunAborted,
    RunEnded,
    RunResumed,
    RunStarted,
    RunState,
    RunStatus,
    StartStep,
    StateMerged,
    StateWritten,
    StepCompleted,
    SuperstepEnded,
    Tick,
    TimerFired,
    WaitCancelled,
    WaitStarted,
    apply,
)
from stepgraph.core.kernel import _HANDLERS
from stepgraph.core.ticks import TICK_TYPES
from stepgraph.errors import RecordedError, UnroutableEventError, WorkflowTimeoutError
from tests.kernel_harness import KernelHarness, Router

# -- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Go:
    n: int = 0


@dataclass(frozen=True)
class Job:
    n: int = 0


@dataclass(frozen=True)
class Result:
    tag: str = ""


@dataclass(frozen=True)
class Done:
    value: object = None


@dataclass(frozen=True)
class Ask:
    prompt: str = ""
    request_id: str | None = None  # as a RequestInfoEvent carries the id of its request


@dataclass(frozen=True)
class Answer:
    text: str = ""


@dataclass(frozen=True)
class Stray:
    pass


NodeSpec = tuple[str, tuple[type, ...]] | tuple[str, tuple[type, ...], int]


def make_graph(
    *specs: NodeSpec,
    finish_when_idle: bool = False,
    entry: tuple[int, ...] | None = None,
    answers: bool = True,
) -> Graph:
    """A graph named ``g``: ``Done`` stops, ``Ask`` asks the caller, ``Answer`` answers it.

    With ``entry``, the graph has explicit edges: the shell routes (give the harness a
    ``router``) and the caller's messages go to the entry nodes.
    """
    nodes = tuple(
        Node(name=spec[0], index=i, accepts=spec[1], num_workers=spec[2] if len(spec) > 2 else 1)
        for i, spec in enumerate(specs)
    )
    return Graph(
        name="g",
        nodes=nodes,
        stop_types=(Done,),
        input_request_types=(Ask,),
        held_types=(Answer,) if answers else (),
        answer_types=(Answer,) if answers else (),
        finish_when_idle=finish_when_idle,
        entry=entry,
    )


def route_by(table: dict[type, tuple[int, ...]]) -> Router:
    """The shell's router of a graph with explicit edges: the targets of each message type."""

    def router(sender: int, message: object) -> tuple[int, ...]:
        return table.get(type(message), ())

    return router


MODES = pytest.mark.parametrize("mode", [Mode.SUPERSTEP, Mode.ASYNC], ids=["superstep", "async"])


def ended(h: KernelHarness) -> RunEnded:
    assert h.ended is not None, f"the run has not ended (status {h.status.value})"
    return h.ended


def fail_attempt(
    h: KernelHarness, invocation: int, error: BaseException, retry_in: float = 0.0
) -> list[Command]:
    """An attempt of ``invocation`` raised ``error`` and is retried after ``retry_in``."""
    return h.fail_attempt(invocation, error, retry_in)


def failure_of(message: str = "boom") -> Failure:
    return Failure.from_error(ValueError(message))


def fold(state: RunState, *ticks: Tick) -> list[list[Command]]:
    """Fold ``ticks`` into ``state`` with ``apply``; the commands of each tick."""
    return [apply(state, tick) for tick in ticks]


class Shell(KernelHarness):
    """The harness stamping each tick with its clock, as ``Run.feed`` does.

    It also keeps the state's snapshot after every tick, for replay checks.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        mode: Mode = Mode.SUPERSTEP,
        max_concurrency: int | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(graph, mode=mode, max_concurrency=max_concurrency, timeout=timeout)
        self.clock = 0.0
        self.snapshots: list[dict[str, object]] = []

    def feed(self, tick: Tick) -> list[Command]:
        tick.at = self.clock
        commands = super().feed(tick)
        self.snapshots.append(self.state.snapshot())
        return commands


# -- the run's timer ------------------------------------------------------------------------


def test_the_run_timer_is_armed_at_start_due_at_the_start_time_plus_the_timeout() -> None:
    state = RunState(make_graph(("a", (Go,))), timeout=2.5)
    commands = apply(state, RunStarted(run_id="r", start=Go(), at=100.0))
    assert commands == [
        ArmTimer(timer="run", delay=2.5, due=102.5),
        StartStep(invocation=0, node=0, message=Go()),
    ]
    assert state.timers == {"run": 102.5}
    assert state.started_at == 100.0 and state.now == 100.0


def test_a_run_without_a_timeout_arms_no_run_timer() -> None:
    state = RunState(make_graph(("a", (Go,))))
    commands = apply(state, RunStarted(run_id="r", start=Go(), at=100.0))
    assert commands == [StartStep(invocation=0, node=0, message=Go())]
    assert state.timers == {}


def test_the_run_timer_firing_fails_the_run_with_a_timeout_naming_the_steps_still_running() -> None:
    graph = make_graph(("finished", (Go,)), ("waits", (Go,)), ("retries", (Go,)))
    h = KernelHarness(graph, timeout=3.0)
    h.start(Go())
    h.complete(h.only("finished"))
    h.wait(h.only("waits"), Answer, timeout=1.0)
    fail_attempt(h, 2, ConnectionError("flaky"), retry_in=5.0)
    assert set(h.state.timers) == {"run", "wait:1", "retry:2"}
    [command] = h.time_out()
    assert isinstance(command, RunEnded) and command.status is RunStatus.FAILED
    assert isinstance(command.error, WorkflowTimeoutError)
    assert command.failure == Failure.from_error(command.error)
    text = str(command.error)
    assert "workflow 'g' timed out after 3.0s" in text
    assert "still running: retries, waits" in text and "finished" not in text
    assert h.state.timers == {}  # an ended run drops every timer (RunEnded cancels them)


@pytest.mark.parametrize(
    "timer", ["run", "wait:0", "retry:0", "retry:9"], ids=["run", "cancelled", "retry", "unknown"]
)
def test_a_timer_that_is_not_armed_changes_nothing_when_it_fires(timer: str) -> None:
    h = KernelHarness(make_graph(("w", (Go,)), ("a", (Go,))))  # no run timeout
    h.start(Go())
    h.wait(0, Answer, timeout=1.0)
    assert h.feed(WaitCancelled(invocation=0)) == [CancelTimer(timer="wait:0")]
    h.waiting.discard(0)
    before = h.state.snapshot()
    assert apply(h.state, TimerFired(timer=timer)) == []
    assert h.state.snapshot() == before


# -- wait timers ----------------------------------------------------------------------------


def test_a_wait_that_really_waits_arms_its_timer_due_at_the_tick_time_plus_its_timeout() -> None:
    state = RunState(make_graph(("w", (Go,))))
    [_, commands] = fold(
        state,
        RunStarted(run_id="r", start=Go(), at=10.0),
        WaitStarted(invocation=0, types=(Answer,), requirements={}, timeout=1.5, at=12.0),
    )
    assert commands == [ArmTimer(timer="wait:0", delay=1.5, due=13.5)]
    assert state.timers == {"wait:0": 13.5}


def test_a_wait_that_a_held_event_resolves_at_once_arms_no_timer() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("w", (Job,))))
    h.start(Go())
    h.external(Answer("early"))
    h.complete(h.only("start"), Job(1))  # the barrier holds Answer: no step accepts it
    commands = h.wait(h.only("w"), Answer, timeout=2.0)
    assert commands == [ResolveWait(invocation=1, event=Answer("early"))]
    assert h.state.timers == {} and h.timers == {}


def test_a_wait_timer_is_cancelled_when_the_awaited_event_arrives() -> None:
    h = KernelHarness(make_graph(("w", (Go,)), ("a", (Go,))))
    h.start(Go())
    h.wait(0, Answer, timeout=1.0)
    commands = h.complete(1, Answer("in time"))
    assert commands == [
        SuperstepEnded(superstep=0),
        CancelTimer(timer="wait:0"),
        ResolveWait(invocation=0, event=Answer("in time")),
    ]
    assert h.state.timers == {} and h.timers == {}


def test_a_wait_timer_firing_fails_the_wait_and_the_step_runs_again() -> None:
    h = KernelHarness(make_graph(("w", (Go,)), ("a", (Go,))))
    h.start(Go())
    h.wait(0, Answer, timeout=1.0)
    assert h.state.running == 1  # only "a": the waiting step holds no slot
    assert h.time_out_wait(0) == [FailWait(invocation=0)]
    assert h.state.waiters == {} and h.state.timers == {}
    assert h.state.running == 2 and not h.state.invocations[0].waiting
    assert h.state.nodes[0].waiting == 0


def test_a_wait_the_step_abandons_cancels_its_timer() -> None:
    h = KernelHarness(make_graph(("w", (Go,))))
    h.start(Go())
    h.wait(0, Answer, timeout=1.0)
    assert h.feed(WaitCancelled(invocation=0)) == [CancelTimer(timer="wait:0")]
    assert h.state.timers == {} and h.state.waiters == {} and h.state.running == 1


# -- attempts -------------------------------------------------------------------------------


def test_a_retry_at_once_starts_the_next_attempt_of_the_same_invocation_in_the_same_tick() -> None:
    h = KernelHarness(make_graph(("a", (Go,))))
    h.start(Go())
    error = ConnectionError("flaky")
    assert fail_attempt(h, 0, error) == [StartStep(invocation=0, node=0, message=Go(), attempt=2)]
    inv = h.state.invocations[0]
    assert inv.attempt == 2 and inv.failure == Failure.from_error(error)
    assert not inv.backing_off and h.state.timers == {}
    assert fail_attempt(h, 0, error) == [StartStep(invocation=0, node=0, message=Go(), attempt=3)]
    h.complete(0, Done("third time"))
    assert ended(h) == RunEnded(status=RunStatus.FINISHED, result=Done("third time"))


def test_a_retry_with_backoff_starts_its_next_attempt_when_its_timer_fires() -> None:
    state = RunState(make_graph(("a", (Go,))))
    apply(state, RunStarted(run_id="r", start=Go(), at=1.0))
    failed = AttemptFailed(invocation=0, failure=failure_of(), retry_in=0.25, at=2.0)
    assert apply(state, failed) == [ArmTimer(timer="retry:0", delay=0.25, due=2.25)]
    inv = state.invocations[0]
    assert inv.backing_off and inv.attempt == 2
    assert state.timers == {"retry:0": 2.25}
    assert state.running == 1  # backing off still counts as running
    commands = apply(state, TimerFired(timer="retry:0", at=2.25))
    assert commands == [StartStep(invocation=0, node=0, message=Go(), attempt=2)]
    assert not inv.backing_off and state.timers == {}


def test_an_invocation_backing_off_holds_the_superstep_barrier() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,)), ("sink", (Job,))))
    h.start(Go())
    fail_attempt(h, 0, ConnectionError("flaky"), retry_in=1.0)
    assert h.complete(1, Job(1)) == []  # "a" backs off: superstep 0 is not over
    assert h.barriers == []
    assert h.fire("retry:0") == [StartStep(invocation=0, node=0, message=Go(), attempt=2)]
    assert h.complete(0, Job(0)) == [
        SuperstepEnded(superstep=0),
        StartStep(invocation=2, node=2, message=Job(0)),
    ]


def test_an_invocation_backing_off_keeps_its_max_concurrency_slot() -> None:
    graph = make_graph(("start", (Go,)), ("a", (Job,)), ("b", (Result,)))
    h = KernelHarness(graph, max_concurrency=1)
    h.start(Go())
    h.complete(h.only("start"), Job(1), Result("r"))
    assert list(h.state.blocked) == [2]
    commands = fail_attempt(h, 1, ConnectionError("flaky"), retry_in=1.0)
    assert commands == [ArmTimer(timer="retry:1", delay=1.0, due=1.0)]  # "b" stays held back
    assert list(h.state.blocked) == [2] and h.state.running == 1
    assert h.fire("retry:1") == [StartStep(invocation=1, node=1, message=Job(1), attempt=2)]
    assert h.complete(1) == [StartStep(invocation=2, node=2, message=Result("r"))]
    assert h.peak_running_at_start == 1


def test_completing_an_invocation_while_it_backs_off_raises_kernel_error() -> None:
    h = KernelHarness(make_graph(("a", (Go,))))
    h.start(Go())
    fail_attempt(h, 0, ConnectionError("flaky"), retry_in=1.0)
    with pytest.raises(KernelError, match="invocation 0 completed while backing off"):
        apply(h.state, StepCompleted(invocation=0))


@pytest.mark.parametrize("doing", ["backing off", "waiting"])
def test_an_attempt_failing_that_is_not_running_raises_kernel_error(doing: str) -> None:
    h = KernelHarness(make_graph(("a", (Go,))))
    h.start(Go())
    if doing == "waiting":
        h.wait(0, Answer)
    else:
        fail_attempt(h, 0, ConnectionError("flaky"), retry_in=1.0)
    with pytest.raises(KernelError, match="failed an attempt it is not running"):
        apply(h.state, AttemptFailed(invocation=0, failure=failure_of()))


def test_a_failed_attempt_gives_back_only_the_events_it_collected() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("gather", (Job,), 2)))
    h.start(Go())
    h.complete(h.only("start"), Job(1), Job(2))
    first, second = h.running_at("gather")
    expected = (Job, Job, Job)
    one, two = h.in_flight[first].message, h.in_flight[second].message
    collect_one = CollectRequested(invocation=first, message=one, expected=expected, undoable=True)
    assert h.feed(collect_one) == [CollectResult(batch=None)]
    h.complete(first)
    h.feed(CollectRequested(invocation=second, message=two, expected=expected, undoable=True))
    [collector] = h.state.collectors.values()
    assert collector.held == 2
    fail_attempt(h, second, ConnectionError("flaky"))
    assert collector.held == 1  # Job(2) is taken back; Job(1), of a finished step, stays
    assert collector.snapshot() == (expected, ((Job, (Job(1),)),), 2)
    h.feed(CollectRequested(invocation=second, message=two, expected=expected, undoable=True))
    assert collector.held == 2  # the retry hands Job(2) in once more: held once, not twice


def test_a_failed_attempt_that_held_a_collectors_only_event_drops_the_collector() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("gather", (Job,))))
    h.start(Go())
    h.complete(h.only("start"), Job(1))
    gather = h.only("gather")
    message = h.in_flight[gather].message
    h.feed(CollectRequested(invocation=gather, message=message, expected=(Job, Job), undoable=True))
    assert len(h.state.collectors) == 1
    fail_attempt(h, gather, ConnectionError("flaky"))
    assert h.state.collectors == {}


def test_a_failed_attempt_whose_collect_released_the_batch_gives_the_batch_to_its_retry() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("join", (Job,), 2)))
    h.start(Go())
    h.complete(h.only("start"), Job(1), Job(2))
    first, second = h.running_at("join")
    one, two = h.in_flight[first].message, h.in_flight[second].message
    h.feed(CollectRequested(invocation=first, message=one, expected=(Job, Job), undoable=True))
    h.complete(first)  # its half of the batch is held
    [answer] = h.feed(
        CollectRequested(invocation=second, message=two, expected=(Job, Job), undoable=True)
    )
    assert answer == CollectResult(batch=[Job(1), Job(2)])
    fail_attempt(h, second, ConnectionError("raised after collecting"))
    [answer] = h.feed(
        CollectRequested(invocation=second, message=two, expected=(Job, Job), undoable=True)
    )
    assert answer == CollectResult(batch=[Job(1), Job(2)])  # the retry gets the batch again


def test_a_failed_attempt_takes_back_what_it_sent_before_the_barrier() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,)), ("sink", (Job,), 4)))
    h.start(Go())
    h.send(0, Job(1))
    assert len(h.state.outbox) == 1
    fail_attempt(h, 0, ConnectionError("flaky"))
    assert h.state.outbox == []
    h.complete(0, Job(2))
    h.complete(1, Job(3))
    assert h.messages_started_at("sink") == [Job(2), Job(3)]


def test_a_failed_attempt_takes_back_its_stop_and_the_next_earliest_stop_wins() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,))))
    h.start(Go())
    h.complete(1, Done("b"))
    h.send(0, Done("a"))
    assert h.state.stop == ((0, 0), Done("a"))
    fail_attempt(h, 0, ConnectionError("flaky"))
    assert h.state.stop == ((1, 0), Done("b"))
    h.complete(0)
    assert ended(h) == RunEnded(status=RunStatus.FINISHED, result=Done("b"))


def test_a_failed_attempt_drops_its_pending_reducer_writes_and_no_one_elses() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,)), ("sink", (Job,))))
    h.start(Go())
    h.feed(StateWritten(invocation=0, merges=(("total", 1),)))
    h.feed(StateWritten(invocation=1, merges=(("total", 10),)))
    fail_attempt(h, 0, ConnectionError("flaky"))
    assert [entry[2:] for entry in h.state.pending_merges] == [("total", 10)]
    h.feed(StateWritten(invocation=0, merges=(("total", 2),)))  # the retry writes again
    h.complete(1, Job(1))
    assert h.complete(0) == [MergeState(writes=(("total", 2), ("total", 10)))]


# -- requests -------------------------------------------------------------------------------


def request_graph(*, finish_when_idle: bool = False) -> Graph:
    return make_graph(
        ("asker", (Go, ResponseMessage)), ("helper", (Go,)), finish_when_idle=finish_when_idle
    )


def test_a_request_stays_open_until_its_answer_is_delivered_to_the_node_that_asked() -> None:
    h = KernelHarness(request_graph())
    h.start(Go())
    opened = RequestOpened(invocation=0, request_id="r1", data="name?", response_type=str)
    assert h.feed(opened) == []
    assert h.state.requests == {"r1": OpenRequest("r1", 0, 0, "name?", str)}
    h.complete(1)
    assert h.complete(0, Ask("name?", "r1")) == [
        SuperstepEnded(superstep=0),
        PublishEvent(event=Ask("name?", "r1")),
    ]
    commands = h.feed(ResponseReceived(request_id="r1", response="Ada"))
    assert commands == [
        SuperstepEnded(superstep=1),
        StartStep(invocation=2, node=0, message=ResponseMessage("r1", "name?", "Ada")),
    ]
    assert h.state.requests == {} and h.state.input_requests == 0


@pytest.mark.parametrize("finish_when_idle", [False, True], ids=["steps", "executors"])
def test_a_run_paused_on_an_open_published_request_neither_stalls_nor_finishes(
    finish_when_idle: bool,
) -> None:
    h = KernelHarness(request_graph(finish_when_idle=finish_when_idle))
    h.start(Go())
    h.feed(RequestOpened(invocation=0, request_id="r1", data="?", response_type=str))
    h.complete(1)
    h.complete(0, Ask("?", "r1"))
    assert h.ended is None and h.status is RunStatus.RUNNING
    assert h.state.idle and h.state.input_requests == 1 and "r1" in h.state.requests


def test_the_answer_to_a_forwarded_request_is_passed_on_not_delivered() -> None:
    h = KernelHarness(request_graph())
    h.start(Go())
    h.feed(
        RequestOpened(invocation=0, request_id="sub-1", data="?", response_type=int, forwarded=True)
    )
    assert h.state.requests["sub-1"].forwarded
    commands = h.feed(ResponseReceived(request_id="sub-1", response=42))
    assert commands == [ForwardResponse(request_id="sub-1", response=42)]
    assert h.state.requests == {} and h.state.outbox == [] and len(h.started) == 2


@pytest.mark.parametrize("case", ["never opened", "answered twice"])
def test_answering_a_request_that_is_not_open_raises_kernel_error(case: str) -> None:
    h = KernelHarness(request_graph())
    h.start(Go())
    if case == "answered twice":
        h.feed(RequestOpened(invocation=0, request_id="r1", data="?", response_type=str))
        h.feed(ResponseReceived(request_id="r1", response="once"))
    with pytest.raises(KernelError, match="no open request 'r1'"):
        apply(h.state, ResponseReceived(request_id="r1", response="again"))


def test_opening_a_request_twice_raises_kernel_error() -> None:
    h = KernelHarness(request_graph())
    h.start(Go())
    h.feed(RequestOpened(invocation=0, request_id="r1", data="?", response_type=str))
    with pytest.raises(KernelError, match="request 'r1' opened twice"):
        apply(h.state, RequestOpened(invocation=1, request_id="r1", data="?", response_type=str))


@MODES
def test_a_failed_attempt_drops_its_requests_in_superstep_mode_only(mode: Mode) -> None:
    h = KernelHarness(request_graph(), mode=mode)
    h.start(Go())
    h.feed(RequestOpened(invocation=0, request_id="mine", data="?", response_type=str))
    h.feed(RequestOpened(invocation=1, request_id="theirs", data="?", response_type=str))
    fail_attempt(h, 0, ConnectionError("flaky"))
    if mode is Mode.SUPERSTEP:  # its request event is still in the outbox: never published
        assert set(h.state.requests) == {"theirs"}
    else:  # published already: the caller may answer it
        assert set(h.state.requests) == {"mine", "theirs"}


# -- shared state ---------------------------------------------------------------------------


def test_state_writes_and_deletes_apply_at_once_without_a_barrier() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,))))
    h.start(Go())
    assert h.feed(StateWritten(invocation=0, writes=(("x", 1), ("y", 2)))) == []
    assert h.state.store == {"x": 1, "y": 2}
    assert h.feed(StateWritten(invocation=1, writes=(("x", 3),), deletes=("y", "never"))) == []
    assert h.state.store == {"x": 3}
    assert h.barriers == [] and h.state.pending_merges == []


def test_reducer_writes_wait_for_the_barrier_and_leave_the_store_alone_until_then() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,))))
    h.start(Go())
    assert h.feed(StateWritten(invocation=1, merges=(("log", "b"),))) == []
    assert h.feed(StateWritten(invocation=0, merges=(("log", "a"),))) == []
    assert h.state.store == {}
    assert h.state.pending_merges == [((1, 0), 0, "log", "b"), ((0, 0), 1, "log", "a")]


def test_merge_state_lists_reducer_writes_by_writer_position_then_arrival() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("w", (Job,), 2), ("z", (Result,))))
    h.start(Go())
    h.complete(h.only("start"), Job(1), Job(2), Result("go"))
    w0, w1 = h.running_at("w")
    z = h.only("z")
    for invocation, key, value in [
        (z, "log", "z"),
        (w1, "log", "w1 first"),
        (w0, "log", "w0"),
        (w1, "n", "w1 second"),
    ]:
        h.feed(StateWritten(invocation=invocation, merges=((key, value),)))
    h.complete(z, Done("z"))
    h.complete(w1)
    commands = h.complete(w0)
    assert commands == [
        MergeState(writes=(("log", "w0"), ("log", "w1 first"), ("n", "w1 second"), ("log", "z")))
    ]
    assert h.state.merging and h.state.pending_merges == []
    assert h.barriers == [0] and h.state.store == {}  # superstep 1's barrier waits


def test_the_barrier_and_the_next_superstep_wait_for_state_merged() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,)), ("sink", (Job,))))
    h.start(Go())
    h.feed(StateWritten(invocation=0, merges=(("total", 1),)))
    h.feed(StateWritten(invocation=1, merges=(("total", 10),)))
    h.complete(0, Job(1))
    assert h.complete(1) == [MergeState(writes=(("total", 1), ("total", 10)))]
    assert h.external(Job(9)) == []  # news while merging passes no barrier
    assert h.barriers == [] and h.messages_started_at("sink") == []
    commands = h.feed(StateMerged(values=(("total", 11),)))
    assert commands == [
        SuperstepEnded(superstep=0),
        StartStep(invocation=2, node=2, message=Job(9)),
    ]
    assert h.state.store == {"total": 11} and not h.state.merging


def test_a_reducer_failure_fails_the_run_with_that_failure() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("sink", (Job,))))
    h.start(Go())
    h.feed(StateWritten(invocation=0, merges=(("total", 1),)))
    h.complete(0, Job(1))
    error = ZeroDivisionError("reducer divided by zero")
    failure = Failure.from_error(error)
    [command] = h.feed(StateMerged(failure=failure))
    assert command == RunEnded(status=RunStatus.FAILED, error=error, failure=failure)
    assert command.error is error
    assert h.state.failure == failure and h.state.store == {} and h.barriers == []


def test_a_reducer_failure_recorded_elsewhere_fails_the_run_with_the_recorded_error() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("sink", (Job,))))
    h.start(Go())
    h.feed(StateWritten(invocation=0, merges=(("total", 1),)))
    h.complete(0, Job(1))
    failure = Failure(type="builtins.ZeroDivisionError", message="division by zero")
    [command] = h.feed(StateMerged(failure=failure))
    assert isinstance(command, RunEnded) and command.failure == failure
    assert isinstance(command.error, RecordedError)
    assert str(command.error) == "ZeroDivisionError: division by zero"


@pytest.mark.parametrize("ending", ["stop", "idle"])
def test_a_finishing_run_merges_its_reducer_writes_before_run_ended(ending: str) -> None:
    h = KernelHarness(make_graph(("a", (Go,)), finish_when_idle=ending == "idle"))
    h.start(Go())
    h.feed(StateWritten(invocation=0, merges=(("log", "a"),)))
    result = Done("a") if ending == "stop" else None
    assert h.complete(0, *([result] if result else [])) == [MergeState(writes=(("log", "a"),))]
    assert h.ended is None
    commands = h.feed(StateMerged(values=(("log", ["a"]),)))
    assert commands == [RunEnded(status=RunStatus.FINISHED, result=result)]
    assert h.state.store == {"log": ["a"]}


def test_state_merged_that_no_merge_state_asked_for_raises_kernel_error() -> None:
    h = KernelHarness(make_graph(("a", (Go,))))
    h.start(Go())
    with pytest.raises(KernelError, match="merged state that no MergeState asked for"):
        apply(h.state, StateMerged(values=(("k", 1),)))


def test_reducer_writes_with_no_invocation_raise_kernel_error() -> None:
    h = KernelHarness(make_graph(("a", (Go,))))
    h.start(Go())
    with pytest.raises(KernelError, match="reducer writes with no invocation"):
        apply(h.state, StateWritten(merges=(("k", 1),)))


# -- RunAborted -----------------------------------------------------------------------------


def test_run_aborted_fails_the_run_with_its_failure_and_drops_its_timers() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("w", (Go,))), timeout=30.0)
    h.start(Go())
    h.wait(1, Answer, timeout=1.0)
    error = RuntimeError("an observer raised")
    failure = Failure.from_error(error)
    assert h.feed(RunAborted(failure=failure)) == [
        RunEnded(status=RunStatus.FAILED, error=error, failure=failure)
    ]
    assert h.status is RunStatus.FAILED and h.state.failure == failure
    assert h.state.timers == {}
    assert apply(h.state, TimerFired(timer="run")) == []  # late news of an ended run


# -- explicit routing -----------------------------------------------------------------------


def test_an_explicitly_routed_message_with_no_targets_is_unroutable_at_the_barrier() -> None:
    graph = make_graph(("a", (Go,)), ("b", (Go,)), ("sink", (Job,)), entry=(0, 1))
    h = KernelHarness(graph, router=route_by({Job: (2,)}))
    h.start(Go())
    assert h.complete(0, Result("lost")) == []  # "b" still runs: nothing fails before the barrier
    assert h.emitted[-1].target == ()
    commands = h.complete(1, Job(1))
    assert commands[0] == SuperstepEnded(superstep=0)
    end = ended(h)
    assert commands == [SuperstepEnded(superstep=0), end]
    assert end.status is RunStatus.FAILED and isinstance(end.error, UnroutableEventError)
    assert "'a' sent Result" in str(end.error) and "no edge out of 'a' takes it" in str(end.error)
    assert h.messages_started_at("sink") == []


def test_a_stop_does_not_hide_an_unroutable_message_of_its_superstep() -> None:
    graph = make_graph(("a", (Go,)), ("b", (Go,)), entry=(0, 1))
    h = KernelHarness(graph, router=route_by({}))
    h.start(Go())
    h.complete(0, Result("lost"))
    h.complete(1, Done("b"))
    end = ended(h)
    assert end.status is RunStatus.FAILED and isinstance(end.error, UnroutableEventError)
    assert "no edge out of 'a' takes it" in str(end.error)


@MODES
def test_an_explicit_target_that_does_not_accept_the_message_fails_the_run(mode: Mode) -> None:
    graph = make_graph(("start", (Go,)), ("sink", (Result,)), entry=(0,))
    h = KernelHarness(graph, mode=mode, router=route_by({Job: (1,)}))
    h.start(Go())
    h.complete(0, Job(1))
    end = ended(h)
    assert end.status is RunStatus.FAILED and isinstance(end.error, UnroutableEventError)
    assert "step 'start' sent Job (Job(n=1)) to 'sink', which has no handler for Job" in str(
        end.error
    )
    assert "(it handles Result)" in str(end.error)
    assert h.messages_started_at("sink") == []


def test_messages_from_the_caller_go_to_the_graph_entry() -> None:
    graph = make_graph(("a", (Go, Job)), ("b", (Go, Job)), ("c", (Job,)), entry=(1,))
    calls: list[tuple[int, object]] = []

    def router(sender: int, message: object) -> tuple[int, ...]:
        calls.append((sender, message))
        return ()

    h = KernelHarness(graph, router=router)
    assert h.start(Go()) == [StartStep(invocation=0, node=1, message=Go())]  # not "a"
    h.external(Job(1))
    assert h.complete(0) == [
        SuperstepEnded(superstep=0),
        StartStep(invocation=1, node=1, message=Job(1)),  # neither "a" nor "c"
    ]
    assert calls == []  # the caller's messages are not the router's


def test_a_caller_message_the_entry_does_not_accept_fails_the_run_naming_the_caller() -> None:
    graph = make_graph(("a", (Go,)), ("b", (Job,)), entry=(0,))
    h = KernelHarness(graph, router=route_by({}))
    [command] = h.start(Job(1))
    assert isinstance(command, RunEnded) and command.status is RunStatus.FAILED
    assert isinstance(command.error, UnroutableEventError)
    assert "the caller sent Job (Job(n=1)) to 'a', which has no handler for Job" in str(
        command.error
    )


# -- time -----------------------------------------------------------------------------------


def test_state_now_follows_the_at_of_each_tick_and_timers_are_due_from_it() -> None:
    state = RunState(make_graph(("w", (Go,)), ("a", (Go,))), timeout=10.0)
    ticks: list[Tick] = [
        RunStarted(run_id="r", start=Go(), at=100.0),
        WaitStarted(invocation=0, types=(Answer,), requirements={}, timeout=20.0, at=100.25),
        AttemptFailed(invocation=1, failure=failure_of(), retry_in=0.5, at=103.0),
        TimerFired(timer="retry:1", at=103.5),
        StateWritten(invocation=1, writes=(("k", 1),), at=104.0),
        StepCompleted(invocation=1, at=104.5),
    ]
    for tick in ticks:
        apply(state, tick)
        assert state.now == tick.at
    assert state.started_at == 100.0
    assert state.timers == {"run": 110.0, "wait:0": 120.25}


def test_a_tick_after_the_run_ended_does_not_move_its_time() -> None:
    state = RunState(make_graph(("a", (Go,))))
    apply(state, RunStarted(run_id="r", start=Go(), at=5.0))
    apply(state, StepCompleted(invocation=0, emitted=((Done(), None),), at=6.0))
    assert state.status is RunStatus.FINISHED and state.now == 6.0
    assert apply(state, TimerFired(timer="run", at=60.0)) == []
    assert state.now == 6.0


# -- handlers -------------------------------------------------------------------------------


@pytest.mark.parametrize("tick_type", TICK_TYPES, ids=lambda t: t.kind)
def test_every_tick_class_has_a_handler_named_after_its_kind(tick_type: type) -> None:
    handler: Callable[..., None] = _HANDLERS[tick_type]
    assert handler.__name__ == f"_apply_{tick_type.kind}"  # type: ignore[attr-defined]


def test_the_kernel_handles_exactly_the_tick_classes_each_under_its_own_kind() -> None:
    assert set(_HANDLERS) == set(TICK_TYPES)
    kinds = [t.kind for t in TICK_TYPES]  # type: ignore[attr-defined]
    assert len(set(kinds)) == len(kinds)


# -- replay ---------------------------------------------------------------------------------


def drive_a_rich_run() -> Shell:
    """A run through timers, a retry with backoff, a wait, reducer writes and a request."""
    graph = make_graph(("start", (Go,)), ("work", (Job,), 2), ("sink", (Result, ResponseMessage)))
    h = Shell(graph, timeout=30.0)
    h.clock = 1.0
    h.start(Go())
    h.clock = 1.1
    h.feed(StateWritten(invocation=0, writes=(("seen", 1),), merges=(("log", "start"),)))
    h.complete(0, Job(1), Job(2))
    h.clock = 1.2
    h.feed(StateMerged(values=(("log", ("start",)),)))
    h.clock = 2.0
    fail_attempt(h, 1, ConnectionError("flaky"), retry_in=0.5)
    h.clock = 2.1
    h.wait(2, Answer, timeout=5.0)
    h.clock = 2.5
    h.fire("retry:1")
    h.clock = 2.6
    h.complete(1, Result("r1"))
    h.clock = 3.0
    h.feed(RequestOpened(invocation=3, request_id="q1", data="?", response_type=str))
    h.complete(3, Ask("?", "q1"))
    h.clock = 4.0
    h.feed(ResponseReceived(request_id="q1", response="yes"))
    h.clock = 4.5
    h.external(Answer("go"))
    h.complete(4)
    h.clock = 5.0
    h.complete(2, Done("end"))
    return h


def test_replaying_the_same_ticks_into_a_fresh_state_gives_an_equal_snapshot() -> None:
    h = drive_a_rich_run()
    assert ended(h) == RunEnded(status=RunStatus.FINISHED, result=Done("end"))
    assert h.resolved == {2: Answer("go")} and h.state.store == {"seen": 1, "log": ("start",)}
    fresh = RunState(h.graph, timeout=30.0)
    replayed: list[Command] = []
    for tick, snapshot in zip(h.ticks, h.snapshots, strict=True):
        replayed.extend(apply(fresh, tick))
        assert fresh.snapshot() == snapshot, f"diverged at {tick!r}"
    assert replayed == h.commands
    assert fresh.snapshot() == h.state.snapshot()
    assert fresh.now == 5.0 and fresh.started_at == 1.0


def test_states_that_fold_the_same_tick_differently_have_different_snapshots() -> None:
    def collected(undoable: bool) -> KernelHarness:
        h = KernelHarness(make_graph(("start", (Go,)), ("gather", (Job,))))
        h.start(Go())
        h.complete(h.only("start"), Job(1))
        message = h.in_flight[1].message
        h.feed(
            CollectRequested(invocation=1, message=message, expected=(Job, Job), undoable=undoable)
        )
        return h

    retried, kept = collected(undoable=True), collected(undoable=False)
    before = retried.state.snapshot(), kept.state.snapshot()
    for h in (retried, kept):
        fail_attempt(h, 1, ConnectionError("flaky"))
    assert retried.state.snapshot() != kept.state.snapshot()  # the same tick, different states
    assert before[0] != before[1]


def test_a_resume_starts_again_within_max_concurrency_and_refuses_ticks_of_those_held() -> None:
    graph = make_graph(("start", (Go,)), ("a", (Job,), 3))
    h = KernelHarness(graph)  # no bound: the three start
    h.start(Go())
    h.complete(h.only("start"), Job(1), Job(2), Job(3))
    h.state.max_concurrency = 1  # resumed, in a new process, by a workflow with a bound
    h.in_flight.clear()
    commands = h.feed(RunResumed())
    assert [c for c in commands if isinstance(c, StartStep)] == [
        StartStep(invocation=1, node=1, message=Job(1), attempt=1)
    ]
    assert list(h.state.restarts) == [2, 3] and h.state.running == 1
    for tick in (
        StepCompleted(invocation=2),
        EventsSent(invocation=2, emitted=()),
        WaitStarted(invocation=2, types=(Answer,), requirements=()),
    ):
        with pytest.raises(KernelError, match=r"invocation 2 .* held back for a slot"):
            apply(h.state, tick)
    assert h.complete(1) == [StartStep(invocation=2, node=1, message=Job(2), attempt=1)]


# -- a resume and the run's timer ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "timers"),
    [(4.0, {"run": 504.0}), (None, {})],
    ids=["a timeout", "none"],
)
def test_a_resume_counts_the_run_timer_from_itself_with_the_timeout_it_carries(
    timeout: float | None, timers: dict[str, float]
) -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Job,))), timeout=2.5)
    h.feed(RunStarted(run_id="r", start=Go(), at=100.0))
    h.complete(0, Job(1))
    assert h.state.timers == {"run": 102.5}
    h.in_flight.clear()  # a new process, long after the deadline the run had
    h.timers.clear()
    commands = h.feed(RunResumed(timeout=timeout, at=500.0))
    assert h.state.timers == timers and h.state.timeout == timeout
    armed = [c for c in commands if isinstance(c, ArmTimer)]
    assert armed == ([ArmTimer(timer="run", delay=4.0, due=504.0)] if timeout else [])
    assert not any(isinstance(c, CancelTimer) for c in commands)  # (nothing armed to cancel)
    assert [c.invocation for c in commands if isinstance(c, StartStep)] == [1]
    assert h.state.started_at == 100.0  # (the run's start stays what it was)
    if timeout is not None:
        [ended] = h.time_out()
        assert isinstance(ended, RunEnded) and "timed out after 4.0s" in str(ended.error)
