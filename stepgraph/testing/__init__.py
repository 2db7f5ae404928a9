"""Helpers for testing code built on stepgraph.

``FakeClock`` runs a workflow's timers (its timeout, ``wait_for_event`` deadlines, retry
backoff, step timeouts) on virtual time: ``MyFlow(clock=FakeClock())``. ``crash(handler)``
stops a durable run as if its process had died, to test resuming it;
``settled(handler)`` waits until what it recorded is in its store.
``stepgraph.testing.store_conformance`` checks a store implementation.
"""

from .clock import FakeClock
from .crash import crash, settled

__all__ = ["FakeClock", "crash", "settled"]
