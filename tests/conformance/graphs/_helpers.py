"""Shared helpers for the executor-graph conformance tests.

The run helpers (``finish``, ``failure``, ``drain``, ...) are those of the ``@step``
conformance tests, re-exported; this module adds what executor graphs need: time
windows of handler invocations (to show that two invocations did or did not
overlap), and reads of the kernel state by executor id (test hooks).
"""

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from _helpers_a import GUARD_SECONDS, Gauge, both_modes, finish, reached, spin
from _helpers_b import drain, failure, notes_of, wait_until

from stepgraph import WorkflowContext, WorkflowHandler

__all__ = [
    "RENDEZVOUS_SECONDS",
    "Gauge",
    "Windows",
    "both_modes",
    "drain",
    "failure",
    "finish",
    "node_state",
    "notes_of",
    "reached",
    "rendezvous",
    "spin",
    "superstep_of",
    "wait_until",
]


RENDEZVOUS_SECONDS = GUARD_SECONDS / 2
"""A rendezvous gives up before the run's guard does, so its own message is the failure."""


@dataclass
class Windows:
    """Start and end times (``time.perf_counter``) of handler invocations, by label.

    A handler calls ``start(label)`` first thing and ``end(label)`` last thing; the
    test then asks whether two labelled invocations overlapped in time.
    """

    spans: dict[str, list[float]] = field(default_factory=dict)

    def start(self, label: str) -> None:
        """Record that invocation ``label`` entered its handler now."""
        assert label not in self.spans, f"invocation {label!r} recorded twice"
        self.spans[label] = [time.perf_counter()]

    def end(self, label: str) -> None:
        """Record that invocation ``label`` is leaving its handler now."""
        self.spans[label].append(time.perf_counter())

    def window(self, label: str) -> tuple[float, float]:
        """(start, end) of invocation ``label``."""
        span = self.spans[label]
        assert len(span) == 2, f"invocation {label!r} started but never ended"
        return span[0], span[1]

    def overlap(self, a: str, b: str) -> bool:
        """Whether invocations ``a`` and ``b`` were both inside their handlers at some time."""
        a_start, a_end = self.window(a)
        b_start, b_end = self.window(b)
        return a_start < b_end and b_start < a_end

    def assert_disjoint(self, labels: list[str]) -> None:
        """No two of ``labels`` overlapped: each ended before the next one started."""
        ordered = sorted(labels, key=lambda label: self.window(label)[0])
        for before, after in itertools.pairwise(ordered):
            assert self.window(before)[1] <= self.window(after)[0], (
                f"invocations {before!r} and {after!r} overlapped: "
                f"{self.window(before)} and {self.window(after)}"
            )


async def rendezvous(mine: asyncio.Event, other: asyncio.Event, what: str) -> None:
    """Signal that this invocation is inside, then wait until ``other`` is inside too.

    Both sides return only if both are inside at once, which makes their time windows
    overlap for certain; an engine that ran them one after the other fails the wait
    (within the guard) instead of hanging.
    """
    mine.set()
    try:
        async with asyncio.timeout(RENDEZVOUS_SECONDS):
            await other.wait()
    except TimeoutError as exc:
        raise AssertionError(f"never happened within {RENDEZVOUS_SECONDS}s: {what}") from exc


def node_state(owner: WorkflowHandler | WorkflowContext[Any], executor_id: str) -> tuple[int, int]:
    """(invocations in flight, messages queued) of ``executor_id``, from the kernel state.

    ``owner`` is the run's handler (from the test) or its context (from a handler).
    """
    run = owner._run
    node = run.state.nodes[run.graph.index_of[executor_id]]
    return node.in_flight, len(node.inbox)


def superstep_of(ctx: WorkflowContext[Any]) -> int:
    """The superstep the run is in (read from the kernel state; a test hook)."""
    return int(ctx._run.state.superstep)
