"""The core of a task flow: which task may start, which fails, which is cancelled.

A :class:`Dag` is pure: no IO, no asyncio, no clock. The flow (the shell) tells it what
happened (a task was added with its unfinished dependencies and its resource claims,
a task finished, a task was cancelled) and it answers with commands:

- ``(START, task, -1)``: every dependency finished well and the task's slots are taken;
  run its body.
- ``(FAIL, task, dependency)``: ``dependency`` failed (or a dependency of it did): the
  task never runs; it fails with ``DependencyFailed`` naming ``dependency``.
- ``(CANCEL, task, dependency)``: ``dependency`` was cancelled: so is the task.

Resource slots are counts per name (``{"cpu": 4, "gpu": 1}``). A task whose
dependencies are done takes its claims when they fit, else waits in a queue; tasks that
claim the same resource names are served first come, first served (a large claim is
never overtaken by smaller ones of the same kind). A task that claims nothing never
waits for slots. The claims of running tasks never exceed the slots: a task gives them
back when its body no longer runs.

The Dag holds only tasks that have not finished: a finished task's outcome lives in its
future, and the flow passes only unfinished dependencies (or the one that failed) to
:meth:`Dag.add`. Memory is therefore bounded by the tasks in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from ..errors import ResourceError

__all__ = ["CANCEL", "FAIL", "START", "Dag", "DagCommand"]

START = 0
FAIL = 1
CANCEL = 2

DagCommand = tuple[int, int, int]  # (START | FAIL | CANCEL, task, the dependency or -1)

_WAITING = 0  # for dependencies
_QUEUED = 1  # dependencies done, waiting for slots
_RUNNING = 2
_ABANDONED = 3  # cancelled while running: holds its slots until its body stops


class _Task:
    __slots__ = ("claims", "dependents", "key", "state", "waiting")

    def __init__(self, claims: tuple[tuple[str, int], ...], key: frozenset[str]) -> None:
        self.claims = claims
        self.key = key
        self.dependents: list[int] = []
        self.waiting = 0
        self.state = _WAITING


_NO_CLAIMS: tuple[tuple[str, int], ...] = ()
_NO_KEY: frozenset[str] = frozenset()


class Dag:
    """The tasks of a flow that have not finished, their dependencies and their slots."""

    __slots__ = ("capacity", "free", "hidden", "queues", "tasks")

    def __init__(self, capacity: Mapping[str, int] | None = None) -> None:
        for name, count in (capacity or {}).items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ResourceError(f"resource {name!r} must have a count >= 0, got {count!r}")
        self.capacity: dict[str, int] = dict(capacity or {})
        self.free: dict[str, int] = dict(self.capacity)
        self.hidden: set[str] = set()  # resources of the shell's own (no task claims them)
        self.tasks: dict[int, _Task] = {}
        self.queues: dict[frozenset[str], deque[int]] = {}

    # -- claims -------------------------------------------------------------------------------

    def claims(self, claims: Mapping[str, int] | None, who: str) -> tuple[tuple[str, int], ...]:
        """``claims`` checked against the slots, as the Dag keeps them.

        Raises:
            ResourceError: a resource the flow does not have, a count that is not a
                positive integer, or more than the flow has (it would wait forever).
        """
        if not claims:
            return _NO_CLAIMS
        out = []
        for name, count in claims.items():
            if name not in self.capacity or name in self.hidden:
                have = ", ".join(sorted(set(self.capacity) - self.hidden)) or "none"
                raise ResourceError(
                    f"{who} claims resource {name!r}, which the flow does not have (it has: {have})"
                )
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ResourceError(f"{who} claims {count!r} of {name!r}: a count is an int >= 0")
            if count > self.capacity[name]:
                raise ResourceError(
                    f"{who} claims {count} of resource {name!r}, but the flow has only "
                    f"{self.capacity[name]}: it could never run"
                )
            if count:
                out.append((name, count))
        return tuple(sorted(out))

    def provide(self, name: str, count: int) -> None:
        """Add resource ``name`` with ``count`` slots, unless the Dag has it already: one
        of the shell's own, which no claim names (a backend's places: the flow adds them
        as its tasks are declared)."""
        if name not in self.capacity:
            self.capacity[name] = self.free[name] = count
            self.hidden.add(name)

    # -- what happens -------------------------------------------------------------------------

    def add(
        self,
        task: int,
        dependencies: Iterable[int] = (),
        claims: tuple[tuple[str, int], ...] = _NO_CLAIMS,
        *,
        failed: int = -1,
        cancelled: int = -1,
    ) -> list[DagCommand]:
        """A new task, with its unfinished ``dependencies`` (each once) and its ``claims``
        (from :meth:`claims`); ``failed`` / ``cancelled``: a dependency that already failed
        or was cancelled (the task then never runs). A failure wins: given both, the task
        fails naming ``failed``."""
        if failed >= 0:
            return [(FAIL, task, failed)]
        if cancelled >= 0:
            return [(CANCEL, task, cancelled)]
        entry = _Task(claims, frozenset(name for name, _ in claims) if claims else _NO_KEY)
        tasks = self.tasks
        tasks[task] = entry
        waiting = 0
        for dependency in dependencies:
            tasks[dependency].dependents.append(task)
            waiting += 1
        if waiting:
            entry.waiting = waiting
            return []
        return self._ready(task, entry)

    def finished(self, task: int, ok: bool) -> list[DagCommand]:
        """``task``'s body stopped: ``ok`` if it returned, else it failed (or was
        cancelled while it ran: see :meth:`cancel`)."""
        entry = self.tasks.pop(task)
        out: list[DagCommand] = []
        if entry.claims:
            free = self.free
            for name, count in entry.claims:
                free[name] += count
            self._drain(entry.key, out)
        if entry.state == _ABANDONED:
            return out  # its dependents were cancelled with it
        tasks = self.tasks
        for dependent in entry.dependents:
            waiting = tasks.get(dependent)
            if waiting is None:
                continue  # it failed or was cancelled through another dependency
            if ok:
                waiting.waiting -= 1
                if waiting.waiting == 0:
                    out.extend(self._ready(dependent, waiting))
            else:
                self._remove(dependent, task, FAIL, out)
        return out

    def cancel(self, task: int) -> list[DagCommand]:
        """``task`` was cancelled: it and every task that depends on it, transitively, are
        cancelled (commands for the dependents; the shell cancels ``task`` itself). A
        running task keeps its slots until :meth:`finished`."""
        entry = self.tasks.get(task)
        if entry is None or entry.state == _ABANDONED:
            return []
        out: list[DagCommand] = []
        if entry.state == _RUNNING:
            entry.state = _ABANDONED
        else:
            del self.tasks[task]
            if entry.state == _QUEUED:  # those behind it may fit now
                self._drain(entry.key, out)
        for dependent in entry.dependents:
            self._remove(dependent, task, CANCEL, out)
        return out

    @property
    def running(self) -> int:
        """Tasks whose bodies run (or were cancelled and still run)."""
        return sum(1 for t in self.tasks.values() if t.state >= _RUNNING)

    # -- inside -------------------------------------------------------------------------------

    def _ready(self, task: int, entry: _Task) -> list[DagCommand]:
        if not entry.claims:
            entry.state = _RUNNING
            return [(START, task, -1)]
        queue = self.queues.get(entry.key)
        if not queue and self._fits(entry):
            self._take(entry)
            return [(START, task, -1)]
        if queue is None:
            queue = self.queues[entry.key] = deque()
        queue.append(task)
        entry.state = _QUEUED
        return []

    def _fits(self, entry: _Task) -> bool:
        free = self.free
        return all(free[name] >= count for name, count in entry.claims)

    def _take(self, entry: _Task) -> None:
        free = self.free
        for name, count in entry.claims:
            free[name] -= count
        entry.state = _RUNNING

    def _drain(self, released: frozenset[str], out: list[DagCommand]) -> None:
        """Start the queued tasks that fit now, first come first served per kind of claim."""
        tasks = self.tasks
        for key, queue in self.queues.items():
            if not queue or not (key & released):
                continue
            while queue:
                entry = tasks.get(queue[0])
                if entry is None or entry.state != _QUEUED:
                    queue.popleft()  # cancelled while it waited
                    continue
                if not self._fits(entry):
                    break
                self._take(entry)
                out.append((START, queue.popleft(), -1))

    def _remove(self, task: int, cause: int, kind: int, out: list[DagCommand]) -> None:
        """``task`` and its dependents, transitively, fail or are cancelled (never ran)."""
        stack = [(task, cause)]
        tasks = self.tasks
        while stack:
            current, because = stack.pop()
            entry = tasks.pop(current, None)
            if entry is None:
                continue
            out.append((kind, current, because))
            stack.extend((dependent, current) for dependent in reversed(entry.dependents))
