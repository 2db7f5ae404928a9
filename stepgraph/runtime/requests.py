"""Requests for information: ``ctx.request_info`` and ``handler.send_response``.

The kernel keeps the open requests (``RequestOpened`` registers one, ``ResponseReceived``
answers it and delivers the answer to the node that asked). This module checks a
response against its request before it reaches the kernel, and keeps the one thing the
kernel cannot: for a request a sub-workflow made, the function passing the answer on.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..core import InputRequested, RequestOpened, ResponseReceived
from ..core.text import short_repr
from ..errors import (
    InvalidResponseError,
    RequestAnsweredError,
    RequestNotFoundError,
    WorkflowRuntimeError,
)
from .scope import Scope

if TYPE_CHECKING:
    from .run import Run

__all__ = ["Requests", "is_instance"]


def is_instance(value: object, expected: Any) -> bool:
    """isinstance that understands Any/object, unions and generic aliases (list[str])."""
    if expected is Any or expected is object:
        return True
    origin = typing.get_origin(expected)
    if origin is typing.Union or origin is types.UnionType:
        return any(is_instance(value, arg) for arg in typing.get_args(expected))
    if origin is not None:
        expected = origin
    return isinstance(value, expected)


def short(value: object) -> str:
    """A repr cut to 200 characters, that never raises."""
    return short_repr(value, 200)


class Requests:
    """The requests of one run whose answers go to a sub-workflow, by request id.

    It holds no reference to its run (the run passes itself).
    """

    __slots__ = ("_forwarded", "_forwards")

    def __init__(self) -> None:
        self._forwards: dict[str, Callable[[object], Awaitable[None] | None]] = {}
        self._forwarded: dict[str, Awaitable[None]] = {}  # answers passed on, for respond()

    def open(
        self,
        run: Run,
        scope: Scope,
        request_id: str,
        data: object,
        response_type: Any,
        event: object,
        forward: Callable[[object], Awaitable[None] | None] | None,
    ) -> str:
        """Register the request and announce ``event`` (a ``RequestInfoEvent``)."""
        if not scope.active or scope.invocation not in run.state.invocations:
            raise WorkflowRuntimeError(
                f"{run.where(scope)} asked for information after the handler had returned "
                f"(from a task it started?); ask before the handler returns, or await that "
                f"task inside the handler"
            )
        if forward is not None:  # first: an answer it has already goes on at once
            self._forwards[request_id] = forward
        run.feed(
            RequestOpened(
                invocation=scope.invocation,
                request_id=request_id,
                data=data,
                response_type=response_type,
                forwarded=forward is not None,
            )
        )
        if forward is not None:  # a sub-workflow's request: its run waits for the answer,
            # and this run, which announces it (stored as paused first, when durable)
            run.feed(InputRequested(invocation=scope.invocation, event=event))
        else:
            run.emit(scope, event)  # in order with the step's other messages
        return request_id

    def respond(self, run: Run, request_id: str, response: object) -> Awaitable[None] | None:
        """Answer an open request; a response of the wrong type leaves it open."""
        request = run.state.requests.get(request_id)
        if request is None and request_id in run.state.answers:
            check_repeated_answer(run, request_id, response)
            return None  # the same answer again: nothing to do
        if request is None:
            raise RequestNotFoundError(
                f"run {run.run_id} of workflow {run.name!r} has no open request "
                f"{request_id!r} (open: {sorted(run.state.requests) or 'none'})"
            )
        expected = request.response_type
        if not is_instance(response, expected):
            raise InvalidResponseError(
                f"request {request_id!r} from executor "
                f"{run.graph.nodes[request.node].name!r} expects a "
                f"{getattr(expected, '__name__', expected)}, got {type(response).__name__} "
                f"({short(response)}); the request stays open"
            )
        run.feed(ResponseReceived(request_id=request_id, response=response))
        return self._forwarded.pop(request_id, None)

    def forward(self, request_id: str, response: object) -> None:
        """``ForwardResponse``: pass the answer to the sub-workflow run that asked."""
        forward = self._forwards.pop(request_id, None)
        if forward is not None:
            forwarded = forward(response)
            if forwarded is not None:
                self._forwarded[request_id] = forwarded

    def clear(self) -> None:
        """The run ended: drop what it held (an answer nobody awaited is closed)."""
        for pending in self._forwarded.values():
            close = getattr(pending, "close", None)
            if close is not None:
                close()
        self._forwards.clear()
        self._forwarded.clear()


def check_repeated_answer(run: Run, request_id: str, answer: object) -> None:
    """Accept an answer to a request answered already only when it is the same answer.

    Raises:
        RequestAnsweredError: ``answer`` differs from the request's answer.
    """
    first = run.state.answers[request_id]
    if not _same_answer(first, answer, request_id):
        raise RequestAnsweredError(
            f"request {request_id!r} of run {run.run_id} (workflow {run.name!r}) was answered "
            f"already with {short(first)}; it cannot take another answer ({short(answer)}). "
            f"Sending the same answer again is accepted and changes nothing"
        )


_NO_ID = object()


def _same_answer(first: object, answer: object, request_id: str) -> bool:
    """Whether ``answer`` is ``first`` again: equal, or equal but for the request id one of
    them leaves out (an answer without an id answered the request whose id the other names)."""
    if first == answer:
        return True
    ids = (getattr(first, "request_id", _NO_ID), getattr(answer, "request_id", _NO_ID))
    if type(first) is not type(answer) or not isinstance(first, BaseModel):
        return False
    if None not in ids or not all(i is None or i == request_id for i in ids):
        return False
    named = {"request_id": request_id}
    return bool(first.model_copy(update=named) == answer.model_copy(update=named))  # type: ignore[attr-defined]
