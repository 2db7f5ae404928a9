"""The run kernel: ``apply(state, tick) -> list[Command]``.

Rules of this module (keep them):

* It is synchronous, deterministic and does no IO: no asyncio, no clock, no
  randomness. Every outside fact arrives inside a tick, the time included (``tick.at``).
* No user code runs inside ``apply``: no step body, edge condition, selector, reducer or
  hook. The shell runs them and hands the kernel their outcome (targets, merged values,
  failures) in ticks. The kernel only reads messages: their types, the fields a
  ``wait_for_event`` requires, and their ``repr`` for error messages.
* Each tick kind has one ``_apply_<kind>`` function. After it, ``_settle`` runs the
  superstep barrier, finishes, or detects a stall; it is the only place that does.
* It mutates ``state`` in place and never copies it per tick.
* Failures are data: a failing run becomes a :class:`RunEnded` command, never an
  exception escaping ``apply``. Only a tick the kernel cannot handle raises
  :class:`KernelError`.

Delivery (docs/semantics.md, G6): in superstep mode, messages emitted during
superstep k wait in ``state.outbox`` and are delivered at the barrier in order of
(sender node index, sender's invocation count, emission order); in async mode they
are delivered at once.

Timers: the kernel arms ``"run"`` (the run's timeout), ``"wait:<invocation>"`` (a
``wait_for_event`` deadline) and ``"retry:<invocation>"`` (a retry's backoff) with
:class:`ArmTimer`; the shell answers with :class:`TimerFired` when one is due.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, cast

from ..errors import (
    KernelError,
    SuperstepLimitExceeded,
    UnroutableEventError,
    WorkflowCancelled,
    WorkflowRuntimeError,
    WorkflowStalled,
    WorkflowTimeoutError,
)
from .collector import SHORT, Collector, collector_key
from .commands import (
    ArmTimer,
    CancelTimer,
    CollectResult,
    Command,
    FailWait,
    ForwardResponse,
    MergeState,
    PublishEvent,
    ResolveWait,
    RunEnded,
    RunStatus,
    StartStep,
    SuperstepEnded,
)
from .failure import Failure
from .graph import EXTERNAL
from .messages import ResponseMessage
from .state import ABSENT, Invocation, Mode, OpenRequest, OrderKey, RunState, Waiter
from .text import safely_equal, short_repr
from .ticks import (
    AttemptFailed,
    CancelRequested,
    CollectRequested,
    Emission,
    EventsSent,
    ExternalEventReceived,
    InputRequested,
    RequestOpened,
    ResponseReceived,
    RunAborted,
    RunResumed,
    RunStarted,
    StateMerged,
    StateWritten,
    StepCompleted,
    StepFailed,
    Targets,
    Tick,
    TimerFired,
    WaitCancelled,
    WaitStarted,
)

__all__ = ["KernelError", "apply"]

RUN_TIMER = "run"

# Enum members as module constants: in Python 3.11 reading one off its class is a
# descriptor call, and the kernel compares statuses and modes on every tick.
PENDING = RunStatus.PENDING
RUNNING = RunStatus.RUNNING
FINISHED = RunStatus.FINISHED
FAILED = RunStatus.FAILED
CANCELLED = RunStatus.CANCELLED
SUPERSTEP = Mode.SUPERSTEP
ASYNC = Mode.ASYNC


def apply(state: RunState, tick: Tick) -> list[Command]:
    """Apply ``tick`` to ``state`` in place and return the commands it produces."""
    handler = _HANDLERS.get(type(tick))
    if handler is None:
        raise KernelError(f"unknown tick {tick!r} (run {state.run_id!r}, {state.status.value})")
    out: list[Command] = []
    status = state.status
    if status is not RUNNING:
        if status is not PENDING:
            if type(tick) is CollectRequested:  # a cancelled step still collecting
                out.append(CollectResult(batch=None))
            return out  # late news of a run that has ended (cancelled steps finishing)
        if type(tick) is not RunStarted:
            raise KernelError(f"tick {short_repr(tick, 300)} before the run started")
    state.now = tick.at
    handler(state, tick, out)
    if state.running == 0 and state.status is RUNNING:
        _settle(state, out)  # only when nothing runs can a barrier, an end or a stall come
    return out


# -- tick handlers ------------------------------------------------------------------------------


def _apply_run_started(state: RunState, tick: RunStarted, out: list[Command]) -> None:
    if state.status is not PENDING:
        raise KernelError(f"run {state.run_id!r} started twice")
    state.run_id = tick.run_id
    state.status = RUNNING
    state.started_at = tick.at
    if state.timeout is not None:
        _arm(state, RUN_TIMER, state.timeout, out)
    _deliver(state, EXTERNAL, tick.start, None, 0, out)


def _apply_step_completed(state: RunState, tick: StepCompleted, out: list[Command]) -> None:
    inv = state.invocations.pop(_started(state, tick.invocation).id)
    if inv.waiting or inv.backing_off:
        state.invocations[inv.id] = inv  # refused: the state stays as it was (order aside)
        doing = "waiting" if inv.waiting else "backing off"
        raise KernelError(f"invocation {inv.id} completed while {doing} (run {state.run_id!r})")
    node = state.nodes[inv.node]
    node.in_flight -= 1
    state.running -= 1
    if state.requests:
        _close_forwarded(state, inv.id)
    if state.input_askers:  # its prompts stay open: an answer goes to whoever takes it
        _forget_asker(state, inv.id, out)
    if tick.emitted:
        _emit(state, inv, tick.emitted, out)
    if state.status is RUNNING:
        if state.restarts or state.blocked or state.resumable:  # held back by
            _start_blocked(state, out)  # max_concurrency go first
        if node.inbox:
            _start(state, inv.node, out)


def _forget_asker(state: RunState, invocation: int, out: list[Command]) -> None:
    """An invocation that asked for input returned: the answers kept for its waits go
    where any event of their type goes."""
    asked = [r for r, asker in state.input_askers.items() if asker == invocation]
    for request_id in asked:
        del state.input_askers[request_id]
    _reroute(state, [state.answers[r] for r in asked if r in state.answers], out)


def _release_answers(state: RunState, waiter: Waiter, out: list[Command]) -> None:
    """``waiter``'s invocation waits for something its answers are not: they go where any
    event of their type goes (it may take them when it waits for them again); unless it
    waits for the answer to another of its own requests (it takes its answers in turn)."""
    answers = state.answers
    invocation = waiter.invocation
    _reroute(
        state,
        [
            answers[r]
            for r, asker in state.input_askers.items()
            if asker == invocation and r in answers and not _keeps(state, waiter, answers[r])
        ],
        out,
    )


def _keeps(state: RunState, waiter: Waiter, answer: object) -> bool:
    """Whether an answer kept for ``waiter``'s invocation stays kept while it waits: the
    wait, for the answer's type, names (``request_id``) another request of its own."""
    if not isinstance(answer, waiter.types):
        return False
    named = waiter.requirements.get("request_id")
    return isinstance(named, str | int) and state.input_askers.get(named) == waiter.invocation


def _reroute(state: RunState, answers: list[object], out: list[Command]) -> None:
    """Deliver again the ``answers`` still held (kept for a step that no longer takes them)."""
    for answer in answers:
        for position, held in enumerate(state.unclaimed):
            if held is answer:
                del state.unclaimed[position]
                _from_caller(state, answer, None, out)
                break


def _close_forwarded(state: RunState, invocation: int) -> None:
    """Close the sub-workflow requests of an invocation that ended: the sub-workflow run
    that asked them ended with it."""
    for request_id, request in list(state.requests.items()):
        if request.invocation == invocation and request.forwarded:
            del state.requests[request_id]
            _close_input(state, request_id)


def _apply_run_resumed(state: RunState, tick: RunResumed, out: list[Command]) -> None:
    """Start again, from their beginning, the invocations the previous process had in
    flight, as many as ``max_concurrency`` allows; the others as slots free."""
    state.timeout = tick.timeout  # counted from now (see ``RunResumed``; the new shell has
    state.timers.pop(RUN_TIMER, None)  # no timer armed: nothing to cancel)
    if tick.timeout is not None:
        _arm(state, RUN_TIMER, tick.timeout, out)
    held = set(state.restarts)  # (held back at an earlier resume: not counted as running)
    state.restarts.clear()
    again: list[int] = []
    for inv in list(state.invocations.values()):
        if inv.backing_off:
            continue  # its retry timer is armed again by the shell, from ``state.timers``
        if inv.waiting:
            if state.waiters.pop(inv.id, None) is None:  # resolved, but waiting for a slot
                state.resumable = deque(r for r in state.resumable if r[0] != inv.id)
            state.timers.pop(f"wait:{inv.id}", None)
            _wake(state, inv.id)
        elif inv.id in held:
            state.running += 1
        _undo_attempt(state, inv)
        _undo_writes(state, inv)
        again.append(inv.id)
    state.running -= len(again)  # each counts again as it starts
    state.restarts.extend(again)
    if state.restarts or state.blocked or state.resumable:
        _start_blocked(state, out)  # (and a slot the resume freed: a step of the run's
        # dropped by a changed workflow, a bound raised)


def _undo_writes(state: RunState, inv: Invocation) -> None:
    """Undo an interrupted attempt's shared-state writes that nothing has overwritten since."""
    store = state.store
    for key, before, after in reversed(inv.wrote or ()):
        now = store.get(key, ABSENT)
        # (a value restored from a checkpoint is equal to, not the one its invocation wrote)
        if now is after or (now is not ABSENT and after is not ABSENT and safely_equal(now, after)):
            if before is ABSENT:
                store.pop(key, None)
            else:
                store[key] = before
    inv.wrote = None


def _apply_events_sent(state: RunState, tick: EventsSent, out: list[Command]) -> None:
    _emit(state, _started(state, tick.invocation), tick.emitted, out)


def _apply_step_failed(state: RunState, tick: StepFailed, out: list[Command]) -> None:
    _invocation(state, tick.invocation)
    _end(state, FAILED, None, out, failure=tick.failure)


def _apply_attempt_failed(state: RunState, tick: AttemptFailed, out: list[Command]) -> None:
    """Undo a failed attempt, then start the next one now or when its backoff timer fires."""
    inv = _started(state, tick.invocation)
    if inv.waiting or inv.backing_off:
        raise KernelError(f"invocation {inv.id} failed an attempt it is not running")
    _undo_attempt(state, inv)
    inv.wrote = None  # a retry keeps what the failed attempt wrote (at least once)
    inv.attempt += 1
    inv.failure = tick.failure
    if tick.retry_in > 0:
        inv.backing_off = True
        _arm(state, f"retry:{inv.id}", tick.retry_in, out)
        return
    out.append(
        StartStep(invocation=inv.id, node=inv.node, message=inv.message, attempt=inv.attempt)
    )


def _apply_external_event_received(
    state: RunState, tick: ExternalEventReceived, out: list[Command]
) -> None:
    event = tick.event
    if state.graph.answer_types and state.graph.is_answer(event) and not _answers(state, event):
        return  # an answer to a request answered already: it changes nothing
    _from_caller(state, event, None if tick.target is None else (tick.target,), out)


def _answers(state: RunState, event: object) -> bool:
    """Record ``event`` as the answer to its request; False when that one has an answer.

    An answer names its request (``request_id``) or answers the oldest open one.
    """
    request_id = getattr(event, "request_id", None)
    if request_id is None:
        if not state.inputs:
            return True  # answers nothing open: an event like any other
        request_id = next(iter(state.inputs))
    elif request_id in state.answers:
        return False
    if state.inputs.pop(request_id, None) is not None:  # (its asker, if any, is kept: the
        state.answers[request_id] = event  # answer goes to its wait, see _kept_for)
    return True


def _apply_wait_started(state: RunState, tick: WaitStarted, out: list[Command]) -> None:
    inv = _started(state, tick.invocation)
    if inv.waiting:
        raise KernelError(f"invocation {inv.id} waits twice at once (run {state.run_id!r})")
    waiter = Waiter(inv.id, tick.types, tick.requirements)
    state.awaited_types.update(tick.types)
    inv.waiting = True
    state.nodes[inv.node].waiting += 1
    state.running -= 1
    position = _held_for(state, waiter, inv.id)
    if position is not None:
        held = state.unclaimed[position]
        del state.unclaimed[position]  # by position: no message's __eq__ runs here
        _resolve(state, waiter, held, out)
        return
    state.waiters[inv.id] = waiter
    if tick.timeout is not None:
        _arm(state, f"wait:{inv.id}", tick.timeout, out)
    if state.restarts or state.blocked or state.resumable:  # the waiting step frees its
        _start_blocked(state, out)  # slot
    if state.input_askers:  # the answers kept for this wait, which it does not take, go
        _release_answers(state, waiter, out)


def _apply_wait_cancelled(state: RunState, tick: WaitCancelled, out: list[Command]) -> None:
    """The step stopped waiting by itself: it runs again, with no command to carry out."""
    if state.waiters.pop(tick.invocation, None) is not None:
        _disarm(state, f"wait:{tick.invocation}", out)
        _wake(state, tick.invocation)
        return
    for entry in state.resumable:  # resumed, but still waiting for a slot
        if entry[0] == tick.invocation:
            state.resumable.remove(entry)
            _wake(state, tick.invocation)
            return


def _apply_input_requested(state: RunState, tick: InputRequested, out: list[Command]) -> None:
    _ask(state, tick.event, out, _invocation(state, tick.invocation).id)


def _ask(state: RunState, request: object, out: list[Command], asker: int | None) -> None:
    """Announce an input request (``asker``: the running invocation asking it, if any).

    A request whose id is open or answered already is asked again by the step that asked
    it, running again (after a resume, a retry): no second prompt. Asked by another step
    while the first still runs, the id is taken: the run fails, naming it (an answer could
    not tell the two apart).
    """
    request_id = getattr(request, "request_id", None)
    if request_id is None:
        state.asked += 1
        request_id = f"input-{state.asked}"
    elif request_id in state.inputs or request_id in state.answers:
        first = state.input_askers.get(request_id)
        if asker is not None and first is not None and first != asker:  # two running steps
            _end(state, FAILED, None, out, error=_taken_request(state, request_id, asker))
        return  # (else asked again by a step that runs again: a resume, a retry)
    state.inputs[request_id] = request  # (its id a str or an int: as the event has it)
    if asker is not None:
        state.input_askers[request_id] = asker
    out.append(PublishEvent(event=request))


def _taken_request(
    state: RunState, request_id: str | int, asker: int | None
) -> WorkflowRuntimeError:
    inv = None if asker is None else state.invocations.get(asker)
    by = "" if inv is None else f" by step {state.graph.nodes[inv.node].name!r}"
    return WorkflowRuntimeError(
        f"an input request with id {request_id!r} was asked{by} in run {state.run_id!r}, "
        f"which has a request with that id already (open or answered): give each request "
        f"an id of its own (or none: the run gives one)"
    )


def _close_input(state: RunState, request_id: str | int) -> object | None:
    """Take input request ``request_id`` off the open ones; the request (None: not open).
    (Its asker is kept until it returns: asking again, it is not asking another's id.)"""
    return state.inputs.pop(request_id, None)


def _apply_collect_requested(state: RunState, tick: CollectRequested, out: list[Command]) -> None:
    inv = _started(state, tick.invocation)
    expected = tick.expected
    key = collector_key(inv.node, expected)  # O(1), whatever the list's length
    collector = state.collectors.get(key)
    if collector is None:
        collector = state.collectors[key] = Collector(expected)
    kind = collector.kind_of(tick.message)
    if kind is None:
        if not collector.held:
            del state.collectors[key]
        out.append(CollectResult(batch=None, accepted=False))
        return
    if (
        len(expected) > SHORT
        and collector.completes(kind)
        and not collector.same_expected(expected)
    ):
        # A long list is compared in full once per batch, here: a different list that
        # shares its length and sampled types is refused, never mixed into the batch.
        out.append(CollectResult(batch=None, conflict=True))
        return
    if inv.collected is not None and _spent(inv, key, tick.message):
        if not collector.held:
            del state.collectors[key]
        out.append(CollectResult(batch=None))  # in a batch already: as the attempt before
        return
    batch = collector.add_kind(kind, tick.message)
    if tick.undoable:  # the step may be retried: remember what to take back or give back
        if inv.collected is None:
            inv.collected = []
        inv.collected.append((key, kind, tick.message))
        if batch is not None:
            if inv.released is None:
                inv.released = []
            inv.released.append((key, collector.expected, batch))
    if batch is not None and not collector.held:
        del state.collectors[key]
    out.append(CollectResult(batch=batch))


def _spent(inv: Invocation, key: tuple[object, ...], message: object) -> bool:
    """Whether an earlier attempt of ``inv`` handed ``message`` to collector ``key`` and a
    batch another invocation got took it (see ``_undo_attempt``); forgotten once asked."""
    collected = inv.collected
    assert collected is not None
    for position, (at, kind, held) in enumerate(collected):
        if kind is None and at == key and (held is message or safely_equal(held, message)):
            del collected[position]
            return True
    return False


def _apply_cancel_requested(state: RunState, tick: CancelRequested, out: list[Command]) -> None:
    _end(state, CANCELLED, None, out, error=WorkflowCancelled(tick.reason))


def _apply_timer_fired(state: RunState, tick: TimerFired, out: list[Command]) -> None:
    if state.timers.pop(tick.timer, None) is None:
        return  # disarmed meanwhile (the event won the race): nothing to do
    kind, _, argument = tick.timer.partition(":")
    if kind == RUN_TIMER:
        _time_out(state, out)
        return
    invocation = int(argument)
    if kind == "wait":
        if state.waiters.pop(invocation, None) is not None:
            _resume(state, invocation, None, True, out)
        return
    if kind == "retry":
        inv = _invocation(state, invocation)
        inv.backing_off = False
        out.append(
            StartStep(invocation=inv.id, node=inv.node, message=inv.message, attempt=inv.attempt)
        )
        return
    raise KernelError(f"unknown timer {tick.timer!r} fired in run {state.run_id!r}")


def _apply_request_opened(state: RunState, tick: RequestOpened, out: list[Command]) -> None:
    inv = _invocation(state, tick.invocation)
    request_id = tick.request_id
    if tick.forwarded:  # a sub-workflow's: asked again, with the same id, when its step
        if request_id in state.answers:  # runs again (a retry, a resume)
            out.append(ForwardResponse(request_id=request_id, response=state.answers[request_id]))
            return  # answered already: the answer goes to the sub-workflow's new run
        held = state.requests.get(request_id)
        if held is not None and held.forwarded and held.node == inv.node:
            held.invocation = inv.id  # still open: its answer goes to the new run
            if request_id in state.input_askers:
                state.input_askers[request_id] = inv.id
            return
    if request_id in state.requests:
        raise KernelError(f"request {request_id!r} opened twice in run {state.run_id!r}")
    state.requests[request_id] = OpenRequest(
        request_id, inv.node, inv.id, tick.data, tick.response_type, tick.forwarded
    )


def _apply_response_received(state: RunState, tick: ResponseReceived, out: list[Command]) -> None:
    request = state.requests.pop(tick.request_id, None)
    if request is None:
        if tick.request_id in state.answers:
            return  # answered already: a repeated answer changes nothing
        raise KernelError(f"no open request {tick.request_id!r} in run {state.run_id!r}")
    if _close_input(state, tick.request_id) is not None:
        state.answers[tick.request_id] = tick.response
    if request.forwarded:
        out.append(ForwardResponse(request_id=request.request_id, response=tick.response))
        return
    message = ResponseMessage(request.request_id, request.data, tick.response)
    _from_caller(state, message, (request.node,), out)


def _apply_state_written(state: RunState, tick: StateWritten, out: list[Command]) -> None:
    store = state.store
    if state.undo_writes and tick.invocation in state.invocations:
        inv = state.invocations[tick.invocation]
        log = inv.wrote if inv.wrote is not None else []
        inv.wrote = log
        log.extend((key, store.get(key, ABSENT), value) for key, value in tick.writes)
        log.extend((key, store.get(key, ABSENT), ABSENT) for key in tick.deletes)
    for key, value in tick.writes:
        store[key] = value
    for key in tick.deletes:
        store.pop(key, None)
    if tick.merges:
        if tick.invocation is None:
            raise KernelError(f"reducer writes with no invocation in run {state.run_id!r}")
        order = _invocation(state, tick.invocation).order
        for key, value in tick.merges:
            state.pending_merges.append((order, state.merges_seen, key, value))
            state.merges_seen += 1


def _apply_state_merged(state: RunState, tick: StateMerged, out: list[Command]) -> None:
    if not state.merging:
        raise KernelError(f"merged state that no MergeState asked for in run {state.run_id!r}")
    state.merging = False
    if tick.failure is not None:
        _end(state, FAILED, None, out, failure=tick.failure)
        return
    for key, value in tick.values:
        state.store[key] = value


def _apply_run_aborted(state: RunState, tick: RunAborted, out: list[Command]) -> None:
    _end(state, FAILED, None, out, failure=tick.failure)


_HANDLERS: dict[type, Callable[[RunState, Any, list[Command]], None]] = {
    RunStarted: _apply_run_started,
    StepCompleted: _apply_step_completed,
    EventsSent: _apply_events_sent,
    StepFailed: _apply_step_failed,
    AttemptFailed: _apply_attempt_failed,
    ExternalEventReceived: _apply_external_event_received,
    WaitStarted: _apply_wait_started,
    WaitCancelled: _apply_wait_cancelled,
    InputRequested: _apply_input_requested,
    CollectRequested: _apply_collect_requested,
    CancelRequested: _apply_cancel_requested,
    TimerFired: _apply_timer_fired,
    RequestOpened: _apply_request_opened,
    ResponseReceived: _apply_response_received,
    StateWritten: _apply_state_written,
    StateMerged: _apply_state_merged,
    RunAborted: _apply_run_aborted,
    RunResumed: _apply_run_resumed,
}


# -- attempts and timers ------------------------------------------------------------------------


def _undo_attempt(state: RunState, inv: Invocation) -> None:
    """Undo a failed attempt: what it collected, its undelivered sends, writes and requests.

    Events it handed to a collector are taken back (its retry hands them in again); a
    batch a collector released to it goes back to the collector, but for those events, so
    that the retry sees what the failed attempt saw.
    """
    own = [message for _, _, message in inv.collected or ()]
    spent: list[tuple[tuple[object, ...], object, object]] = []
    for key, kind, message in inv.collected or ():
        collector = state.collectors.get(key)
        if kind is not None and collector is not None and collector.retract(kind, message):
            pass
        elif kind is None or not any(m is message for _, _, b in inv.released or () for m in b):
            # spent (kind None): another invocation's batch took it; the retry must not
            spent.append((key, None, message))  # hand it in again (it gets None, as this did)
        if collector is not None and not collector.held:
            del state.collectors[key]
    for key, expected, batch in inv.released or ():
        given = list(zip(expected, batch, strict=True))
        for message in own:  # one occurrence each: the retry will hand these in again
            for position, (_, held) in enumerate(given):
                if held is message:
                    del given[position]
                    break
        if given:
            collector = state.collectors.get(key)
            if collector is None:
                collector = state.collectors[key] = Collector(expected)
            collector.give_back(given)
    inv.collected = spent or None
    inv.released = None
    if inv.received:  # what its waits took: first in line for the next attempt's waits
        state.unclaimed.extendleft(reversed(inv.received))
        inv.received = None
    if state.pending_merges:
        state.pending_merges = [m for m in state.pending_merges if m[0] != inv.order]
    if state.mode is SUPERSTEP:  # its requests are still in the outbox, unpublished (a
        for request_id, request in list(state.requests.items()):  # sub-workflow's are out:
            if request.invocation == inv.id and not request.forwarded:  # asked again)
                del state.requests[request_id]
    if state.outbox:
        state.outbox = [entry for entry in state.outbox if entry[0] != inv.order]
        if state.stop is not None and state.stop[0] == inv.order:
            state.stop = None
            for order, _, emitted in state.outbox:
                for message, _ in emitted:
                    if state.graph.is_stop(message) and (
                        state.stop is None or order < state.stop[0]
                    ):
                        state.stop = (order, message)


def _arm(state: RunState, timer: str, delay: float, out: list[Command]) -> None:
    due = state.now + delay
    state.timers[timer] = due
    out.append(ArmTimer(timer=timer, delay=delay, due=due))


def _disarm(state: RunState, timer: str, out: list[Command]) -> None:
    if state.timers.pop(timer, None) is not None:
        out.append(CancelTimer(timer=timer))


def _time_out(state: RunState, out: list[Command]) -> None:
    busy = sorted({state.graph.nodes[i.node].name for i in state.invocations.values()})
    doing = f"; still running: {', '.join(busy)}" if busy else ""
    error = WorkflowTimeoutError(
        f"workflow {state.graph.name!r} timed out after {state.timeout}s "
        f"(superstep {state.superstep}{doing}); raise the timeout with {state.graph.name}"
        f"(timeout=...) or pass timeout=None"
    )
    _end(state, FAILED, None, out, error=error)


# -- delivery -----------------------------------------------------------------------------------


def _invocation(state: RunState, invocation: int) -> Invocation:
    try:
        return state.invocations[invocation]
    except KeyError:
        raise KernelError(f"no invocation {invocation} in flight in run {state.run_id!r}") from None


def _started(state: RunState, invocation: int) -> Invocation:
    """The invocation whose running attempt a tick comes from: one held back at a resume
    (in ``restarts``) has not started again, and is refused."""
    if state.restarts and invocation in state.restarts:
        raise KernelError(
            f"invocation {invocation} of run {state.run_id!r} acted while held back for a slot"
        )
    return _invocation(state, invocation)


def _from_caller(state: RunState, message: object, targets: Targets, out: list[Command]) -> None:
    """A message from outside the run: in the next superstep, or at once in async mode."""
    if state.mode is SUPERSTEP:
        order = (EXTERNAL, state.external_sent)
        state.external_sent += 1
        if state.graph.is_stop(message) and (state.stop is None or order < state.stop[0]):
            state.stop = (order, message)  # the caller may end the run with a StopEvent
        state.outbox.append((order, state.superstep, ((message, targets),)))
    elif state.graph.is_stop(message):
        _end(state, FINISHED, message, out)
    else:
        _deliver(state, EXTERNAL, message, targets, 0, out)


def _emit(
    state: RunState, inv: Invocation, emitted: tuple[Emission, ...], out: list[Command]
) -> None:
    """Route what an invocation emitted: at once (async) or at the next barrier (superstep)."""
    stop_types = state.graph.stop_types
    if state.mode is SUPERSTEP:
        for message, _ in emitted:
            if isinstance(message, stop_types) and (
                state.stop is None or inv.order < state.stop[0]
            ):
                state.stop = (inv.order, message)
        state.outbox.append((inv.order, inv.generation + 1, emitted))
        return
    for message, targets in emitted:
        if isinstance(message, stop_types):
            _end(state, FINISHED, message, out)
            return
        _deliver(state, inv.node, message, targets, inv.generation + 1, out, inv.order)
        if state.status is not RUNNING:
            return


def _deliver(
    state: RunState,
    sender: int,
    message: object,
    targets: Targets,
    generation: int,
    out: list[Command],
    sent_as: OrderKey | None = None,
) -> None:
    """Hand ``message`` to a waiter, or enqueue it at its target nodes and start them
    (``sent_as``: the order of the invocation that sent it; of an input request, its
    asker while it runs)."""
    graph = state.graph
    if graph.output_types and isinstance(message, graph.output_types):
        state.outputs.append(message)
        out.append(PublishEvent(event=message))
        return
    released = False  # an answer whose asker waits for something else
    if state.input_askers and targets is None:
        kept_for = _kept_for(state, message)
        if kept_for is not None:  # an answer goes to the step that asked, if it waits for it
            waiter = state.waiters.get(kept_for)
            if waiter is None:  # not waiting yet: kept for its wait
                state.unclaimed.append(message)
                return
            if waiter.matches(message):
                del state.waiters[kept_for]
                _resolve(state, waiter, message, out)
                return
            if _keeps(state, waiter, message):  # (it waits for another of its answers first)
                state.unclaimed.append(message)
                return
            # (it waits for something else: the answer goes where any event of its type
            released = True  # goes; not to the wait of a step that awaits its own answer)
    if state.waiters:
        for waiter in state.waiters.values():
            if (
                waiter.matches(message)
                and (  # a message sent to a step is for it only (G2)
                    targets is None or state.invocations[waiter.invocation].node in targets
                )
                and not (released and _awaits_own(state, waiter.invocation))
            ):
                del state.waiters[waiter.invocation]
                _resolve(state, waiter, message, out)
                return
    if state.mode is ASYNC and generation > state.max_supersteps:
        _end(state, FAILED, None, out, error=_limit_error(state))
        return
    explicit = targets is not None or graph.entry is not None
    if targets is None:
        targets = graph.route(sender, message)
    if not targets:
        if graph.is_input_request(message):
            _ask(state, message, out, None if sent_as is None else _running(state, sent_as))
        elif sender == EXTERNAL or graph.is_held(message) or type(message) in state.awaited_types:
            state.unclaimed.append(message)
        else:
            _end(state, FAILED, None, out, error=_unroutable(state, sender, message))
        return
    for index in targets:
        delivered = message
        if graph.fan_in_of:  # executor graphs only
            group = graph.fan_in_of.get((sender, index))
            if group is not None:
                batch = _hold_for_fan_in(state, group, message)
                if batch is None:
                    continue
                delivered = batch
        if explicit and not isinstance(delivered, graph.nodes[index].accepts):
            error = _not_accepted(state, sender, index, delivered)
            _end(state, FAILED, None, out, error=error)
            return
        state.nodes[index].inbox.append((delivered, generation))
        state.queued += 1
        _start(state, index, out)


def _hold_for_fan_in(state: RunState, group: tuple[int, int], message: object) -> object:
    """Hold a message bound for a fan-in; return the batch list once every source sent one."""
    buffers = state.fan_in_buffers
    collector = buffers.get(group[0])
    if collector is None:
        sources = state.graph.fan_ins[group[0]].sources
        collector = buffers[group[0]] = Collector(range(len(sources)))
    return collector.add_kind(group[1], message)


def _kept_for(state: RunState, message: object) -> int | None:
    """The invocation an answer from the caller is kept for: the running step that asked
    the request it answers (named by its ``request_id``, or the oldest open one it
    answered when it came). None: an event like any other."""
    if not state.graph.is_answer(message):
        return None
    request_id: str | int | None = getattr(message, "request_id", None)
    if request_id is None:
        request_id = next((r for r, m in state.answers.items() if m is message), None)
        if request_id is None:
            return None
    elif state.answers.get(request_id) is not message:
        return None  # not the answer the caller gave (one a step sent, say)
    return state.input_askers.get(request_id)


def _held_for(state: RunState, waiter: Waiter, invocation: int) -> int | None:
    """The position of the held message a new wait of ``invocation`` takes: an answer kept
    for it, else the first it matches that is not an answer kept for another step (unless
    that step let it go, and ``invocation`` awaits no answer of its own). None: none."""
    first = None
    for position, held in enumerate(state.unclaimed):
        if not waiter.matches(held):
            continue
        if not state.input_askers:
            return position
        asker = _kept_for(state, held)
        if asker == invocation:
            return position
        if first is None and (
            asker is None or (_released(state, asker, held) and not _awaits_own(state, invocation))
        ):
            first = position
    return first


def _awaits_own(state: RunState, invocation: int) -> bool:
    """Whether ``invocation`` asked a request whose answer it has not taken yet (open, or
    answered and on its way): its waits are for its own answers, not another's."""
    inv = state.invocations.get(invocation)
    taken = inv.received if inv is not None and inv.received else ()
    for request_id, asker in state.input_askers.items():
        if asker != invocation:
            continue
        if request_id in state.inputs:
            return True
        answer = state.answers.get(request_id)
        if answer is not None and not any(answer is m for m in taken):
            return True
    return False


def _released(state: RunState, asker: int, answer: object) -> bool:
    """Whether an answer kept for ``asker`` may go to another step's wait: ``asker``
    waits, and not for it (nor for another of its own answers before it)."""
    waiter = state.waiters.get(asker)
    return waiter is not None and not _keeps(state, waiter, answer)


def _resolve(state: RunState, waiter: Waiter, message: object, out: list[Command]) -> None:
    _disarm(state, f"wait:{waiter.invocation}", out)
    inv = state.invocations[waiter.invocation]  # what a wait took goes back if it starts again
    if inv.received is None:
        inv.received = [message]
    else:
        inv.received.append(message)
    _resume(state, waiter.invocation, message, False, out)


def _resume(
    state: RunState, invocation: int, message: object, timed_out: bool, out: list[Command]
) -> None:
    """Wake a waiting invocation, when max_concurrency has a slot for it (G5)."""
    cap = state.max_concurrency
    if cap is not None and state.running >= cap:
        state.resumable.append((invocation, message, timed_out))
        return
    _wake(state, invocation)
    if timed_out:
        out.append(FailWait(invocation=invocation))
    else:
        out.append(ResolveWait(invocation=invocation, event=message))


def _wake(state: RunState, invocation: int) -> None:
    """A waiting invocation runs again."""
    inv = state.invocations[invocation]
    inv.waiting = False
    state.nodes[inv.node].waiting -= 1
    state.running += 1


def _start(state: RunState, index: int, out: list[Command], first: bool = False) -> None:
    """Start as many queued messages of node ``index`` as its workers and the run allow.

    Under ``max_concurrency``, nodes held back earlier start first; ``first`` marks the
    node just taken from the head of that queue.
    """
    node = state.nodes[index]
    inbox = node.inbox
    limit = state.graph.limits[index]
    cap = state.max_concurrency
    while inbox and node.in_flight < limit:
        if cap is not None and (
            state.running >= cap
            or ((state.blocked or state.restarts or state.resumable) and not first)
        ):  # no slot, or what was held back earlier comes first (FIFO, no starvation)
            if index not in state.blocked:
                state.blocked.append(index)
            return
        first = False
        message, generation = inbox.popleft()
        state.queued -= 1
        state.running += 1
        node.in_flight += 1
        started = node.started
        node.started = started + 1
        inv_id = state.next_invocation
        state.next_invocation = inv_id + 1
        state.invocations[inv_id] = Invocation(inv_id, index, message, generation, (index, started))
        state.recent.append((index, message))
        out.append(StartStep(invocation=inv_id, node=index, message=message))


def _start_blocked(state: RunState, out: list[Command]) -> None:
    cap = state.max_concurrency
    while state.restarts and (cap is None or state.running < cap):  # a resume's, first
        inv = state.invocations.get(state.restarts.popleft())
        if inv is None:
            continue
        state.running += 1
        out.append(
            StartStep(invocation=inv.id, node=inv.node, message=inv.message, attempt=inv.attempt)
        )
    while state.resumable and (cap is None or state.running < cap):  # resumed waits next
        invocation, message, timed_out = state.resumable.popleft()
        _resume(state, invocation, message, timed_out, out)
    while state.blocked and (cap is None or state.running < cap):
        _start(state, state.blocked.popleft(), out, first=True)


# -- barrier, finish, stall ---------------------------------------------------------------------


def _settle(state: RunState, out: list[Command]) -> None:
    """Pass the barrier, finish, or detect a stall once nothing runs or waits to start.

    Reducer writes are merged first: the shell runs the reducers (``MergeState``) and the
    barrier resumes when their values arrive (``StateMerged``).
    """
    while (
        state.status is RUNNING
        and state.running == 0
        and (state.queued == 0 or _queued_only_behind_waiters(state))
    ):
        if state.merging:
            return
        if state.stop is not None:
            error = _first_unroutable(state)
            if error is not None:
                _end(state, FAILED, None, out, error=error)
            elif state.pending_merges:
                _merge(state, out)
            else:
                _end(state, FINISHED, state.stop[1], out)
            return
        if state.outbox:
            if state.pending_merges:
                _merge(state, out)
                return
            _barrier(state, out)
            continue
        _idle(state, out)
        return


def _merge(state: RunState, out: list[Command]) -> None:
    """Ask the shell to merge the pending reducer writes, in (writer position, arrival) order."""
    pending = state.pending_merges
    state.pending_merges = []
    if len(pending) > 1:
        pending.sort(key=_merge_order)
    state.merging = True
    out.append(MergeState(writes=tuple((key, value) for _, _, key, value in pending)))


def _merge_order(entry: tuple[OrderKey, int, str, object]) -> tuple[OrderKey, int]:
    return (entry[0], entry[1])


def _queued_only_behind_waiters(state: RunState) -> bool:
    """Whether every queued message waits for a node whose slots all hold waiting steps.

    Such messages cannot start before outside input arrives, so they must not hold the
    superstep barrier (the input may well come from the next superstep).
    """
    if not state.waiters:
        return False
    specs = state.graph.nodes
    for index, node in enumerate(state.nodes):
        if node.inbox and not (
            node.in_flight >= specs[index].num_workers and node.waiting == node.in_flight
        ):
            return False
    return True


def _first_unroutable(state: RunState) -> UnroutableEventError | None:
    """At the final barrier: an undelivered message no node would take is still an error."""
    graph = state.graph
    first: tuple[OrderKey, object] | None = None
    for order, _, emitted in state.outbox:  # the first in delivery order, without a sort
        if first is not None and order >= first[0]:
            continue
        for message, targets in emitted:
            if targets or graph.is_stop(message) or graph.is_output(message):
                continue
            if graph.is_input_request(message) or graph.is_held(message):
                continue
            if targets is None and (
                type(message) in state.awaited_types or graph.route(order[0], message)
            ):
                continue
            first = (order, message)
            break
    return None if first is None else _unroutable(state, first[0][0], first[1])


def _barrier(state: RunState, out: list[Command]) -> None:
    """End superstep k and deliver its messages, in deterministic order, in superstep k + 1."""
    view = state.snapshot() if state.capture_barriers else None
    out.append(SuperstepEnded(superstep=state.superstep, snapshot=view))
    state.superstep += 1
    if state.superstep > state.max_supersteps and _has_work(state):
        _end(state, FAILED, None, out, error=_limit_error(state))
        return
    outbox = state.outbox
    state.outbox = []
    if len(outbox) > 1:
        outbox.sort(key=_order_of)
    for order, generation, emitted in outbox:
        for message, targets in emitted:
            _deliver(state, order[0], message, targets, generation, out, order)
            if state.status is not RUNNING:
                return


def _running(state: RunState, order: OrderKey) -> int | None:
    """The invocation started as ``order`` if it is still running (it sent a message
    without returning), else None."""
    return next((i.id for i in state.invocations.values() if i.order == order), None)


def _has_work(state: RunState) -> bool:
    """Whether the outbox holds a message that would run a node (not only outputs/requests)."""
    graph = state.graph
    return any(
        not (graph.is_output(message) or graph.is_input_request(message))
        for _, _, emitted in state.outbox
        for message, _ in emitted
    )


def _order_of(entry: tuple[OrderKey, int, tuple[Emission, ...]]) -> OrderKey:
    return entry[0]


def _idle(state: RunState, out: list[Command]) -> None:
    if state.waiters or state.inputs:
        return  # paused: waiting for outside input is not a stall
    if state.graph.finish_when_idle and not any(b.held for b in state.fan_in_buffers.values()):
        if state.pending_merges:
            _merge(state, out)
        else:
            _end(state, FINISHED, None, out)
        return  # a partial fan-in at the end would lose messages: that is a stall (G9, G10)
    _end(state, FAILED, None, out, error=_stall_error(state))


def _end(
    state: RunState,
    status: RunStatus,
    result: object,
    out: list[Command],
    *,
    error: BaseException | None = None,
    failure: Failure | None = None,
) -> None:
    """End the run; a failure is given as a kernel-made ``error`` or as a ``failure`` record."""
    if failure is None and error is not None:
        failure = Failure.from_error(error)
    elif failure is not None and error is None:
        error = failure.error
    state.status = status
    state.result = result
    state.failure = failure
    state.timers.clear()  # the shell drops every timer of an ended run
    out.append(RunEnded(status=status, result=result, error=error, failure=failure))


# -- error messages -----------------------------------------------------------------------------


def _sender_name(state: RunState, sender: int) -> str:
    if sender == EXTERNAL:
        return "the caller"
    return f"{state.graph.node_kind} {state.graph.nodes[sender].name!r}"


def _unroutable(state: RunState, sender: int, message: object) -> UnroutableEventError:
    graph = state.graph
    if graph.explicit_routing and sender != EXTERNAL:
        name = graph.nodes[sender].name
        return UnroutableEventError(
            f"workflow {graph.name!r}: {graph.node_kind} {name!r} sent {type(message).__name__} "
            f"({short_repr(message)}) but no edge out of {name!r} takes it (no edge, or every "
            f"condition was false); add an edge, a Default case, or use yield_output for results"
        )
    return UnroutableEventError(
        f"workflow {state.graph.name!r}: {_sender_name(state, sender)} emitted "
        f"{type(message).__name__} ({short_repr(message)}) but no step accepts "
        f"{type(message).__name__}; add a step whose event parameter is annotated with it"
    )


def _not_accepted(
    state: RunState, sender: int, target: int, message: object
) -> UnroutableEventError:
    node = state.graph.nodes[target]
    return UnroutableEventError(
        f"workflow {state.graph.name!r}: {_sender_name(state, sender)} sent "
        f"{type(message).__name__} ({short_repr(message)}) to {node.name!r}, which has no "
        f"handler for {type(message).__name__} (it handles "
        f"{', '.join(t.__name__ for t in node.accepts)})"
    )


_ENDLESS = {
    False: "a loop that never reaches StopEvent?",
    True: "a cycle whose conditions never stop sending?",
}


def _limit_error(state: RunState) -> SuperstepLimitExceeded:
    last = ", ".join(f"{state.graph.nodes[i].name} <- {type(m).__name__}" for i, m in state.recent)
    seen = f" (last steps: {last})" if last else ""  # (none since a resume, say)
    return SuperstepLimitExceeded(
        f"workflow {state.graph.name!r} exceeded max_supersteps={state.max_supersteps}"
        f"{seen}; {_ENDLESS[state.graph.explicit_routing]} "
        f"Raise the bound with max_supersteps=... if the loop is meant to be that long"
    )


def _stall_error(state: RunState) -> WorkflowStalled:
    graph = state.graph
    kind = graph.node_kind
    collectors = tuple(
        f"step {graph.nodes[cast(int, key[0])].name!r} collects {c.describe()}"
        for key, c in state.collectors.items()
    )
    last = tuple(f"{type(m).__name__} -> {kind} {graph.nodes[i].name!r}" for i, m in state.recent)
    for group, buffer in state.fan_in_buffers.items():
        if buffer.held:
            fan_in = graph.fan_ins[group]
            names = graph.names(fan_in.sources)
            have = ", ".join(f"{name}: {n}" for name, n in zip(names, buffer.counts(), strict=True))
            collectors += (
                f"fan-in into {graph.nodes[fan_in.target].name!r} holds messages from "
                f"[{have}] and waits for the sources still at 0",
            )
    unclaimed = [type(m).__name__ for m in state.unclaimed]
    ending = "a fan-in is incomplete" if graph.explicit_routing else "no StopEvent was emitted"
    parts = [
        f"workflow {graph.name!r} stalled at superstep {state.superstep}: nothing runs, "
        f"nothing is pending and no one waits for input, but {ending}"
    ]
    if collectors:
        parts.append("waiting collectors: " + "; ".join(collectors))
    if unclaimed:
        parts.append(f"events no {kind} took: " + ", ".join(unclaimed))
    if last:
        parts.append("last events: " + "; ".join(last))
    return WorkflowStalled(". ".join(parts), collectors=collectors, last_events=last)
