"""The shared state of one run: atomic single operations and atomic edit blocks (G8).

Each single operation (``get``, ``set``, ``update``) runs without yielding to the
event loop, so no other step can interleave with it. ``edit()`` takes the
store's lock for a multi-key block; single operations from other steps wait
for it. An edit block works on an overlay and commits only when the block
exits normally: an exception inside it leaves the state unchanged.

Keys with a reducer (see :mod:`stepgraph.state.reducers`) merge writes instead of
replacing the value. When the store buffers (superstep mode), a write to such a
key is held until the barrier and merged there in deterministic order; ``get``
returns the value as of the last barrier.

Inside a run, the store's content is part of the run's kernel state: every change
reaches it as a tick (``StateWritten``), and buffered reducer writes are merged when
the kernel asks, so that replaying a run's ticks rebuilds its state too. A store made
on its own (``StateStore({...})``) keeps its content itself.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

from ..errors import WorkflowRuntimeError
from .reducers import merge_writes

__all__ = ["StateSink", "StateStore"]

_DELETED = object()

Writes = tuple[tuple[str, Any], ...]


class StateSink(Protocol):
    """Where a store's changes go: the store itself, or its run's kernel (as ticks)."""

    def writer(self) -> object | None:
        """Who is writing, when its reducer writes wait for a barrier; None: merge now."""
        ...

    def commit(
        self, writes: Writes, deletes: tuple[str, ...], merges: Writes, writer: object | None
    ) -> None:
        """Apply ``writes`` and ``deletes`` now; hold ``merges`` (by ``writer``) for the barrier."""
        ...


class _OwnSink:
    """The sink of a store made on its own: it keeps the buffered reducer writes itself."""

    __slots__ = ("data", "order", "pending", "reducers")

    def __init__(
        self,
        data: dict[str, Any],
        reducers: Mapping[str, Callable[[Any, Any], Any]],
        order: Callable[[], tuple[int, int] | None] | None,
    ) -> None:
        self.data = data
        self.reducers = reducers
        self.order = order
        self.pending: list[tuple[tuple[int, int], int, str, Any]] = []

    def writer(self) -> object | None:
        return self.order() if self.order is not None else None

    def commit(
        self, writes: Writes, deletes: tuple[str, ...], merges: Writes, writer: object | None
    ) -> None:
        self.data.update(writes)
        for key in deletes:
            self.data.pop(key, None)
        for key, value in merges:
            self.pending.append((writer, len(self.pending), key, value))  # type: ignore[arg-type]


class StateStore:
    """Key-value state shared by the steps of one run (``ctx.store``)."""

    __slots__ = ("_data", "_lock", "_owner", "_reducers", "_sink")

    def __init__(
        self,
        initial: dict[str, Any] | None = None,
        *,
        reducers: Mapping[str, Callable[[Any, Any], Any]] | None = None,
        order: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        """Create a store of its own (a run makes its own with :meth:`attached`).

        Args:
            initial: the starting content.
            reducers: per-key merge functions ``(old, new) -> merged``.
            order: when given, reducer writes are buffered until :meth:`apply_pending`;
                it returns the deterministic position of the writing step, or None
                outside a step (then the write merges at once).
        """
        self._data: dict[str, Any] = dict(initial or {})
        self._reducers: Mapping[str, Callable[[Any, Any], Any]] = dict(reducers or {})
        self._sink: StateSink = _OwnSink(self._data, self._reducers, order)
        self._lock: asyncio.Lock | None = None
        self._owner: asyncio.Task[Any] | None = None

    @classmethod
    def attached(
        cls,
        data: dict[str, Any],
        reducers: Mapping[str, Callable[[Any, Any], Any]],
        sink: StateSink,
    ) -> StateStore:
        """A store over ``data`` (a run's kernel state) whose changes go to ``sink``."""
        store = cls.__new__(cls)
        store._data = data
        store._reducers = reducers
        store._sink = sink
        store._lock = None
        store._owner = None
        return store

    def close(self) -> None:
        """Detach the store from its run (it ended).

        It keeps a copy of the run's final state and becomes a store of its own: reads and
        writes still work (``handler.ctx.store`` after the run), and the run's final state
        is left as the run ended.
        """
        self._data = dict(self._data)
        self._sink = _OwnSink(self._data, self._reducers, None)

    def _commit(
        self,
        writes: list[tuple[str, Any]],
        deletes: tuple[str, ...] = (),
    ) -> None:
        """Send changes to the sink; reducer keys merge now or wait for the barrier."""
        reducers = self._reducers
        if not reducers or not any(key in reducers for key, _ in writes):
            self._sink.commit(tuple(writes), deletes, (), None)
            return
        writer = self._sink.writer()
        plain: list[tuple[str, Any]] = []
        held: list[tuple[str, Any]] = []
        for key, value in writes:
            if key not in reducers:
                plain.append((key, value))
            elif writer is None:
                merged = merge_writes(self._data, ((key, value),), reducers)
                plain.append(merged[0])
            else:
                held.append((key, value))
        self._sink.commit(tuple(plain), deletes, tuple(held), writer)

    # -- a store of its own -------------------------------------------------------------------

    def discard_pending(self, position: tuple[int, int] | None) -> None:
        """Drop the buffered reducer writes of the step at ``position`` (a store of its own)."""
        sink = self._sink
        if position is not None and isinstance(sink, _OwnSink) and sink.pending:
            sink.pending = [entry for entry in sink.pending if entry[0] != position]

    def apply_pending(self) -> None:
        """Merge the buffered reducer writes, by (writer position, write order).

        For a store of its own; in a run, the kernel decides when writes merge.
        """
        sink = self._sink
        if not isinstance(sink, _OwnSink) or not sink.pending:
            return
        pending, sink.pending = sink.pending, []
        pending.sort(key=lambda entry: (entry[0], entry[1]))
        writes = tuple((key, value) for _, _, key, value in pending)
        self._data.update(merge_writes(self._data, writes, self._reducers))

    # -- operations ---------------------------------------------------------------------------

    def _no_reducer(self, key: str, what: str) -> None:
        if key in self._reducers:
            raise WorkflowRuntimeError(
                f"ctx.store.{what}({key!r}, ...): key {key!r} has a reducer, which merges "
                f"writes; write to it with ctx.store.set({key!r}, value)"
            )

    def _busy(self) -> bool:
        lock = self._lock
        return lock is not None and lock.locked() and self._owner is not asyncio.current_task()

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()  # created inside the running loop (G1)
        return self._lock

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        if self._busy():
            async with self._get_lock():
                return self._data.get(key, default)
        return self._data.get(key, default)

    async def set(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value``."""
        if self._busy():
            async with self._get_lock():
                self._commit([(key, value)])
                return
        self._commit([(key, value)])

    async def update(self, key: str, fn: Callable[[Any], Any]) -> Any:
        """Atomically replace the value of ``key`` by ``fn(old)`` and return it.

        ``old`` is ``None`` when the key is missing. ``fn`` may be a coroutine
        function; the key stays locked while it runs. Not for keys with a reducer.
        """
        if key in self._reducers:
            self._no_reducer(key, "update")  # raises
        if self._busy() or asyncio.iscoroutinefunction(fn):
            async with self._locked():
                value = fn(self._data.get(key))
                if inspect.isawaitable(value):
                    value = await value
                self._commit([(key, value)])
                return value
        old = self._data.get(key)
        value = fn(old)
        if inspect.isawaitable(value) and self._owner is asyncio.current_task():
            value = await value  # inside this task's own edit() block: it holds the lock
        elif inspect.isawaitable(value):  # a plain function that returned a coroutine:
            lock = self._get_lock()  # lock now (free, but a task woken by its release may
            await lock.acquire()  # be first in line: this one then waits its turn)
            self._owner = asyncio.current_task()
            try:
                now = self._data.get(key)
                if now is not old:  # written meanwhile: ``fn`` again, on what was written
                    if inspect.iscoroutine(value):
                        value.close()  # (it never ran)
                    value = fn(now)
                if inspect.isawaitable(value):
                    value = await value
                self._commit([(key, value)])
            finally:
                self._owner = None
                lock.release()
            return value
        self._commit([(key, value)])
        return value

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self._no_reducer(key, "delete")
        if self._busy():
            async with self._get_lock():
                self._commit([], (key,))
                return
        self._commit([], (key,))

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        if self._owner is asyncio.current_task():
            yield
            return
        async with self._get_lock():
            self._owner = asyncio.current_task()
            try:
                yield
            finally:
                self._owner = None

    @asynccontextmanager
    async def edit(self) -> AsyncIterator[MutableMapping[str, Any]]:
        """An atomic multi-key block; changes commit when the block exits without error.

        Example::

            async with ctx.store.edit() as state:
                state["a"] = state.get("a", 0) + 1
                state["log"] = [*state.get("log", []), "a"]
        """
        async with self._locked():
            view = _EditView(self._data)
            yield view
            view.commit(self)

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the whole state."""
        return dict(self._data)


class _EditView(MutableMapping[str, Any]):
    """Reads through to the store, buffers writes until ``commit``."""

    __slots__ = ("_base", "_changes")

    def __init__(self, base: dict[str, Any]) -> None:
        self._base = base
        self._changes: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        value = self._changes.get(key, _DELETED) if key in self._changes else self._base[key]
        if value is _DELETED:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._changes[key] = value

    def __delitem__(self, key: str) -> None:
        self[key]  # raises KeyError when absent
        self._changes[key] = _DELETED

    def _keys(self) -> Iterator[str]:
        for key in self._base:
            if self._changes.get(key) is not _DELETED:
                yield key
        for key, value in self._changes.items():
            if key not in self._base and value is not _DELETED:
                yield key

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys()))

    def __len__(self) -> int:
        return sum(1 for _ in self._keys())

    def commit(self, store: StateStore) -> None:
        deleted = tuple(k for k, v in self._changes.items() if v is _DELETED)
        for key in deleted:  # check all first: a failed commit writes nothing
            store._no_reducer(key, "edit() deleting")
        writes = [(k, v) for k, v in self._changes.items() if v is not _DELETED]
        store._commit(writes, deleted)
        self._changes.clear()
