"""Frames: a run's kernel state as plain data, and back.

:func:`capture` turns a :class:`~stepgraph.core.RunState` into a *frame*: plain lists,
dicts and numbers that name nodes by name (not by index), plus a table of the objects it
refers to (messages, answers, request data). An object that appears in several places
(a message in an inbox and in a collector, say) is in the table once, so it comes back as
one object: the kernel relies on identity to take back what a failed attempt collected.

The shared state and the run's outputs are not in the frame: they are *chunks*
(``s:<key>`` and ``o:<position>``), stored apart so that a checkpoint writes only the
chunks that changed (:func:`chunk_names`).

:func:`restore` rebuilds the state for a graph, mapping node names to the graph's
indexes. Nodes the graph no longer has are reported (``missing``); with ``drop=True``
their messages and invocations are dropped, else restoring refuses.

Everything here is pure: no IO, no serialization (see ``serializer``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core import EXTERNAL, Graph, RunState, RunStatus
from ..core.collector import Collector, Repeat
from ..core.state import ABSENT, Invocation, Mode, OpenRequest, Waiter

__all__ = [
    "FRAME_FIELDS",
    "Restored",
    "capture",
    "chunk_names",
    "output_chunk",
    "restore",
    "state_chunk",
]


def state_chunk(key: str) -> str:
    """The chunk name of shared-state key ``key``."""
    return f"s:{key}"


def output_chunk(position: int) -> str:
    """The chunk name of the run's output number ``position``."""
    return f"o:{position}"


def chunk_names(state: RunState) -> dict[str, object]:
    """Every chunk of ``state``: its shared-state keys and its outputs, by chunk name."""
    chunks: dict[str, object] = {state_chunk(k): v for k, v in state.store.items()}
    for position, output in enumerate(state.outputs):
        chunks[output_chunk(position)] = output
    return chunks


class _Table:
    """Objects by identity: each one once, referred to by its position."""

    def __init__(self) -> None:
        self.objects: list[object] = []
        self._index: dict[int, int] = {}

    def ref(self, value: object) -> int:
        key = id(value)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.objects)
            self.objects.append(value)
        return index


FRAME_FIELDS = (
    "run_id",
    "mode",
    "status",
    "started_at",
    "now",
    "superstep",
    "next_invocation",
    "running",
    "queued",
    "external_sent",
    "asked",
    "merges_seen",
    "merging",
    "timeout",
    "nodes",
    "invocations",
    "blocked",
    "resumable",
    "outbox",
    "stop",
    "waiters",
    "awaited_types",
    "unclaimed",
    "inputs",
    "answers",
    "requests",
    "timers",
    "pending_merges",
    "collectors",
    "fan_in_buffers",
    "recent",
    "result",
    "failure",
    "store_keys",
    "outputs",
    "objects",
)
"""The keys of a frame, in the order :func:`capture` writes them."""


def capture(state: RunState) -> dict[str, Any]:
    """``state`` as a frame (see the module docstring); the chunks are left out."""
    graph = state.graph
    names = [node.name for node in graph.nodes]
    table = _Table()
    ref = table.ref

    def node(index: int) -> str | None:
        return None if index == EXTERNAL else names[index]

    def targets(value: tuple[int, ...] | None) -> list[str] | None:
        return None if value is None else [names[i] for i in value]

    def absent(value: object) -> int:
        return -1 if value is ABSENT else ref(value)

    def collector(c: Collector) -> list[Any]:
        return [_expected(c.expected), [[kind, ref(m)] for kind, m in c.items()]]

    return {
        "run_id": state.run_id,
        "mode": state.mode.value,
        "status": state.status.value,
        "started_at": state.started_at,
        "now": state.now,
        "superstep": state.superstep,
        "next_invocation": state.next_invocation,
        "running": state.running,
        "queued": state.queued,
        "external_sent": state.external_sent,
        "asked": state.asked,
        "merges_seen": state.merges_seen,
        "merging": state.merging,
        "timeout": state.timeout,
        "nodes": {
            names[i]: [[[ref(m), g] for m, g in n.inbox], n.in_flight, n.waiting, n.started]
            for i, n in enumerate(state.nodes)
        },
        "invocations": [
            [
                inv.id,
                names[inv.node],
                ref(inv.message),
                inv.generation,
                [names[inv.order[0]], inv.order[1]],
                inv.waiting,
                inv.attempt,
                inv.failure,
                inv.backing_off,
                [[list(_key(k, names)), kind, ref(m)] for k, kind, m in inv.collected or ()],
                [
                    [list(_key(k, names)), _expected(e), [ref(m) for m in batch]]
                    for k, e, batch in inv.released or ()
                ],
                [[key, absent(before), absent(after)] for key, before, after in inv.wrote or ()],
            ]
            for inv in state.invocations.values()
        ],
        "blocked": [names[i] for i in state.blocked],
        "resumable": [[inv, ref(m), timed_out] for inv, m, timed_out in state.resumable],
        "outbox": [
            [[node(order[0]), order[1]], generation, [[ref(m), targets(t)] for m, t in emitted]]
            for order, generation, emitted in state.outbox
        ],
        "stop": None
        if state.stop is None
        else [[node(state.stop[0][0]), state.stop[0][1]], ref(state.stop[1])],
        "waiters": [
            [w.invocation, list(w.types), dict(w.requirements)] for w in state.waiters.values()
        ],
        "awaited_types": sorted(state.awaited_types, key=_type_order),
        "unclaimed": [ref(m) for m in state.unclaimed],
        "inputs": [[rid, ref(m)] for rid, m in state.inputs.items()],
        "answers": [[rid, ref(m)] for rid, m in state.answers.items()],
        "requests": [
            [r.request_id, names[r.node], r.invocation, ref(r.data), r.response_type, r.forwarded]
            for r in state.requests.values()
        ],
        "timers": dict(state.timers),
        "pending_merges": [
            [[node(order[0]), order[1]], arrival, key, ref(value)]
            for order, arrival, key, value in state.pending_merges
        ],
        "collectors": [[list(_key(k, names)), collector(c)] for k, c in state.collectors.items()],
        "fan_in_buffers": [[group, collector(c)] for group, c in state.fan_in_buffers.items()],
        "recent": [[names[i], ref(m)] for i, m in state.recent],
        "result": ref(state.result),
        "failure": state.failure,
        "store_keys": list(state.store),
        "outputs": len(state.outputs),
        "objects": table.objects,
    }


def _type_order(kind: type) -> str:
    return f"{kind.__module__}:{kind.__qualname__}"


def _expected(expected: tuple[Hashable, ...]) -> Any:
    """A collector's expected list; ``[T] * n`` as a ``Repeat`` (not n entries)."""
    if len(expected) > 8 and all(k is expected[0] for k in expected):
        return Repeat(expected[0], len(expected))  # type: ignore[arg-type]
    return list(expected)


def _key(key: tuple[object, ...], names: list[str]) -> tuple[object, ...]:
    """A collector key with its node index replaced by the node's name."""
    node = key[0]
    assert isinstance(node, int)
    return (names[node], *key[1:])


@dataclass(slots=True)
class Restored:
    """What :func:`restore` gives: the state, and what it could not place."""

    state: RunState
    missing: list[str] = field(default_factory=list)  # nodes the graph no longer has
    dropped: int = 0  # messages and invocations dropped with them


class _Missing(Exception):
    pass


def restore(
    frame: Mapping[str, Any],
    graph: Graph,
    chunks: Mapping[str, object],
    *,
    drop: bool = False,
    checkpoints: bool = False,
) -> Restored:
    """Rebuild the state ``frame`` describes, for ``graph``, with its ``chunks``.

    Args:
        frame: what :func:`capture` gave (after a round trip through a serializer).
        graph: the graph the restored run follows.
        chunks: the run's chunks (shared state and outputs), by chunk name.
        drop: drop what belongs to nodes the graph no longer has (else they are only
            listed in ``missing`` and nothing is restored).
        checkpoints: the restored state's ``capture_barriers`` flag.

    Raises:
        KeyError, IndexError, TypeError, ValueError: a malformed frame (the caller turns
            them into ``CheckpointError``).
    """
    index = {node.name: node.index for node in graph.nodes}
    missing: list[str] = sorted(
        {name for name in frame["nodes"] if name not in index}
        | {inv[1] for inv in frame["invocations"] if inv[1] not in index}
    )
    result = Restored(state=RunState(graph), missing=missing)
    if missing and not drop:
        return result
    objects: list[object] = list(frame["objects"])
    obj = objects.__getitem__

    def absent(position: int) -> object:
        return ABSENT if position == -1 else obj(position)

    def node(name: str | None) -> int:
        if name is None:
            return EXTERNAL
        found = index.get(name)
        if found is None:
            raise _Missing(name)
        return found

    def targets(value: list[str] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        kept = tuple(index[n] for n in value if n in index)
        if not kept:
            raise _Missing(value[0])
        return kept

    def key(value: list[Any]) -> tuple[object, ...]:
        return (node(value[0]), *value[1:])

    state = RunState(
        graph,
        mode=Mode(frame["mode"]),
        timeout=frame["timeout"],
        capture_barriers=checkpoints,
    )
    state.run_id = str(frame["run_id"])
    state.status = RunStatus(frame["status"])
    state.started_at = float(frame["started_at"])
    state.now = float(frame["now"])
    state.superstep = int(frame["superstep"])
    state.next_invocation = int(frame["next_invocation"])
    state.external_sent = int(frame["external_sent"])
    state.asked = int(frame["asked"])
    state.merges_seen = int(frame["merges_seen"])
    state.merging = bool(frame["merging"])
    dropped = 0
    for name, (inbox, in_flight, waiting, started) in frame["nodes"].items():
        if name not in index:
            dropped += len(inbox)
            continue
        slot = state.nodes[index[name]]
        slot.inbox = deque((obj(m), int(g)) for m, g in inbox)
        slot.in_flight, slot.waiting, slot.started = int(in_flight), int(waiting), int(started)
    lost: set[int] = set()
    for row in frame["invocations"]:
        inv_id, name, message, generation, order, waiting, attempt = row[:7]
        failure, backing_off, collected, released, wrote = row[7:]
        if name not in index:
            lost.add(int(inv_id))
            dropped += 1
            continue
        inv = Invocation(
            int(inv_id), index[name], obj(message), int(generation), (node(order[0]), order[1])
        )
        inv.waiting, inv.attempt, inv.failure = bool(waiting), int(attempt), failure
        inv.backing_off = bool(backing_off)
        inv.collected = [(key(k), kind, obj(m)) for k, kind, m in collected] or None
        inv.released = [
            (key(k), tuple(e), [obj(m) for m in batch]) for k, e, batch in released
        ] or None
        inv.wrote = [(str(k), absent(b), absent(a)) for k, b, a in wrote] or None
        state.invocations[inv.id] = inv
    state.blocked = deque(index[n] for n in frame["blocked"] if n in index)
    state.resumable = deque(
        (int(i), obj(m), bool(t)) for i, m, t in frame["resumable"] if int(i) not in lost
    )
    for order, generation, emitted in frame["outbox"]:
        kept = []
        for message, to in emitted:
            try:
                kept.append((obj(message), targets(to)))
            except _Missing:
                dropped += 1
        try:
            entry = ((node(order[0]), int(order[1])), int(generation), tuple(kept))
        except _Missing:
            dropped += len(kept)
            continue
        if kept:
            state.outbox.append(entry)
    stop = frame["stop"]
    if stop is not None:
        try:
            state.stop = ((node(stop[0][0]), int(stop[0][1])), obj(stop[1]))
        except _Missing:
            dropped += 1
    for inv_id, types, requirements in frame["waiters"]:
        if int(inv_id) not in lost:
            state.waiters[int(inv_id)] = Waiter(int(inv_id), tuple(types), dict(requirements))
    state.awaited_types = set(frame["awaited_types"])
    state.unclaimed = deque(obj(m) for m in frame["unclaimed"])
    state.inputs = {str(rid): obj(m) for rid, m in frame["inputs"]}
    state.answers = {str(rid): obj(m) for rid, m in frame["answers"]}
    for rid, name, inv_id, data, response_type, forwarded in frame["requests"]:
        if name in index and int(inv_id) not in lost:
            state.requests[rid] = OpenRequest(
                rid, index[name], int(inv_id), obj(data), response_type, bool(forwarded)
            )
        else:
            dropped += 1
    state.timers = {str(k): float(v) for k, v in frame["timers"].items()}
    for order, arrival, name, value in frame["pending_merges"]:
        try:
            state.pending_merges.append(
                ((node(order[0]), int(order[1])), int(arrival), str(name), obj(value))
            )
        except _Missing:
            dropped += 1
    for raw_key, (expected, held) in frame["collectors"]:
        try:
            state.collectors[key(raw_key)] = _collector(expected, held, obj)
        except _Missing:
            dropped += len(held)
    for group, (expected, held) in frame["fan_in_buffers"]:
        state.fan_in_buffers[int(group)] = _collector(expected, held, obj)
    state.recent = deque(((index[n], obj(m)) for n, m in frame["recent"] if n in index), maxlen=5)
    state.result = obj(frame["result"])
    state.failure = frame["failure"]
    for key_name in frame["store_keys"]:
        state.store[key_name] = chunks[state_chunk(key_name)]
    state.outputs = [chunks[output_chunk(i)] for i in range(int(frame["outputs"]))]
    _recount(state)
    result.state = state
    result.dropped = dropped
    return result


def _collector(expected: Any, held: Iterable[list[Any]], obj: Any) -> Collector:
    collector = Collector(expected)
    for kind, message in held:
        collector.add_kind(kind, obj(message))
    return collector


def _recount(state: RunState) -> None:
    """Recompute the counters from what was restored (dropped items included)."""
    state.queued = sum(len(n.inbox) for n in state.nodes)
    for slot in state.nodes:
        slot.in_flight = slot.waiting = 0
    for inv in state.invocations.values():
        slot = state.nodes[inv.node]
        slot.in_flight += 1
        if inv.waiting:
            slot.waiting += 1
    state.running = sum(1 for inv in state.invocations.values() if not inv.waiting)
