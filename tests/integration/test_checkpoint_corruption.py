"""A corrupt stored checkpoint is refused, and refusing it changes nothing stored.

The requirement (the project's issue): each stored snapshot is versioned and carries a
checksum; any corruption (truncated, flipped bits even inside a JSON string, another format
version, wrong types) raises ``CheckpointError`` naming the run and the checkpoint (and
"version" for a wrong version), and the store is left byte-for-byte unchanged. An unknown
run id is a ``StepgraphError`` naming it (no run created); an unknown checkpoint id names it.

How it is checked: a small durable workflow (``Tally``: four steps, shared-state keys holding
ints, strings and an event) runs until it asks for input, gets its answer, and its process
"dies" (``crash``) before acting on it. That is played once for each serializer (json,
pickle) and mode (superstep: a checkpoint per barrier; async: one checkpoint and a journal
of every tick). Hypothesis then takes one stored record (a checkpoint's frame, a chunk, a
journal entry), corrupts it *in the store itself* (the SQLite file; MemoryStore's internals;
PostgreSQL's tables) and resumes every way that reads that record: from the latest
checkpoint, and as a fork from the checkpoint (``checkpoint_id=``). Each resume must raise
``CheckpointError`` naming the run and the checkpoint, and a dump of the store must be the
same before and after. The decoding functions (``read_frame``, ``decode_chunk``,
``decode_entry``) get the same corruptions, many more of them, without an event loop.

"Wrong types" means a record whose checksum is right (recomputed with ``wrap``) but whose
content has the wrong shape: another top-level type, a key missing or added, a field of
a type no validation accepts, a payload cut short, a payload of the other serializer.
Values pydantic's lax mode converts (``"3"`` for an int, ``"yes"`` for a bool) are not
drawn: the tests at the end check them one by one.

A resume whose load works is noticed by an observer (the kernel takes its ``RunResumed``
tick) and stopped with ``crash``, so a missed corruption fails its test instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import sqlite3
import string
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepgraph import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RunObserver,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowHandler,
    step,
)
from stepgraph.core import RunResumed
from stepgraph.durability.checkpoints import Header, decode_chunk, decode_entry, read_frame
from stepgraph.durability.frame import FRAME_FIELDS
from stepgraph.durability.serializer import FORMAT_VERSION, Serializer, serializer_named, wrap
from stepgraph.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    RunNotFoundError,
    StepgraphError,
    WorkflowCancelled,
)
from stepgraph.journal.codec import encode
from stepgraph.stores import MemoryStore, PostgresStore, SqliteStore, Store
from stepgraph.testing import crash
from tests.pg import PG_DSN, pg_schema, require_pg

# -- the workflow -------------------------------------------------------------------------------


class Begin(StartEvent):
    n: int


class Counted(Event):
    value: int


class Labelled(Event):
    value: int
    label: str


class Tally(Workflow):
    """A step per superstep; shared state ``count`` (int), ``label`` (str), ``last`` (an event)."""

    @step
    async def first(self, ctx: Context, ev: Begin) -> Counted:
        await ctx.store.set("count", ev.n)
        await ctx.store.set("label", "first")
        return Counted(value=ev.n + 1)

    @step
    async def second(self, ctx: Context, ev: Counted) -> Labelled:
        await ctx.store.set("count", ev.value)
        labelled = Labelled(value=ev.value * 2, label="twice")
        await ctx.store.set("last", labelled)
        return labelled

    @step
    async def third(self, ctx: Context, ev: Labelled) -> InputRequiredEvent:
        await ctx.store.set("label", ev.label)
        return InputRequiredEvent(prefix="more?")

    @step
    async def finish(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=(await ctx.store.get("count"), ev.response))


SCENARIOS = (("json", "superstep"), ("pickle", "superstep"), ("json", "async"), ("pickle", "async"))
"""(serializer, mode) of each stored run the corruptions are drawn from."""


async def _settle(before: set[asyncio.Task[Any]]) -> None:
    """Let the tasks started since ``before`` end (a crash gives its lease up in a task)."""
    started = asyncio.all_tasks() - before - {asyncio.current_task()}
    await asyncio.gather(*started, return_exceptions=True)


async def play(store: Store, serializer: str, mode: str) -> str:
    """Run Tally until it asks for input; answer; crash before the answer is acted on.

    Returns the run's id. The run is left "running" in the store (resuming it reads its
    latest checkpoint, and in async mode the journal after it), its lease given up.
    """
    before = asyncio.all_tasks()
    handler = Tally(store=store, serializer=serializer, mode=mode).run(start_event=Begin(n=3))
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.send_event(HumanResponseEvent(response="yes"))  # stored before it returns
            crash(handler)
            break
    with contextlib.suppress(WorkflowCancelled):
        await handler
    await _settle(before)
    return handler.run_id


# -- what is stored, and which resumes read it -------------------------------------------------


class Row:
    """One stored record of a run: a checkpoint's frame, a chunk or a journal entry.

    (A plain class, not a dataclass: hypothesis prints a dataclass field by field, bytes
    and all; this one prints its short ``repr``.)
    """

    __slots__ = ("data", "kind", "name", "pos", "seq")

    def __init__(
        self, kind: str, seq: int, data: bytes | None, *, name: str = "", pos: int = 0
    ) -> None:
        self.kind = kind  # "frame", "chunk" or "entry"
        self.seq = seq  # the checkpoint's seq (frame, chunk), or that of the one it follows
        self.data = data  # None: a chunk deleted at that checkpoint
        self.name = name  # a chunk's name
        self.pos = pos  # an entry's position (as the store numbers them)

    def __repr__(self) -> str:
        where = f" {self.name!r}" if self.name else f" #{self.pos}" if self.kind == "entry" else ""
        return f"<{self.kind}{where} after checkpoint {self.seq}: {len(self.data or b'')} bytes>"


class Stored:
    """A played run as its store holds it (a plain class: see Row)."""

    def __init__(
        self,
        serializer: str,
        mode: str,
        run_id: str,
        checkpoints: Sequence[tuple[int, str]],
        rows: Sequence[Row],
    ) -> None:
        self.serializer = serializer
        self.mode = mode
        self.run_id = run_id
        self.checkpoints = tuple(checkpoints)  # (seq, id), in seq order
        self.rows = tuple(rows)

    def __repr__(self) -> str:
        return f"<run {self.run_id} ({self.serializer}, {self.mode})>"

    def readers(self, row: Row) -> list[tuple[str | None, str]]:
        """The resumes that read ``row``: (the ``checkpoint_id`` to pass, the one read)."""
        ids = dict(self.checkpoints)
        latest = max(ids)
        if row.kind == "entry":  # read when resuming from the checkpoint it follows only
            return [(None, ids[latest])] if row.seq == latest else []
        found: list[tuple[str | None, str]] = [(ids[row.seq], ids[row.seq])]  # a fork from it
        later = [
            r for r in self.rows if r.kind == "chunk" and r.name == row.name and r.seq > row.seq
        ]
        if (row.kind == "frame" and row.seq == latest) or (row.kind == "chunk" and not later):
            found.append((None, ids[latest]))
        return found

    @property
    def targets(self) -> list[Row]:
        """The records some resume reads (an entry after an earlier checkpoint: none)."""
        return [row for row in self.rows if row.data is not None and self.readers(row)]


class Backend(Protocol):
    """A store kind, and how a test reaches around it to its stored bytes."""

    def store(self) -> Store: ...
    def rows(self, run_id: str) -> list[Row]: ...
    def replace(self, run_id: str, row: Row, data: bytes) -> None: ...
    def snapshot(self) -> object: ...


_TABLES = {  # each table's rows in primary-key order
    "stepgraph_runs": "run_id",
    "stepgraph_checkpoints": "id",
    "stepgraph_chunks": "run_id, name, seq",
    "stepgraph_journal": "run_id, after_seq, pos",
}
_WHERE = {
    "frame": ("stepgraph_checkpoints", "frame", "seq = {0}"),
    "chunk": ("stepgraph_chunks", "data", "name = {0} AND seq = {0}"),
    "entry": ("stepgraph_journal", "entry", "after_seq = {0} AND pos = {0}"),
}


def _key(row: Row) -> tuple[Any, ...]:
    return {"frame": (row.seq,), "chunk": (row.name, row.seq), "entry": (row.seq, row.pos)}[
        row.kind
    ]


def _sql_rows(
    fetch: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]], run_id: str
) -> list[Row]:
    frames = fetch("SELECT seq, frame FROM {p}stepgraph_checkpoints WHERE run_id = {0}", (run_id,))
    chunks = fetch("SELECT name, seq, data FROM {p}stepgraph_chunks WHERE run_id = {0}", (run_id,))
    entries = fetch(
        "SELECT after_seq, pos, entry FROM {p}stepgraph_journal WHERE run_id = {0}", (run_id,)
    )
    return sorted(
        [Row("frame", seq, bytes(data)) for seq, data in frames]
        + [Row("chunk", seq, None if d is None else bytes(d), name=n) for n, seq, d in chunks]
        + [Row("entry", seq, bytes(data), pos=pos) for seq, pos, data in entries],
        key=lambda r: (r.kind, r.seq, r.name, r.pos),
    )


class SqliteBackend:
    """A SQLite file; the test reads and writes it with ``sqlite3``, beside the store."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"<SQLite file {self.path.name}>"

    def store(self) -> SqliteStore:
        return SqliteStore(self.path)

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.path)) as conn:
            return conn.execute(sql.format("?", p=""), params).fetchall()

    def rows(self, run_id: str) -> list[Row]:
        return _sql_rows(self._fetch, run_id)

    def replace(self, run_id: str, row: Row, data: bytes) -> None:
        table, column, where = _WHERE[row.kind]
        with closing(sqlite3.connect(self.path)) as conn, conn:
            done = conn.execute(
                f"UPDATE {table} SET {column} = ? WHERE run_id = ? AND {where.format('?')}",
                (data, run_id, *_key(row)),
            )
            assert done.rowcount == 1

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every stepgraph table, leases included (a failed resume that took
        the run's lease gives it back: the table ends as it began)."""
        with closing(sqlite3.connect(self.path)) as conn:
            dump = {
                table: conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
                for table, order in {**_TABLES, "stepgraph_leases": "run_id"}.items()
            }
        assert dump["stepgraph_runs"], "the dump must see the stored runs"
        return dump

    def copy_to(self, path: Path) -> SqliteBackend:
        """A copy of the file (its every page: rowids and all) at ``path``."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        with closing(sqlite3.connect(self.path)) as src, closing(sqlite3.connect(path)) as dst:
            src.backup(dst)
        return SqliteBackend(path)


class MemoryBackend:
    """A MemoryStore; the test reaches into its internals (test code only)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return "<MemoryStore>"

    def store(self) -> MemoryStore:
        return self._store

    def rows(self, run_id: str) -> list[Row]:
        run = self._store._runs[run_id]
        return (
            [Row("frame", seq, data) for seq, data in enumerate(run.frames)]
            + [Row("chunk", at, d, name=n) for n, vs in run.values.items() for at, d in vs]
            + [Row("entry", at, data, pos=i) for i, (at, data) in enumerate(run.journal)]
        )

    def replace(self, run_id: str, row: Row, data: bytes) -> None:
        run = self._store._runs[run_id]
        if row.kind == "frame":
            run.frames[row.seq] = data
        elif row.kind == "chunk":
            run.values[row.name] = [
                (at, data if at == row.seq else old) for at, old in run.values[row.name]
            ]
        else:
            run.journal[row.pos] = (row.seq, data)

    def snapshot(self) -> object:
        store = self._store
        return copy.deepcopy((store._runs, store._by_checkpoint, store._leases))

    def clone(self) -> MemoryBackend:
        twin = MemoryStore()
        twin._runs = copy.deepcopy(self._store._runs)
        twin._by_checkpoint = dict(self._store._by_checkpoint)
        twin._leases = dict(self._store._leases)
        return MemoryBackend(twin)


class PostgresBackend:
    """A PostgreSQL schema; the test reads and writes its tables with psycopg."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._prefix = f'"{schema}".'

    def __repr__(self) -> str:
        return f"<PostgreSQL schema {self.schema}>"

    def store(self) -> PostgresStore:
        return PostgresStore(PG_DSN, schema=self.schema)

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            return conn.execute(sql.format("%s", p=self._prefix), params).fetchall()

    def rows(self, run_id: str) -> list[Row]:
        return _sql_rows(self._fetch, run_id)

    def replace(self, run_id: str, row: Row, data: bytes) -> None:
        import psycopg

        table, column, where = _WHERE[row.kind]
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            done = conn.execute(
                f"UPDATE {self._prefix}{table} SET {column} = %s "
                f"WHERE run_id = %s AND {where.format('%s')}",
                (data, run_id, *_key(row)),
            )
            assert done.rowcount == 1

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every stepgraph table (leases are advisory locks, not rows)."""
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            dump = {
                table: conn.execute(
                    f"SELECT * FROM {self._prefix}{table} ORDER BY {order}"
                ).fetchall()
                for table, order in _TABLES.items()
            }
        assert dump["stepgraph_runs"], "the dump must see the stored runs"
        return dump


def stored_run(
    backend: Backend, serializer: str, mode: str, run_id: str, infos: Sequence[Any]
) -> Stored:
    stored = Stored(
        serializer=serializer,
        mode=mode,
        run_id=run_id,
        checkpoints=tuple((info.seq, info.id) for info in infos),
        rows=tuple(backend.rows(run_id)),
    )
    kinds = {row.kind for row in stored.targets}
    assert kinds == ({"frame", "chunk"} if mode == "superstep" else {"frame", "entry"}), kinds
    return stored


async def play_and_describe(backend: Backend, serializer: str, mode: str) -> Stored:
    store = backend.store()
    try:
        run_id = await play(store, serializer, mode)
        infos = await store.list_checkpoints(run_id)
    finally:
        await _close(store)
    return stored_run(backend, serializer, mode, run_id, infos)


async def _close(store: Store) -> None:
    if isinstance(store, SqliteStore):
        store.close()
    elif isinstance(store, PostgresStore):
        await store.aclose()


# -- resuming, and what must happen ----------------------------------------------------------


class _WentOn(RunObserver):
    """Resolves ``went_on`` once the kernel took the resumed run's first tick: it loaded."""

    def __init__(self, went_on: asyncio.Future[BaseException | None]) -> None:
        self.went_on = went_on

    def tick(self, run: Any, tick: Any, commands: Any) -> None:
        if isinstance(tick, RunResumed) and not self.went_on.done():
            self.went_on.set_result(None)


async def _ending(handler: WorkflowHandler) -> BaseException | None:
    try:
        await handler
    except Exception as exc:
        return exc
    return None


async def attempt(store: Store, stored: Stored, checkpoint_id: str | None) -> BaseException | None:
    """Resume ``stored`` (a fork when ``checkpoint_id``): the error it raised, or None when
    the load worked and the run went on (then it is stopped at once, with ``crash``)."""
    before = asyncio.all_tasks()
    went_on: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    wf = Tally(
        store=store, serializer=stored.serializer, mode=stored.mode, observers=[_WentOn(went_on)]
    )
    handler = wf.resume(stored.run_id, checkpoint_id=checkpoint_id)
    ended = asyncio.ensure_future(_ending(handler))
    await asyncio.wait([ended, went_on], return_when=asyncio.FIRST_COMPLETED)
    # A tick the kernel refuses ends the run before the observers hear of it: a run that
    # is still going once the observer heard of RunResumed is one whose load worked.
    going = not handler.done()
    if going:
        crash(handler)  # it must not go on writing to the store
    error = await ended
    await _settle(before)
    return None if going else error


def assert_refused(
    error: BaseException | None, run_id: str, checkpoint_id: str, *, version: bool = False
) -> None:
    """``error`` is a CheckpointError naming the run and the checkpoint (and "version")."""
    assert error is not None, f"resuming went on from corrupt checkpoint {checkpoint_id!r}"
    assert isinstance(error, CheckpointError), (
        f"expected CheckpointError, got {type(error).__name__}: {error}"
    )
    text = str(error)
    assert repr(run_id) in text, f"the run {run_id!r} is not named: {text}"
    assert repr(checkpoint_id) in text, f"the checkpoint {checkpoint_id!r} is not named: {text}"
    assert (error.run_id, error.checkpoint_id) == (run_id, checkpoint_id)
    if version:
        assert "version" in text, f"a wrong version is not said to be one: {text}"


async def resume_every_way(
    backend: Backend, stored: Stored, row: Row, *, version: bool = False
) -> None:
    """Every resume that reads ``row`` raises CheckpointError and changes nothing stored."""
    before = backend.snapshot()
    for checkpoint_id, read in stored.readers(row):
        store = backend.store()
        try:
            error = await attempt(store, stored, checkpoint_id)
        finally:
            await _close(store)
        assert_refused(error, stored.run_id, read, version=version)
        assert backend.snapshot() == before, "a refused resume changed what the store holds"


# -- corruptions --------------------------------------------------------------------------------

_HEADER = 4 + 2 + 1 + 32  # magic | format version | serializer | SHA-256


class Corruption:
    """Bytes to store instead of a record's, and how they were made (a plain class: see Row)."""

    __slots__ = ("data", "how")

    def __init__(self, how: str, data: bytes) -> None:
        self.how = how
        self.data = data

    def __repr__(self) -> str:
        return f"<{self.how}: {len(self.data)} bytes>"


def _payload(data: bytes) -> bytes:
    return data[_HEADER:]


def _serializer_of(data: bytes) -> Serializer:
    return serializer_named("json" if data[6] == 0 else "pickle")


def _flip(data: bytes, bit: int) -> bytes:
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def truncated(row: Row) -> st.SearchStrategy[Corruption]:
    data = row.data or b""
    return st.integers(0, len(data) - 1).map(lambda n: Corruption("truncated", data[:n]))


def flipped(row: Row) -> st.SearchStrategy[Corruption]:
    data = row.data or b""
    return st.integers(0, len(data) * 8 - 1).map(
        lambda bit: Corruption("flipped", _flip(data, bit))
    )


def _string_bytes(payload: bytes) -> list[int]:
    """The offsets of the bytes inside the JSON string literals of ``payload``."""
    inside, escaped, found = False, False, []
    for offset, byte in enumerate(payload):
        if inside and (escaped or byte not in b'"\\'):
            found.append(offset)
            escaped = False
        elif inside and byte == ord("\\"):
            found.append(offset)
            escaped = True
        elif byte == ord('"'):
            inside = not inside
    return found


def _has_json_strings(row: Row) -> bool:
    data = row.data or b""
    return data[6] == 0 and bool(_string_bytes(_payload(data)))


def flipped_in_a_string(row: Row) -> st.SearchStrategy[Corruption]:
    """A bit flipped inside a string of a JSON payload (json records only)."""
    data = row.data or b""
    offsets = _string_bytes(_payload(data))
    assert offsets, "a JSON record without a string"
    return st.tuples(st.sampled_from(offsets), st.integers(0, 7)).map(
        lambda at: Corruption("flipped in a string", _flip(data, (_HEADER + at[0]) * 8 + at[1]))
    )


def other_version(row: Row) -> st.SearchStrategy[Corruption]:
    data = row.data or b""
    return (
        st.integers(0, 0xFFFF)
        .filter(lambda v: v != FORMAT_VERSION)
        .map(lambda v: Corruption("version", data[:4] + v.to_bytes(2, "big") + data[6:]))
    )


# Values of a type no (lax) validation turns into the field's type.
_TEXT = st.text(max_size=6).map(lambda s: "not a number: " + s)
_LISTS = st.lists(st.integers(), max_size=3)
_DICTS = st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
_WRONG: dict[str, st.SearchStrategy[Any]] = {
    "int": st.one_of(st.none(), _TEXT, _LISTS, _DICTS, st.integers(-9, 9).map(lambda n: n + 0.5)),
    "float": st.one_of(st.none(), _TEXT, _LISTS, _DICTS),
    "float?": st.one_of(_TEXT, _LISTS, _DICTS),
    "bool": st.one_of(st.none(), _TEXT, _LISTS, _DICTS, st.integers(2, 99)),
    "str": st.one_of(
        st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(), _LISTS, _DICTS
    ),
    "list": st.one_of(st.none(), st.integers(), _TEXT, _DICTS),
    "list?": st.one_of(st.integers(), _TEXT, _DICTS),
    "dict": st.one_of(st.none(), st.integers(), _TEXT, _LISTS),
}
_INTS = "superstep next_invocation running queued external_sent asked merges_seen result outputs"
_LISTS_FIELDS = (
    "invocations blocked resumable outbox waiters awaited_types unclaimed inputs answers "
    "requests pending_merges collectors fan_in_buffers recent store_keys objects"
)
FRAME_KINDS: dict[str, str | None] = {
    **dict.fromkeys(("run_id", "mode", "status"), "str"),
    **dict.fromkeys(("started_at", "now"), "float"),
    **dict.fromkeys(_INTS.split(), "int"),
    **dict.fromkeys(_LISTS_FIELDS.split(), "list"),
    **dict.fromkeys(("nodes", "timers"), "dict"),
    "merging": "bool",
    "timeout": "float?",
    "stop": "list?",
    "failure": None,  # any value
}
HEADER_KINDS: dict[str, str] = {
    "workflow": "str",
    "kind": "str",
    "steps": "dict",
    "request_prefix": "str",
    "serializer": "str",
}


def _rewrapped(how: str, serializer: Serializer, value: object) -> Corruption:
    return Corruption(how, wrap(serializer, serializer.dumps(value, "a corruption")))


def _frame_shapes(data: bytes) -> st.SearchStrategy[Corruption]:
    ser = _serializer_of(data)
    content = ser.loads(_payload(data))

    def changed(part: str, key: str, value: object) -> Corruption:
        twin = copy.deepcopy(content)
        twin[part][key] = value
        return _rewrapped(f"wrong types: {part}[{key!r}] = {value!r}", ser, twin)

    def dropped(part: str, key: str) -> Corruption:
        twin = copy.deepcopy(content)
        del twin[part][key]
        return _rewrapped(f"wrong types: {part}[{key!r}] missing", ser, twin)

    typed = [("frame", k, kind) for k, kind in FRAME_KINDS.items() if kind] + [
        ("header", k, kind) for k, kind in HEADER_KINDS.items()
    ]
    keys = [("frame", k) for k in FRAME_FIELDS] + [("header", k) for k in HEADER_KINDS]
    return st.one_of(
        st.sampled_from(typed).flatmap(
            lambda t: _WRONG[t[2]].map(lambda value: changed(t[0], t[1], value))
        ),
        st.sampled_from(keys).map(lambda k: dropped(*k)),
        st.tuples(st.sampled_from(["header", "frame"]), st.text(min_size=1, max_size=8))
        .filter(lambda t: t[1] not in content[t[0]])
        .map(lambda t: changed(t[0], t[1], 0)),
        st.sampled_from(
            [None, 7, "a checkpoint", ["header", "frame"], {"header": content["header"]}]
        ).map(lambda value: _rewrapped(f"wrong types: the content is {value!r}", ser, value)),
        _cut_payload(data),
        _other_serializer(data),
    )


def _cut_payload(data: bytes) -> st.SearchStrategy[Corruption]:
    """The payload cut short, under a recomputed checksum."""
    ser, payload = _serializer_of(data), _payload(data)
    return st.integers(0, len(payload) - 1).map(
        lambda n: Corruption(f"wrong types: payload cut at {n}", wrap(ser, payload[:n]))
    )


def _other_serializer(data: bytes) -> st.SearchStrategy[Corruption]:
    """The payload under the other serializer's code (the checksum covers the payload)."""
    other = serializer_named("pickle" if data[6] == 0 else "json")
    return st.just(Corruption("wrong types: the other serializer", wrap(other, _payload(data))))


# Encoded JSON no value decodes from: a shape the journal codec refuses.
_MALFORMED_JSON = (
    {"two": 1, "keys": 2},
    {"$no such tag": 1},
    {"$tuple": 5},
    {"$model": ["no_such_module_here:Nothing", {}]},
    {"$model": [f"{Labelled.__module__}:{Labelled.__qualname__}", {"value": "x", "label": 1}]},
    {"$dataclass": [f"{Labelled.__module__}:{Labelled.__qualname__}", {"value": 1}]},
)


def _chunk_shapes(row: Row) -> st.SearchStrategy[Corruption]:
    data = row.data or b""
    ser = _serializer_of(data)
    if ser.name == "pickle":  # a pickle holds any value: only a malformed pickle is wrong
        return st.one_of(_cut_payload(data), _other_serializer(data))
    shapes = [
        st.sampled_from(_MALFORMED_JSON).map(
            lambda raw: Corruption(f"wrong types: {raw!r}", wrap(ser, json.dumps(raw).encode()))
        ),
        _other_serializer(data),
    ]
    if row.name == "s:last":  # an event: each field has its type
        raw = json.loads(_payload(data))
        assert set(raw) == {"$model"}

        def field(key_value: tuple[str, Any]) -> Corruption:
            key, value = key_value
            twin = copy.deepcopy(raw)
            twin["$model"][1][key] = encode(value)
            return Corruption(
                f"wrong types: event field {key} = {value!r}", wrap(ser, json.dumps(twin).encode())
            )

        shapes.append(
            st.one_of(
                st.tuples(st.just("value"), _WRONG["int"]),
                st.tuples(st.just("label"), _WRONG["str"]),
            ).map(field)
        )
    return st.one_of(*shapes)


def _entry_shapes(data: bytes) -> st.SearchStrategy[Corruption]:
    ser = _serializer_of(data)
    not_ticks: list[object] = [None, 7, "run_resumed", ["kind", "at"]]
    not_ticks.append({"kind": "run_resumed", "at": 1.0})  # a dict, not a tick
    not_ticks.append(Labelled(value=1, label="not a tick"))
    return st.one_of(
        st.sampled_from(not_ticks).map(
            lambda value: _rewrapped(f"wrong types: the entry is {value!r}", ser, value)
        ),
        _cut_payload(data),
        _other_serializer(data),
    )


def wrong_types(row: Row) -> st.SearchStrategy[Corruption]:
    """A record with a right checksum and a wrong shape (see the module docstring)."""
    data = row.data or b""
    if row.kind == "frame":
        return _frame_shapes(data)
    if row.kind == "chunk":
        return _chunk_shapes(row)
    return _entry_shapes(data)


def any_corruption(row: Row) -> st.SearchStrategy[Corruption]:
    strategies = [truncated(row), flipped(row), other_version(row), wrong_types(row)]
    if _has_json_strings(row):
        strategies.append(flipped_in_a_string(row))
    return st.one_of(*strategies)


# -- the stored runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[SqliteBackend, Stored]]:
    """One SQLite file per scenario, never written again: examples work on copies."""
    made = []
    for serializer, mode in SCENARIOS:
        backend = SqliteBackend(tmp_path_factory.mktemp("pristine") / f"{serializer}-{mode}.db")
        made.append((backend, asyncio.run(play_and_describe(backend, serializer, mode))))
    return made


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corrupted") / "runs.db"


@pytest.fixture(scope="module")
def memory_runs() -> list[tuple[MemoryBackend, Stored]]:
    made = []
    for serializer, mode in SCENARIOS:
        backend = MemoryBackend(MemoryStore())
        made.append((backend, asyncio.run(play_and_describe(backend, serializer, mode))))
    return made


@pytest.fixture(scope="module")
def postgres_runs() -> Iterator[list[tuple[PostgresBackend, Stored]]]:
    require_pg()
    with pg_schema() as schema:
        backend = PostgresBackend(schema)
        yield [
            (backend, asyncio.run(play_and_describe(backend, serializer, mode)))
            for serializer, mode in SCENARIOS
        ]


def _draw(
    data: st.DataObject,
    runs: Sequence[tuple[Any, Stored]],
    corruption: Callable[[Row], st.SearchStrategy[Corruption]],
    *,
    where: Callable[[Row], bool] = lambda row: True,
) -> tuple[Any, Stored, Row, Corruption]:
    runs = [r for r in runs if any(where(row) for row in r[1].targets)]
    backend, stored = data.draw(st.sampled_from(runs), label="stored run")
    rows = [row for row in stored.targets if where(row)]
    row = data.draw(st.sampled_from(rows), label="record")
    return backend, stored, row, data.draw(corruption(row), label="corruption")


def check_sqlite(
    sqlite_runs: Sequence[tuple[SqliteBackend, Stored]],
    scratch: Path,
    data: st.DataObject,
    corruption: Callable[[Row], st.SearchStrategy[Corruption]],
    *,
    where: Callable[[Row], bool] = lambda row: True,
) -> None:
    pristine, stored, row, bad = _draw(data, sqlite_runs, corruption, where=where)
    backend = pristine.copy_to(scratch)
    backend.replace(stored.run_id, row, bad.data)
    asyncio.run(resume_every_way(backend, stored, row, version=bad.how == "version"))


END_TO_END = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Per kind of corruption, in a SQLite file: 5 kinds, 200 corrupt stores in all."""

SMALL = settings(END_TO_END, max_examples=25)
"""The MemoryStore and PostgresStore variants (any kind of corruption)."""

DECODING = settings(END_TO_END, max_examples=1500)
"""The decoding functions alone: no store, no event loop."""


# -- sanity: the stored runs can be resumed, and the harness sees it ------------------------------


def test_an_intact_store_resumes_from_every_checkpoint_and_the_harness_sees_it(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path
) -> None:
    async def every_way(backend: SqliteBackend, stored: Stored) -> None:
        for checkpoint_id in [None, *(cp for _, cp in stored.checkpoints)]:
            store = backend.store()
            try:
                assert await attempt(store, stored, checkpoint_id) is None
            finally:
                store.close()

    for pristine, stored in sqlite_runs:
        asyncio.run(every_way(pristine.copy_to(scratch), stored))


def test_the_wrong_type_tables_cover_every_field_of_a_stored_checkpoint() -> None:
    assert set(FRAME_KINDS) == set(FRAME_FIELDS)
    assert set(HEADER_KINDS) == set(Header.model_fields)


# -- SQLite, end to end: each kind of corruption --------------------------------------------------


@END_TO_END
@given(data=st.data())
def test_a_truncated_stored_record_raises_checkpoint_error_and_changes_nothing(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path, data: st.DataObject
) -> None:
    check_sqlite(sqlite_runs, scratch, data, truncated)


@END_TO_END
@given(data=st.data())
def test_a_flipped_bit_anywhere_in_a_stored_checkpoint_raises_checkpoint_error_and_changes_nothing(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path, data: st.DataObject
) -> None:
    check_sqlite(sqlite_runs, scratch, data, flipped)


@END_TO_END
@given(data=st.data())
def test_a_flipped_bit_inside_a_json_string_raises_checkpoint_error_and_changes_nothing(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path, data: st.DataObject
) -> None:
    check_sqlite(sqlite_runs, scratch, data, flipped_in_a_string, where=_has_json_strings)


@END_TO_END
@given(data=st.data())
def test_another_format_version_raises_checkpoint_error_saying_version_and_changes_nothing(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path, data: st.DataObject
) -> None:
    check_sqlite(sqlite_runs, scratch, data, other_version)


@END_TO_END
@given(data=st.data())
def test_a_checksummed_record_of_the_wrong_shape_raises_checkpoint_error_and_changes_nothing(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path, data: st.DataObject
) -> None:
    check_sqlite(sqlite_runs, scratch, data, wrong_types)


def test_a_bit_flipped_in_a_json_string_that_stays_valid_json_is_caught_by_the_checksum(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path
) -> None:
    pristine, stored = next(r for r in sqlite_runs if r[1].serializer == "json")
    row = next(r for r in stored.targets if r.kind == "frame")
    data = row.data or b""
    at = data.index(b'"Tally"') + 1  # the workflow's name in the header: "Tally" -> "Ually"
    corrupt = _flip(data, at * 8)
    assert json.loads(_payload(corrupt)) != json.loads(_payload(data))  # still valid JSON
    backend = pristine.copy_to(scratch)
    backend.replace(stored.run_id, row, corrupt)
    asyncio.run(resume_every_way(backend, stored, row))


# -- the decoding functions alone --------------------------------------------------------------

_IDS = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)


def decode(row: Row, data: bytes, run_id: str, checkpoint_id: str) -> object:
    if row.kind == "frame":
        return read_frame(data, run_id=run_id, checkpoint_id=checkpoint_id)
    if row.kind == "chunk":
        return decode_chunk(row.name, data, run_id=run_id, checkpoint_id=checkpoint_id)
    return decode_entry(data, run_id=run_id, checkpoint_id=checkpoint_id)


@DECODING
@given(data=st.data(), run_id=_IDS, checkpoint_id=_IDS)
def test_the_decoding_functions_refuse_every_corruption_naming_the_run_and_the_checkpoint(
    sqlite_runs: list[tuple[SqliteBackend, Stored]],
    data: st.DataObject,
    run_id: str,
    checkpoint_id: str,
) -> None:
    _, _, row, bad = _draw(data, sqlite_runs, any_corruption)
    decode(row, row.data or b"", run_id, checkpoint_id)  # the record as stored is fine
    with pytest.raises(CheckpointError) as raised:
        decode(row, bad.data, run_id, checkpoint_id)
    assert_refused(raised.value, run_id, checkpoint_id, version=bad.how == "version")


# -- MemoryStore and PostgresStore --------------------------------------------------------------


@SMALL
@given(data=st.data())
def test_any_corruption_in_a_memory_store_raises_checkpoint_error_and_changes_nothing(
    memory_runs: list[tuple[MemoryBackend, Stored]], data: st.DataObject
) -> None:
    pristine, stored, row, bad = _draw(data, memory_runs, any_corruption)
    backend = pristine.clone()
    backend.replace(stored.run_id, row, bad.data)
    asyncio.run(resume_every_way(backend, stored, row, version=bad.how == "version"))


@SMALL
@given(data=st.data())
def test_any_corruption_in_a_postgres_store_raises_checkpoint_error_and_changes_nothing(
    postgres_runs: list[tuple[PostgresBackend, Stored]], data: st.DataObject
) -> None:
    backend, stored, row, bad = _draw(data, postgres_runs, any_corruption)
    backend.replace(stored.run_id, row, bad.data)
    try:
        asyncio.run(resume_every_way(backend, stored, row, version=bad.how == "version"))
    finally:
        backend.replace(stored.run_id, row, row.data or b"")  # the next example's store


# -- unknown ids ----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "runs.db")
        yield sqlite
        sqlite.close()
    else:
        require_pg()
        with pg_schema() as schema:
            postgres = PostgresStore(PG_DSN, schema=schema)
            yield postgres
            await postgres.aclose()


@pytest.mark.parametrize("checkpoint_id", [None, "some-checkpoint"])
async def test_resuming_an_unknown_run_id_raises_run_not_found_naming_it_and_creates_no_run(
    store: Store, checkpoint_id: str | None
) -> None:
    await play(store, "json", "superstep")
    before = await store.list_runs()
    with pytest.raises(RunNotFoundError, match="'nope'") as raised:
        await Tally(store=store).resume("nope", checkpoint_id=checkpoint_id)
    assert isinstance(raised.value, StepgraphError)
    assert await store.list_runs() == before
    assert await store.get_run("nope") is None


async def test_resuming_from_an_unknown_checkpoint_id_raises_checkpoint_not_found_naming_it(
    store: Store,
) -> None:
    run_id = await play(store, "json", "superstep")
    other = await play(store, "json", "superstep")
    foreign = (await store.list_checkpoints(other))[1].id  # a checkpoint, of another run
    runs, checkpoints = await store.list_runs(), await store.list_checkpoints(run_id)
    for unknown in ("nope", foreign):
        with pytest.raises(CheckpointNotFoundError, match=repr(unknown)) as raised:
            await Tally(store=store).resume(run_id, checkpoint_id=unknown)
        assert isinstance(raised.value, StepgraphError)
        assert run_id in str(raised.value)
        assert await store.list_runs() == runs
        assert await store.list_checkpoints(run_id) == checkpoints


# -- bugs found while writing these tests, fixed since -----------------------------------------


def _rewritten(stored_data: bytes, change: Callable[[Any], Any]) -> bytes:
    ser = _serializer_of(stored_data)
    return wrap(ser, ser.dumps(change(ser.loads(_payload(stored_data))), "a corruption"))


def _corrupt_and_resume(
    backend: SqliteBackend, stored: Stored, row: Row, change: Callable[[Any], Any]
) -> None:
    backend.replace(stored.run_id, row, _rewritten(row.data or b"", change))
    asyncio.run(resume_every_way(backend, stored, row))


def _renamed_node(content: dict[str, Any]) -> dict[str, Any]:
    nodes = content["frame"]["nodes"]
    nodes["no_such_step"] = nodes.pop("first")
    return content


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_frame_naming_a_step_the_workflow_lacks_raises_checkpoint_error_and_changes_nothing(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path, serializer: str
) -> None:
    pristine, stored = next(r for r in sqlite_runs if r[1].serializer == serializer)
    latest = max(seq for seq, _ in stored.checkpoints)  # read by a fork and by a resume
    row = next(r for r in stored.targets if r.kind == "frame" and r.seq == latest)
    _corrupt_and_resume(pristine.copy_to(scratch), stored, row, _renamed_node)


@pytest.mark.parametrize(
    ("key", "value"), [("superstep", "3"), ("merging", "yes"), ("merging", 1), ("queued", True)]
)
def test_a_frame_field_of_a_convertible_wrong_type_raises_checkpoint_error(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path, key: str, value: object
) -> None:
    pristine, stored = next(r for r in sqlite_runs if r[1].serializer == "json")
    row = next(r for r in stored.targets if r.kind == "frame" and r.seq == 1)

    def change(content: dict[str, Any]) -> dict[str, Any]:
        content["frame"][key] = value
        return content

    _corrupt_and_resume(pristine.copy_to(scratch), stored, row, change)


@pytest.mark.parametrize(
    ("tick", "key", "value"),
    [
        ("StateWritten", "at", "not a time"),
        ("StateWritten", "writes", 5),
        ("StepCompleted", "invocation", "x"),
        ("StepCompleted", "emitted", 5),
        ("ExternalEventReceived", "event", 5),
    ],
)
@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_journal_tick_with_a_field_of_the_wrong_type_raises_checkpoint_error(
    sqlite_runs: list[tuple[SqliteBackend, Stored]],
    scratch: Path,
    serializer: str,
    tick: str,
    key: str,
    value: object,
) -> None:
    pristine, stored = next(
        r for r in sqlite_runs if r[1].serializer == serializer and r[1].mode == "async"
    )
    ser = serializer_named(serializer)
    row = next(
        r
        for r in stored.targets
        if r.kind == "entry" and type(ser.loads(_payload(r.data or b""))).__name__ == tick
    )

    def change(entry: Any) -> Any:
        object.__setattr__(entry, key, value)
        return entry

    _corrupt_and_resume(pristine.copy_to(scratch), stored, row, change)
