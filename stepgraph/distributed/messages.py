"""Inbox messages: what a process sends to a run another process holds (``wf.attach``).

A message is a dict in the run's serializer's envelope: ``{"kind": "event", "event": ...,
"step": ...}``, ``{"kind": "response", "request_id": ..., "response": ...}`` or
``{"kind": "cancel", "reason": ...}``. The process holding the run reads its inbox and
carries each out (:func:`deliver`); the commit that journals it deletes the message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..durability.checkpoints import decode_value, encode_value
from ..durability.serializer import serializer_named
from ..errors import StepgraphError

if TYPE_CHECKING:
    from ..durability.run import DurableRun
    from ..stores.queue import Message

__all__ = ["deliver", "encode_message"]

_log = logging.getLogger("stepgraph.worker")


def encode_message(serializer: str, body: dict[str, Any], run_id: str) -> bytes:
    """``body`` in an envelope, for run ``run_id``'s inbox.

    Raises:
        SerializationError: a value in it cannot be serialized (names the run).
    """
    return encode_value(
        body, serializer_named(serializer), f"the {body['kind']} sent to run {run_id!r}"
    )


def deliver(run: DurableRun, message: Message) -> None:
    """Carry out inbox ``message`` on ``run`` (a run this process holds).

    A message that cannot be read, or that the run refuses (an answer to a request no
    longer open, an event it does not take), is logged and consumed all the same.
    """

    def send() -> None:
        try:
            body = decode_value(
                message.data, "an inbox message", run_id=run.run_id, trusted=run.serializer
            )
            kind = body.get("kind") if isinstance(body, dict) else None
            if kind == "event":
                event = body["event"]
                run.plan.style.check_external(event, f"run {run.run_id} of workflow {run.name!r}")
                run.send_external(event, body.get("step"))
            elif kind == "response":
                forwarded = run.respond(str(body["request_id"]), body["response"])
                if forwarded is not None:
                    run.loop.create_task(_forwarded(forwarded, run.run_id))
            elif kind == "cancel":
                run.cancel(str(body.get("reason") or "cancelled from another process"))
            else:
                raise StepgraphError(f"unknown message kind {kind!r}")
        except Exception as exc:
            _log.warning(
                "run %r: inbox message %d not delivered: %s: %s",
                run.run_id,
                message.id,
                type(exc).__name__,
                exc,
            )

    run.deliver(message.id, send)


async def _forwarded(forwarded: Any, run_id: str) -> None:
    try:
        await forwarded
    except Exception as exc:
        _log.warning(
            "run %r: a response was not delivered: %s: %s", run_id, type(exc).__name__, exc
        )
