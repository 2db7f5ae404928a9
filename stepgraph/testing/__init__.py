"""Helpers for testing code built on stepgraph.

``FakeClock`` runs a workflow's timers (its timeout, ``wait_for_event`` deadlines, retry
backoff, step timeouts) on virtual time: ``MyFlow(clock=FakeClock())``.
"""

from .clock import FakeClock

__all__ = ["FakeClock"]
