"""RunState: everything the kernel knows about one run.

The state is mutated in place by :func:`stepgraph.core.kernel.apply` (never copied
per tick). It holds every fact that decides the run's future: inboxes, invocations with
their attempts, the superstep outbox, waiters, collectors, open requests, armed timers,
the shared state and its pending reducer writes, and the time of the last tick.
:meth:`RunState.snapshot` gives a plain, comparable view of it: replaying a run's tick
log into a fresh state gives the same snapshot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .collector import Collector
from .commands import RunStatus
from .failure import Failure
from .graph import Graph
from .ticks import Emission

__all__ = ["Invocation", "Mode", "NodeState", "OpenRequest", "RunState", "Waiter"]


class Mode(Enum):
    """How messages are delivered: in supersteps behind a barrier, or as soon as possible."""

    SUPERSTEP = "superstep"
    ASYNC = "async"


OrderKey = tuple[int, int]
"""Deterministic position of an emission's source: (sender node index, sender's count)."""


class NodeState:
    """Per-node run state: the inbox of messages to process and how many are in flight."""

    __slots__ = ("in_flight", "inbox", "started", "waiting")

    def __init__(self) -> None:
        self.inbox: deque[tuple[object, int]] = deque()  # (message, generation)
        self.in_flight = 0  # invocations started and not completed (waiting ones included)
        self.waiting = 0  # of those, how many wait in wait_for_event
        self.started = 0  # invocations ever started: the node's deterministic send sequence

    def snapshot(self) -> tuple[object, ...]:
        return (tuple(self.inbox), self.in_flight, self.waiting, self.started)


ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()
"""No value (a key that did not exist before a write, or was deleted by it)."""


class Invocation:
    """One run of one node on one message, over all its attempts."""

    __slots__ = (
        "attempt",
        "backing_off",
        "collected",
        "failure",
        "generation",
        "id",
        "message",
        "node",
        "order",
        "received",
        "released",
        "waiting",
        "wrote",
    )

    def __init__(
        self, id: int, node: int, message: object, generation: int, order: OrderKey
    ) -> None:
        self.id = id
        self.node = node
        self.message = message
        self.generation = generation
        self.order = order
        self.waiting = False
        self.attempt = 1  # the attempt running (or, while backing off, the next one)
        self.failure: Failure | None = None  # why the last attempt failed
        self.backing_off = False  # between attempts, waiting for its retry timer
        # what this attempt handed to collectors (key, kind, message), to take back if it
        # fails, and the batches they released to it (key, expected, batch), to give back
        self.collected: list[tuple[tuple[object, ...], object, object]] | None = None
        self.released: list[tuple[tuple[object, ...], tuple[object, ...], list[object]]] | None = (
            None
        )
        # what its waits took in this attempt: given back if it starts again
        self.received: list[object] | None = None
        # with ``RunState.undo_writes``: what this attempt wrote to the shared state,
        # (key, value before, value after; ABSENT for no value), to undo if it starts again
        self.wrote: list[tuple[str, object, object]] | None = None

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.id,
            self.node,
            self.message,
            self.generation,
            self.order,
            self.waiting,
            self.attempt,
            self.failure,
            self.backing_off,
            tuple(self.collected or ()),
            tuple((k, e, tuple(b)) for k, e, b in self.released or ()),
            tuple(self.received or ()),
        )


@dataclass(slots=True)
class Waiter:
    """An invocation suspended in ``wait_for_event``."""

    invocation: int
    types: tuple[type, ...]
    requirements: Mapping[str, object]

    def matches(self, message: object) -> bool:
        if not isinstance(message, self.types):
            return False
        return all(getattr(message, k, _MISSING) == v for k, v in self.requirements.items())


_MISSING = object()


@dataclass(slots=True)
class OpenRequest:
    """A request for information that the caller has not answered yet."""

    request_id: str
    node: int
    invocation: int
    data: object
    response_type: Any
    forwarded: bool = False

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.request_id,
            self.node,
            self.invocation,
            self.data,
            self.response_type,
            self.forwarded,
        )


_PENDING = RunStatus.PENDING  # a module constant: cheaper to read than the enum's member


class RunState:
    """The kernel's state of one run. Create it with the compiled graph and the run options.

    A plain class with a hand-written ``__init__``: a run creates one, so its cost is part
    of every run's start-up.
    """

    __slots__ = (
        "answers",
        "asked",
        "awaited_types",
        "blocked",
        "capture_barriers",
        "collectors",
        "external_sent",
        "failure",
        "fan_in_buffers",
        "graph",
        "input_askers",
        "inputs",
        "invocations",
        "max_concurrency",
        "max_supersteps",
        "merges_seen",
        "merging",
        "mode",
        "next_invocation",
        "nodes",
        "now",
        "outbox",
        "outputs",
        "pending_merges",
        "queued",
        "recent",
        "requests",
        "restarts",
        "result",
        "resumable",
        "run_id",
        "running",
        "started_at",
        "status",
        "stop",
        "store",
        "superstep",
        "timeout",
        "timers",
        "unclaimed",
        "undo_writes",
        "waiters",
    )

    def __init__(
        self,
        graph: Graph,
        *,
        mode: Mode = Mode.SUPERSTEP,
        max_supersteps: int = 10_000,
        max_concurrency: int | None = None,
        timeout: float | None = None,
        capture_barriers: bool = False,
    ) -> None:
        self.graph = graph
        self.mode = mode
        self.max_supersteps = max_supersteps
        self.max_concurrency = max_concurrency
        self.timeout: float | None = timeout  # seconds the whole run may take, from its start
        self.capture_barriers = capture_barriers  # a snapshot in each SuperstepEnded
        # durable runs: log each invocation's state writes, so that a resume that starts
        # an interrupted invocation again first undoes what it wrote (not twice)
        self.undo_writes = False
        self.run_id = ""
        self.status = _PENDING
        self.started_at = 0.0  # wall-clock time of RunStarted
        self.now = 0.0  # wall-clock time of the last tick
        self.superstep = 0
        self.nodes: list[NodeState] = [NodeState() for _ in graph.nodes]
        self.invocations: dict[int, Invocation] = {}
        self.next_invocation = 0
        self.running = 0  # invocations executing or backing off (not waiting)
        self.queued = 0  # messages in inboxes, not yet started
        self.blocked: deque[int] = deque()  # nodes held back by max_concurrency
        # waits that may resume but wait for a free slot: (invocation, event, timed out)
        self.resumable: deque[tuple[int, object, bool]] = deque()
        # invocations to start again (a resume) that wait for a free slot: neither running
        # nor waiting
        self.restarts: deque[int] = deque()
        self.outbox: list[tuple[OrderKey, int, tuple[Emission, ...]]] = []
        self.external_sent = 0
        self.stop: tuple[OrderKey, object] | None = None
        self.waiters: dict[int, Waiter] = {}
        self.awaited_types: set[type] = set()
        self.unclaimed: deque[object] = deque()
        # input requests announced on the stream and not answered yet: request id -> event
        # (an input request's id is a string or an integer; a graph request's a string)
        self.inputs: dict[str | int, object] = {}
        # the requests, open or answered, announced by a step still running: id -> its
        # invocation (an answer goes to its wait first)
        self.input_askers: dict[str | int, int] = {}
        # answered requests: request id -> the answer (a repeated answer changes nothing)
        self.answers: dict[str | int, object] = {}
        self.asked = 0  # input requests announced without an id of their own
        self.requests: dict[str, OpenRequest] = {}
        self.timers: dict[str, float] = {}  # armed timer -> due (wall time)
        self.store: dict[str, Any] = {}  # the shared state (ctx.store)
        # reducer writes waiting for the barrier: (writer position, arrival, key, value)
        self.pending_merges: list[tuple[OrderKey, int, str, object]] = []
        self.merges_seen = 0
        self.merging = False  # a MergeState is out; the barrier waits for StateMerged
        self.collectors: dict[tuple[object, ...], Collector] = {}
        self.fan_in_buffers: dict[int, Collector] = {}
        self.outputs: list[object] = []
        # the last invocations started (for stall messages): a trail, not a fact of the run;
        # left out of snapshots and checkpoints, so a resumed run starts it afresh
        self.recent: deque[tuple[int, object]] = deque(maxlen=5)
        self.result: object = None
        self.failure: Failure | None = None

    def __repr__(self) -> str:
        return (
            f"RunState(graph={self.graph.name!r}, run_id={self.run_id!r}, "
            f"status={self.status.value}, superstep={self.superstep})"
        )

    @property
    def input_requests(self) -> int:
        """How many input requests wait for an answer."""
        return len(self.inputs)

    @property
    def idle(self) -> bool:
        """Nothing runs and nothing waits to start."""
        return self.running == 0 and self.queued == 0

    @property
    def ended(self) -> bool:
        return self.status in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED)

    def snapshot(self) -> dict[str, object]:
        """A plain, comparable view of the whole state (for replay checks and debugging)."""
        view: dict[str, object] = {
            "mode": self.mode.value,
            "run_id": self.run_id,
            "status": self.status.value,
            "started_at": self.started_at,
            "now": self.now,
            "superstep": self.superstep,
            "nodes": [n.snapshot() for n in self.nodes],
            "invocations": {k: v.snapshot() for k, v in self.invocations.items()},
            "next_invocation": self.next_invocation,
            "running": self.running,
            "queued": self.queued,
            "blocked": tuple(self.blocked),
            "resumable": tuple(self.resumable),
            "outbox": list(self.outbox),
            "external_sent": self.external_sent,
            "stop": self.stop,
            "waiters": {
                k: (w.types, dict(w.requirements)) for k, w in sorted(self.waiters.items())
            },
            "awaited_types": sorted(t.__qualname__ for t in self.awaited_types),
            "unclaimed": tuple(self.unclaimed),
            "inputs": dict(sorted(self.inputs.items(), key=_by_request)),
            "answers": dict(sorted(self.answers.items(), key=_by_request)),
            "asked": self.asked,
            "requests": {k: r.snapshot() for k, r in sorted(self.requests.items())},
            "timers": dict(sorted(self.timers.items())),
            "store": dict(self.store),
            "pending_merges": list(self.pending_merges),
            "merges_seen": self.merges_seen,
            "merging": self.merging,
            "collectors": {k: c.snapshot() for k, c in self.collectors.items()},
            "fan_in_buffers": {k: c.snapshot() for k, c in sorted(self.fan_in_buffers.items())},
            "outputs": list(self.outputs),
            "result": self.result,
            "failure": self.failure,
        }
        if self.input_askers:  # (only then: snapshots recorded before it existed still match)
            view["input_askers"] = dict(sorted(self.input_askers.items(), key=_by_request))
        if self.restarts:  # (the same)
            view["restarts"] = tuple(self.restarts)
        return view


def request_order(request_id: str | int) -> tuple[str, str | int]:
    """A sort key for input request ids, which may be integers and strings in one run."""
    return type(request_id).__name__, request_id


def _by_request(item: tuple[str | int, object]) -> tuple[str, str | int]:
    return request_order(item[0])
