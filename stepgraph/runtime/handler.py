"""WorkflowHandler: the caller's handle on a run. It talks to the run's caller port only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from ..core import RunStatus
from ..errors import RunFinishedError, StepgraphError

if TYPE_CHECKING:
    from .context import Context
    from .ports import CallerPort

__all__ = ["WorkflowHandler"]


class WorkflowHandler:
    """Returned by ``run()``: await it for the result, stream its events, talk to it.

    The run starts when ``run()`` is called, whether or not the handler is awaited.

    Example::

        handler = wf.run(topic="tides")
        async for ev in handler.stream_events():
            print(ev)
        result = await handler
    """

    __slots__ = ("__weakref__", "_ctx", "_run")
    _ctx: Any

    def __init__(self, port: CallerPort) -> None:
        self._run = port
        self._ctx = port.context

    def __await__(self) -> Generator[Any, None, Any]:
        """Await the run's result.

        When an await is cancelled (say by ``asyncio.wait_for`` timing out), it gets its
        ``CancelledError`` and the run is cancelled; every other and every later await
        gets ``WorkflowCancelled``.
        """
        run = self._run
        waiter = run.waiter()  # the outcome itself, or for a second await a future of its own
        try:
            return (yield from waiter.__await__())
        except asyncio.CancelledError:
            if run.running:
                run.cancel("an await of the run was cancelled (asyncio.wait_for timing out?)")
                outcome = run.outcome
                if outcome.done() and not outcome.cancelled():
                    outcome.exception()  # retrieved: the others report it, if any await
            raise

    @property
    def run_id(self) -> str:
        """The run's unique id."""
        return self._run.run_id

    @property
    def ctx(self) -> Context:
        """The run's context: a ``Context`` (``@step``) or ``WorkflowContext`` (graphs)."""
        ctx: Context = self._ctx
        return ctx

    @property
    def status(self) -> RunStatus:
        """Where the run is: ``RunStatus.RUNNING``, ``FINISHED``, ``FAILED`` or ``CANCELLED``."""
        return self._run.status

    def done(self) -> bool:
        """Whether the run has ended (an await of it that was cancelled has not ended it
        yet: it cancels the run, which ends once its cancel is carried out)."""
        outcome = self._run.outcome
        return outcome.done() and not outcome.cancelled()

    def result(self) -> Any:
        """The result of an ended run (raises its error); like ``asyncio.Future.result``."""
        return self._run.outcome.result()

    def exception(self) -> BaseException | None:
        """The error of an ended run, or None."""
        return self._run.outcome.exception()

    def stream_events(self) -> AsyncIterator[Any]:
        """Every event written to the stream, in order, ending with the StopEvent.

        For executor graphs: lifecycle events (from now on), outputs and requests.
        """
        return self._run.events(lifecycle=True)

    def send_event(self, event: Any, step: str | None = None) -> None:
        """Send ``event`` into the run from outside (for example a HumanResponseEvent).

        Raises:
            RunFinishedError: the run has already ended.
            SerializationError: the run is durable and its store cannot hold ``event``
                (the run goes on as it was).
        """
        run = self._run
        if not run.running:
            raise RunFinishedError(
                f"cannot send {type(event).__name__} to run {run.run_id} of workflow "
                f"{run.name!r}: the run has already ended"
            )
        run.plan.style.check_external(event, f"run {run.run_id} of workflow {run.name!r}")
        run.send_external(event, step)

    async def send_response(self, request_id: str, response: Any) -> None:
        """Answer the request ``request_id`` (from a ``RequestInfoEvent``) with ``response``.

        Raises:
            RequestNotFoundError: no such request is open.
            InvalidResponseError: ``response`` is not of the requested type; the request
                stays open, so you can answer again.
            RunFinishedError: the run has already ended.
            SerializationError: the run is durable and its store cannot hold ``response``
                (the request stays open).
        """
        run = self._run
        if not run.running:
            raise RunFinishedError(
                f"cannot answer request {request_id!r}: run {run.run_id} of workflow "
                f"{run.name!r} has already ended"
            )
        forwarded = run.respond(request_id, response)
        if forwarded is not None:
            await forwarded

    async def cancel(self) -> None:
        """Cancel the run; awaiting the handler then raises ``WorkflowCancelled``.

        Returns once the run has ended: a durable run's status is stored (``cancelled``)
        and its lease given up, so a ``resume`` made next goes on from its last checkpoint.
        A run a worker carries out (a handler from ``attach``): once the cancel is stored
        (a queued run: as cancelled; any other: in its inbox, for its worker, which ends the
        run when it reads it: await the handler for that).
        """
        run = self._run
        if run.running:
            run.cancel("cancelled by the caller")
        await run.stopped()
        outcome = run.outcome
        if outcome.done() and not outcome.cancelled():
            outcome.exception()  # mark retrieved: a cancelled run is not an unhandled error
        await asyncio.sleep(0)  # let the cancelled workers unwind

    async def flush(self) -> None:
        """Wait until what was sent to the run (``send_event``, ``send_response``,
        ``cancel``) is where the run reads it, or the run has ended. For a run in this
        process, at once (a durable run: once what it recorded is committed, what was sent
        while it was being restored included). For a run a worker carries out (a handler
        from ``attach``), sends are posted to its store in the background: once they are
        stored. Await it before the process that sent ends, or what was sent may be lost.

        Raises:
            StoreError: a send to an attached run could not be stored (it is lost).
        """
        await self._run.flushed()

    async def detach(self) -> None:
        """Stop following a durable run, and leave it as its store has it: paused, or
        resumable from its last checkpoint, as a process that exits leaves it.

        Its steps and timers stop where they are, nothing more is written, its lease
        goes; awaiting the handler then raises ``WorkflowCancelled``. Resume it with
        ``MyFlow(store=...).resume(handler.run_id)``, here or in another process.

        Raises:
            StepgraphError: the run is not durable (its workflow has no store).
        """
        stop = getattr(self._run, "crash", None)
        if stop is None:
            raise StepgraphError(
                f"detach(): run {self.run_id} is not durable: give its workflow a store "
                f"(store=...) to leave it and resume it later"
            )
        await stop()
        outcome = self._run.outcome
        if outcome.done() and not outcome.cancelled():
            outcome.exception()  # retrieved: a detached run is not an unhandled error

    def _events(self) -> AsyncIterator[Any]:
        """The stream without lifecycle events (a sub-workflow's, read by its executor)."""
        return self._run.events(lifecycle=False)
