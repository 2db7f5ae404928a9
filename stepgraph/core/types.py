"""Matching a message's class against declared classes: the closest one wins."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

__all__ = ["closest"]

T = TypeVar("T")


def closest(
    concrete: type, candidates: Sequence[T], classes: Callable[[T], Iterable[type]]
) -> T | None:
    """The candidate with a class closest to ``concrete`` in its MRO, or None if none matches.

    Each candidate declares ``classes(candidate)``; one matches when ``concrete`` is a
    subclass of any of them. Closest means the smallest position in ``concrete.__mro__``
    (so ``[Base, Mid]`` files a ``Leaf(Mid)`` under ``Mid``); a class matched only through
    ``__subclasshook__`` (an ABC, not in the MRO) comes after every MRO match. Ties go to
    the earlier candidate.
    """
    mro = concrete.__mro__
    best: T | None = None
    best_distance = len(mro) + 1
    for candidate in candidates:
        for cls in classes(candidate):
            if issubclass(concrete, cls):
                distance = mro.index(cls) if cls in mro else len(mro)
                if distance < best_distance:
                    best, best_distance = candidate, distance
    return best
