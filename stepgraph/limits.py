"""Limiters: at most N holders at once, and at most N acquisitions per second, minute or hour.

A :class:`Limiter` is a declaration (a name, ``max_concurrency``, ``rate``); every
workflow or flow that uses it declares it (``Workflow(limiters=[...])``,
``TaskFlow(limiters=[...])``), with the same limits. Within a process, every
declaration of a name shares one :class:`Gate`: the limits hold across all the runs and
flows of the process, whatever event loop they run in. A declaration that contradicts
an earlier one of the same name is an error naming the limiter.

A step holds a limiter while its body runs (``@step(limiter="llm")``), a task while its
body runs (``flow.function_task(limiter="llm")``), and any code inside a step for the
block it wraps (``async with ctx.limit("llm"):``). The rate is a token bucket: ``rate="5/s"``
allows bursts of 5, then 5 per second. Waiting for a limiter is not a stall: the step
or task waiting is running, as far as the run is concerned.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from .errors import StepgraphError, WorkflowValidationError

__all__ = ["Gate", "Limiter", "LimiterGate", "gate_for", "gate_of", "limited"]

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|min|minute|h|hour)\s*$")
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0}
_PERIODS |= {"h": 3600.0, "hour": 3600.0}
_log = logging.getLogger("stepgraph.limits")


@dataclass(frozen=True, slots=True)
class Limiter:
    """A named limit shared by the steps and tasks that use it.

    Args:
        name: how steps, tasks and ``ctx.limit`` name it.
        max_concurrency: at most this many holders at once (None: no such limit).
        rate: at most ``"N/s"``, ``"N/min"`` or ``"N/h"`` acquisitions, with bursts of N
            (None: no such limit).

    Raises:
        WorkflowValidationError: a name that is empty, a count below 1, a rate that
            does not read as N per second, minute or hour.
    """

    name: str
    max_concurrency: int | None = None
    rate: str | None = None
    per_second: float = field(init=False, repr=False, compare=False)
    burst: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"Limiter({self.name!r})"
        if not isinstance(self.name, str) or not self.name:
            raise WorkflowValidationError(f"Limiter({self.name!r}): a name is a non-empty string")
        count = self.max_concurrency
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise WorkflowValidationError(
                f"{where}: max_concurrency must be an int >= 1, got {count!r}"
            )
        per_second, burst = math.inf, math.inf
        if self.rate is not None:
            found = _RATE.match(self.rate) if isinstance(self.rate, str) else None
            if found is None or float(found.group(1)) <= 0:
                raise WorkflowValidationError(
                    f"{where}: rate must read as 'N/s', 'N/min' or 'N/h' with N > 0, got "
                    f"{self.rate!r}"
                )
            tokens = float(found.group(1))
            per_second = tokens / _PERIODS[found.group(2)]
            burst = max(tokens, 1.0)  # "0.5/s": one every two seconds, not never
        object.__setattr__(self, "per_second", per_second)
        object.__setattr__(self, "burst", burst)


class Gate:
    """The state of one limiter in this process: holders, tokens, and who waits (in order).

    Thread-safe, and usable from several event loops at once: a waiter is woken on its
    own loop.
    """

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self._lock = threading.Lock()
        self._held = 0
        self._tokens = limiter.burst
        self._stamp = time.monotonic()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self.waits = 0  # acquisitions that had to wait (for tests and reports)

    @property
    def held(self) -> int:
        """How many hold it now."""
        return self._held

    def _refill(self, now: float) -> None:
        limiter = self.limiter
        if limiter.per_second != math.inf:
            self._tokens = min(
                limiter.burst, self._tokens + (now - self._stamp) * limiter.per_second
            )
        self._stamp = now

    def _try_take(self) -> float | None:
        """Take a slot and a token (None), or say how long to wait for a token (seconds;
        inf: for a slot)."""
        limit = self.limiter.max_concurrency
        if limit is not None and self._held >= limit:
            return math.inf
        now = time.monotonic()
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            self._held += 1
            return None
        return (1 - self._tokens) / self.limiter.per_second

    async def acquire(self) -> float:
        """Wait until the limits allow one more holder, first come first served; the
        seconds it waited."""
        loop = asyncio.get_running_loop()
        started: float | None = None
        while True:
            with self._lock:
                delay: float | None
                if started is None and self._waiters:
                    delay = math.inf  # behind those who wait already
                else:
                    delay = self._try_take()
                    if delay is None:
                        if started is None:
                            return 0.0
                        self._wake_first()  # the next in line tries in turn
                        return time.monotonic() - started
                waiter: asyncio.Future[None] = loop.create_future()
                if started is None:
                    self._waiters.append((loop, waiter))
                else:  # woken first in line: it keeps its place
                    self._waiters.appendleft((loop, waiter))
            if started is None:  # visible while it lasts, not only once it is over
                started = time.monotonic()
                self.waits += 1
                tell_waiting(self.limiter.name)
            assert delay is not None
            timer = None if delay == math.inf else loop.call_later(delay, _wake, waiter)
            try:
                await waiter
            except BaseException:
                with self._lock:
                    if (loop, waiter) in self._waiters:
                        first = self._waiters[0] == (loop, waiter)
                        self._waiters.remove((loop, waiter))
                        if first:  # the next in line takes the turn (and its own timer)
                            self._wake_first()
                    else:  # woken, then cancelled: pass the turn on
                        self._wake_first()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                with self._lock:
                    if (loop, waiter) in self._waiters:  # woken by its timer: still queued
                        self._waiters.remove((loop, waiter))

    def release(self) -> None:
        """One holder is done: wake who waits first."""
        with self._lock:
            self._held -= 1
            self._wake_first()

    def _wake_first(self) -> None:
        if self._waiters:
            loop, waiter = self._waiters.popleft()
            loop.call_soon_threadsafe(_wake, waiter)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[float]:
        """``async with gate.hold():`` holds it for the block (yields the seconds waited).

        A wait is visible: a line on the ``stepgraph.limits`` logger as it starts, and,
        once over, another and a ``stepgraph.limiter.wait`` event on the current span
        (when tracing is on).
        """
        waited = await self.acquire()
        if waited:
            _tell_wait(self.limiter.name, waited)
        try:
            yield waited
        finally:
            self.release()


def tell_waiting(name: str) -> None:
    """A wait for limiter ``name`` starts: a line on the ``stepgraph.limits`` logger
    (naming the run and step that waits, when a step does)."""
    _log.info("waiting for limiter %r%s", name, _waiter())


def _waiter() -> str:
    """`` (run R, step S)`` when a step of a run is what runs here, else nothing."""
    from .runtime.scope import current_scope

    scope = current_scope()
    if scope is None:
        return ""
    run = scope.run
    return f" (run {run.run_id}, step {run.graph.nodes[scope.node].name!r})"


def _tell_wait(name: str, seconds: float) -> None:
    _log.info("waited %.3f s for limiter %r%s", seconds, name, _waiter())
    if "opentelemetry.trace" in sys.modules:
        from opentelemetry import trace

        trace.get_current_span().add_event(
            "stepgraph.limiter.wait",
            {"stepgraph.limiter.name": name, "stepgraph.limiter.waited": seconds},
        )


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_GATES: dict[str, Gate] = {}
_GATES_LOCK = threading.Lock()


def gate_of(limiter: Limiter) -> Gate:
    """The process's gate of ``limiter`` (made at its first declaration).

    Raises:
        StepgraphError: the process has a limiter of this name with other limits.
    """
    with _GATES_LOCK:
        gate = _GATES.get(limiter.name)
        if gate is None:
            gate = _GATES[limiter.name] = Gate(limiter)
        elif gate.limiter != limiter:
            known = gate.limiter
            raise StepgraphError(
                f"limiter {limiter.name!r} is declared with max_concurrency="
                f"{limiter.max_concurrency!r}, rate={limiter.rate!r}, but this process declared "
                f"it with max_concurrency={known.max_concurrency!r}, rate={known.rate!r}: every "
                f"declaration of a limiter gives the same limits"
            )
        return gate


class LimiterGate(Protocol):
    """What steps and tasks hold: a limiter's state, in this process (:class:`Gate`) or in
    a database (``stepgraph.stores.pg_limits.PostgresGate``)."""

    @property
    def limiter(self) -> Limiter: ...

    async def acquire(self) -> float: ...

    def release(self) -> None: ...

    def hold(self) -> AbstractAsyncContextManager[float]: ...


def gate_for(store: object, limiter: Limiter) -> LimiterGate:
    """The gate of ``limiter`` for runs kept in ``store``: the store's own when it keeps
    limiters (``PostgresStore``: across processes), else the process's.

    Raises:
        StepgraphError: a contradicting declaration (in this process, or stored).
    """
    gate = gate_of(limiter)  # every declaration agrees within the process, whatever the store
    make = getattr(store, "limiter_gate", None)
    return gate if make is None else make(limiter)


def limited(name: str, gates: Mapping[str, LimiterGate], who: str) -> LimiterGate:
    """The gate named ``name`` among ``gates`` (what a workflow or flow declared).

    Raises:
        StepgraphError: no limiter of that name was declared there.
    """
    gate = gates.get(name)
    if gate is None:
        known = ", ".join(repr(n) for n in gates) or "none"
        raise StepgraphError(
            f"{who} uses limiter {name!r}, which is not declared (declared: {known}); pass "
            f"limiters=[Limiter({name!r}, ...)]"
        )
    return gate
