"""A run's worker pool: long-lived tasks that carry out ``StartStep`` commands.

Workers are shared by all nodes of the run (the kernel already enforces each node's
``num_workers``), fed through a deque and woken by a future: no Task per invocation.
A worker that finishes a step runs the step it just made ready itself, with no
event-loop hand-off; it yields to the loop every ``YIELD_EVERY`` steps in a row.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from ..core import StartStep
from .attempts import attempt_body, attempt_completed, attempt_failed, attempt_scope
from .context import set_current_context
from .scope import WORKER

if TYPE_CHECKING:
    from .run import Run

__all__ = ["WorkerPool"]

YIELD_EVERY = 64
"""A worker yields to the event loop after this many steps in a row without waiting."""


class WorkerPool:
    """The workers of one run. It holds no reference to its run: its workers do, while alive."""

    __slots__ = ("_between", "_busy", "_idle", "_pending", "_tasks", "_workers", "watched")

    def __init__(self) -> None:
        # attempts observers were told had started, and not yet that they ended
        self.watched: dict[int, StartStep] = {}
        self._between = False  # a worker is feeding an attempt's outcome (not in a body)
        self._pending: deque[StartStep] = deque()  # started attempts not yet on a worker
        self._idle: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers = 0
        self._busy = 0  # workers executing a step body

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """The worker tasks (for tests and leak checks)."""
        return frozenset(self._tasks)

    def dispatch(self, run: Run, command: StartStep) -> None:
        """Queue a started attempt; wake an idle worker or add one if needed."""
        pending = self._pending
        pending.append(command)
        if self._idle:
            self._idle.pop().set_result(None)
        elif self._workers - self._busy < len(pending):
            self._workers += 1
            self._tasks.add(run.loop.create_task(self._worker(run, self._workers)))

    async def _worker(self, run: Run, number: int) -> None:
        set_current_context(run.context)
        WORKER.set(number)
        try:
            await self._work(run)
        except (asyncio.CancelledError, GeneratorExit):
            raise  # the run is ending, or the coroutine is being closed with its loop gone
        except BaseException as exc:  # a bug in the shell must fail the run, never hang it
            run.abort(exc)

    async def _work(self, run: Run) -> None:
        pending = self._pending
        observers = run.observers  # the run's list: observers added later are seen too
        feed = run.feed
        streak = 0
        while True:
            while pending:
                command = pending.popleft()
                self._busy += 1
                if observers:
                    self.watched[command.invocation] = command
                    name = run.programs[command.node].name
                    for observer in observers:
                        observer.step_started(
                            run, name, command.invocation, command.attempt, command.message
                        )
                scope = attempt_scope(run, command)
                try:
                    result = await attempt_body(run, command, scope)
                except BaseException as exc:
                    tick = attempt_failed(run, command, scope, exc)
                else:
                    tick = attempt_completed(run, command, scope, result)
                del scope  # hold no finished attempt's objects while waiting
                result = None
                self._busy -= 1
                if observers and self.watched.pop(command.invocation, None) is not None:
                    name = run.programs[command.node].name
                    for observer in observers:
                        observer.step_ended(run, name, command.invocation, command.attempt, tick)
                waits = run._waits
                if waits is not None and waits.pending:  # a wait the step left behind
                    waits.abandon(run, command.invocation)
                self._between = True
                try:
                    feed(tick)
                finally:
                    self._between = False
                tick = command = None  # type: ignore[assignment]  # hold no finished message
                if run.done:
                    return
                streak += 1
                if streak >= YIELD_EVERY:  # let other tasks run during long chains
                    streak = 0
                    await asyncio.sleep(0)
            streak = 0
            waiter: asyncio.Future[None] = run.loop.create_future()
            self._idle.append(waiter)
            await waiter

    def stop(self) -> None:
        """The run ended: cancel every worker; drop what is queued.

        The worker that ended the run (from inside a step, say) is cancelled once it
        next yields, so that its step cannot wait forever for a run that is over.
        """
        tasks = self._tasks
        if self._between and len(tasks) == 1:  # the one worker fed the end: it returns
            tasks.clear()
        current = asyncio.current_task() if tasks else None
        for task in tasks:
            if task is not current:
                task.cancel()
            elif not self._between:  # ended from inside a step body: cut it short too
                task.get_loop().call_soon(task.cancel)
        self._tasks.clear()
        self._pending.clear()
        for waiter in self._idle:
            waiter.cancel()
        self._idle.clear()

    def in_flight(self) -> int:
        """How many attempts are queued or running on a worker."""
        return len(self._pending) + self._busy
