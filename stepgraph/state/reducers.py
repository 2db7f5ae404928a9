"""Reducers: how concurrent writes to one shared-state key are merged (G8).

A reducer is any function ``(old, new) -> merged``; ``old`` is ``None`` before the
first write. In superstep mode the writes of a superstep are buffered and merged
at the barrier in a deterministic order (executor order, then write order), so
concurrent writers never lose an update. In async mode each write merges at once.

Example::

    WorkflowBuilder(start=planner, reducers={"log": append, "cost": add})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["Reducer", "add", "append", "extend", "merge", "merge_writes"]

Reducer = Callable[[Any, Any], Any]


def append(old: list[Any] | None, new: Any) -> list[Any]:
    """Append ``new`` to the list (a new list; the old one is not mutated)."""
    return [*(old or ()), new]


def extend(old: list[Any] | None, new: Any) -> list[Any]:
    """Extend the list by the items of ``new``."""
    return [*(old or ()), *new]


def add(old: Any, new: Any) -> Any:
    """Add ``new`` to the value (numbers, or anything with ``+``)."""
    return new if old is None else old + new


def merge(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the mapping ``new`` into the dict (later keys win)."""
    return {**(old or {}), **new}


def merge_writes(
    current: Mapping[str, Any],
    writes: Iterable[tuple[str, Any]],
    reducers: Mapping[str, Reducer],
) -> list[tuple[str, Any]]:
    """Merge ``writes`` (key, value), in order, over ``current`` with each key's reducer.

    Returns the merged value of each key written, in order of first write; ``current``
    is not changed. A reducer that raises propagates: nothing is returned.
    """
    merged: dict[str, Any] = {}
    for key, value in writes:
        old = merged[key] if key in merged else current.get(key)
        merged[key] = reducers[key](old, value)
    return list(merged.items())
