"""Waits and collects: ``ctx.wait_for_event`` and ``ctx.collect_events`` on the run's kernel.

A wait is a future the step awaits; the kernel decides when it resolves (a matching
message: ``ResolveWait``) or fails (its timer fired: ``FailWait``). A collect is one
synchronous round trip to the kernel, answered by a ``CollectResult``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..core import CollectRequested, CollectResult, WaitCancelled, WaitStarted
from ..errors import WaitForEventTimeoutError, WorkflowRuntimeError
from .scope import Scope

if TYPE_CHECKING:
    from .run import Run

__all__ = ["Waits", "collect"]


class Waits:
    """The waits in flight of one run, by invocation.

    It holds no reference to its run (the run passes itself), so a finished run is freed
    by reference counting.
    """

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: dict[int, asyncio.Future[Any]] = {}

    @property
    def pending(self) -> bool:
        """Whether a step waits now."""
        return bool(self._futures)

    async def wait_for(
        self,
        run: Run,
        scope: Scope,
        types: tuple[type, ...],
        requirements: Mapping[str, object],
        timeout: float | None,
    ) -> Any:
        run.flush(scope)  # what the step sent before waiting must flow, or the wait could deadlock
        if run.done:  # what it sent ended the run: there is nothing left to wait for
            raise asyncio.CancelledError()
        if scope.invocation in self._futures:
            raise WorkflowRuntimeError(
                f"{run.where(scope)} called wait_for_event while already waiting; one step "
                f"waits for one event at a time (await the first wait, or use two steps)"
            )
        waiter: asyncio.Future[Any] = run.loop.create_future()
        self._futures[scope.invocation] = waiter
        run.feed(
            WaitStarted(
                invocation=scope.invocation, types=types, requirements=requirements, timeout=timeout
            )
        )
        try:
            return await waiter
        finally:
            mine = self._futures.pop(scope.invocation, None) is waiter  # (else: abandoned)
            if mine and (waiter.cancelled() or not waiter.done()):  # it stopped waiting itself
                run.feed(WaitCancelled(invocation=scope.invocation))
            # The future holds the wait's error, whose traceback holds this frame: let go of
            # it, or a step that caught a WaitForEventTimeoutError keeps its run in a cycle.
            del waiter

    def abandon(self, run: Run, invocation: int) -> None:
        """The attempt of ``invocation`` ended with a wait of its still pending (in a task
        it started and did not await): the wait ends first, then the attempt."""
        waiter = self._futures.pop(invocation, None)
        if waiter is None:
            return
        if run.state.invocations.get(invocation) is not None:
            run.feed(WaitCancelled(invocation=invocation))
        waiter.cancel()

    def resolve(self, invocation: int, event: object) -> None:
        """``ResolveWait``: wake the waiting step with ``event``."""
        waiter = self._futures.get(invocation)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)

    def fail(self, run: Run, invocation: int) -> None:
        """``FailWait``: the wait's timer fired first; raise in the step."""
        waiter = self._futures.get(invocation)
        if waiter is None or waiter.done():
            return
        inv = run.state.invocations.get(invocation)
        name = "?" if inv is None else run.graph.nodes[inv.node].name
        waiter.set_exception(
            WaitForEventTimeoutError(
                f"step {name!r} of workflow {run.name!r}: wait_for_event timed out before a "
                f"matching event arrived"
            )
        )

    def cancel_all(self) -> None:
        """The run ended: every waiting step is being cancelled."""
        futures, self._futures = self._futures, {}
        for waiter in futures.values():
            waiter.cancel()


def collect(run: Run, scope: Scope, event: object, expected: Sequence[type]) -> list[Any] | None:
    """``ctx.collect_events``: one round trip to the kernel (from the loop or a thread)."""
    if run.feeding:  # from an observer, say: its answer would come after the caller needs it
        raise WorkflowRuntimeError(
            f"{run.where(scope)} called collect_events while the run was carrying out "
            f"commands (from an observer?); collect from the step's own code"
        )
    # what the attempt collected goes back to its collector if it starts again: after a
    # retry, or after a resume (a durable run's)
    undoable = run.plan.retried[scope.node] or run.state.undo_writes
    tick = CollectRequested(
        invocation=scope.invocation, message=event, expected=expected, undoable=undoable
    )
    on_loop = run.bridge.on_loop()
    commands = run.feed(tick) if on_loop else run.bridge.call(lambda: run.feed(tick))
    for command in commands:
        if type(command) is CollectResult:
            if command.conflict:
                raise WorkflowRuntimeError(
                    f"{run.where(scope)} called collect_events with an expected list of "
                    f"{len(expected)} types that differs from the list its pending batch was "
                    f"made with (the same length and the same types at its ends, middle and "
                    f"quarters); pass the same list on every call"
                )
            if not command.accepted:
                kinds = sorted({t.__name__ for t in expected})
                raise WorkflowRuntimeError(
                    f"{run.where(scope)} called collect_events with a "
                    f"{type(event).__name__}, which is none of the expected types {kinds}; "
                    f"the event would be lost"
                )
            return command.batch
    return None
