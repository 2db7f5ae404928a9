"""Delivery guarantees of the kernel, checked over random graphs, scripts and completion orders.

Hypothesis draws a graph (1-6 nodes, each accepting one or two of a few message types,
1-3 workers, sometimes an explicit router), a script of step outcomes (emit 0-3 messages
of random types, possibly to one target, possibly some sent mid-step; fail; wait for an
answer; collect; ask the caller; emit a stop) and a completion order. The fake shell in
``tests.kernel_harness`` drives the kernel; it picks the next invocation to complete
from the drawn order. Outcomes are a deterministic function of (node, message), so the
same script can run under different completion orders.

Checked: G3 per-edge FIFO, G4 ``num_workers`` and ``max_concurrency`` bounds, G6 one
delivery order whatever the completion order (superstep mode), G9 nothing lost at
fan-in (there, some nodes hold one collector each and every emitted type has a taker),
and G10 every run ends (finished, failed with an error, or stalled) or is
paused waiting for input - never silently idle.
"""

from __future__ import annotations

import itertools
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from stepgraph.core import EXTERNAL, Emission, Graph, Mode, Node, RunStatus, StartStep
from stepgraph.errors import SuperstepLimitExceeded, UnroutableEventError, WorkflowStalled
from tests.kernel_harness import KernelHarness, Outcome

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MAX_DEPTH = 3  # messages this many hops from the start emit nothing more (but may stop)

# -- messages: identified by a path of (node, emission index) from the start message --------


@dataclass(frozen=True)
class Msg:
    uid: str
    depth: int


class Start(Msg):
    pass


class A(Msg):
    pass


class B(Msg):
    pass


class C(A):  # a subclass: nodes accepting A receive it too
    pass


class Answer(Msg):  # what waiting steps wait for
    pass


class Ask(Msg):  # an input request no node accepts: published, the run pauses
    pass


class Stop(Msg):
    pass


EMITTED_TYPES: tuple[type[Msg], ...] = (A, B, C, Answer)
ACCEPTED_TYPES: tuple[type[Msg], ...] = (Start, A, B, C, Answer)


class StepError(Exception):
    """A scripted step failure."""


# -- graphs ---------------------------------------------------------------------------------


@st.composite
def graphs(draw: st.DrawFn, *, total: bool = False) -> Graph:
    """Random graphs; ``total``: every emitted type has an accepting node (fewer failures)."""
    size = draw(st.integers(1, 6))
    nodes = []
    for index in range(size):
        accepts = draw(
            st.lists(st.sampled_from(ACCEPTED_TYPES), min_size=1, max_size=2, unique=True)
        )
        if index == 0 and Start not in accepts:
            accepts.append(Start)
        nodes.append(
            Node(
                name=f"n{index}",
                index=index,
                accepts=tuple(accepts),
                num_workers=draw(st.integers(1, 3)),
            )
        )
    if total:
        for kind in EMITTED_TYPES:
            if not any(issubclass(kind, node.accepts) for node in nodes):
                index = draw(st.integers(0, size - 1))
                node = nodes[index]
                nodes[index] = replace(node, accepts=(*node.accepts, kind))
    if not total and draw(st.integers(0, 4)) == 0:  # now and then explicit edges, not types
        table = draw(
            st.dictionaries(
                st.tuples(st.integers(-1, size - 1), st.sampled_from(ACCEPTED_TYPES)),
                st.lists(st.integers(0, size - 1), max_size=3, unique=True).map(tuple),
                max_size=8,
            )
        )
        route = _router(table, tuple(nodes))
        graph = Graph(
            name="random",
            nodes=tuple(nodes),
            stop_types=(Stop,),
            input_request_types=(Ask,),
            answer_types=(Answer,),
            entry=route(EXTERNAL, Start(uid="s", depth=0)),
        )
        ROUTERS[id(graph)] = (graph, route)
        return graph
    return Graph(
        name="random",
        nodes=tuple(nodes),
        stop_types=(Stop,),
        input_request_types=(Ask,),
        answer_types=(Answer,),
    )


ROUTERS: dict[int, tuple[Graph, Callable[[int, object], tuple[int, ...] | None]]] = {}
"""The shell-side router of each generated graph with explicit edges, by graph id."""


def router_of(graph: Graph) -> Callable[[int, object], tuple[int, ...] | None] | None:
    """The router the shell would use for ``graph`` (None: routed by type in the kernel)."""
    found = ROUTERS.get(id(graph))
    return None if found is None or found[0] is not graph else found[1]


def _router(
    table: dict[tuple[int, type], tuple[int, ...]], nodes: tuple[Node, ...]
) -> Callable[[int, object], tuple[int, ...] | None]:
    def route(sender: int, message: object) -> tuple[int, ...] | None:
        if isinstance(message, Stop | Ask):
            return None  # stops and input requests are the kernel's, never routed
        targets = table.get((sender, type(message)))
        if targets is not None:
            return targets
        return tuple(n.index for n in nodes if isinstance(message, n.accepts))

    return route


# -- scripts: what a step does with a message -----------------------------------------------


@dataclass(frozen=True)
class Plan:
    kind: str  # "emit", "fail", "wait", "collect", "ask"
    emits: tuple[tuple[int, int | None], ...]  # (type index, target choice or None)
    early: int  # how many of the emissions are sent mid-step (EventsSent)
    stop: bool
    expected: tuple[int, ...]  # collect: the expected type indexes


def plans(kinds: Sequence[str], min_emits: int = 0) -> st.SearchStrategy[Plan]:
    return st.builds(
        Plan,
        kind=st.sampled_from(kinds),
        emits=st.lists(
            st.tuples(
                st.integers(0, len(EMITTED_TYPES) - 1),
                st.none() | st.integers(0, 5),
            ),
            min_size=min_emits,
            max_size=3,
        ).map(tuple),
        early=st.integers(0, 3),
        stop=st.integers(0, 5).map(lambda n: n == 0),
        expected=st.lists(st.integers(0, 2), min_size=1, max_size=3).map(tuple),
    )


ALL_KINDS = ("emit", "emit", "emit", "fail", "wait", "collect", "ask")
ORDER_FREE_KINDS = ("emit", "emit", "ask")  # outcomes that cannot depend on completion order


class Script:
    """Outcomes as a deterministic function of (node, message): order cannot change them.

    ``collectors`` gives some nodes one fixed collector: such a node collects every
    message it gets and emits its plan's messages only when a batch is released.
    """

    def __init__(
        self,
        graph: Graph,
        table: Sequence[Plan],
        collectors: Mapping[int, tuple[type, ...]] | None = None,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.graph = graph
        self.table = table
        self.collectors = dict(collectors or {})
        self.max_depth = max_depth

    def plan(self, node: int, message: Msg) -> Plan:
        return self.table[zlib.crc32(f"{node}|{message.uid}".encode()) % len(self.table)]

    def __call__(self, command: StartStep) -> Outcome:
        message = command.message
        assert isinstance(message, Msg)
        node = command.node
        plan = self.plan(node, message)
        emitted: list[Emission] = []
        if message.depth < self.max_depth:
            for k, (kind, choice) in enumerate(plan.emits):
                child = EMITTED_TYPES[kind](
                    uid=f"{message.uid}/{node}.{k}", depth=message.depth + 1
                )
                emitted.append((child, self._target(child, choice)))
        if plan.kind == "ask":
            emitted.append((Ask(uid=f"{message.uid}/{node}.ask", depth=message.depth + 1), None))
        if plan.stop:
            emitted.append((Stop(uid=f"{message.uid}/{node}.stop", depth=message.depth + 1), None))
        if node in self.collectors:
            return Outcome(emit=tuple(emitted), collect=self.collectors[node])
        early = min(plan.early, len(emitted)) if plan.kind != "collect" else 0
        send, emit = tuple(emitted[:early]), tuple(emitted[early:])
        if plan.kind == "fail":
            return Outcome(send=send, error=StepError(f"n{node} failed on {message.uid}"))
        if plan.kind == "wait":
            return Outcome(send=send, emit=emit, wait_for=(Answer,))
        if plan.kind == "collect":  # the collector refuses a message of no expected type
            return Outcome(emit=emit, collect=tuple(EMITTED_TYPES[i] for i in plan.expected))
        return Outcome(send=send, emit=emit)

    def _target(self, message: Msg, choice: int | None) -> tuple[int, ...] | None:
        """A target the shell would accept (``send_event(step=...)`` checks it), else None."""
        if choice is None:
            return None
        accepting = [n.index for n in self.graph.nodes if isinstance(message, n.accepts)]
        return (accepting[choice % len(accepting)],) if accepting else None


def order_from(choices: Sequence[int]) -> Callable[[Sequence[StartStep]], int]:
    """A completion order: the next runnable invocation is picked by the drawn choices."""
    picks = itertools.cycle(choices)
    return lambda ready: next(picks)


def run(
    graph: Graph,
    script: Script,
    choose: Callable[[Sequence[StartStep]], int],
    *,
    mode: Mode,
    max_supersteps: int = 6,
    max_concurrency: int | None = None,
) -> KernelHarness:
    """Run to the end: drive, and when only waits remain, time the oldest one out.

    Each time the shell has nothing left to run, every message the kernel still has queued
    must sit behind a node whose workers are all taken (by waiting invocations): a message
    held back only by ``max_concurrency`` while everything else waits would hang the run.
    """
    h = KernelHarness(
        graph,
        mode=mode,
        max_supersteps=max_supersteps,
        max_concurrency=max_concurrency,
        router=router_of(graph),
    )
    h.start(Start(uid="s", depth=0))
    for _ in range(1000):
        h.drive(script, choose)
        if h.ended is None:
            for node, state in zip(graph.nodes, h.state.nodes, strict=True):
                held_back = state.inbox and state.in_flight < node.num_workers
                assert not held_back, f"idle, yet {node.name} has a free worker and a queue"
        if h.ended is not None or not h.state.waiters:
            return h
        h.time_out_wait(next(iter(h.state.waiters)))
    raise AssertionError("the run kept waiting")


modes = st.sampled_from([Mode.SUPERSTEP, Mode.ASYNC])
concurrency = st.none() | st.integers(1, 4)
choice_lists = st.lists(st.integers(0, 9), min_size=1, max_size=20)


# -- G3 -------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(
    graph=graphs(),
    table=st.lists(plans(ALL_KINDS), min_size=1, max_size=8),
    choices=choice_lists,
    mode=modes,
    cap=concurrency,
)
def test_messages_from_one_sender_to_one_receiver_start_in_send_order(
    graph: Graph, table: list[Plan], choices: list[int], mode: Mode, cap: int | None
) -> None:
    h = run(graph, Script(graph, table), order_from(choices), mode=mode, max_concurrency=cap)
    # The send order: in async mode, the order the kernel received the emissions; in
    # superstep mode, the order of the barrier (sender's invocation count, then emission).
    sends = list(enumerate(h.emitted))
    if mode is Mode.SUPERSTEP:
        sends.sort(key=lambda pair: (pair[1].invocation, pair[0]))
    rank = {}
    for position, (_, emitted) in enumerate(sends):
        assert isinstance(emitted.message, Msg)
        rank[emitted.message.uid] = (emitted.sender, position)
    seen: dict[tuple[int, int], list[int]] = defaultdict(list)
    for started in h.started:
        assert isinstance(started.message, Msg)
        if started.message.uid in rank:
            sender, position = rank[started.message.uid]
            seen[(sender, started.node)].append(position)
    for edge, positions in seen.items():
        assert positions == sorted(positions), f"edge {edge} started out of send order"


# -- G4 -------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(
    graph=graphs(),
    table=st.lists(plans(ALL_KINDS), min_size=1, max_size=8),
    choices=choice_lists,
    mode=modes,
    cap=concurrency,
)
def test_a_node_never_runs_more_than_num_workers_and_the_run_never_exceeds_max_concurrency(
    graph: Graph, table: list[Plan], choices: list[int], mode: Mode, cap: int | None
) -> None:
    h = run(graph, Script(graph, table), order_from(choices), mode=mode, max_concurrency=cap)
    for node in graph.nodes:
        assert h.peak_per_node[node.index] <= node.num_workers, node
    if cap is not None:
        assert h.peak_running_at_start <= cap


# -- G6 -------------------------------------------------------------------------------------


def trace(h: KernelHarness) -> tuple[object, ...]:
    """What must not depend on completion order: deliveries per node and per superstep, end."""
    per_node: dict[int, list[str]] = defaultdict(list)
    per_superstep: dict[int, set[tuple[int, str]]] = defaultdict(set)
    for started in h.started:
        assert isinstance(started.message, Msg)
        per_node[started.node].append(started.message.uid)
        per_superstep[started.superstep].add((started.node, started.message.uid))
    end = h.ended
    ending = None if end is None else (end.status, end.result, type(end.error))
    published = [m.uid for m in h.published if isinstance(m, Msg)]
    return dict(per_node), dict(per_superstep), ending, published, h.barriers


@PROPERTY_SETTINGS
@given(
    graph=graphs(),
    table=st.lists(plans(ORDER_FREE_KINDS), min_size=1, max_size=8),
    choices=choice_lists,
    cap=concurrency,
    max_supersteps=st.integers(1, 6),
)
def test_superstep_delivery_order_is_the_same_whatever_the_completion_order(
    graph: Graph, table: list[Plan], choices: list[int], cap: int | None, max_supersteps: int
) -> None:
    script = Script(graph, table)
    options = {"mode": Mode.SUPERSTEP, "max_supersteps": max_supersteps, "max_concurrency": cap}
    oldest_first = run(graph, script, lambda ready: 0, **options)  # type: ignore[arg-type]
    newest_first = run(graph, script, lambda ready: -1, **options)  # type: ignore[arg-type]
    drawn = run(graph, script, order_from(choices), **options)  # type: ignore[arg-type]
    assert trace(newest_first) == trace(oldest_first)
    assert trace(drawn) == trace(oldest_first)


# -- G9 -------------------------------------------------------------------------------------


@st.composite
def collector_nodes(draw: st.DrawFn, graph: Graph) -> dict[int, tuple[type, ...]]:
    """One or more nodes get a collector, expecting 1-4 of the types they accept (mostly).

    Nodes taking the start message collect nothing, so that every run gets going.
    """
    candidates = [node for node in graph.nodes if Start not in node.accepts]
    chosen = {}
    for position, node in enumerate(candidates):
        if position == 0 or draw(st.booleans()):
            kinds = [t for t in node.accepts if t in EMITTED_TYPES] or list(EMITTED_TYPES)
            chosen[node.index] = tuple(
                draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=4))
            )
    return chosen


@PROPERTY_SETTINGS
@given(
    data=st.data(),
    graph=graphs(total=True),
    table=st.lists(
        plans(("collect", "emit", "emit"), min_emits=1).map(lambda p: replace(p, stop=False)),
        min_size=1,
        max_size=8,
    ),
    choices=choice_lists,
    mode=modes,
)
def test_no_message_given_to_a_collector_is_lost(
    data: st.DataObject, graph: Graph, table: list[Plan], choices: list[int], mode: Mode
) -> None:
    collectors = data.draw(collector_nodes(graph))
    assume(collectors)
    script = Script(graph, table, collectors, max_depth=4)
    h = run(graph, script, order_from(choices), mode=mode, max_supersteps=8)
    handed: list[tuple[int, str]] = []
    for node, message, _ in h.collected:
        assert isinstance(message, Msg)
        handed.append((node, message.uid))
    released: list[tuple[int, str]] = []
    for node, expected, batch in h.batches:
        assert len(batch) == len(expected)
        for message, kind in zip(batch, expected, strict=True):
            assert isinstance(message, kind), (batch, expected)  # in declared order
            assert isinstance(message, Msg)
            released.append((node, message.uid))
    held: list[tuple[int, str]] = []
    for key, collector in h.state.collectors.items():
        owner = key[0]
        assert isinstance(owner, int)
        kinds, queues, _ = collector.snapshot()
        assert isinstance(kinds, tuple) and isinstance(queues, tuple)
        for _, queue in queues:
            held.extend((owner, m.uid) for m in queue)
        # extras wait for the next batch, but a complete batch is never withheld
        complete = all(len(queue) >= kinds.count(kind) for kind, queue in queues)
        assert not complete, f"collector {key} holds a full batch: {collector.describe()}"
    event(f"batches released: {min(len(h.batches), 3)}{'+' if len(h.batches) >= 3 else ''}")
    event(f"collect requests: {'<5' if len(handed) < 5 else '>=5'}")
    assert sorted(released + held) == sorted(handed)
    assert len(set(released)) == len(released)  # none released twice
    for node, message, expected in h.rejected:  # refused only when of no expected type
        assert not isinstance(message, expected)
        assert isinstance(message, Msg) and (node, message.uid) not in released + held


# -- G10 ------------------------------------------------------------------------------------

EXPECTED_ERRORS = (
    StepError,
    TimeoutError,
    UnroutableEventError,
    SuperstepLimitExceeded,
    WorkflowStalled,
)


@PROPERTY_SETTINGS
@given(
    graph=graphs(),
    table=st.lists(plans(ALL_KINDS), min_size=1, max_size=8),
    choices=choice_lists,
    mode=modes,
    cap=concurrency,
    max_supersteps=st.integers(1, 6),
)
def test_every_run_ends_with_a_result_or_an_error_or_pauses_for_input(
    graph: Graph,
    table: list[Plan],
    choices: list[int],
    mode: Mode,
    cap: int | None,
    max_supersteps: int,
) -> None:
    h = run(
        graph,
        Script(graph, table),
        order_from(choices),
        mode=mode,
        max_supersteps=max_supersteps,
        max_concurrency=cap,
    )
    state = h.state
    event(f"{mode.value}: " + ("paused" if h.ended is None else h.ended.status.value))
    if h.ended is not None and h.ended.error is not None:
        event(f"error: {type(h.ended.error).__name__}")
    event("invocations: " + ("<10" if len(h.started) < 10 else ">=10"))
    if h.ended is None:
        assert state.status is RunStatus.RUNNING
        assert not h.runnable() and state.running == 0 and state.queued == 0, "idle with work"
        assert state.input_requests > 0 and h.published, "silently idle, not waiting for input"
        assert all(isinstance(m, Ask) for m in h.published)
        return
    end = h.ended
    assert end.status in (RunStatus.FINISHED, RunStatus.FAILED)
    if end.status is RunStatus.FINISHED:
        assert isinstance(end.result, Stop) and end.error is None
    else:
        assert isinstance(end.error, EXPECTED_ERRORS), repr(end.error)
    assert state.status is end.status
