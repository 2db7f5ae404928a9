"""What a peer module provides: its name, its distribution and its workload runners."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.timing import Runner


@dataclass(frozen=True)
class PeerWorkload:
    """One workload in a peer's API.

    ``size`` overrides the suite's size (units per repetition) for a peer too slow for it;
    the figure stays per unit, and ``note`` says why the size differs.
    """

    runner: Runner
    size: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Peer:
    """A framework to compare with: ``workloads`` maps ``w1``/``w2``/``w3`` to runners."""

    name: str
    dist: str
    workloads: dict[str, PeerWorkload] = field(default_factory=dict)
