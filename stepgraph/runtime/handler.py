"""WorkflowHandler: the caller's handle on a run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from ..errors import RunFinishedError, WorkflowRuntimeError
from ..events import Event

if TYPE_CHECKING:
    from .context import Context
    from .run import Run

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

    __slots__ = ("_ctx", "_run")
    _ctx: Any

    def __init__(self, run: Run) -> None:
        assert run.ctx is not None, "create the handler before the run starts"
        self._run = run
        self._ctx = run.ctx

    def __await__(self) -> Generator[Any, None, Any]:
        return self._run.future.__await__()

    @property
    def run_id(self) -> str:
        """The run's unique id."""
        return self._run.run_id

    @property
    def ctx(self) -> Context:
        """The run's context: a ``Context`` (``@step``) or ``WorkflowContext`` (graphs)."""
        ctx: Context = self._ctx
        return ctx

    def done(self) -> bool:
        """Whether the run has ended."""
        return self._run.future.done()

    def result(self) -> Any:
        """The result of an ended run (raises its error); like ``asyncio.Future.result``."""
        return self._run.future.result()

    def exception(self) -> BaseException | None:
        """The error of an ended run, or None."""
        return self._run.future.exception()

    def stream_events(self) -> AsyncIterator[Any]:
        """Every event written to the stream, in order, ending with the StopEvent.

        For executor graphs: lifecycle events (from now on), outputs and requests.
        """
        run = self._run
        if run.plan.executor_graph:
            run.lifecycle = True
        return run.stream.events(run.run_id)

    def send_event(self, event: Any, step: str | None = None) -> None:
        """Send ``event`` into the run from outside (for example a HumanResponseEvent).

        Raises:
            RunFinishedError: the run has already ended.
        """
        if self._run.done:
            raise RunFinishedError(
                f"cannot send {type(event).__name__} to run {self._run.run_id} of workflow "
                f"{self._run.name!r}: the run has already ended"
            )
        if not isinstance(event, Event) and not self._run.plan.executor_graph:
            raise WorkflowRuntimeError(
                f"handler.send_event({event!r:.200}): run {self._run.run_id} of workflow "
                f"{self._run.name!r} takes Event instances"
            )
        self._run.send(None, event, step)

    async def send_response(self, request_id: str, response: Any) -> None:
        """Answer the request ``request_id`` (from a ``RequestInfoEvent``) with ``response``.

        Raises:
            RequestNotFoundError: no such request is open.
            InvalidResponseError: ``response`` is not of the requested type; the request
                stays open, so you can answer again.
            RunFinishedError: the run has already ended.
        """
        if self._run.done:
            raise RunFinishedError(
                f"cannot answer request {request_id!r}: run {self._run.run_id} of workflow "
                f"{self._run.name!r} has already ended"
            )
        forwarded = self._run.respond(request_id, response)
        if forwarded is not None:
            await forwarded

    async def cancel(self) -> None:
        """Cancel the run; awaiting the handler then raises ``WorkflowCancelled``."""
        run = self._run
        if not run.done:
            run.cancel()
        future = run.future
        if future.done() and not future.cancelled():
            future.exception()  # mark retrieved: a cancelled run is not an unhandled error
        await asyncio.sleep(0)  # let the cancelled workers unwind
