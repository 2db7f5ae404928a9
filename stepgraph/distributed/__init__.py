"""Beyond one process: workers that run submitted runs (``docs/distributed.md``).

``wf.submit(...)`` stores a run as queued; a :class:`Worker` (what ``stepgraph worker``
runs) takes it; ``wf.attach(run_id)`` and ``store.result(run_id)`` follow it from anywhere.
"""

from .worker import Worker

__all__ = ["Worker"]
