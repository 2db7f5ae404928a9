"""The kernel as synchronous pure functions: one tick in, the commands out.

Each test builds a tiny graph by hand, drives ``apply`` through the fake shell in
``tests.kernel_harness`` and checks the commands and the state. Messages are plain
dataclasses: the kernel routes any object by its type. Covered, per tick kind: start
routing, completions and their emissions, the superstep barrier and its delivery order,
stop at the barrier (superstep mode) or at once (async mode), ``num_workers`` and
``max_concurrency``, ``max_supersteps`` in both modes, unroutable events, input requests,
held events and waiters, collectors, stalls, cancel, run timeout, late ticks, and the
ticks the kernel refuses (``KernelError``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest

from stepgraph.core import (
    ArmTimer,
    CancelRequested,
    CollectRequested,
    CollectResult,
    EventsSent,
    ExternalEventReceived,
    Failure,
    FailWait,
    Graph,
    InputRequested,
    KernelError,
    Mode,
    Node,
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
from stepgraph.errors import (
    SuperstepLimitExceeded,
    UnroutableEventError,
    WorkflowCancelled,
    WorkflowRuntimeError,
    WorkflowStalled,
    WorkflowTimeoutError,
)
from tests.kernel_harness import KernelHarness, to

# -- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Go:
    n: int = 0


@dataclass(frozen=True)
class Job:
    n: int = 0


@dataclass(frozen=True)
class SubJob(Job):
    pass


@dataclass(frozen=True)
class Result:
    tag: str = ""


@dataclass(frozen=True)
class Done:
    value: object = None


@dataclass(frozen=True)
class Ask:
    prompt: str = ""


@dataclass(frozen=True)
class Answer:
    text: str = ""


@dataclass(frozen=True)
class Stray:
    pass


NodeSpec = tuple[str, tuple[type, ...]] | tuple[str, tuple[type, ...], int]


def make_graph(*specs: NodeSpec, finish_when_idle: bool = False) -> Graph:
    """A graph named ``g``: ``Done`` stops, ``Ask`` asks the caller, ``Answer`` answers (held)."""
    nodes = tuple(
        Node(name=spec[0], index=i, accepts=spec[1], num_workers=spec[2] if len(spec) > 2 else 1)
        for i, spec in enumerate(specs)
    )
    return Graph(
        name="g",
        nodes=nodes,
        stop_types=(Done,),
        input_request_types=(Ask,),
        held_types=(Answer,),
        answer_types=(Answer,),
        finish_when_idle=finish_when_idle,
    )


MODES = pytest.mark.parametrize("mode", [Mode.SUPERSTEP, Mode.ASYNC], ids=["superstep", "async"])


def ended(h: KernelHarness) -> RunEnded:
    assert h.ended is not None, f"the run has not ended (status {h.status.value})"
    return h.ended


# -- RunStarted -----------------------------------------------------------------------------


def test_the_start_message_goes_to_every_accepting_node_in_node_order() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Job,)), ("c", (Job, Go))))
    commands = h.start(Go(1), run_id="r-42")
    assert commands == [
        StartStep(invocation=0, node=0, message=Go(1)),
        StartStep(invocation=1, node=2, message=Go(1)),
    ]
    assert h.status is RunStatus.RUNNING
    assert h.state.run_id == "r-42"


def test_a_start_message_no_node_accepts_is_held_and_the_run_stalls_naming_it() -> None:
    h = KernelHarness(make_graph(("a", (Job,))))
    [command] = h.start(Go())
    assert isinstance(command, RunEnded) and command.status is RunStatus.FAILED
    assert isinstance(command.error, WorkflowStalled)
    assert "events no step took: Go" in str(command.error)


def test_starting_a_run_twice_raises_kernel_error() -> None:
    h = KernelHarness(make_graph(("a", (Go,))))
    h.start(Go())
    with pytest.raises(KernelError, match="started twice"):
        apply(h.state, RunStarted(run_id="again", start=Go()))


# -- StepCompleted and routing --------------------------------------------------------------


def test_emissions_are_routed_by_type_to_every_accepting_node_subclasses_included() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("jobs", (Job,)), ("subjobs", (SubJob,))))
    h.start(Go())
    commands = h.complete(h.only("start"), Job(1), SubJob(2))
    assert commands == [
        SuperstepEnded(superstep=0),
        StartStep(invocation=1, node=1, message=Job(1)),
        StartStep(invocation=2, node=2, message=SubJob(2)),
    ]
    assert list(h.state.nodes[1].inbox) == [(SubJob(2), 1)]  # queued behind Job(1)
    assert h.complete(1) == [StartStep(invocation=3, node=1, message=SubJob(2))]


def test_a_targeted_emission_goes_only_to_its_target_node() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("a", (Job,)), ("b", (Job,), 4)))
    h.start(Go())
    h.complete(h.only("start"), to(2, Job(1)), Job(2))
    assert h.messages_started_at("a") == [Job(2)]
    assert h.messages_started_at("b") == [Job(1), Job(2)]


def test_completing_an_invocation_not_in_flight_raises_kernel_error() -> None:
    h = KernelHarness(make_graph(("a", (Go,))))
    h.start(Go())
    with pytest.raises(KernelError, match="no invocation 7 in flight"):
        apply(h.state, StepCompleted(invocation=7))


@pytest.mark.parametrize(
    "tick",
    [
        StepFailed(invocation=7, failure=Failure.from_error(ValueError())),
        EventsSent(invocation=7, emitted=((Job(), None),)),
        WaitStarted(invocation=7, types=(Answer,), requirements={}),
        CollectRequested(invocation=7, message=Job(), expected=(Job,)),
    ],
    ids=lambda t: t.kind,
)
def test_ticks_naming_an_invocation_not_in_flight_raise_kernel_error(tick: Tick) -> None:
    h = KernelHarness(make_graph(("a", (Go,))))
    h.start(Go())
    with pytest.raises(KernelError, match="no invocation 7"):
        apply(h.state, tick)


def test_a_step_failure_fails_the_run_with_the_steps_own_error() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,))))
    h.start(Go())
    error = ValueError("boom")
    [command] = h.fail(h.only("a"), error)
    assert command == RunEnded(
        status=RunStatus.FAILED, error=error, failure=Failure.from_error(error)
    )
    assert command.error is error
    assert h.complete(h.only("b"), Job()) == []  # the other step's late result is ignored


# -- the superstep barrier ------------------------------------------------------------------


def test_messages_emitted_in_a_superstep_are_delivered_only_after_its_barrier() -> None:
    h = KernelHarness(make_graph(("fan", (Go,)), ("slow", (Go,)), ("sink", (Job,))))
    h.start(Go())
    assert h.complete(h.only("fan"), Job(1)) == []  # "slow" still runs superstep 0
    commands = h.complete(h.only("slow"))
    assert commands == [
        SuperstepEnded(superstep=0),
        StartStep(invocation=2, node=2, message=Job(1)),
    ]
    assert h.started[-1].superstep == 1


def test_barrier_delivers_by_sender_index_then_invocation_count_then_emission_order() -> None:
    h = KernelHarness(
        make_graph(
            ("start", (Go,)), ("early", (Job,), 2), ("late", (Job,), 2), ("sink", (Result,), 8)
        )
    )
    h.start(Go())
    h.complete(h.only("start"), Job(0), Job(1))
    early, late = h.running_at("early"), h.running_at("late")
    # complete in the reverse of the delivery order
    for node, invocations in (("late", late), ("early", early)):
        for count, invocation in reversed(list(enumerate(invocations))):
            h.complete(invocation, Result(f"{node}{count}a"), Result(f"{node}{count}b"))
    assert [r.tag for r in h.messages_started_at("sink")] == [  # type: ignore[attr-defined]
        "early0a", "early0b", "early1a", "early1b", "late0a", "late0b", "late1a", "late1b"
    ]  # fmt: skip


def test_events_from_the_caller_are_delivered_at_the_next_barrier_before_step_emissions() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("sink", (Job,), 4)))
    h.start(Go())
    assert h.external(Job(100)) == []  # "a" still runs: the caller's event waits for the barrier
    h.complete(h.only("a"), Job(1))
    assert h.messages_started_at("sink") == [Job(100), Job(1)]


def test_superstep_mode_buffers_events_sent_mid_step_until_the_barrier() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("sink", (Job,))))
    h.start(Go())
    assert h.send(h.only("a"), Job(1)) == []
    assert h.complete(h.only("a"), Job(2)) == [
        SuperstepEnded(superstep=0),
        StartStep(invocation=1, node=1, message=Job(1)),
    ]
    assert list(h.state.nodes[1].inbox) == [(Job(2), 1)]


def test_a_stop_ends_the_run_at_the_barrier_of_its_superstep_not_before() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,)), ("sink", (Job,))))
    h.start(Go())
    assert h.complete(h.only("a"), Job(1), Done("a")) == []
    assert h.status is RunStatus.RUNNING  # "b" still runs superstep 0
    commands = h.complete(h.only("b"), Job(2))
    assert commands == [RunEnded(status=RunStatus.FINISHED, result=Done("a"))]
    assert h.messages_started_at("sink") == []  # what superstep 0 emitted is never delivered


@pytest.mark.parametrize("shape", ["two nodes", "one node, two invocations"])
def test_the_earliest_stop_in_delivery_order_wins_whatever_the_completion_order(
    shape: str,
) -> None:
    if shape == "two nodes":
        h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,))))
        h.start(Go())
        first, second = h.only("a"), h.only("b")
    else:
        h = KernelHarness(make_graph(("start", (Go,)), ("w", (Job,), 2)))
        h.start(Go())
        h.complete(h.only("start"), Job(1), Job(2))
        first, second = h.running_at("w")
    h.complete(second, Done("second"))
    h.complete(first, Done("first"))
    assert ended(h) == RunEnded(status=RunStatus.FINISHED, result=Done("first"))


# -- async mode -----------------------------------------------------------------------------


def test_async_mode_delivers_an_emission_at_once_without_a_barrier() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,)), ("sink", (Job,))), mode=Mode.ASYNC)
    h.start(Go())
    assert h.complete(h.only("a"), Job(1)) == [StartStep(invocation=2, node=2, message=Job(1))]
    assert h.send(h.only("b"), Job(2)) == []  # queued: "sink" has one worker
    assert h.complete(h.only("sink")) == [StartStep(invocation=3, node=2, message=Job(2))]
    assert h.barriers == []


def test_async_mode_stop_ends_the_run_at_once_and_later_completions_are_ignored() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,)), ("sink", (Job,))), mode=Mode.ASYNC)
    h.start(Go())
    commands = h.complete(h.only("a"), Job(1), Done("a"), Job(2))
    assert commands == [
        StartStep(invocation=2, node=2, message=Job(1)),
        RunEnded(status=RunStatus.FINISHED, result=Done("a")),
    ]
    assert h.complete(h.only("b"), Done("b")) == []
    assert h.state.result == Done("a")


# -- num_workers and max_concurrency --------------------------------------------------------


@MODES
def test_a_node_processes_one_message_at_a_time_in_fifo_order_by_default(mode: Mode) -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("w", (Job,))), mode=mode)
    h.start(Go())
    h.complete(h.only("start"), Job(1), Job(2), Job(3))
    assert h.messages_started_at("w") == [Job(1)]
    h.complete(h.only("w"))
    assert h.messages_started_at("w") == [Job(1), Job(2)]
    h.complete(h.only("w"))
    assert h.messages_started_at("w") == [Job(1), Job(2), Job(3)]
    assert h.peak_per_node[1] == 1


@MODES
def test_num_workers_bounds_a_nodes_invocations_and_starts_them_in_fifo_order(mode: Mode) -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("w", (Job,), 2)), mode=mode)
    h.start(Go())
    h.complete(h.only("start"), *(Job(i) for i in range(5)))
    first, second = h.running_at("w")
    assert h.messages_started_at("w") == [Job(0), Job(1)]
    h.complete(second)
    assert h.messages_started_at("w") == [Job(0), Job(1), Job(2)]
    h.complete(first)
    while h.running_at("w"):
        h.complete(h.running_at("w")[-1])
    assert h.messages_started_at("w") == [Job(i) for i in range(5)]
    assert h.peak_per_node[1] == 2


@MODES
def test_max_concurrency_bounds_the_runs_in_flight_invocations(mode: Mode) -> None:
    graph = make_graph(("start", (Go,)), ("a", (Job,)), ("b", (Job,)), ("c", (Job,)))
    h = KernelHarness(graph, mode=mode, max_concurrency=2)
    h.start(Go())
    h.complete(h.only("start"), Job(1))
    assert [s.node for s in h.started[1:]] == [1, 2]  # "c" is held back
    assert list(h.state.blocked) == [3]
    assert h.complete(h.only("a")) == [StartStep(invocation=3, node=3, message=Job(1))]
    assert h.peak_running_at_start == 2


def test_max_concurrency_starts_held_back_nodes_before_a_looping_node_runs_again() -> None:
    graph = make_graph(("start", (Go,)), ("loop", (Job,)), ("held", (Answer,)))
    h = KernelHarness(graph, mode=Mode.ASYNC, max_concurrency=1)
    h.start(Go())
    h.complete(h.only("start"), Job(0), Answer("waiting"))
    assert list(h.state.blocked) == [2]
    h.complete(h.only("loop"), Job(1))  # frees the one slot, and feeds "loop" again
    assert h.messages_started_at("held") == [Answer("waiting")]


def test_a_waiting_step_frees_its_concurrency_slot_for_blocked_steps() -> None:
    # With max_concurrency=1, "b" is held back while "a" runs; when "a" waits for an event
    # only "b" can send, "b" must start, or the run hangs with nothing running.
    h = KernelHarness(
        make_graph(("start", (Go,)), ("a", (Job,)), ("b", (Result,))), max_concurrency=1
    )
    h.start(Go())
    h.complete(h.only("start"), Job(1), Result("r"))
    commands = h.wait(h.only("a"), Answer)
    assert commands == [StartStep(invocation=2, node=2, message=Result("r"))]
    h.complete(h.only("b"), Answer("from b"))
    assert h.resolved == {1: Answer("from b")}
    h.complete(h.only("a"), Done("ok"))
    assert ended(h).status is RunStatus.FINISHED


# -- max_supersteps -------------------------------------------------------------------------


@MODES
def test_max_supersteps_bounds_a_runaway_loop_in_both_modes(mode: Mode) -> None:
    h = KernelHarness(make_graph(("loop", (Go,))), mode=mode, max_supersteps=3)
    h.start(Go(0))
    while h.ended is None:
        invocation = h.only("loop")
        message = h.in_flight[invocation].message
        assert isinstance(message, Go)
        h.complete(invocation, Go(message.n + 1))
    assert h.messages_started_at("loop") == [Go(0), Go(1), Go(2), Go(3)]
    end = ended(h)
    assert end.status is RunStatus.FAILED
    assert isinstance(end.error, SuperstepLimitExceeded)
    assert "workflow 'g' exceeded max_supersteps=3" in str(end.error)
    assert "loop <- Go" in str(end.error)


# -- unroutable events and input requests ---------------------------------------------------


@MODES
def test_an_emitted_message_no_node_accepts_fails_the_run_naming_type_and_sender(
    mode: Mode,
) -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("w", (Job,))), mode=mode)
    h.start(Go())
    h.complete(h.only("start"), Job(1), Stray())
    end = ended(h)
    assert end.status is RunStatus.FAILED
    assert isinstance(end.error, UnroutableEventError)
    assert "step 'start' emitted Stray" in str(end.error)
    assert "no step accepts Stray" in str(end.error)


@MODES
def test_an_input_request_nobody_accepts_is_published_and_pauses_the_run(mode: Mode) -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("reply", (Answer,))), mode=mode)
    h.start(Go())
    commands = h.complete(h.only("start"), Ask("name?"))
    assert PublishEvent(event=Ask("name?")) in commands
    assert h.ended is None and h.status is RunStatus.RUNNING  # a pause, not a stall
    assert h.state.input_requests == 1
    h.external(Answer("Ada"))
    assert h.state.input_requests == 0
    assert h.messages_started_at("reply") == [Answer("Ada")]
    h.complete(h.only("reply"), Done("Ada"))
    assert ended(h) == RunEnded(status=RunStatus.FINISHED, result=Done("Ada"))


@MODES
def test_a_prompt_a_step_announces_while_it_runs_is_known_as_its_until_it_returns(
    mode: Mode,
) -> None:
    h = KernelHarness(
        make_graph(
            ("start", (Go,)),
        ),
        mode=mode,
    )
    h.start(Go())
    asker = h.only("start")
    commands = h.feed(InputRequested(invocation=asker, event=Ask("name?")))
    assert commands == [PublishEvent(event=Ask("name?"))]
    assert h.state.input_askers == {"input-1": asker}  # who waits for its answer
    h.wait(asker, Answer)
    h.external(Answer("Ada"))
    assert h.state.inputs == {}  # answered: the answer went to its wait ...
    assert h.state.input_askers == {"input-1": asker}  # ... and any repeat of it would
    h.complete(asker)
    assert h.state.input_askers == {}


def _two_askers(mode: Mode, *more: tuple[str, tuple[type, ...]]) -> tuple[KernelHarness, int, int]:
    """Steps ``a`` and ``b`` running, each having asked a question (a's first)."""
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,)), *more), mode=mode)
    h.start(Go())
    a, b = h.only("a"), h.only("b")
    h.feed(InputRequested(invocation=a, event=Ask("a?")))
    h.feed(InputRequested(invocation=b, event=Ask("b?")))
    return h, a, b


@MODES
def test_an_answer_is_kept_for_the_step_that_asked_until_it_waits(mode: Mode) -> None:
    h, a, b = _two_askers(mode)
    h.wait(b, Answer)
    h.external(for_a := Answer("for a"))  # answers the oldest request: a's
    assert b not in h.resolved  # b waits for an Answer, but this one is a's
    h.wait(a, Answer)
    assert h.resolved == {a: for_a}
    h.complete(a)
    h.external(for_b := Answer("for b"))
    assert h.resolved == {a: for_a, b: for_b}


@MODES
def test_an_answer_goes_to_its_askers_wait_before_an_earlier_one(mode: Mode) -> None:
    h, a, b = _two_askers(mode)
    h.wait(b, Answer)
    h.wait(a, Answer)
    h.external(for_a := Answer("for a"))
    assert h.resolved == {a: for_a}


@MODES
def test_an_answer_its_asker_does_not_wait_for_goes_where_its_type_goes(mode: Mode) -> None:
    """No hang: the step that asked waits for something else, a step takes answers."""
    h = KernelHarness(make_graph(("a", (Go,)), ("reply", (Answer,))), mode=mode)
    h.start(Go())
    a = h.only("a")
    h.feed(InputRequested(invocation=a, event=Ask("a?")))
    h.external(answer := Answer("Ada"))  # kept for a, which has not waited yet
    assert h.messages_started_at("reply") == []
    h.wait(a, Job)  # it waits for the reply's result: the answer goes to the reply
    assert h.messages_started_at("reply") == [answer]
    h.complete(h.only("reply"), to(h.node("a"), Job(1)))
    assert h.resolved == {a: Job(1)}


@MODES
def test_an_answer_kept_for_a_step_that_returns_goes_to_another_wait(mode: Mode) -> None:
    h, a, b = _two_askers(mode)
    h.wait(b, Answer)
    h.external(for_a := Answer("for a"))
    assert h.resolved == {}
    h.complete(a)  # a returned without waiting: its answer is anyone's
    assert h.resolved == {b: for_a}


@MODES
def test_an_answer_a_failed_attempt_took_is_kept_for_the_next_attempt(mode: Mode) -> None:
    h, a, b = _two_askers(mode)
    h.wait(b, Answer)
    h.wait(a, Answer)
    h.external(for_a := Answer("for a"))
    assert h.resolved == {a: for_a}
    h.fail_attempt(a, RuntimeError("flaky"))  # what its wait took goes back to the run
    h.wait(a, Answer)  # the next attempt waits again: the same answer, not b's wait
    assert h.resolved == {a: for_a} and b in h.waiting


def _answering(text: str, request_id: object) -> Answer:
    answer = Answer(text)
    object.__setattr__(answer, "request_id", request_id)
    return answer


@MODES
def test_an_answer_a_step_sends_goes_where_its_type_goes_not_to_the_asker(mode: Mode) -> None:
    """Only the caller's answer is kept for the step that asked: one a step sends (an
    automatic answer, say) is an event like any other."""
    h = KernelHarness(make_graph(("a", (Go,)), ("auto", (Job,)), ("handle", (Answer,))), mode=mode)
    h.start(Go())
    a = h.only("a")
    h.feed(InputRequested(invocation=a, event=Ask("ok?")))  # its id: "input-1"
    h.send(a, Job(1))
    if mode is Mode.SUPERSTEP:
        h.complete(a)  # (Job comes at the next barrier)
    automatic = _answering("auto-yes", "input-1")
    h.complete(h.only("auto"), automatic)
    if mode is Mode.ASYNC:
        h.complete(a)
    assert h.messages_started_at("handle") == [automatic]


@MODES
def test_a_wait_takes_the_answer_kept_for_it_not_one_its_asker_let_go(mode: Mode) -> None:
    """(In superstep mode both answers come at the barrier b's wait makes, a's first: it
    goes to no step that awaits its own answer.)"""
    h, a, b = _two_askers(mode)
    h.wait(a, Job)  # a waits for something else: its answer, when it comes, is anyone's
    h.external(for_a := _answering("for a", "input-1"))
    h.external(for_b := _answering("for b", "input-2"))  # kept for b, which is busy
    h.wait(b, Answer)
    assert h.resolved[b] is for_b
    assert list(h.state.unclaimed) == [for_a] and a not in h.resolved


@MODES
def test_an_answer_to_a_later_question_waits_for_its_askers_wait_for_it(mode: Mode) -> None:
    """A step that asked two questions and waits for the first (a wait with requirements)
    keeps the answer to the second: another step's wait does not take it."""
    h, a, b = _two_askers(mode)
    h.feed(InputRequested(invocation=a, event=Ask("a, again?")))  # its id: "input-3"
    h.wait(a, Answer, requirements={"request_id": "input-1"})
    h.wait(b, Answer)
    h.external(second := _answering("a's second", "input-3"))
    assert h.resolved == {} and list(h.state.unclaimed) == [second]
    h.external(first := _answering("a's first", "input-1"))
    assert h.resolved == {a: first}
    h.wait(a, Answer, requirements={"request_id": "input-3"})
    assert h.resolved == {a: second} and b in h.waiting


def test_an_answer_kept_for_a_step_waiting_for_another_of_its_own_is_not_anyones() -> None:
    """(Async mode.) A wait that begins after the answer came does not take it either."""
    h, a, b = _two_askers(Mode.ASYNC)
    h.feed(InputRequested(invocation=a, event=Ask("a, again?")))  # "input-3"
    h.wait(a, Answer, requirements={"request_id": "input-1"})
    h.external(second := _answering("a's second", "input-3"))
    h.wait(b, Answer)  # b's wait begins now
    assert h.resolved == {} and list(h.state.unclaimed) == [second]


@MODES
def test_an_answer_its_asker_waits_for_with_other_requirements_goes_where_its_type_goes(
    mode: Mode,
) -> None:
    """Its wait names none of its own requests: the answer is not kept (a step taking
    answers gets it: no hang)."""
    h = KernelHarness(make_graph(("a", (Go,)), ("reply", (Answer,))), mode=mode)
    h.start(Go())
    a = h.only("a")
    h.feed(InputRequested(invocation=a, event=Ask("approve?")))
    h.wait(a, Answer, requirements={"text": "approve"})
    h.external(rejected := _answering("reject", "input-1"))
    assert h.messages_started_at("reply") == [rejected]


@MODES
def test_a_retried_step_that_sends_its_request_again_and_returns_is_not_refused(
    mode: Mode,
) -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("reply", (Answer,))), mode=mode)
    h.start(Go())
    a = h.only("a")
    prompt = Ask("approve?")
    object.__setattr__(prompt, "request_id", "approve")
    h.send(a, prompt)
    h.wait(a, Answer)
    h.external(_answering("yes", "approve"))
    h.fail_attempt(a, ConnectionError("flaky"))
    again = Ask("approve?")
    object.__setattr__(again, "request_id", "approve")
    h.complete(a, again)  # the retry sends it again, and returns
    assert h.ended is None or h.ended.status is not RunStatus.FAILED
    assert h.published.count(prompt) == 1


@MODES
def test_a_request_id_another_step_asked_fails_the_run_naming_it(mode: Mode) -> None:
    h, _, b = _two_askers(mode)
    taken = Ask("b, again?")
    object.__setattr__(taken, "request_id", "input-1")  # a's
    h.feed(InputRequested(invocation=b, event=taken))
    end = ended(h)
    assert end.status is RunStatus.FAILED and isinstance(end.error, WorkflowRuntimeError)
    assert "id 'input-1' was asked by step 'b'" in str(end.error)


@MODES
def test_a_step_asking_its_own_request_again_makes_no_second_prompt(mode: Mode) -> None:
    """(It runs again: a retry, a resume.)"""
    h, a, _ = _two_askers(mode)
    again = Ask("a?")
    object.__setattr__(again, "request_id", "input-1")
    assert h.feed(InputRequested(invocation=a, event=again)) == []
    assert h.ended is None and list(h.state.inputs) == ["input-1", "input-2"]


def test_a_prompt_with_an_id_of_its_own_is_its_askers_until_answered_whatever_the_ids_type() -> (
    None
):
    h = KernelHarness(make_graph(("start", (Go,)), ("reply", (Answer,))))
    h.start(Go())
    asker = h.only("start")
    request = Ask("n?")
    object.__setattr__(request, "request_id", 7)  # any JSON value
    h.feed(InputRequested(invocation=asker, event=request))
    assert h.state.input_askers == {7: asker} and list(h.state.inputs) == [7]
    h.complete(asker)  # it returned: its prompt stays open, no step's own any more
    assert h.state.input_askers == {} and list(h.state.inputs) == [7]
    answer = Answer("Ada")
    object.__setattr__(answer, "request_id", 7)
    h.external(answer)
    assert h.state.inputs == {} and h.state.answers == {7: answer}


def test_an_event_from_the_caller_that_is_no_answer_does_not_end_the_input_pause() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("w", (Job,)), ("reply", (Answer,))))
    h.start(Go())
    h.complete(h.only("start"), Ask("name?"))
    h.external(Job(1))
    h.complete(h.only("w"))
    assert h.state.input_requests == 1
    assert h.ended is None  # still paused for the answer: not a stall
    h.external(Answer("Ada"))
    assert h.state.input_requests == 0


# -- waiters and held events ----------------------------------------------------------------


def test_a_wait_is_resolved_at_once_by_a_held_event_that_arrived_before_it() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("w", (Job,))))
    h.start(Go())
    h.external(Answer("early"))
    h.complete(h.only("start"), Job(1))  # the barrier holds Answer: no step accepts it
    assert h.state.unclaimed == deque([Answer("early")])
    commands = h.wait(h.only("w"), Answer)
    assert commands == [ResolveWait(invocation=1, event=Answer("early"))]
    assert not h.state.unclaimed and not h.state.waiters


def test_an_arriving_event_goes_to_the_oldest_matching_waiter_instead_of_its_route() -> None:
    h = KernelHarness(
        make_graph(("start", (Go,)), ("w1", (Go,)), ("w2", (Go,)), ("taker", (Answer,), 4))
    )
    h.start(Go())
    h.wait(h.only("w2"), Answer)  # w2 waits first: it is the oldest waiter
    h.wait(h.only("w1"), Answer)
    h.complete(h.only("start"), Answer("1"), Answer("2"), Answer("3"))
    assert h.resolved == {h.only("w2"): Answer("1"), h.only("w1"): Answer("2")}
    assert h.messages_started_at("taker") == [Answer("3")]


def test_a_waiter_takes_only_events_matching_its_requirements() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("w", (Go,)), ("taker", (Answer,), 4)))
    h.start(Go())
    h.wait(h.only("w"), Answer, requirements={"text": "yes"})
    h.complete(h.only("start"), Answer("no"), Answer("yes"))
    assert h.resolved == {h.only("w"): Answer("yes")}
    assert h.messages_started_at("taker") == [Answer("no")]


def test_a_wait_timeout_fails_the_wait_in_the_step() -> None:
    h = KernelHarness(make_graph(("w", (Go,))))
    h.start(Go())
    assert h.wait(0, Answer, timeout=1.5) == [ArmTimer(timer="wait:0", delay=1.5, due=1.5)]
    assert h.time_out_wait(0) == [FailWait(invocation=0)]
    assert h.state.waiters == {} and h.state.running == 1 and h.state.timers == {}
    error = TimeoutError("wait timed out")
    h.fail(0, error)
    assert ended(h) == RunEnded(
        status=RunStatus.FAILED, error=error, failure=Failure.from_error(error)
    )


def test_a_wait_timeout_after_the_wait_was_resolved_is_ignored() -> None:
    h = KernelHarness(make_graph(("w", (Go,)), ("a", (Go,))))
    h.start(Go())
    h.wait(h.only("w"), Answer, timeout=1.0)
    h.complete(h.only("a"), Answer("in time"))
    assert h.resolved == {0: Answer("in time")}
    assert h.timers == {}  # the wait's timer was cancelled when the answer came
    before = h.state.snapshot()
    assert h.time_out_wait(0) == []
    assert h.state.snapshot() == before


def test_a_waiting_step_does_not_hold_the_superstep_barrier() -> None:
    h = KernelHarness(make_graph(("w", (Go,)), ("a", (Go,)), ("sink", (Job,))))
    h.start(Go())
    h.wait(h.only("w"), Answer)
    commands = h.complete(h.only("a"), Job(1))
    assert commands == [
        SuperstepEnded(superstep=0),
        StartStep(invocation=2, node=2, message=Job(1)),
    ]


def test_sends_made_before_a_wait_are_delivered_while_the_step_waits() -> None:
    h = KernelHarness(make_graph(("w", (Go,)), ("sink", (Job,))))
    h.start(Go())
    h.send(0, Job(1))
    commands = h.wait(0, Answer)
    assert commands == [
        SuperstepEnded(superstep=0),
        StartStep(invocation=1, node=1, message=Job(1)),
    ]


def test_a_run_whose_only_activity_is_a_wait_is_paused_not_stalled() -> None:
    h = KernelHarness(make_graph(("w", (Go,))))
    h.start(Go())
    assert h.wait(0, Answer) == []
    assert h.ended is None and h.status is RunStatus.RUNNING
    assert h.external(Answer("late")) == [
        SuperstepEnded(superstep=0),
        ResolveWait(invocation=0, event=Answer("late")),
    ]


def test_an_awaited_type_nobody_accepts_is_held_for_a_later_waiter_instead_of_failing() -> None:
    graph = make_graph(("w", (Go,)), ("a", (Go,)), ("w2", (Job,)))
    h = KernelHarness(graph)
    h.start(Go())
    h.wait(h.only("w"), Stray)
    h.complete(h.only("a"), Stray(), Stray(), Job())  # Stray is not a held type
    assert h.resolved == {0: Stray()}
    assert h.state.unclaimed == deque([Stray()])
    assert h.wait(h.only("w2"), Stray) == [ResolveWait(invocation=2, event=Stray())]


# -- collectors -----------------------------------------------------------------------------


def test_a_collector_releases_a_batch_in_declared_order_once_each_type_is_held() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("gather", (Job, Result))))
    h.start(Go())
    h.complete(h.only("start"), Result("r"), Job(1))
    assert h.collect(h.only("gather"), Result("r"), [Job, Result]) is None
    h.complete(h.only("gather"))
    assert h.collect(h.only("gather"), Job(1), [Job, Result]) == [Job(1), Result("r")]
    assert h.state.collectors == {}  # an emptied collector is dropped


def test_a_collector_keeps_extras_for_the_next_batch_and_loses_none() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("gather", (Job,))))
    h.start(Go())
    h.complete(h.only("start"), *(Job(i) for i in range(5)))
    answers = []
    for i in range(5):
        answers.append(h.collect(h.only("gather"), Job(i), [Job, Job]))
        h.complete(h.only("gather"))
    assert answers == [None, [Job(0), Job(1)], None, [Job(2), Job(3)], None]
    [collector] = h.state.collectors.values()
    assert collector.held == 1


def test_a_collector_releases_each_next_batch_as_soon_as_the_held_extras_complete_it() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("gather", (Job, Result))))
    h.start(Go())
    arrivals = [Job(0), Job(1), Job(2), Result("0"), Result("1"), Result("2")]
    h.complete(h.only("start"), *arrivals)
    answers = []
    for message in arrivals:
        answers.append(h.collect(h.only("gather"), message, [Job, Result]))
        h.complete(h.only("gather"))
    assert answers == [
        None,
        None,
        None,
        [Job(0), Result("0")],
        [Job(1), Result("1")],
        [Job(2), Result("2")],
    ]
    assert h.state.collectors == {}


def test_a_collect_request_of_no_expected_type_is_refused_and_holds_nothing() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("gather", (Job, Result), 2)))
    h.start(Go())
    h.complete(h.only("start"), Job(1), Result("r"))
    first, second = h.running_at("gather")
    assert h.collect(first, Job(1), [Job, Job]) is None
    [answer] = h.feed(CollectRequested(invocation=second, message=Result("r"), expected=(Job, Job)))
    assert answer == CollectResult(batch=None, accepted=False)
    [collector] = h.state.collectors.values()
    assert collector.held == 1  # only Job(1)


def test_collectors_are_per_node() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("x", (Job,)), ("y", (Job,))))
    h.start(Go())
    h.complete(h.only("start"), Job(1))
    assert h.collect(h.only("x"), Job(1), [Job, Job]) is None
    assert h.collect(h.only("y"), Job(1), [Job, Job]) is None
    assert len(h.state.collectors) == 2


def test_a_collector_fills_a_subclass_slot_with_the_subclass_before_the_base_slot() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("gather", (Job,), 2)))
    h.start(Go())
    h.complete(h.only("start"), SubJob(1), Job(2))
    first, second = h.running_at("gather")
    assert h.collect(first, SubJob(1), [Job, SubJob]) is None
    assert h.collect(second, Job(2), [Job, SubJob]) == [Job(2), SubJob(1)]


# -- stall, idle finish, cancel, run timeout ------------------------------------------------


def test_a_run_with_nothing_left_to_do_fails_with_workflow_stalled_naming_collectors() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("gather", (Job,))))
    h.start(Go())
    h.complete(h.only("start"), Job(1))
    h.collect(h.only("gather"), Job(1), [Job, Job])
    h.complete(h.only("gather"))
    end = ended(h)
    assert end.status is RunStatus.FAILED
    error = end.error
    assert isinstance(error, WorkflowStalled)
    assert error.collectors == ("step 'gather' collects Job 1/2",)
    assert error.last_events == ("Go -> step 'start'", "Job -> step 'gather'")
    assert "workflow 'g' stalled at superstep 1" in str(error)


def test_a_graph_that_finishes_when_idle_ends_successfully_instead_of_stalling() -> None:
    h = KernelHarness(make_graph(("start", (Go,)), finish_when_idle=True))
    h.start(Go())
    assert h.complete(0) == [RunEnded(status=RunStatus.FINISHED)]


def test_cancel_ends_the_run_as_cancelled_and_ignores_steps_still_running() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("sink", (Job,))))
    h.start(Go())
    [command] = h.cancel("enough")
    assert isinstance(command, RunEnded) and command.status is RunStatus.CANCELLED
    assert isinstance(command.error, WorkflowCancelled) and str(command.error) == "enough"
    assert h.complete(0, Job(1)) == []
    assert h.status is RunStatus.CANCELLED


def test_a_run_timeout_fails_the_run_naming_the_steps_still_running() -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,))), timeout=2.5)
    h.start(Go())
    [command] = h.time_out()
    assert isinstance(command, RunEnded) and command.status is RunStatus.FAILED
    assert isinstance(command.error, WorkflowTimeoutError)
    assert isinstance(command.error, TimeoutError)
    text = str(command.error)
    assert "workflow 'g' timed out after 2.5s" in text and "still running: a, b" in text


# -- ticks the kernel ignores or refuses ----------------------------------------------------


LATE_TICKS: list[Tick] = [
    RunStarted(run_id="again", start=Go()),
    StepCompleted(invocation=1, emitted=((Job(), None),)),
    StepFailed(invocation=1, failure=Failure.from_error(ValueError("late"))),
    EventsSent(invocation=1, emitted=((Job(), None),)),
    ExternalEventReceived(event=Answer("late")),
    WaitStarted(invocation=1, types=(Answer,), requirements={}),
    TimerFired(timer="wait:2"),
    CancelRequested(),
    TimerFired(timer="run"),
]


@pytest.mark.parametrize("late", LATE_TICKS, ids=lambda t: t.kind)
def test_ticks_after_the_run_ended_produce_no_commands_and_change_nothing(late: Tick) -> None:
    h = KernelHarness(make_graph(("a", (Go,)), ("b", (Go,)), ("w", (Go,))), mode=Mode.ASYNC)
    h.start(Go())
    h.wait(h.only("w"), Answer)
    h.complete(h.only("a"), Done("over"))
    before = h.state.snapshot()
    assert apply(h.state, late) == []
    assert h.state.snapshot() == before
    assert h.status is RunStatus.FINISHED


class _Bogus:
    kind = "bogus"


def test_an_unknown_tick_raises_kernel_error_naming_it() -> None:
    h = KernelHarness(make_graph(("a", (Go,))))
    h.start(Go())
    with pytest.raises(KernelError, match=r"unknown tick <.*_Bogus"):
        apply(h.state, _Bogus())  # type: ignore[arg-type]


@pytest.mark.parametrize("tick", LATE_TICKS[1:], ids=lambda t: t.kind)
def test_a_tick_before_run_started_raises_kernel_error(tick: Tick) -> None:
    state = RunState(make_graph(("a", (Go,))))
    with pytest.raises(KernelError, match="before the run started"):
        apply(state, tick)
    assert state.status is RunStatus.PENDING


@MODES
def test_a_stop_event_from_the_caller_ends_the_run(mode: Mode) -> None:
    h = KernelHarness(make_graph(("start", (Go,)), ("other", (Job,))), mode=mode)
    h.start(Go(n=0))
    h.external(Done())
    if h.ended is None:  # superstep mode: at the barrier, once the running step returns
        h.complete(next(iter(h.in_flight)))
    assert h.state.status is RunStatus.FINISHED
    assert isinstance(h.state.result, Done)


def test_completing_a_waiting_invocation_is_a_kernel_error() -> None:
    h = KernelHarness(make_graph(("start", (Go,))))
    h.start(Go(n=0))
    invocation = next(iter(h.in_flight))
    h.feed(WaitStarted(invocation=invocation, types=(Answer,), requirements={}))
    with pytest.raises(KernelError, match="while waiting"):
        h.feed(StepCompleted(invocation=invocation))


def test_a_collector_files_a_message_under_its_closest_expected_class() -> None:
    from stepgraph.core.collector import Collector

    class Base:
        pass

    class Mid(Base):
        pass

    class Leaf(Mid):
        pass

    collector = Collector([Base, Mid])
    leaf, base = Leaf(), Base()
    assert collector.add(leaf) is None  # fills Mid, not Base
    assert collector.add(base) == [base, leaf]
