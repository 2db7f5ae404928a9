"""Journals: the record of a run's ticks, and replaying it.

A run is a fold of the kernel over its ticks. A :class:`Journal` records them (in memory,
or appended to a JSON-lines file); :func:`replay` folds them into a fresh state again,
checking that the kernel produces the commands the journal recorded.

Example::

    from stepgraph.journal import Journal, replay

    journal = Journal("runs.jsonl")
    handler = MyFlow(journal=journal).run()
    await handler
    state = replay(MyFlow(), journal.records(handler.run_id))
    assert state.snapshot() == ...
"""

from .codec import decode, encode
from .recorder import Journal
from .records import JournalRecord, read_journal, write_journal
from .replay import replay

__all__ = [
    "Journal",
    "JournalRecord",
    "decode",
    "encode",
    "read_journal",
    "replay",
    "write_journal",
]
