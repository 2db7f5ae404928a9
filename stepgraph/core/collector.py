"""Fan-in collectors with O(1) work per arriving message (G9).

A collector holds arriving messages in one FIFO queue per expected type and
counts how many positions of the expected list are still unfilled. A batch is
released, in the declared order, when that count reaches zero; messages beyond
one batch wait in their queues for the next batch and are never lost.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Hashable, Iterator, Sequence

from .types import closest

__all__ = ["Collector", "Repeat", "collector_key"]

SHORT = 8
"""Expected lists up to this long are keyed by their whole content."""


class Repeat(Sequence[type]):
    """``times`` times ``kind``: the expected list ``[kind] * times``, without building it.

    ``ctx.collect_events(ev, Result, count=n)`` passes one: the caller's cost per call is
    then O(1) too, where ``[Result] * n`` builds a list of n entries on every call.
    """

    __slots__ = ("kind", "times")

    def __init__(self, kind: type, times: int) -> None:
        self.kind = kind
        self.times = times

    def __len__(self) -> int:
        return self.times

    def __getitem__(self, index: int) -> type:  # type: ignore[override]
        if not -self.times <= index < self.times:
            raise IndexError(index)
        return self.kind

    def __iter__(self) -> Iterator[type]:
        return itertools.repeat(self.kind, self.times)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Repeat):
            return (self.kind, self.times) == (other.kind, other.times)
        if isinstance(other, list | tuple):
            return len(other) == self.times and all(k == self.kind for k in other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Repeat, self.kind, self.times))

    def __repr__(self) -> str:
        return f"Repeat({self.kind.__name__}, {self.times})"


def collector_key(node: int, expected: Sequence[type]) -> tuple[object, ...]:
    """A key identifying the collector a step uses for ``expected``, in O(1).

    Short lists are keyed by their whole content. A long list (the common
    ``[Result] * n``) is keyed by its length and the types at five places (the ends, the
    middle and the quarters): finding its collector costs the same whatever its length,
    and the whole list is compared once, when it completes a batch
    (:meth:`Collector.same_expected`).
    """
    n = len(expected)
    if n <= SHORT:
        return (node, *expected)
    return (
        node,
        n,
        expected[0],
        expected[n // 4],
        expected[n // 2],
        expected[(3 * n) // 4],
        expected[n - 1],
    )


class Collector:
    """Buffers messages until one of each expected position is held."""

    __slots__ = ("_held", "_kind_of", "_missing", "_need", "_source", "expected")

    def __init__(self, expected: Sequence[Hashable]) -> None:
        self.expected = tuple(expected)
        self._source: object = expected  # the list it was made from: same_expected's fast path
        self._need: dict[Hashable, int] = dict(Counter(self.expected))
        self._held: dict[Hashable, deque[object]] = {kind: deque() for kind in self._need}
        self._kind_of: dict[type, Hashable | None] = {}
        self._missing = len(self.expected)

    def same_expected(self, expected: Sequence[Hashable]) -> bool:
        """Whether ``expected`` is this collector's list (O(n): once per batch, at its end)."""
        if expected is self._source:
            return True
        if type(expected) is tuple:
            return expected == self.expected
        if isinstance(expected, Repeat):
            return expected == self.expected
        return tuple(expected) == self.expected

    def completes(self, kind: Hashable) -> bool:
        """Whether one more message of ``kind`` releases a batch."""
        return self._missing == 1 and len(self._held[kind]) < self._need[kind]

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

    def items(self) -> list[tuple[Hashable, object]]:
        """What the collector holds, as ``(kind, message)`` pairs, in order for each kind."""
        return [(kind, message) for kind, queue in self._held.items() for message in queue]

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
