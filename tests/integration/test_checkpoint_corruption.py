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
of every tick). Hypothesis then takes one stored record (a checkpoint, a chunk, a journal
entry), corrupts it *in the store itself* (the SQLite file; MemoryStore's internals;
PostgreSQL's tables) and resumes every way that reads that record: from the latest
checkpoint, and as a fork from the checkpoint (``checkpoint_id=``). Each resume must raise
``CheckpointError`` naming the run and the checkpoint, and a dump of the store must be the
same before and after. The decoding functions (``read_frame``, ``decode_chunk``,
``decode_entry``) get the same corruptions, many more of them, without an event loop.

A stored checkpoint is an envelope (magic | format version | serializer | CRC-32 |
payload) whose payload is ``header size (4 bytes, big-endian) | header | frame part``:
the header is the serializer's dump of a ``Header``; the frame part is
``serializer.dump_frame(frame, objects)``: JSON ``[frame, [encoded object, ...]]`` (the
frame JSON-native, each object through the journal codec), pickle ``(frame, objects)``.
The frame refers to the objects by their position in that table.

"Wrong types" means a record whose checksum is right (recomputed with ``wrap``) but whose
content has the wrong shape. In a checkpoint, in its header part (another type, a key
missing or added, a field of a type no validation accepts, cut short, a wrong header
size), its frame part (the same, for the frame; a required field missing: the others
may be left out), its object table (not a list; an object the codec cannot read back, an
event field of the wrong type; an object missing, or a reference past the table's end:
those are found when the frame is restored) or as a whole (not a frame and a table, cut
short, under the other serializer's code). In a chunk or a journal entry: a value the
codec cannot read back, an event field of the wrong type, not a tick, cut short, the
other serializer. Values pydantic's lax mode converts (``"3"`` for an int, ``"yes"`` for
a bool) are not drawn: the tests at the end check them one by one.

A resume whose load works is noticed by an observer (the kernel takes its ``RunResumed``
tick) and stopped with ``crash``, so a missed corruption fails its test instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import pickle
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
from stepgraph.journal.codec import encode, import_class
from stepgraph.stores import MemoryStore, PostgresStore, SqliteStore, Store
from stepgraph.stores.base import checkpoint_id as id_of_checkpoint
from stepgraph.testing import crash, settled
from tests.pg import PG_DSN, pg_schema, require_pg

# -- the workflow -------------------------------------------------------------------------------

TRUSTED = serializer_named("pickle")
"""The decoding functions read as a pickle workflow does (JSON too): the tests' stores are
their own. (A JSON reader refuses a pickle outright: ``test_durable_options.py``.)"""


class Begin(StartEvent):
    n: int


class Counted(Event):
    value: int


class Labelled(Event):
    value: int
    label: str


class Closing(Event):
    value: int


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
    async def finish(self, ctx: Context, ev: HumanResponseEvent) -> Closing:
        await ctx.store.set("label", ev.response)
        return Closing(value=await ctx.store.get("count"))

    @step
    async def close(self, ctx: Context, ev: Closing) -> StopEvent:
        ctx.write_event_to_stream(ev)
        await asyncio.Event().wait()  # the run is crashed here (by ``play``, ``attempt``)
        return StopEvent(result=ev.value)


SCENARIOS = (("json", "superstep"), ("pickle", "superstep"), ("json", "async"), ("pickle", "async"))
"""(serializer, mode) of each stored run the corruptions are drawn from."""


async def _settle(before: set[asyncio.Task[Any]]) -> None:
    """Let the tasks started since ``before`` end (a crash gives its lease up in a task)."""
    started = asyncio.all_tasks() - before - {asyncio.current_task()}
    await asyncio.gather(*started, return_exceptions=True)


async def play(store: Store, serializer: str, mode: str) -> str:
    """Run Tally until it asks for input; answer; crash in its last step.

    Returns the run's id. The run is left "running" in the store (resuming it reads its
    latest checkpoint, and in async mode the journal after it: what the answer led to,
    after the checkpoint of the pause), its lease given up.
    """
    before = asyncio.all_tasks()
    handler = Tally(store=store, serializer=serializer, mode=mode).run(start_event=Begin(n=3))
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.send_event(HumanResponseEvent(response="yes"))  # stored before it returns
        elif isinstance(event, Closing):
            await settled(handler)
            crash(handler)
            break
    with contextlib.suppress(WorkflowCancelled):
        await handler
    await _settle(before)
    return handler.run_id


# -- what is stored, and which resumes read it -------------------------------------------------


class Row:
    """One stored record of a run: a checkpoint (header, frame, object table), a chunk or a
    journal entry.

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
        if row.kind == "entry":  # replayed by a resume from the checkpoint it follows, no fork
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


_WHERE = {  # where a record is: table, column, and the WHERE clause after its run_id
    # SQLite keys a checkpoint by (run rowid << 32) | seq, and keeps run_id and seq as
    # plain columns: this finds it by scan, the same clause in both databases.
    "frame": ("stepgraph_checkpoints", "frame", "seq = {0}"),
    "chunk": ("stepgraph_chunks", "data", "name = {0} AND seq = {0}"),
    "entry": ("{j}", "entry", "after_seq = {0} AND pos = {0}"),  # {j}: the journal's table
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
    entries = fetch("SELECT after_seq, pos, entry FROM {p}{j} WHERE run_id = {0}", (run_id,))
    return sorted(
        [Row("frame", seq, bytes(data)) for seq, data in frames]
        + [Row("chunk", seq, None if d is None else bytes(d), name=n) for n, seq, d in chunks]
        + [Row("entry", seq, bytes(data), pos=pos) for seq, pos, data in entries],
        key=lambda r: (r.kind, r.seq, r.name, r.pos),
    )


_SQLITE_DUMP = {  # each table's rows (every column), in primary-key order
    # the runs' rowids too: a checkpoint's key is made of its run's rowid
    "stepgraph_runs": ("rowid, *", "rowid"),
    "stepgraph_checkpoints": ("*", "key"),
    "stepgraph_chunks": ("*", "run_id, name, seq"),
    "stepgraph_entries": ("*", "key"),
    "stepgraph_leases": ("*", "run_id"),
}


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
            return conn.execute(sql.format("?", p="", j="stepgraph_entries"), params).fetchall()

    def rows(self, run_id: str) -> list[Row]:
        return _sql_rows(self._fetch, run_id)

    def replace(self, run_id: str, row: Row, data: bytes) -> None:
        table, column, where = _WHERE[row.kind]
        table = table.format(j="stepgraph_entries")
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
                table: conn.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()
                for table, (columns, order) in _SQLITE_DUMP.items()
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
            + [
                Row("entry", after, data, pos=pos)
                for after, entries in run.journal.items()
                for pos, data in enumerate(entries)
            ]
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
            run.journal[row.seq][row.pos] = data

    def snapshot(self) -> object:
        store = self._store
        return copy.deepcopy((store._runs, store._leases))

    def clone(self) -> MemoryBackend:
        twin = MemoryStore()
        twin._runs = copy.deepcopy(self._store._runs)
        twin._leases = dict(self._store._leases)
        return MemoryBackend(twin)


_POSTGRES_DUMP = {  # each table's rows in primary-key order
    "stepgraph_runs": "run_id",
    "stepgraph_checkpoints": "run_id, seq",
    "stepgraph_chunks": "run_id, name, seq",
    "stepgraph_journal": "run_id, after_seq, pos",
}


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
            return conn.execute(
                sql.format("%s", p=self._prefix, j="stepgraph_journal"), params
            ).fetchall()

    def rows(self, run_id: str) -> list[Row]:
        return _sql_rows(self._fetch, run_id)

    def replace(self, run_id: str, row: Row, data: bytes) -> None:
        import psycopg

        table, column, where = _WHERE[row.kind]
        table = table.format(j="stepgraph_journal")
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
                for table, order in _POSTGRES_DUMP.items()
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
    # checkpoints are numbered 0, 1, 2, ... and their ids are "<run id>:<seq>"
    assert stored.checkpoints == tuple(
        (seq, id_of_checkpoint(run_id, seq)) for seq in range(len(infos))
    ), stored.checkpoints
    assert sorted(row.seq for row in stored.rows if row.kind == "frame") == list(range(len(infos)))
    kinds = {row.kind for row in stored.targets}
    # (in async mode, the run's pause is a checkpoint too, with the state it changed)
    assert kinds == ({"frame", "chunk"} if mode == "superstep" else {"frame", "entry", "chunk"})
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

_ENVELOPE = 4 + 2 + 1 + 4  # magic | format version | serializer | CRC-32


class Corruption:
    """Bytes to store instead of a record's, and how they were made (a plain class: see Row)."""

    __slots__ = ("data", "how")

    def __init__(self, how: str, data: bytes) -> None:
        self.how = how
        self.data = data

    def __repr__(self) -> str:
        return f"<{self.how}: {len(self.data)} bytes>"


def _payload(data: bytes) -> bytes:
    return data[_ENVELOPE:]


def _serializer_of(data: bytes) -> Serializer:
    return serializer_named("json" if data[6] == 0 else "pickle")


def _flip(data: bytes, bit: int) -> bytes:
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


# A checkpoint's payload: header size (4 bytes) | header | frame part (see the docstring).


def _parts(data: bytes) -> tuple[bytes, bytes]:
    """The header and the frame part of a stored checkpoint."""
    payload = _payload(data)
    size = int.from_bytes(payload[:4], "big")
    return payload[4 : 4 + size], payload[4 + size :]


def _checkpoint(ser: Serializer, header: bytes, body: bytes, *, size: int | None = None) -> bytes:
    """A checkpoint of these parts, its checksum right (its header size ``size`` if given)."""
    size = len(header) if size is None else size
    return wrap(ser, size.to_bytes(4, "big") + header + body)


def _load_body(ser: Serializer, body: bytes) -> Any:
    """A frame part as stored: JSON ``[frame, [encoded object, ...]]`` (the objects left as
    the codec wrote them), pickle ``(frame, objects)``."""
    return json.loads(body) if ser.name == "json" else pickle.loads(body)


def _dump_body(ser: Serializer, content: Any) -> bytes:
    """What :func:`_load_body` read (or anything else) as a frame part."""
    if ser.name == "json":
        return json.dumps(content, separators=(",", ":")).encode()
    return pickle.dumps(content, protocol=pickle.HIGHEST_PROTOCOL)


def _pair(ser: Serializer, frame: Any, objects: Any) -> Any:
    """A frame and its object table, as ``dump_frame`` puts them together."""
    return [frame, objects] if ser.name == "json" else (frame, objects)


def _rewritten_checkpoint(
    data: bytes,
    *,
    header: Callable[[Any], Any] = lambda header: header,
    frame: Callable[[Any], Any] = lambda frame: frame,
    objects: Callable[[list[Any]], list[Any]] = lambda objects: objects,
) -> bytes:
    """A stored checkpoint with its header, frame and object table changed (JSON: the
    objects as the codec wrote them), read back and written again."""
    ser = _serializer_of(data)
    header_bytes, body = _parts(data)
    content, table = _load_body(ser, body)
    return _checkpoint(
        ser,
        ser.dumps(header(ser.loads(header_bytes)), "a test"),
        _dump_body(ser, _pair(ser, frame(content), objects(list(table)))),
    )


def truncated(row: Row) -> st.SearchStrategy[Corruption]:
    data = row.data or b""
    return st.integers(0, len(data) - 1).map(lambda n: Corruption("truncated", data[:n]))


def flipped(row: Row) -> st.SearchStrategy[Corruption]:
    data = row.data or b""
    return st.integers(0, len(data) * 8 - 1).map(
        lambda bit: Corruption("flipped", _flip(data, bit))
    )


def _string_bytes(text: bytes) -> list[int]:
    """The offsets of the bytes inside the JSON string literals of ``text``."""
    inside, escaped, found = False, False, []
    for offset, byte in enumerate(text):
        if inside and (escaped or byte not in b'"\\'):
            found.append(offset)
            escaped = False
        elif inside and byte == ord("\\"):
            found.append(offset)
            escaped = True
        elif byte == ord('"'):
            inside = not inside
    return found


def _string_offsets(row: Row) -> list[int]:
    """The payload offsets of the bytes inside JSON strings of a json record: a checkpoint's
    header and frame part are JSON texts apart (its header size, before them, is not)."""
    data = row.data or b""
    if data[6] != 0:
        return []
    if row.kind != "frame":
        return _string_bytes(_payload(data))
    header, body = _parts(data)
    return [4 + at for at in _string_bytes(header)] + [
        4 + len(header) + at for at in _string_bytes(body)
    ]


def _has_json_strings(row: Row) -> bool:
    return bool(_string_offsets(row))


def flipped_in_a_string(row: Row) -> st.SearchStrategy[Corruption]:
    """A bit flipped inside a string of a JSON payload (json records only)."""
    data = row.data or b""
    offsets = _string_offsets(row)
    assert offsets, "a JSON record without a string"
    return st.tuples(st.sampled_from(offsets), st.integers(0, 7)).map(
        lambda at: Corruption("flipped in a string", _flip(data, (_ENVELOPE + at[0]) * 8 + at[1]))
    )


def other_version(row: Row) -> st.SearchStrategy[Corruption]:
    data = row.data or b""
    return (
        st.integers(0, 0xFFFF)
        .filter(lambda v: v != FORMAT_VERSION)
        .map(lambda v: Corruption("version", data[:4] + v.to_bytes(2, "big") + data[6:]))
    )


# Values of a type no (lax) validation turns into the field's type, by the field's type.
_TEXT = st.text(max_size=6).map(lambda s: "not a number: " + s)
_LISTS = st.lists(st.integers(), max_size=3)
_INT_LISTS = st.lists(st.integers(), min_size=1, max_size=3)
_DICTS = st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
_HALVES = st.integers(-9, 9).map(lambda n: n + 0.5)
_WRONG: dict[str, st.SearchStrategy[Any]] = {
    "str": st.one_of(
        st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(), _LISTS, _DICTS
    ),
    "int": st.one_of(st.none(), _TEXT, _LISTS, _DICTS, _HALVES),
    "int | None": st.one_of(_TEXT, _LISTS, _DICTS, _HALVES),
    "bounds | None": st.one_of(
        st.integers(),
        _TEXT,
        _LISTS,
        st.fixed_dictionaries(
            {
                "max_supersteps": st.one_of(st.integers(-3, 0), _TEXT, _HALVES, st.none()),
                "max_concurrency": st.one_of(st.none(), st.integers(1, 9)),
            }
        ),
        st.fixed_dictionaries(
            {
                "max_supersteps": st.integers(1, 9),
                "max_concurrency": st.one_of(st.integers(-3, 0), _TEXT, _HALVES),
            }
        ),
        st.fixed_dictionaries({"max_supersteps": st.integers(1, 9)}),  # (one missing)
    ),
    "float": st.one_of(st.none(), _TEXT, _LISTS, _DICTS),
    "float | None": st.one_of(_TEXT, _LISTS, _DICTS),
    "bool": st.one_of(st.none(), _TEXT, _LISTS, _DICTS, st.integers(2, 99)),
    "list[list]": st.one_of(st.none(), st.integers(), _TEXT, _DICTS, _INT_LISTS),
    "list[str]": st.one_of(st.none(), st.integers(), _TEXT, _DICTS, _INT_LISTS),
    "list[int]": st.one_of(
        st.none(), st.integers(), _TEXT, _DICTS, st.lists(_TEXT, min_size=1, max_size=3)
    ),
    "list | None": st.one_of(st.integers(), _TEXT, _DICTS),
    "dict[str, list]": st.one_of(
        st.none(),
        st.integers(),
        _TEXT,
        _LISTS,
        st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
    ),
    "dict[str, int] | None": st.one_of(
        st.integers(),
        _TEXT,
        _LISTS,
        st.dictionaries(
            st.text(max_size=3), st.one_of(_TEXT, st.integers(-3, 0)), min_size=1, max_size=2
        ),
    ),
    "dict[str, float]": st.one_of(
        st.none(),
        st.integers(),
        _TEXT,
        _LISTS,
        st.dictionaries(st.text(max_size=3), _TEXT, min_size=1, max_size=2),
    ),
}
_INT_FIELDS = "superstep next_invocation external_sent asked merges_seen outputs"
_ROW_FIELDS = (
    "invocations resumable outbox waiters inputs input_askers answers requests pending_merges "
    "collectors fan_in_buffers"
)
FRAME_KINDS: dict[str, str] = {
    **dict.fromkeys(("run_id", "mode", "status"), "str"),
    **dict.fromkeys(("started_at", "now"), "float"),
    **dict.fromkeys(_INT_FIELDS.split(), "int"),
    "merging": "bool",
    "timeout": "float | None",
    "nodes": "dict[str, list]",
    "timers": "dict[str, float]",
    **dict.fromkeys(_ROW_FIELDS.split(), "list[list]"),
    **dict.fromkeys(("blocked", "store_keys"), "list[str]"),
    **dict.fromkeys(("awaited_types", "unclaimed", "restarts"), "list[int]"),
    "stop": "list | None",
    **dict.fromkeys(("result", "failure"), "int | None"),  # positions in the object table
}
"""Each frame field's type (see ``_Frame`` in ``stepgraph.durability.checkpoints``)."""

FRAME_REQUIRED = ("run_id", "mode", "status", "started_at", "now", "superstep", "next_invocation")
"""The frame fields always written; any other, left out, stands for its default."""

_REFERENCES = {"unclaimed": True, "awaited_types": True, "result": False, "failure": False}
"""Frame fields holding object positions (True: a list of them)."""

HEADER_KINDS: dict[str, str] = {
    "workflow": "str",
    "kind": "str",
    "steps": "dict[str, list]",
    "request_prefix": "str",
    "serializer": "str",
    "source": "str",
    "workers": "dict[str, int] | None",
    "fan_ins": "list | None",
    "bounds": "bounds | None",
}
HEADER_OPTIONAL = {"source", "workers", "fan_ins", "bounds"}  # added since the first release


def _rewrapped(how: str, serializer: Serializer, value: object) -> Corruption:
    return Corruption(how, wrap(serializer, serializer.dumps(value, "a corruption")))


def _typed_fields(raw: Any) -> list[tuple[str, str]]:
    """The int and str fields of an event as the codec writes it (``{"$model": ...}``)."""
    if not isinstance(raw, dict) or set(raw) != {"$model"}:
        return []
    path, fields = raw["$model"]
    kinds = {int: "int", str: "str"}
    return [
        (name, kinds[info.annotation])
        for name, info in import_class(path).model_fields.items()
        if info.annotation in kinds and name in fields
    ]


def _wrong_fields(
    raw: Any, corrupt: Callable[[str, Any], Corruption]
) -> list[st.SearchStrategy[Corruption]]:
    """An event written by the codec (``raw``) with a field of the wrong type, as
    ``corrupt(how, raw event)`` makes it a record ([] for a value that is not an event)."""
    typed = _typed_fields(raw)
    if not typed:
        return []
    path, fields = raw["$model"]

    def field(name: str, value: Any) -> Corruption:
        twin = {"$model": [path, {**fields, name: encode(value)}]}
        return corrupt(f"event field {name} = {value!r}", twin)

    return [
        st.sampled_from(typed).flatmap(
            lambda name_kind: _WRONG[name_kind[1]].map(lambda value: field(name_kind[0], value))
        )
    ]


# Encoded JSON no value decodes from: a shape the journal codec refuses.
_MALFORMED_JSON = (
    {"two": 1, "keys": 2},
    {"$no such tag": 1},
    {"$tuple": 5},
    {"$model": ["no_such_module_here:Nothing", {}]},
    {"$model": [f"{Labelled.__module__}:{Labelled.__qualname__}", {"value": "x", "label": 1}]},
    {"$dataclass": [f"{Labelled.__module__}:{Labelled.__qualname__}", {"value": 1}]},
)


def _checkpoint_shapes(data: bytes, *, restoring: bool) -> st.SearchStrategy[Corruption]:
    """A checkpoint with its header part, frame part or object table (or all of it) of a
    wrong shape; with ``restoring``, also shapes found only when the frame is restored."""
    ser = _serializer_of(data)
    header_bytes, body = _parts(data)
    header = ser.loads(header_bytes)
    frame, objects = _load_body(ser, body)
    objects = list(objects)
    payload_size = len(header_bytes) + len(body)  # after the header size

    def with_header(how: str, value: object) -> Corruption:
        header = ser.dumps(value, "a corruption")
        return Corruption(f"wrong types: {how}", _checkpoint(ser, header, body))

    def with_body(how: str, content: object) -> Corruption:
        corrupt = _checkpoint(ser, header_bytes, _dump_body(ser, content))
        return Corruption(f"wrong types: {how}", corrupt)

    def with_frame(how: str, value: object) -> Corruption:
        return with_body(how, _pair(ser, value, objects))

    def with_table(how: str, value: object) -> Corruption:
        return with_body(how, _pair(ser, frame, value))

    def with_object(at: int) -> Callable[[str, Any], Corruption]:
        def corrupt(how: str, raw: Any) -> Corruption:
            return with_table(f"object {at}: {how}", [*objects[:at], raw, *objects[at + 1 :]])

        return corrupt

    def header_size(size: int) -> Corruption:
        corrupt = _checkpoint(ser, header_bytes, body, size=size)
        return Corruption(f"wrong types: header size {size} (not {len(header_bytes)})", corrupt)

    sizes = [st.integers(0, len(header_bytes) - 1), st.integers(payload_size, 2**32 - 1)]
    if ser.name == "json":  # a pickle ignores what follows it: a longer header still loads
        sizes.append(st.integers(len(header_bytes) + 1, payload_size - 1))
    header_part = st.one_of(
        st.sampled_from(list(HEADER_KINDS.items())).flatmap(
            lambda key_kind: _WRONG[key_kind[1]].map(
                lambda value: with_header(
                    f"header[{key_kind[0]!r}] = {value!r}", {**header, key_kind[0]: value}
                )
            )
        ),
        st.sampled_from([key for key in header if key not in HEADER_OPTIONAL]).map(
            lambda key: with_header(
                f"header[{key!r}] missing", {k: v for k, v in header.items() if k != key}
            )
        ),
        st.text(min_size=1, max_size=8)
        .filter(lambda key: key not in header)
        .map(lambda key: with_header(f"header[{key!r}] added", {**header, key: 0})),
        st.sampled_from([None, 7, "a header", [["workflow", "Tally"]], tuple(header)]).map(
            lambda value: with_header(f"the header is {value!r}", value)
        ),
        st.integers(0, len(header_bytes) - 1).map(
            lambda n: Corruption(
                f"wrong types: header cut at {n}",
                _checkpoint(ser, header_bytes[:n], body),
            )
        ),
        st.one_of(*sizes).map(header_size),
    )
    frame_part = st.one_of(
        st.sampled_from(list(FRAME_KINDS.items())).flatmap(
            lambda key_kind: _WRONG[key_kind[1]].map(
                lambda value: with_frame(
                    f"frame[{key_kind[0]!r}] = {value!r}", {**frame, key_kind[0]: value}
                )
            )
        ),
        st.sampled_from(FRAME_REQUIRED).map(
            lambda key: with_frame(
                f"frame[{key!r}] missing", {k: v for k, v in frame.items() if k != key}
            )
        ),
        st.text(min_size=1, max_size=8)
        .filter(lambda key: key not in FRAME_FIELDS)
        .map(lambda key: with_frame(f"frame[{key!r}] added", {**frame, key: 0})),
        st.sampled_from([None, 7, "a frame", [frame], list(frame)]).map(
            lambda value: with_frame(f"the frame is {value!r}", value)
        ),
    )
    tables: list[object] = [None, 7, "objects", {"0": objects[0]}]
    if ser.name == "pickle":
        tables.append(tuple(objects))  # a tuple, not a list
    table_part = [
        st.sampled_from(tables).map(lambda value: with_table(f"the table is {value!r}", value))
    ]
    if ser.name == "json":  # a pickle's table holds any values
        table_part.append(
            st.tuples(st.integers(0, len(objects) - 1), st.sampled_from(_MALFORMED_JSON)).map(
                lambda at_raw: with_object(at_raw[0])(f"{at_raw[1]!r}", at_raw[1])
            )
        )
        for at, raw in enumerate(objects):
            table_part.extend(_wrong_fields(raw, with_object(at)))
    if restoring:  # read_frame takes them; restoring the frame refuses them

        def past(key: str, n: int) -> Corruption:
            position = len(objects) + n
            value = [position] if _REFERENCES[key] else position
            return with_frame(f"frame[{key!r}] = {value!r}, past the table", {**frame, key: value})

        table_part.append(st.just(with_table("the table without its last object", objects[:-1])))
        table_part.append(st.builds(past, st.sampled_from(list(_REFERENCES)), st.integers(0, 9)))
    containers: list[object] = (
        [[frame], [frame, objects, []], [objects, frame], {"frame": frame, "objects": objects}]
        if ser.name == "json"
        else [[frame, objects], (frame,), (frame, objects, None), (objects, frame)]
    )
    whole = st.one_of(
        st.sampled_from([*containers, frame, None, 7, "a checkpoint"]).map(
            lambda value: with_body(f"the frame part is {value!r}", value)
        ),
        _cut_payload(data),
        _other_serializer(data),
    )
    return st.one_of(header_part, frame_part, st.one_of(*table_part), whole)


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


def _chunk_shapes(row: Row) -> st.SearchStrategy[Corruption]:
    data = row.data or b""
    ser = _serializer_of(data)
    if ser.name == "pickle":  # a pickle holds any value: only a malformed pickle is wrong
        return st.one_of(_cut_payload(data), _other_serializer(data))

    def rewrapped(how: str, raw: Any) -> Corruption:
        return Corruption(f"wrong types: {how}", wrap(ser, json.dumps(raw).encode()))

    raw = json.loads(_payload(data))
    return st.one_of(
        st.sampled_from(_MALFORMED_JSON).map(lambda raw: rewrapped(repr(raw), raw)),
        _other_serializer(data),
        *_wrong_fields(raw, rewrapped),  # an event: each field has its type
    )


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


def wrong_types(row: Row, *, restoring: bool = True) -> st.SearchStrategy[Corruption]:
    """A record with a right checksum and a wrong shape (see the module docstring).

    ``restoring=False`` leaves out the shapes found only when a frame is restored (they
    read: the decoding functions alone take them).
    """
    data = row.data or b""
    if row.kind == "frame":
        return _checkpoint_shapes(data, restoring=restoring)
    if row.kind == "chunk":
        return _chunk_shapes(row)
    return _entry_shapes(data)


def any_corruption(row: Row, *, restoring: bool = True) -> st.SearchStrategy[Corruption]:
    strategies = [
        truncated(row),
        flipped(row),
        other_version(row),
        wrong_types(row, restoring=restoring),
    ]
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


def test_the_corruption_helpers_rewrite_an_intact_checkpoint_into_one_that_reads_the_same(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path
) -> None:
    """What the "wrong types" corruptions are made with changes nothing by itself: a
    corruption is wrong only where it was made wrong."""
    for pristine, stored in sqlite_runs:
        for row in (r for r in stored.rows if r.kind == "frame"):
            data = row.data or b""
            ser = _serializer_of(data)
            header, body = _parts(data)
            assert _checkpoint(ser, header, body) == data
            twin = _rewritten_checkpoint(data)
            ids = {"run_id": stored.run_id, "checkpoint_id": "cp", "trusted": TRUSTED}
            assert read_frame(twin, **ids) == read_frame(data, **ids)  # type: ignore[arg-type]
        latest = max(seq for seq, _ in stored.checkpoints)
        row = next(r for r in stored.rows if r.kind == "frame" and r.seq == latest)
        backend = pristine.copy_to(scratch)
        backend.replace(stored.run_id, row, _rewritten_checkpoint(row.data or b""))
        store = backend.store()
        try:
            assert asyncio.run(attempt(store, stored, None)) is None  # it resumes
        finally:
            store.close()


def test_the_wrong_type_tables_cover_every_field_of_a_stored_checkpoint(
    sqlite_runs: list[tuple[SqliteBackend, Stored]],
) -> None:
    assert set(FRAME_KINDS) == set(FRAME_FIELDS)
    assert set(HEADER_KINDS) == set(Header.model_fields)
    assert set(_REFERENCES) <= set(FRAME_FIELDS)
    assert list(FRAME_FIELDS)[: len(FRAME_REQUIRED)] == list(FRAME_REQUIRED)
    for _, stored in sqlite_runs:
        for row in (r for r in stored.rows if r.kind == "frame"):
            data = row.data or b""
            frame, _ = _load_body(_serializer_of(data), _parts(data)[1])
            assert set(FRAME_REQUIRED) <= set(frame) <= set(FRAME_FIELDS), sorted(frame)
            # a frame of its required fields alone reads with every other field's default
            bare = _rewritten_checkpoint(
                data, frame=lambda frame: {key: frame[key] for key in FRAME_REQUIRED}
            )
            _, read, _ = read_frame(bare, run_id=stored.run_id, checkpoint_id="cp", trusted=TRUSTED)
            assert read == {**FRAME_FIELDS, **{key: frame[key] for key in FRAME_REQUIRED}}


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
    assert _ENVELOPE + 4 < at < _ENVELOPE + 4 + len(_parts(data)[0])
    corrupt = _flip(data, at * 8)
    header, body = _parts(corrupt)
    assert json.loads(header) != json.loads(_parts(data)[0])  # still valid JSON
    assert body == _parts(data)[1]
    backend = pristine.copy_to(scratch)
    backend.replace(stored.run_id, row, corrupt)
    asyncio.run(resume_every_way(backend, stored, row))


# -- the decoding functions alone --------------------------------------------------------------

_IDS = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)


def decode(row: Row, data: bytes, run_id: str, checkpoint_id: str) -> object:
    ids = {"run_id": run_id, "checkpoint_id": checkpoint_id, "trusted": TRUSTED}
    if row.kind == "frame":
        return read_frame(data, **ids)  # type: ignore[arg-type]
    if row.kind == "chunk":
        return decode_chunk(row.name, data, **ids)  # type: ignore[arg-type]
    return decode_entry(data, **ids)  # type: ignore[arg-type]


@DECODING
@given(data=st.data(), run_id=_IDS, checkpoint_id=_IDS)
def test_the_decoding_functions_refuse_every_corruption_naming_the_run_and_the_checkpoint(
    sqlite_runs: list[tuple[SqliteBackend, Stored]],
    data: st.DataObject,
    run_id: str,
    checkpoint_id: str,
) -> None:
    corruption = functools.partial(any_corruption, restoring=False)  # no frame is restored
    _, _, row, bad = _draw(data, sqlite_runs, corruption)
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


@pytest.mark.parametrize("checkpoint_id", [None, "some-checkpoint", "nope:0"])
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
    assert [info.id for info in checkpoints] == [
        id_of_checkpoint(run_id, seq) for seq in range(len(checkpoints))
    ]
    unknowns = ["nope", foreign, run_id, f"{run_id}:", f":{len(checkpoints) - 1}"]
    # a seq the run has not got, or not a seq
    for seq in (len(checkpoints), 2**32 - 1, 2**32 + 1, 2**63, 10**30, -1, "x", "1:1", " 1", "1.0"):
        unknowns.append(f"{run_id}:{seq}")
    for unknown in unknowns:
        with pytest.raises(CheckpointNotFoundError, match=repr(unknown)) as raised:
            await Tally(store=store).resume(run_id, checkpoint_id=unknown)
        assert isinstance(raised.value, StepgraphError)
        assert run_id in str(raised.value)
        assert await store.list_runs() == runs
        assert await store.list_checkpoints(run_id) == checkpoints


_ODD_SEQ = (
    "the checkpoint's seq is read with str.isdigit() then int() (stepgraph.stores.base."
    "checkpoint_seq): isdigit() takes Unicode digits int() refuses, so the ValueError of int() "
    "escapes from resume() instead of CheckpointNotFoundError"
)
_ALIAS = (
    "checkpoint_seq() takes any digits int() reads, so '<run id>:01', '<run id>:0001' or "
    "'<run id>:' + Arabic-Indic one name checkpoint '<run id>:1': resume() forks from a "
    "checkpoint whose id is not the one given, where it should raise CheckpointNotFoundError"
)


@pytest.mark.parametrize(
    "seq",
    [
        pytest.param(
            "\u00b2",
            id="superscript-two",
        ),
        pytest.param(
            "01",
            id="leading-zero",
        ),
        pytest.param(
            "0001",
            id="leading-zeros",
        ),
        pytest.param(
            "\u0661",
            id="arabic-indic-one",
        ),
    ],
)
async def test_a_checkpoint_id_of_the_run_spelled_otherwise_raises_checkpoint_not_found(
    store: Store, seq: str
) -> None:
    run_id = await play(store, "json", "superstep")
    unknown = f"{run_id}:{seq}"
    assert unknown not in [info.id for info in await store.list_checkpoints(run_id)]
    runs = await store.list_runs()
    # attempt(): a resume that went on (from the checkpoint the id was taken for) is stopped
    error = await attempt(store, Stored("json", "superstep", run_id, (), ()), unknown)
    went_on = "resuming went on from a checkpoint"
    assert isinstance(error, CheckpointNotFoundError), (
        went_on if error is None else f"{type(error).__name__}: {error}"
    )
    assert repr(unknown) in str(error)
    assert await store.list_runs() == runs


# -- bugs found while writing these tests, fixed since -----------------------------------------

_UNCHECKED_OBJECTS = (
    "restore() (stepgraph/durability/frame.py) takes the frame's objects from the table by "
    "position without checking their kind: a checkpoint (its checksum right) whose table holds "
    "7 where the frame refers to a message or an input request is restored and the run goes "
    "on: the step gets 7 (AttributeError, and the stored run is marked failed, its journal "
    "appended to), or the run waits on a request that is 7, where resume should raise "
    "CheckpointError and change nothing"
)


@pytest.mark.parametrize("seq", [3, 4])  # 3: an input request; 4: a step's message, an answer
@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_table_object_of_the_wrong_kind_raises_checkpoint_error_and_changes_nothing(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path, serializer: str, seq: int
) -> None:
    pristine, stored = next(
        r for r in sqlite_runs if r[1].serializer == serializer and r[1].mode == "superstep"
    )
    row = next(r for r in stored.targets if r.kind == "frame" and r.seq == seq)
    corrupt = _rewritten_checkpoint(row.data or b"", objects=lambda table: [7] * len(table))
    _corrupt_and_resume(pristine.copy_to(scratch), stored, row, corrupt)


_NEGATIVE_POSITIONS = (
    "restore() (stepgraph/durability/frame.py) reads an object position with "
    "objects.__getitem__, so a negative one (the frame's type, int, allows it) is taken from "
    "the table's end: a checkpoint (its checksum right) whose frame has unclaimed [-1], "
    "result -1 or failure -1 is restored and the run goes on, where resume should raise "
    "CheckpointError (a position past the table's end does raise it)"
)


@pytest.mark.parametrize(("key", "value"), [("unclaimed", [-1]), ("result", -1), ("failure", -1)])
@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_negative_object_position_raises_checkpoint_error_and_changes_nothing(
    sqlite_runs: list[tuple[SqliteBackend, Stored]],
    scratch: Path,
    serializer: str,
    key: str,
    value: object,
) -> None:
    _resume_with_latest_frame(sqlite_runs, scratch, serializer, lambda frame: {**frame, key: value})


# -- bugs found while writing these tests, fixed since -----------------------------------------


def _rewritten(stored_data: bytes, change: Callable[[Any], Any]) -> bytes:
    """A stored chunk or journal entry with its value changed (its checksum right)."""
    ser = _serializer_of(stored_data)
    return wrap(ser, ser.dumps(change(ser.loads(_payload(stored_data))), "a corruption"))


def _resume_with_latest_frame(
    sqlite_runs: list[tuple[SqliteBackend, Stored]],
    scratch: Path,
    serializer: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Rewrite (checksum right) the frame of the latest checkpoint of the ``serializer``
    run with ``change``, then resume it every way: each raises CheckpointError, nothing
    changes."""
    pristine, stored = next(r for r in sqlite_runs if r[1].serializer == serializer)
    latest = max(seq for seq, _ in stored.checkpoints)  # read by a fork and by a resume
    row = next(r for r in stored.targets if r.kind == "frame" and r.seq == latest)
    corrupt = _rewritten_checkpoint(row.data or b"", frame=change)
    _corrupt_and_resume(pristine.copy_to(scratch), stored, row, corrupt)


def _corrupt_and_resume(backend: SqliteBackend, stored: Stored, row: Row, corrupt: bytes) -> None:
    backend.replace(stored.run_id, row, corrupt)
    asyncio.run(resume_every_way(backend, stored, row))


def _renamed_node(frame: dict[str, Any]) -> dict[str, Any]:
    nodes = dict(frame["nodes"])
    nodes["no_such_step"] = nodes.pop("first")
    return {**frame, "nodes": nodes}


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_frame_naming_a_step_the_workflow_lacks_raises_checkpoint_error_and_changes_nothing(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path, serializer: str
) -> None:
    _resume_with_latest_frame(sqlite_runs, scratch, serializer, _renamed_node)


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_frame_holding_another_runs_state_raises_checkpoint_error_and_changes_nothing(
    sqlite_runs: list[tuple[SqliteBackend, Stored]], scratch: Path, serializer: str
) -> None:
    other = next(stored.run_id for _, stored in sqlite_runs if stored.serializer != serializer)
    _resume_with_latest_frame(
        sqlite_runs, scratch, serializer, lambda frame: {**frame, "run_id": other}
    )


_CONVERTIBLE = [  # (part, key, value): values lax validation would take
    ("frame", "superstep", "3"),
    ("frame", "superstep", 3.0),
    ("frame", "merging", "yes"),
    ("frame", "merging", 1),
    ("frame", "asked", True),
    ("frame", "now", "1.5"),
    ("frame", "timeout", "1.5"),
    ("frame", "result", "0"),
    ("header", "workflow", b"Tally"),
    ("header", "steps", {"first": (("Begin",), ("Counted",))}),  # the codec keeps tuples
]
_PICKLE_CONVERTIBLE = [("frame", "blocked", ("first",))]  # a frame's JSON has no tuples


@pytest.mark.parametrize(
    ("serializer", "part", "key", "value"),
    [("json", *case) for case in _CONVERTIBLE]
    + [("pickle", *case) for case in _CONVERTIBLE + _PICKLE_CONVERTIBLE],
)
def test_a_checkpoint_field_of_a_convertible_wrong_type_raises_checkpoint_error(
    sqlite_runs: list[tuple[SqliteBackend, Stored]],
    scratch: Path,
    serializer: str,
    part: str,
    key: str,
    value: object,
) -> None:
    pristine, stored = next(r for r in sqlite_runs if r[1].serializer == serializer)
    row = next(r for r in stored.targets if r.kind == "frame" and r.seq == 1)

    def change(content: dict[str, Any]) -> dict[str, Any]:
        return {**content, key: value}

    data = row.data or b""
    corrupt = (
        _rewritten_checkpoint(data, frame=change)
        if part == "frame"
        else _rewritten_checkpoint(data, header=change)
    )
    _corrupt_and_resume(pristine.copy_to(scratch), stored, row, corrupt)


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

    corrupt = _rewritten(row.data or b"", change)
    _corrupt_and_resume(pristine.copy_to(scratch), stored, row, corrupt)
