"""What a durable run writes to its store, and reading it back.

- A **checkpoint** is a frame (:mod:`.frame`) with a header: the run's workflow, the
  graph's *fingerprint* (each step with the types it accepts and returns), the id prefix
  of its requests and its serializer. It is validated when read: a pydantic model checks
  its shape, the envelope its version and checksum.
- **Chunks** (shared-state keys, outputs) are written apart, and only those that
  changed since the run's previous checkpoint.
- **Journal entries** are ticks, each in its own envelope.

Everything that cannot be read raises :class:`~stepgraph.errors.CheckpointError` naming
the run and the checkpoint; nothing here writes to a store.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from ..core import TICK_TYPES, Graph, RunState, Tick
from ..core.text import short_repr
from ..errors import CheckpointError, SerializationError
from .frame import FRAME_FIELDS, Restored, capture, chunk_names, restore
from .serializer import JSON, JsonSerializer, Serializer, unwrap, wrap

__all__ = [
    "Bounds",
    "Header",
    "HeaderCodec",
    "decode_chunk",
    "decode_entry",
    "decode_value",
    "encode_chunk",
    "encode_entry",
    "encode_frame",
    "encode_header",
    "encode_value",
    "fingerprint",
    "read_frame",
    "read_header",
]


def _path(kind: object) -> str:
    """A type by its qualified name (not its module: moving a class changes no routing)."""
    return str(getattr(kind, "__qualname__", repr(kind)))


def fingerprint(graph: Graph, programs: Iterable[object]) -> dict[str, list[list[str]]]:
    """Each step (executor) by name: the types it accepts, and the types it returns.

    Two graphs whose fingerprints are equal route every stored message the same way.
    """
    steps: dict[str, list[list[str]]] = {}
    for node, program in zip(graph.nodes, programs, strict=True):
        returns: set[str] = {_path(t) for t in getattr(program, "returns", ())}
        for handler in getattr(program, "handlers", ()):
            returns.update(_path(t) for t in handler.output_types or ())
        steps[node.name] = [step_types(node.accepts), sorted(returns)]
    return steps


def fan_in_names(graph: Graph) -> list[list[str]]:
    """Each fan-in edge of ``graph`` as ``[target, *sources]``, by step name."""
    names = [node.name for node in graph.nodes]
    return [[names[f.target], *(names[s] for s in f.sources)] for f in graph.fan_ins]


def step_types(types: Iterable[object]) -> list[str]:
    """Types as a fingerprint lists them: by qualified name, sorted."""
    return sorted(_path(t) for t in types)


class Bounds(BaseModel):
    """The run options a checkpoint's run went on under, which its journal depends on:
    ``max_concurrency`` decides which steps start (and so which invocation an entry
    names), ``max_supersteps`` when the run fails."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_supersteps: Annotated[int, Field(ge=1)]
    max_concurrency: Annotated[int, Field(ge=1)] | None  # None: no bound


class Header(BaseModel):
    """The header of a stored checkpoint (validated when read)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    workflow: str
    kind: str  # what a node is called: "step" or "executor"
    steps: dict[str, list[list[str]]]
    request_prefix: str
    serializer: str
    source: str = ""  # where the workflow is, as MODULE:ATTR ("": not known)
    # each step's num_workers but 1 (how many of its invocations ran at once, which the
    # journal of an async run depends on); None: a checkpoint from before it was kept
    workers: dict[str, Annotated[int, Field(ge=1)]] | None = None
    # each fan-in edge as [target, *sources], by step name (edges are not in ``steps``);
    # None: a checkpoint from before they were kept
    fan_ins: list[Annotated[list[str], Field(min_length=2)]] | None = None
    # the run options of the workflow that wrote it; None: a checkpoint from before they
    # were kept
    bounds: Bounds | None = None


class _Frame(BaseModel):
    """The shape of a stored frame: fields of the right kinds (left out: empty)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    # (empty containers by factory: a default list would be deep-copied at each validation)

    run_id: str
    mode: str
    status: str
    started_at: float
    now: float
    superstep: int
    next_invocation: int
    external_sent: int = 0
    asked: int = 0
    merges_seen: int = 0
    merging: bool = False
    timeout: float | None = None
    nodes: dict[str, list[Any]] = Field(default_factory=dict)
    invocations: list[list[Any]] = Field(default_factory=list)
    blocked: list[str] = Field(default_factory=list)
    resumable: list[list[Any]] = Field(default_factory=list)
    restarts: list[int] = Field(default_factory=list)
    outbox: list[list[Any]] = Field(default_factory=list)
    stop: list[Any] | None = None
    waiters: list[list[int]] = Field(default_factory=list)
    awaited_types: list[int] = Field(default_factory=list)
    unclaimed: list[int] = Field(default_factory=list)
    inputs: list[list[Any]] = Field(default_factory=list)
    input_askers: list[list[Any]] = Field(default_factory=list)
    answers: list[list[Any]] = Field(default_factory=list)
    requests: list[list[Any]] = Field(default_factory=list)
    timers: dict[str, float] = Field(default_factory=dict)
    pending_merges: list[list[Any]] = Field(default_factory=list)
    collectors: list[list[Any]] = Field(default_factory=list)
    fan_in_buffers: list[list[Any]] = Field(default_factory=list)
    result: int | None = None
    failure: int | None = None
    store_keys: list[str] = Field(default_factory=list)
    outputs: int = 0


assert tuple(_Frame.model_fields) == tuple(FRAME_FIELDS)  # one list of fields, two places


def encode_header(header: Header, serializer: Serializer) -> bytes:
    """A checkpoint header as it starts every checkpoint's payload: its size, then it
    (made once per run: every checkpoint repeats it)."""
    data = serializer.dumps(header.model_dump(), "a checkpoint's header")
    return len(data).to_bytes(4, "big") + data


_MARKER = "\x00request prefix\x00"  # stands for a run's request prefix in a header's JSON


class HeaderCodec:
    """The checkpoint headers of one workflow's runs in one serializer, which differ in
    their request prefix only: the rest (the fingerprint above all) is worked out and
    encoded once, not at each run.

    Args:
        name: the workflow's name.
        graph, programs: its plan's.
        serializer: what its runs' checkpoints are written with.
        source: where the workflow is, as ``MODULE:ATTR`` ("": not known).
        bounds: the run options its runs go on under.
    """

    __slots__ = ("_parts", "serializer", "template")

    def __init__(
        self,
        name: str,
        graph: Graph,
        programs: Iterable[object],
        serializer: Serializer,
        source: str = "",
        bounds: Bounds | None = None,
    ) -> None:
        self.serializer = serializer
        self.template = Header(
            workflow=name,
            kind=graph.node_kind,
            steps=fingerprint(graph, programs),
            request_prefix="",
            serializer=serializer.name,
            source=source,
            workers={node.name: node.num_workers for node in graph.nodes if node.num_workers != 1},
            fan_ins=fan_in_names(graph),
            bounds=bounds,
        )
        self._parts: tuple[bytes, bytes] | None = None
        if isinstance(serializer, JsonSerializer):  # the bytes around the prefix, kept
            data = encode_header(self.of(_MARKER), serializer)[4:]
            head, marker, tail = data.partition(to_json(_MARKER))
            if marker and to_json(_MARKER) not in tail:
                self._parts = (head, tail)

    def of(self, request_prefix: str) -> Header:
        """The header of a run with ``request_prefix``."""
        return self.template.model_copy(update={"request_prefix": request_prefix})

    def encode(self, request_prefix: str) -> bytes:
        """``encode_header(self.of(request_prefix), serializer)``, the same bytes."""
        if self._parts is None:
            return encode_header(self.of(request_prefix), self.serializer)
        head, tail = self._parts
        data = b"".join((head, to_json(request_prefix), tail))
        return len(data).to_bytes(4, "big") + data


def encode_frame(state: RunState, header: bytes, serializer: Serializer) -> bytes:
    """The checkpoint of ``state``: its ``header`` (:func:`encode_header`) and its frame.

    Raises:
        SerializationError: an object of the frame cannot be written.
    """
    frame, objects = capture(state)
    return wrap(serializer, header, serializer.dump_frame(frame, objects))


def read_frame(
    data: bytes,
    *,
    run_id: str,
    checkpoint_id: str,
    expected: bytes | None = None,
    trusted: Serializer = JSON,
) -> tuple[Header | None, Mapping[str, Any], list[object]]:
    """The header, frame and object table of a stored checkpoint.

    ``expected``: the bytes of a header (``encode_header``'s) the checkpoint's is likely
    to be; when they are the checkpoint's, the header returned is None (it is that one,
    and it is not read again). ``trusted``: the reader's serializer (``unwrap``).

    Raises:
        CheckpointError: the bytes are corrupt, of another version, or malformed.
    """
    with _reading(run_id, checkpoint_id):
        serializer, payload, size = _opened(data, trusted)
        header: Header | None = None
        if expected is None or payload[: 4 + size] != expected:
            header = Header.model_validate(serializer.loads(payload[4 : 4 + size]))
        content, objects = serializer.load_frame(payload[4 + size :])
        frame = _Frame.model_validate(content)
    return header, vars(frame), objects  # (a model's fields, by name: its __dict__)


def read_header(
    data: bytes, *, run_id: str, checkpoint_id: str, trusted: Serializer = JSON
) -> Header:
    """The header of a stored checkpoint, alone (its frame is not read: the classes of
    its events need not be importable). ``trusted``: the reader's serializer (``unwrap``).

    Raises:
        CheckpointError: the bytes are corrupt, of another version, or malformed.
    """
    with _reading(run_id, checkpoint_id):
        serializer, payload, size = _opened(data, trusted)
        return Header.model_validate(serializer.loads(payload[4 : 4 + size]))


def _opened(data: bytes, trusted: Serializer) -> tuple[Serializer, bytes, int]:
    """A checkpoint's serializer, payload, and the size of the header the payload starts
    with (after its own 4 bytes)."""
    serializer, payload = unwrap(data, trusted)
    size = int.from_bytes(payload[:4], "big")
    if len(payload) < 4 + size:
        raise ValueError("its content is cut short")
    return serializer, payload, size


@contextmanager
def _reading(run_id: str, checkpoint_id: str) -> Iterator[None]:
    """Reading checkpoint ``checkpoint_id`` of run ``run_id``: what fails is a
    ``CheckpointError`` naming both."""
    where = f"checkpoint {checkpoint_id!r} of run {run_id!r}"
    try:
        yield
    except CheckpointError:
        raise
    except (ValueError, TypeError, SerializationError, ValidationError) as exc:
        raise CheckpointError(
            f"cannot read {where}: {_reason(exc)}", run_id=run_id, checkpoint_id=checkpoint_id
        ) from exc
    except Exception as exc:  # a pickle that does not load, say
        raise CheckpointError(
            f"cannot read {where}: {type(exc).__name__}: {exc}",
            run_id=run_id,
            checkpoint_id=checkpoint_id,
        ) from exc


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return f"its content does not have the shape of a checkpoint ({exc.error_count()} errors)"
    return str(exc)


def restore_state(
    frame: Mapping[str, Any],
    objects: list[object],
    chunks: Mapping[str, object],
    graph: Graph,
    *,
    drop: bool = False,
    run_id: str,
    checkpoint_id: str,
) -> Restored:
    """The run state of a checkpoint read back, for ``graph``.

    Raises:
        CheckpointError: the frame refers to what it does not hold.
    """
    try:
        return restore(frame, objects, graph, chunks, drop=drop)
    except (KeyError, IndexError, TypeError, ValueError, AssertionError) as exc:
        raise CheckpointError(
            f"cannot restore checkpoint {checkpoint_id!r} of run {run_id!r}: its content does "
            f"not fit together ({type(exc).__name__}: {short_repr(exc, 200)})",
            run_id=run_id,
            checkpoint_id=checkpoint_id,
        ) from exc


def move_state(state: RunState, graph: Graph, *, run_id: str, checkpoint_id: str) -> Restored:
    """``state`` (of another graph: the one that wrote it) on ``graph``, its steps matched
    by name; what belongs to steps ``graph`` does not have is dropped.

    Raises:
        CheckpointError: the state does not fit ``graph`` (a message of a kept step that
            it no longer takes).
    """
    buffers, state.fan_in_buffers = state.fan_in_buffers, {}
    lost: list[str] = []
    if buffers:  # by fan-in (target and sources by name): their numbers differ
        groups = {tuple(names): g for g, names in enumerate(fan_in_names(graph))}
        written = fan_in_names(state.graph)
        for group, collector in buffers.items():
            found = groups.get(tuple(written[group]))
            if found is None:  # (a source removed, say: the part held goes with it)
                lost += ["collected event"] * len(list(collector.items()))
            else:
                state.fan_in_buffers[found] = collector
    frame, objects = capture(state)
    moved = restore_state(
        frame,
        objects,
        chunk_names(state),
        graph,
        drop=True,
        run_id=run_id,
        checkpoint_id=checkpoint_id,
    )
    moved.dropped += lost
    return moved


def encode_value(value: object, serializer: Serializer, where: str) -> bytes:
    """A value (a result, a chunk) in an envelope."""
    return wrap(serializer, serializer.dumps(value, where))


def decode_value(
    data: bytes, where: str, *, run_id: str, checkpoint_id: str = "", trusted: Serializer = JSON
) -> Any:
    """The value :func:`encode_value` wrote, for a reader that trusts ``trusted`` (its
    workflow's serializer: JSON is read by all, a pickle only by a pickle reader).

    Raises:
        CheckpointError: corrupt, of another version, or no longer valid.
    """
    try:
        serializer, payload = unwrap(data, trusted)
        return serializer.loads(payload)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {where} of run {run_id!r}"
            + (f" (checkpoint {checkpoint_id!r})" if checkpoint_id else "")
            + f": {_reason(exc) if isinstance(exc, ValueError | ValidationError) else exc}",
            run_id=run_id,
            checkpoint_id=checkpoint_id,
        ) from exc


def encode_chunk(name: str, value: object, serializer: Serializer) -> bytes:
    """A chunk (``s:<key>``, ``o:<position>``) in an envelope."""
    kind, _, rest = name.partition(":")
    where = f"the shared state's key {rest!r}" if kind == "s" else f"output {rest}"
    return encode_value(value, serializer, where)


def decode_chunk(
    name: str, data: bytes, *, run_id: str, checkpoint_id: str, trusted: Serializer = JSON
) -> Any:
    """The chunk :func:`encode_chunk` wrote."""
    return decode_value(
        data, f"chunk {name!r}", run_id=run_id, checkpoint_id=checkpoint_id, trusted=trusted
    )


def encode_entry(tick: Tick, serializer: Serializer) -> bytes:
    """A journal entry: ``tick`` in an envelope."""
    return wrap(serializer, serializer.dumps(tick, f"a {type(tick).__name__} tick"))


def decode_entry(
    data: bytes, *, run_id: str, checkpoint_id: str, trusted: Serializer = JSON
) -> Tick:
    """The tick of a journal entry, its fields checked against the tick's field types.

    Raises:
        CheckpointError: corrupt, of another version, not a tick, or a field of a tick
            of the wrong type.
    """
    tick = decode_value(
        data, "a journal entry", run_id=run_id, checkpoint_id=checkpoint_id, trusted=trusted
    )
    wrong = "it is not a tick" if type(tick) not in _TICK_HINTS else _wrong_field(tick)
    if wrong:
        raise CheckpointError(
            f"a journal entry of run {run_id!r} after checkpoint {checkpoint_id!r} is corrupt: "
            f"{wrong} ({short_repr(tick)})",
            run_id=run_id,
            checkpoint_id=checkpoint_id,
        )
    return tick  # type: ignore[no-any-return]


_TICK_HINTS: dict[type, dict[str, Any]] = {
    cls: {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        for hints in (typing.get_type_hints(cls),)
    }
    for cls in TICK_TYPES
}


def _wrong_field(tick: object) -> str:
    """Which field of ``tick`` does not have its declared type ("" when all do)."""
    for name, hint in _TICK_HINTS[type(tick)].items():
        if not _conforms(getattr(tick, name), hint):
            return f"its field {name!r} is not a {hint}"
    return ""


def _conforms(value: object, hint: Any) -> bool:
    """Whether ``value`` has type ``hint`` (the kinds of types ticks declare)."""
    if hint is Any or hint is object:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(item, args[0]) for item in value)
        return len(value) == len(args) and all(map(_conforms, value, args))
    if origin is type:
        return isinstance(value, type)
    if origin is not None:  # Mapping[...], Sequence[...]: the container's kind
        return isinstance(value, origin)
    return isinstance(value, hint)


def compare_steps(
    stored: Mapping[str, list[list[str]]], current: Mapping[str, list[list[str]]]
) -> tuple[list[str], list[str], list[str]]:
    """The steps removed, changed (accepted or returned types) and added since ``stored``."""
    removed = sorted(set(stored) - set(current))
    added = sorted(set(current) - set(stored))
    changed = sorted(name for name in set(stored) & set(current) if stored[name] != current[name])
    return removed, changed, added
