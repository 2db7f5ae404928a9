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
from dataclasses import dataclass, field
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
        "released",
        "waiting",
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


@dataclass(slots=True, eq=False)
class RunState:
    """The kernel's state of one run. Create it with the compiled graph and the run options."""

    graph: Graph
    mode: Mode = Mode.SUPERSTEP
    max_supersteps: int = 10_000
    max_concurrency: int | None = None
    timeout: float | None = None  # seconds the whole run may take (a timer from its start)
    run_id: str = ""
    status: RunStatus = RunStatus.PENDING
    started_at: float = 0.0  # wall-clock time of RunStarted
    now: float = 0.0  # wall-clock time of the last tick
    superstep: int = 0
    nodes: list[NodeState] = field(default_factory=list)
    invocations: dict[int, Invocation] = field(default_factory=dict)
    next_invocation: int = 0
    running: int = 0  # invocations executing or backing off (not waiting)
    queued: int = 0  # messages in inboxes, not yet started
    blocked: deque[int] = field(default_factory=deque)  # nodes held back by max_concurrency
    # waits that may resume but wait for a free slot: (invocation, event, timed out)
    resumable: deque[tuple[int, object, bool]] = field(default_factory=deque)
    outbox: list[tuple[OrderKey, int, tuple[Emission, ...]]] = field(default_factory=list)
    external_sent: int = 0
    stop: tuple[OrderKey, object] | None = None
    waiters: dict[int, Waiter] = field(default_factory=dict)
    awaited_types: set[type] = field(default_factory=set)
    unclaimed: deque[object] = field(default_factory=deque)
    input_requests: int = 0  # input requests on the stream, not answered yet
    requests: dict[str, OpenRequest] = field(default_factory=dict)
    timers: dict[str, float] = field(default_factory=dict)  # armed timer -> due (wall time)
    store: dict[str, Any] = field(default_factory=dict)  # the shared state (ctx.store)
    # reducer writes waiting for the barrier: (writer position, arrival, key, value)
    pending_merges: list[tuple[OrderKey, int, str, object]] = field(default_factory=list)
    merges_seen: int = 0
    merging: bool = False  # a MergeState is out; the barrier waits for StateMerged
    collectors: dict[tuple[object, ...], Collector] = field(default_factory=dict)
    fan_in_buffers: dict[int, Collector] = field(default_factory=dict)
    outputs: list[object] = field(default_factory=list)
    recent: deque[tuple[int, object]] = field(default_factory=lambda: deque(maxlen=5))
    result: object = None
    failure: Failure | None = None
    capture_barriers: bool = False  # attach a snapshot to each SuperstepEnded (checkpoints)

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = [NodeState() for _ in self.graph.nodes]

    @property
    def idle(self) -> bool:
        """Nothing runs and nothing waits to start."""
        return self.running == 0 and self.queued == 0

    @property
    def ended(self) -> bool:
        return self.status in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED)

    def snapshot(self) -> dict[str, object]:
        """A plain, comparable view of the whole state (for replay checks and debugging)."""
        return {
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
            "input_requests": self.input_requests,
            "requests": {k: r.snapshot() for k, r in sorted(self.requests.items())},
            "timers": dict(sorted(self.timers.items())),
            "store": dict(self.store),
            "pending_merges": list(self.pending_merges),
            "merges_seen": self.merges_seen,
            "merging": self.merging,
            "collectors": {k: c.snapshot() for k, c in self.collectors.items()},
            "fan_in_buffers": {k: c.snapshot() for k, c in sorted(self.fan_in_buffers.items())},
            "outputs": list(self.outputs),
            "recent": tuple(self.recent),
            "result": self.result,
            "failure": self.failure,
        }
