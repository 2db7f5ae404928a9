"""Frames: a run's kernel state as plain data, and back.

:func:`capture` turns a :class:`~stepgraph.core.RunState` into a *frame* and a table of
*objects*. The frame holds only JSON-native values (dicts with string keys, lists,
strings, numbers, booleans, None) and names nodes by name, not by index; it leaves out
what is empty or zero, so that a small state makes a small frame. Everything else it
refers to (messages, answers, types, failures) is in the object table, by position: an
object that appears in several places (a message in an inbox and in a collector, say) is
in the table once and comes back as one object, as the kernel relies on identity to take
back what a failed attempt collected.

The trail of recently started invocations (``RunState.recent``, for stall messages) is
left out: a resumed run starts it afresh. The shared state and the run's outputs are not
in the frame: they are *chunks*
(``s:<key>`` and ``o:<position>``), stored apart so that a checkpoint writes only the
chunks that changed.

:func:`restore` rebuilds the state for a graph, mapping node names to the graph's
indexes. Nodes the graph no longer has are listed in ``missing``; with ``drop=True`` what
belongs to them is dropped, else nothing is restored.

Everything here is pure: no IO, no serialization (see ``serializer``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core import EXTERNAL, Failure, Graph, RunState, RunStatus
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


FRAME_FIELDS: dict[str, object] = {
    # always present
    "run_id": "",
    "mode": "",
    "status": "",
    "started_at": 0.0,
    "now": 0.0,
    "superstep": 0,
    "next_invocation": 0,
    # present when not empty (zero, False, None)
    "external_sent": 0,
    "asked": 0,
    "merges_seen": 0,
    "merging": False,
    "timeout": None,
    "nodes": {},
    "invocations": [],
    "blocked": [],
    "resumable": [],
    "restarts": [],
    "outbox": [],
    "stop": None,
    "waiters": [],
    "awaited_types": [],
    "unclaimed": [],
    "inputs": [],
    "input_askers": [],
    "answers": [],
    "requests": [],
    "timers": {},
    "pending_merges": [],
    "collectors": [],
    "fan_in_buffers": [],
    "result": None,
    "failure": None,
    "store_keys": [],
    "outputs": 0,
}
"""The fields of a frame, with the value a field left out stands for."""


def capture(state: RunState) -> tuple[dict[str, Any], list[object]]:
    """``state`` as a frame and its object table (see the module docstring)."""
    names = state.graph.node_names
    objects: list[object] = []
    index: dict[int, int] = {}

    def ref(value: object) -> int:
        key = id(value)
        position = index.get(key)
        if position is None:
            position = index[key] = len(objects)
            objects.append(value)
        return position

    def node(position: int) -> str | None:
        return None if position == EXTERNAL else names[position]

    frame: dict[str, Any] = {
        "run_id": state.run_id,
        "mode": state.mode.value,
        "status": state.status.value,
        "started_at": state.started_at,
        "now": state.now,
        "superstep": state.superstep,
        "next_invocation": state.next_invocation,
    }
    if state.external_sent:
        frame["external_sent"] = state.external_sent
    if state.asked:
        frame["asked"] = state.asked
    if state.merges_seen:
        frame["merges_seen"] = state.merges_seen
    if state.merging:
        frame["merging"] = True
    if state.timeout is not None:
        frame["timeout"] = state.timeout
    nodes = {
        names[i]: [[[ref(m), g] for m, g in n.inbox], n.started]
        for i, n in enumerate(state.nodes)
        if n.inbox or n.started
    }
    if nodes:
        frame["nodes"] = nodes
    if state.invocations:
        frame["invocations"] = [
            [
                inv.id,
                names[inv.node],
                ref(inv.message),
                inv.generation,
                inv.order[1],
                inv.waiting,
                inv.attempt,
                None if inv.failure is None else ref(inv.failure),
                inv.backing_off,
                *(_attempt_parts(inv, names, ref) if _has_parts(inv) else _NO_PARTS),
            ]
            for inv in state.invocations.values()
        ]
    if state.blocked:
        frame["blocked"] = [names[i] for i in state.blocked]
    if state.resumable:
        frame["resumable"] = [[i, ref(m), timed_out] for i, m, timed_out in state.resumable]
    if state.restarts:
        frame["restarts"] = list(state.restarts)
    if state.outbox:
        frame["outbox"] = [
            [
                node(order[0]),
                order[1],
                generation,
                [[ref(m), None if t is None else [names[i] for i in t]] for m, t in emitted],
            ]
            for order, generation, emitted in state.outbox
        ]
    if state.stop is not None:
        (sender, count), message = state.stop
        frame["stop"] = [node(sender), count, ref(message)]
    if state.waiters:
        frame["waiters"] = [
            [w.invocation, ref(w.types), ref(dict(w.requirements))] for w in state.waiters.values()
        ]
    if state.awaited_types:
        frame["awaited_types"] = [ref(t) for t in sorted(state.awaited_types, key=_type_order)]
    if state.unclaimed:
        frame["unclaimed"] = [ref(m) for m in state.unclaimed]
    if state.inputs:
        frame["inputs"] = [[rid, ref(m)] for rid, m in state.inputs.items()]
    if state.input_askers:  # (pairs: a request id may be an int)
        frame["input_askers"] = [[rid, asker] for rid, asker in state.input_askers.items()]
    if state.answers:
        frame["answers"] = [[rid, ref(m)] for rid, m in state.answers.items()]
    if state.requests:
        frame["requests"] = [
            [r.request_id, names[r.node], r.invocation, ref(r.data), ref(r.response_type)]
            + ([True] if r.forwarded else [])
            for r in state.requests.values()
        ]
    if state.timers:
        frame["timers"] = dict(state.timers)
    if state.pending_merges:
        frame["pending_merges"] = [
            [node(order[0]), order[1], arrival, name, ref(value)]
            for order, arrival, name, value in state.pending_merges
        ]
    if state.collectors:
        frame["collectors"] = [
            [_key(k, names, ref), _collector_data(c, ref)] for k, c in state.collectors.items()
        ]
    if state.fan_in_buffers:
        frame["fan_in_buffers"] = [
            [g, _collector_data(c, ref)] for g, c in state.fan_in_buffers.items()
        ]
    if state.result is not None:
        frame["result"] = ref(state.result)
    if state.failure is not None:
        frame["failure"] = ref(state.failure)
    if state.store:
        frame["store_keys"] = list(state.store)
    if state.outputs:
        frame["outputs"] = len(state.outputs)
    return frame, objects


_NO_PARTS: tuple[list[Any], ...] = ([], [], [], [])


def _has_parts(inv: Invocation) -> bool:
    return bool(inv.collected or inv.released or inv.wrote or inv.received)


def _attempt_parts(
    inv: Invocation, names: Sequence[str], ref: Callable[[object], int]
) -> tuple[list[Any], ...]:
    """What an invocation's attempt collected, was released, wrote and received."""

    def absent(value: object) -> int:
        return -1 if value is ABSENT else ref(value)

    return (
        [[_key(k, names, ref), ref(kind), ref(m)] for k, kind, m in inv.collected or ()],
        [
            [_key(k, names, ref), ref(_expected(e)), [ref(m) for m in batch]]
            for k, e, batch in inv.released or ()
        ],
        [[k, absent(before), absent(after)] for k, before, after in inv.wrote or ()],
        [ref(m) for m in inv.received or ()],
    )


def _key(
    value: tuple[object, ...], names: Sequence[str], ref: Callable[[object], int]
) -> list[Any]:
    """A collector key: its node's name and the rest, in the table."""
    position = value[0]
    assert isinstance(position, int)
    return [names[position], ref(value[1:])]


def _collector_data(c: Collector, ref: Callable[[object], int]) -> list[Any]:
    return [ref(_expected(c.expected)), [[ref(kind), ref(m)] for kind, m in c.items()]]


def _type_order(kind: type) -> str:
    return f"{kind.__module__}:{kind.__qualname__}"


def _expected(expected: tuple[Hashable, ...]) -> Any:
    """A collector's expected list; ``[T] * n`` as a ``Repeat`` (not n entries)."""
    if len(expected) > 8 and all(k is expected[0] for k in expected):
        return Repeat(expected[0], len(expected))  # type: ignore[arg-type]
    return list(expected)


def kind_name(message: object) -> str:
    """A dropped message, as a warning names it: by its type's name."""
    return type(message).__name__


@dataclass(slots=True)
class Restored:
    """What :func:`restore` gives: the state, and what it could not place."""

    state: RunState
    missing: list[str] = field(default_factory=list)  # nodes the graph no longer has
    dropped: list[str] = field(default_factory=list)  # what was dropped with them: each
    # message by its type's name, a request by its id, a state write by its key

    def dropped_text(self) -> str:
        """What was dropped, counted: ``"Carry (2), request 'r-1'"``."""
        counts = Counter(self.dropped)
        return ", ".join(f"{what} ({n})" if n > 1 else what for what, n in counts.items())


class _Missing(Exception):
    pass


def restore(
    frame: Mapping[str, Any],
    objects: list[object],
    graph: Graph,
    chunks: Mapping[str, object],
    *,
    drop: bool = False,
) -> Restored:
    """Rebuild the state ``frame`` describes, for ``graph``, with its ``chunks``.

    Args:
        frame: what :func:`capture` gave (after a round trip through a serializer).
        objects: its object table.
        graph: the graph the restored run follows.
        chunks: the run's chunks (shared state and outputs), by chunk name.
        drop: drop what belongs to nodes the graph no longer has (else they are only
            listed in ``missing`` and nothing is restored).

    Raises:
        KeyError, IndexError, TypeError, ValueError: a malformed frame (the caller turns
            them into ``CheckpointError``).
    """
    frame = {**FRAME_FIELDS, **frame}
    index = {node.name: node.index for node in graph.nodes}
    missing: list[str] = sorted(
        {name for name in frame["nodes"] if name not in index}
        | {inv[1] for inv in frame["invocations"] if inv[1] not in index}
    )
    if missing and not drop:
        return Restored(state=RunState(graph), missing=missing)

    def obj(position: int) -> Any:
        if type(position) is not int or not 0 <= position < len(objects):
            raise ValueError(f"object position {position!r} is not in the table")
        return objects[position]

    def message_for(index: int, position: int) -> Any:
        message = obj(position)
        accepts = graph.nodes[index].accepts
        if accepts and not isinstance(message, accepts):
            name = graph.nodes[index].name
            raise ValueError(f"{type(message).__name__} is not what {name!r} takes")
        return message

    def of(kind: type | tuple[type, ...], position: int, what: str) -> Any:
        value = obj(position)
        if not isinstance(value, kind):
            raise ValueError(f"{what} is a {type(value).__name__}")
        return value

    def node(name: str | None) -> int:
        if name is None:
            return EXTERNAL
        found = index.get(name)
        if found is None:
            raise _Missing(name)
        return found

    def key(value: list[Any]) -> tuple[object, ...]:
        return (node(value[0]), *obj(value[1]))

    def absent(position: int) -> object:
        return ABSENT if position == -1 else obj(position)

    state = RunState(graph, mode=Mode(frame["mode"]), timeout=frame["timeout"])
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
    dropped: list[str] = []
    for name, (inbox, started) in frame["nodes"].items():
        if name not in index:
            dropped += (kind_name(obj(m)) for m, _ in inbox)
            continue
        slot = state.nodes[index[name]]
        slot.inbox = deque((message_for(index[name], m), int(g)) for m, g in inbox)
        slot.started = int(started)
    lost: set[int] = set()
    for row in frame["invocations"]:
        inv_id, name, message, generation, count, waiting, attempt = row[:7]
        failure, backing_off, collected, released, wrote, received = row[7:]
        if name not in index:
            lost.add(int(inv_id))
            dropped.append(kind_name(obj(message)))
            continue
        inv = Invocation(
            int(inv_id),
            index[name],
            message_for(index[name], message),
            int(generation),
            (index[name], int(count)),
        )
        inv.waiting, inv.attempt = bool(waiting), int(attempt)
        inv.failure = None if failure is None else of(Failure, failure, "a failure")
        inv.backing_off = bool(backing_off)
        inv.collected = [(key(k), obj(kind), obj(m)) for k, kind, m in collected] or None
        inv.released = [
            (key(k), tuple(obj(e)), [obj(m) for m in batch]) for k, e, batch in released
        ] or None
        inv.wrote = [(str(k), absent(b), absent(a)) for k, b, a in wrote] or None
        inv.received = [obj(m) for m in received] or None
        state.invocations[inv.id] = inv
    state.blocked = deque(index[n] for n in frame["blocked"] if n in index)
    state.resumable = deque(
        (int(i), obj(m), bool(t)) for i, m, t in frame["resumable"] if int(i) not in lost
    )
    held = (state.invocations.get(int(i)) for i in frame["restarts"])  # (one that could not
    state.restarts = deque(  # be held back, waiting or backing off or gone: left out)
        inv.id for inv in held if inv is not None and not (inv.waiting or inv.backing_off)
    )
    for sender, count, generation, emitted in frame["outbox"]:
        kept: list[tuple[object, tuple[int, ...] | None]] = []
        for message, to in emitted:
            if to is None:
                kept.append((obj(message), None))
                continue
            targets = tuple(index[n] for n in to if n in index)
            if targets:
                kept.append((obj(message), targets))
            else:
                dropped.append(kind_name(obj(message)))
        try:
            entry = ((node(sender), int(count)), int(generation), tuple(kept))
        except _Missing:
            dropped += (kind_name(m) for m, _ in kept)
            continue
        if kept:
            state.outbox.append(entry)
    if frame["stop"] is not None:
        sender, count, message = frame["stop"]
        try:
            state.stop = ((node(sender), int(count)), obj(message))
        except _Missing:
            dropped.append(kind_name(obj(message)))
        if state.stop is not None and not graph.is_stop(state.stop[1]):
            raise ValueError(f"the stop message is a {type(state.stop[1]).__name__}")
    for inv_id, types, requirements in frame["waiters"]:
        if int(inv_id) not in lost:
            state.waiters[int(inv_id)] = Waiter(
                int(inv_id),
                _types(of(tuple, types, "a wait's types")),
                of(dict, requirements, "a wait's requirements"),
            )
    state.awaited_types = {of(type, t, "an awaited type") for t in frame["awaited_types"]}
    state.unclaimed = deque(obj(m) for m in frame["unclaimed"])
    state.inputs = {_request_id(rid): obj(m) for rid, m in frame["inputs"]}
    if not all(graph.is_input_request(m) for m in state.inputs.values()):
        raise ValueError("an open input request is not a request")
    state.answers = {_request_id(rid): obj(m) for rid, m in frame["answers"]}
    closed: set[str] = set()  # requests nobody can take an answer to any more
    for rid, name, inv_id, data, response_type, *forwarded in frame["requests"]:
        if name in index and int(inv_id) not in lost:
            state.requests[rid] = OpenRequest(
                rid, index[name], int(inv_id), obj(data), obj(response_type), bool(forwarded)
            )
        else:
            closed.add(str(rid))
            dropped.append(f"request {rid!r}")
    taken: bool | None = None  # whether an answer to a prompt has a step or a wait to go to
    for raw_id, asker in frame["input_askers"]:
        rid = _request_id(raw_id)
        if rid in closed or (rid not in state.inputs and rid not in state.answers):
            continue
        if int(asker) not in lost:
            state.input_askers[rid] = int(asker)  # (answered: its answer goes to its wait)
            continue
        if rid not in state.inputs:
            continue
        if taken is None:
            taken = _answer_taken(graph)
        if not taken:  # the prompt of a step dropped, and nobody else takes its answer
            del state.inputs[rid]
            dropped.append(f"prompt {rid!r}")
    for rid in closed:  # (counted with their request)
        state.inputs.pop(rid, None)
    state.timers = {str(k): float(v) for k, v in frame["timers"].items()}
    for sender, count, arrival, name, value in frame["pending_merges"]:
        try:
            state.pending_merges.append(
                ((node(sender), int(count)), int(arrival), str(name), obj(value))
            )
        except _Missing:
            dropped.append(f"write of {name!r}")
    for raw_key, (expected, held) in frame["collectors"]:
        try:
            state.collectors[key(raw_key)] = _collector(obj(expected), held, obj)
        except _Missing:
            dropped += ["collected event"] * len(held)
    fan_ins = graph.fan_ins
    for group, (expected, held) in frame["fan_in_buffers"]:
        collector = _collector(obj(expected), held, obj)
        group = int(group)
        if 0 <= group < len(fan_ins) and len(collector.expected) == len(fan_ins[group].sources):
            state.fan_in_buffers[group] = collector
        else:  # a fan-in that is not this graph's (a checkpoint from before headers kept
            dropped += ["collected event"] * len(held)  # the fan-ins): its batch goes
    state.result = None if frame["result"] is None else obj(frame["result"])
    state.failure = None if frame["failure"] is None else of(Failure, frame["failure"], "failure")
    for key_name in frame["store_keys"]:
        state.store[key_name] = chunks[state_chunk(key_name)]
    state.outputs = [chunks[output_chunk(i)] for i in range(int(frame["outputs"]))]
    _recount(state)
    return Restored(state=state, missing=missing, dropped=dropped)


def _request_id(value: object) -> str | int:
    """An input request's id, as written (a string or an integer)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"an input request's id is a {type(value).__name__}")


def _answer_taken(graph: Graph) -> bool:
    """Whether an answer from the caller to an input request has a step of ``graph`` to
    go to: one that takes it as its event. (Not a wait: a step waits for the answers to
    its own requests; given another's, it would take it for its own.)"""
    answers = graph.answer_types
    entry = graph.entry
    nodes = graph.nodes if entry is None else [graph.nodes[i] for i in entry]
    return any(issubclass(answer, node.accepts) for answer in answers for node in nodes)


def _types(value: tuple[object, ...]) -> tuple[type, ...]:
    if not all(isinstance(t, type) for t in value):
        raise ValueError("a wait's types are not types")
    return value  # type: ignore[return-value]


def _collector(expected: Any, held: list[list[int]], obj: Callable[[int], Any]) -> Collector:
    if not isinstance(expected, list | Repeat):
        raise ValueError(f"a collector's expected list is a {type(expected).__name__}")
    collector = Collector(expected)
    for kind, message in held:
        collector.add_kind(obj(kind), obj(message))
    return collector


def _recount(state: RunState) -> None:
    """Recompute the counters the frame leaves out from what was restored."""
    state.queued = sum(len(n.inbox) for n in state.nodes)
    for slot in state.nodes:
        slot.in_flight = slot.waiting = 0
    for inv in state.invocations.values():
        slot = state.nodes[inv.node]
        slot.in_flight += 1
        if inv.waiting:
            slot.waiting += 1
    held = set(state.restarts)  # (neither running nor waiting)
    state.running = sum(
        1 for inv in state.invocations.values() if not inv.waiting and inv.id not in held
    )
