"""What a peer module provides: its name, its distribution and its workload runners."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.timing import Runner


@dataclass(frozen=True)
class PeerWorkload:
    """One workload in a peer's API.

    ``size`` overrides the suite's size (units per repetition) for a peer too slow for it;
    the figure stays per unit, and ``note`` says why the size differs. ``reps`` caps the
    repetitions of a peer that is slow at the suite's size (and skips its warm-up).
    """

    runner: Runner
    size: int | None = None
    note: str = ""
    reps: int | None = None


@dataclass(frozen=True)
class Peer:
    """A framework to compare with: ``workloads`` maps ``w1`` ... ``w4`` to runners;
    ``close`` releases what the runners started (a cluster), once the bench is done."""

    name: str
    dist: str
    workloads: dict[str, PeerWorkload] = field(default_factory=dict)
    close: Callable[[], Awaitable[None]] | None = None
