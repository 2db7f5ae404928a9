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
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from ..errors import WorkflowRuntimeError

__all__ = ["StateStore"]

_DELETED = object()


class StateStore:
    """Key-value state shared by the steps of one run (``ctx.store``)."""

    __slots__ = ("_data", "_lock", "_order", "_owner", "_pending", "_reducers")

    def __init__(
        self,
        initial: dict[str, Any] | None = None,
        *,
        reducers: Mapping[str, Callable[[Any, Any], Any]] | None = None,
        order: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        """Create a store.

        Args:
            initial: the starting content.
            reducers: per-key merge functions ``(old, new) -> merged``.
            order: when given, reducer writes are buffered until :meth:`apply_pending`;
                it returns the deterministic position of the writing step, or None
                outside a step (then the write merges at once).
        """
        self._data: dict[str, Any] = dict(initial or {})
        self._lock: asyncio.Lock | None = None
        self._owner: asyncio.Task[Any] | None = None
        self._reducers = dict(reducers or {})
        self._order = order
        self._pending: list[tuple[tuple[int, int], int, str, Any]] = []

    def _write(self, key: str, value: Any) -> None:
        reducer = self._reducers.get(key) if self._reducers else None
        if reducer is None:
            self._data[key] = value
            return
        position = self._order() if self._order is not None else None
        if position is None:
            self._data[key] = reducer(self._data.get(key), value)
        else:
            self._pending.append((position, len(self._pending), key, value))

    def discard_pending(self, position: tuple[int, int] | None) -> None:
        """Drop the buffered reducer writes of the step at ``position`` (a failed attempt)."""
        if position is not None and self._pending:
            self._pending = [entry for entry in self._pending if entry[0] != position]

    def apply_pending(self) -> None:
        """Merge the buffered reducer writes, by (writer position, write order)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        pending.sort(key=lambda entry: (entry[0], entry[1]))
        for _, _, key, value in pending:
            self._data[key] = self._reducers[key](self._data.get(key), value)

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
                self._write(key, value)
                return
        self._write(key, value)

    async def update(self, key: str, fn: Callable[[Any], Any]) -> Any:
        """Atomically replace the value of ``key`` by ``fn(old)`` and return it.

        ``old`` is ``None`` when the key is missing. ``fn`` may be a coroutine
        function; the key stays locked while it runs. Not for keys with a reducer.
        """
        self._no_reducer(key, "update")
        if self._busy() or asyncio.iscoroutinefunction(fn):
            async with self._locked():
                value = fn(self._data.get(key))
                if isinstance(value, Awaitable):
                    value = await value
                self._data[key] = value
                return value
        value = fn(self._data.get(key))
        if inspect.isawaitable(value):  # a plain function that returned a coroutine
            value = await value
        self._data[key] = value
        return value

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self._no_reducer(key, "delete")
        if self._busy():
            async with self._get_lock():
                self._data.pop(key, None)
                return
        self._data.pop(key, None)

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
        for key, value in self._changes.items():  # check all first: a failed commit writes nothing
            if value is _DELETED:
                store._no_reducer(key, "edit() deleting")
        for key, value in self._changes.items():
            if value is _DELETED:
                self._base.pop(key, None)
            else:
                store._write(key, value)
        self._changes.clear()
