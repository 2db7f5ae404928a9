"""What a run wrote under one version of its workflow, read by another.

The kernel names steps by their position in the graph (the targets of a message sent to
a step, the step the caller sent an event to), and the journal keeps its ticks as the
kernel made them. A workflow whose steps were reordered, added or removed since the
checkpoint numbers them otherwise: :class:`Renumbering` turns the positions of the
checkpoint's graph (its header's fingerprint lists the steps in graph order) into those
of the graph resuming the run, by step name.

It also keeps a rule of a resume with ``strict=False``: a removed step's messages are
dropped, never routed elsewhere. A message that went by type to a step removed since goes
by type to the steps the run had only (not to a step added since), and is dropped when
only an added step takes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from ..core import EXTERNAL, Graph, RunState, Tick
from ..core.ticks import Emission, EventsSent, ExternalEventReceived, StepCompleted
from .frame import kind_name

__all__ = ["Renumbering"]


class _Drop:
    """A message that went to removed steps only."""


_DROP = _Drop()
_Targets = tuple[int, ...] | None


class Renumbering:
    """From the step positions of the graph that wrote a run (``written``: its
    fingerprint, each step by name, in graph order) to those of ``graph``."""

    def __init__(self, written: Mapping[str, Sequence[Sequence[str]]], graph: Graph) -> None:
        self.graph = graph
        index = graph.index_of
        self.positions: tuple[int | None, ...] = tuple(index.get(name) for name in written)
        self.added = frozenset(i for name, i in index.items() if name not in written)
        self.removed_accepts = frozenset(
            kind for name, (accepts, *_) in written.items() if name not in index for kind in accepts
        )
        self.dropped: list[str] = []
        """The messages of the journal it dropped (sent to steps removed since), each by
        its type's name."""
        self.cut: set[int] = set()
        """The ``id`` of each journal entry it gave without a message it dropped: an end
        of the run there is this workflow's (a stall: a removed step had work to do), not
        one the run recorded (which a resume goes on from just before)."""

    @property
    def needed(self) -> bool:
        """Whether what was written needs it: the steps are not the same, in the same order."""
        return bool(self.added) or self.positions != tuple(range(len(self.graph.nodes)))

    def tick(self, tick: Tick) -> Tick | None:
        """Journal entry ``tick`` as ``graph`` numbers its steps (None: skip it, it went to
        removed steps only).

        Raises:
            ValueError: it names a step position the graph that wrote it did not have.
        """
        if type(tick) is StepCompleted or type(tick) is EventsSent:
            emitted = self._emissions(tick.emitted)
            if emitted is tick.emitted:
                return tick
            if not emitted and type(tick) is EventsSent:
                return None
            renumbered = dataclasses.replace(tick, emitted=emitted)
            if len(emitted) < len(tick.emitted):
                self.cut.add(id(renumbered))
            return renumbered
        if type(tick) is ExternalEventReceived:
            if tick.target is not None:
                target = self._position(tick.target)
                if target is None:  # (the caller sent it to a step removed since)
                    self.dropped.append(kind_name(tick.event))
                    return None
                return tick if target == tick.target else dataclasses.replace(tick, target=target)
            routed = self._by_type(tick.event)
            if routed is _DROP:
                self.dropped.append(kind_name(tick.event))
                return None
            if isinstance(routed, tuple) and len(routed) == 1:  # (an event the caller sent
                return dataclasses.replace(tick, target=routed[0])  # names one step at most)
        return tick

    def reroute(self, state: RunState) -> list[str]:
        """Keep the messages routed by type in ``state``'s outbox (restored for ``graph``:
        to go at the next barrier) from the steps added since; those it dropped, each by
        its type's name."""
        dropped: list[str] = []
        if not self.added or not state.outbox:
            return dropped
        outbox = []
        for order, generation, emitted in state.outbox:
            kept: list[Emission] = []
            for message, targets in emitted:
                routed = targets if targets is not None else self._by_type(message)
                if isinstance(routed, _Drop):
                    dropped.append(kind_name(message))
                else:
                    kept.append((message, routed))
            if kept:
                outbox.append((order, generation, tuple(kept)))
        state.outbox = outbox
        return dropped

    def _emissions(self, emitted: tuple[Emission, ...]) -> tuple[Emission, ...]:
        out: list[Emission] = []
        changed = False
        for message, targets in emitted:
            if targets is None:
                routed = self._by_type(message)
            else:
                routed = tuple(p for p in map(self._position, targets) if p is not None) or _DROP
            if isinstance(routed, _Drop):
                self.dropped.append(kind_name(message))
                changed = True
            else:
                changed = changed or routed != targets
                out.append((message, routed))
        return tuple(out) if changed else emitted

    def _by_type(self, message: object) -> _Targets | _Drop:
        """Where ``message``, routed by type when it was written, goes in ``graph``: by
        type as then (None), to the steps of the run that take it (not one added since), or
        nowhere (``_DROP``): only an added step takes it, and a removed one did."""
        if not self.added or self.graph.explicit_routing:
            return None
        routes = self.graph.route(EXTERNAL, message)
        kept = tuple(i for i in routes if i not in self.added)
        if len(kept) == len(routes):
            return None
        if kept:
            return kept
        if any(kind.__qualname__ in self.removed_accepts for kind in type(message).__mro__):
            return _DROP  # (only a step added since takes it: it was a removed step's)
        return None  # no step took it then (held, awaited): it goes where it goes now

    def _position(self, written: int) -> int | None:
        if 0 <= written < len(self.positions):
            return self.positions[written]
        raise ValueError(f"step position {written} is not in the graph that wrote it")
