"""Fan-in collectors with O(1) work per arriving message (G9).

A collector holds arriving messages in one FIFO queue per expected type and
counts how many positions of the expected list are still unfilled. A batch is
released, in the declared order, when that count reaches zero; messages beyond
one batch wait in their queues for the next batch and are never lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence

from .types import closest

__all__ = ["Collector", "collector_key"]


def collector_key(node: int, expected: Sequence[type]) -> tuple[object, ...]:
    """A key identifying the collector a step uses for ``expected``.

    Short lists are keyed by their content. Long lists, such as the common
    ``[Result] * n``, are keyed by length and ends so that finding the collector
    costs O(1); :meth:`Collector.same_expected` then confirms the whole list.
    """
    if len(expected) <= 8:
        return (node, *expected)
    return (node, len(expected), expected[0], expected[-1])


class Collector:
    """Buffers messages until one of each expected position is held."""

    __slots__ = ("_expected_list", "_held", "_kind_of", "_missing", "_need", "expected")

    def __init__(self, expected: Sequence[Hashable]) -> None:
        self.expected = tuple(expected)
        self._expected_list = list(self.expected)
        self._need: dict[Hashable, int] = {}
        for kind in self.expected:
            self._need[kind] = self._need.get(kind, 0) + 1
        self._held: dict[Hashable, deque[object]] = {kind: deque() for kind in self._need}
        self._kind_of: dict[type, Hashable | None] = {}
        self._missing = len(self.expected)

    def same_expected(self, expected: Sequence[Hashable]) -> bool:
        """Whether ``expected`` is this collector's list (one C-level comparison)."""
        if type(expected) is tuple:
            return expected == self.expected
        return (
            list(self.expected) == expected
            if type(expected) is not list
            else (self._expected_list == expected)
        )

    def _match(self, concrete: type) -> Hashable | None:
        try:
            return self._kind_of[concrete]
        except KeyError:
            # The closest expected class in the MRO, so that [Base, Mid] files a Leaf(Mid)
            # under Mid, not Base; an expected ABC (not in the MRO) matches last.
            kinds = [k for k in self._need if isinstance(k, type)]
            kind = closest(concrete, kinds, _itself)
            self._kind_of[concrete] = kind
            return kind

    def kind_of(self, message: object) -> Hashable | None:
        """The expected entry ``message`` fills (its closest expected class), or None."""
        return self._match(type(message))

    def add(self, message: object) -> list[object] | None:
        """Hold ``message``; return the full batch once every position is filled."""
        kind = self._match(type(message))
        if kind is None:
            return None
        return self.add_kind(kind, message)

    def add_kind(self, kind: Hashable, message: object) -> list[object] | None:
        """Hold ``message`` as one of ``kind`` (an entry of ``expected``); see :meth:`add`."""
        queue = self._held[kind]
        queue.append(message)
        if len(queue) <= self._need[kind]:
            self._missing -= 1
        if self._missing:
            return None
        batch = [self._held[k].popleft() for k in self.expected]
        self._missing = sum(n - min(n, len(self._held[k])) for k, n in self._need.items())
        return batch

    def retract(self, kind: Hashable, message: object) -> bool:
        """Take back a held ``message`` (by identity) of ``kind``; whether it was held."""
        queue = self._held[kind]
        for position, held in enumerate(queue):
            if held is message:
                del queue[position]
                if len(queue) < self._need[kind]:
                    self._missing += 1
                return True
        return False

    def give_back(self, items: Sequence[tuple[Hashable, object]]) -> None:
        """Put ``(kind, message)`` pairs of a released batch back, ahead of what is held."""
        for kind, message in reversed(items):
            self._held[kind].appendleft(message)
        self._missing = sum(n - min(n, len(self._held[k])) for k, n in self._need.items())

    @property
    def held(self) -> int:
        """How many messages the collector holds."""
        return sum(len(q) for q in self._held.values())

    def counts(self) -> list[int]:
        """How many messages are held for each distinct expected kind, in first-seen order."""
        return [len(q) for q in self._held.values()]

    def describe(self) -> str:
        """A short description for stall messages: what it holds and what it lacks."""
        parts = []
        for kind, need in self._need.items():
            name = kind.__name__ if isinstance(kind, type) else str(kind)
            parts.append(f"{name} {min(len(self._held[kind]), need)}/{need}")
        return ", ".join(parts)

    def snapshot(self) -> tuple[object, ...]:
        """A plain, comparable view of the collector's content."""
        return (self.expected, tuple((k, tuple(q)) for k, q in self._held.items()), self._missing)


def _itself(kind: type) -> tuple[type]:
    return (kind,)
