"""The inboxes of the durable runs a process started itself (``wf.run()``, ``resume()``).

A worker reads the inboxes of the runs it holds and delivers what other processes sent
them through ``wf.attach(run_id)``. A run started with ``wf.run()`` has no worker: this
module reads its inbox instead, so that an event, an answer or a cancel sent from
another process reaches it too (a web server answering a run that waits in a batch job,
say). One reader per store and event loop serves all such runs of that loop: it reads
their inboxes every :data:`READ_EVERY` seconds while one of them goes on, and stops when
the last one ends.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..errors import StepgraphError
from .messages import deliver

if TYPE_CHECKING:
    from ..durability.run import DurableRun

__all__ = ["READ_EVERY", "follow_inbox"]

READ_EVERY = 0.2
"""Seconds between two reads of the inboxes (how late a message from elsewhere may be)."""


class _Reader:
    """Reads the inboxes of one store's runs on one event loop."""

    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop, key: tuple[int, int]) -> None:
        self.store = store
        self.key = key
        self.runs: dict[DurableRun, set[int]] = {}  # each run and the messages delivered
        self.task = loop.create_task(self._read())

    def follow(self, run: DurableRun) -> None:
        self.runs[run] = set()
        run.outcome.add_done_callback(lambda _: self._forget(run))

    def _forget(self, run: DurableRun) -> None:
        self.runs.pop(run, None)
        if not self.runs:  # the last one ended: nothing to read any more
            _READERS.pop(self.key, None)
            self.task.cancel()

    async def _read(self) -> None:
        while self.runs:
            await asyncio.sleep(READ_EVERY)
            ready = {r.run_id: r for r in self.runs if not r._booting and not r.done}
            if not ready:
                continue
            try:
                messages = await self.store.inbox(list(ready))
            except StepgraphError:  # the store is away: read again next time
                continue
            for message in messages:
                run = ready.get(message.run_id)
                delivered = self.runs.get(run) if run is not None else None
                # a message stays in the inbox until the commit that journals it is done:
                # carried out once, however often it is read meanwhile
                if run is None or delivered is None or run.done or message.id in delivered:
                    continue
                delivered.add(message.id)
                deliver(run, message)


_READERS: dict[tuple[int, int], _Reader] = {}


def follow_inbox(run: DurableRun) -> None:
    """Read ``run``'s inbox (a run this process started, with a store that has a run
    queue) until it ends."""
    store = run._db
    key = (id(store), id(run.loop))
    reader = _READERS.get(key)
    if reader is None or reader.task.done():
        reader = _READERS[key] = _Reader(store, run.loop, key)
    reader.follow(run)
