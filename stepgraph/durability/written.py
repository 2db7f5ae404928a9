"""The graph that wrote a run, rebuilt from its checkpoint, to replay its journal on.

The kernel names steps by their position in the graph (the targets of a message sent to a
step, the step the caller sent an event to) and numbers invocations as messages start
them; the journal keeps its ticks as the kernel made them. So the journal replays
faithfully only on the graph that wrote it: the same steps, in the same order, taking the
same types. A workflow whose steps were reordered, added, removed or changed since the
checkpoint replays it on :func:`written_graph` (the checkpoint's steps, in its order,
each taking what the checkpoint's fingerprint says it took), and only then moves the
state it reached to its own graph, by step name (``durability/frame.py``), dropping what
belonged to removed steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..core import FanIn, Graph, Node
from .checkpoints import step_types

__all__ = ["written_graph"]


class _ByName(type):
    """A type that stands for the classes of a fingerprint, known by qualified name only:
    a class is a subclass when a class of its MRO has one of ``names``."""

    names: frozenset[str]

    def __instancecheck__(cls, instance: Any) -> bool:
        return cls.__subclasscheck__(type(instance))

    def __subclasscheck__(cls, subclass: Any) -> bool:
        names = cls.names
        return any(
            getattr(k, "__qualname__", None) in names for k in getattr(subclass, "__mro__", ())
        )


def _taking(names: Sequence[str]) -> tuple[type, ...]:
    if not names:
        return ()
    return (_ByName("accepted", (), {"names": frozenset(names)}),)


def written_graph(
    written: Mapping[str, Sequence[Sequence[str]]],
    graph: Graph,
    workers: Mapping[str, int] | None = None,
    fan_ins: Sequence[Sequence[str]] | None = None,
) -> Graph:
    """The graph a run was written by, from its checkpoint's fingerprint (``written``:
    each step by name, in graph order, with the types it accepted) and the steps'
    ``num_workers`` (``workers``, 1 where not given; None: not known), for a run of
    ``graph``.

    A step ``graph`` has unchanged takes its types; another (removed, or its types
    changed) the types the fingerprint names, by qualified name. Not knowing ``workers``
    (a checkpoint from before they were kept), a kept step has its ``num_workers`` now and
    a removed one 1. Its fan-in edges are ``fan_ins`` (each ``[target, *sources]`` by
    name; None: not known, ``graph``'s between kept steps). What is the graph's, not its
    steps' (stop, request and output types, entry steps), is ``graph``'s.
    """
    current = {node.name: node for node in graph.nodes}
    nodes = []
    for position, (name, (accepts, *_)) in enumerate(written.items()):
        node = current.get(name)
        if workers is not None:
            count = workers.get(name, 1)
        else:
            count = node.num_workers if node is not None else 1
        if node is not None and step_types(node.accepts) == sorted(accepts):
            nodes.append(Node(name=name, index=position, accepts=node.accepts, num_workers=count))
        else:
            nodes.append(
                Node(name=name, index=position, accepts=_taking(accepts), num_workers=count)
            )
    index = {node.name: node.index for node in nodes}
    names = [node.name for node in graph.nodes]

    def moved(positions: Sequence[int]) -> tuple[int, ...] | None:
        found = tuple(index.get(names[p], -1) for p in positions)
        return None if -1 in found else found

    entry = None if graph.entry is None else (moved(graph.entry) or ())
    edges = []
    if fan_ins is not None:
        for target, *sources in fan_ins:
            if target in index and all(source in index for source in sources):
                edges.append(
                    FanIn(
                        target=index[target],
                        sources=tuple(index[source] for source in sources),
                        label=f"{', '.join(sources)} -> {target}",
                    )
                )
    else:
        for fan_in in graph.fan_ins:
            ends = moved((fan_in.target, *fan_in.sources))
            if ends is not None:
                edges.append(FanIn(target=ends[0], sources=ends[1:], label=fan_in.label))
    return dataclasses.replace(graph, nodes=tuple(nodes), entry=entry, fan_ins=tuple(edges))
