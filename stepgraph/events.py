"""Events: the typed messages steps exchange.

Events are pydantic models. Declare fields as on any model::

    class Ping(Event):
        n: int

Extra keyword arguments are kept as attributes (``StartEvent`` carries the
keywords given to ``run()`` this way). Events are validated when you construct
them; the engine passes the same objects along without validating them again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

__all__ = ["Event", "HumanResponseEvent", "InputRequiredEvent", "StartEvent", "StopEvent"]


class Event(BaseModel):
    """Base class of every event. Subclass it and declare fields."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of field or extra attribute ``key``, or ``default``."""
        return getattr(self, key, default)

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


class StartEvent(Event):
    """The first event of a run; ``run(**kwargs)`` sets its attributes.

    Subclass it to declare (and validate) the run's arguments::

        class Question(StartEvent):
            text: str
    """


class StopEvent(Event):
    """Returning (or sending) a StopEvent ends the run.

    Awaiting the run's handler gives ``result``; for a subclass of StopEvent it
    gives the event itself.
    """

    result: Any = None

    def __init__(self, result: Any = None, **data: Any) -> None:
        super().__init__(result=result, **data)


class InputRequiredEvent(Event):
    """Asks the caller for input. It appears on the stream; the run waits (a pause, not a stall).

    Attributes:
        prefix: the question or prompt to show.
        request_id: the request's id (a string or an integer), set by the run when the
            step emits it (unless the step set one): stable when the step runs again
            after a resume, so an answer given before a restart still answers it.
    """

    prefix: Any = ""
    request_id: StrictStr | StrictInt | None = None


class HumanResponseEvent(Event):
    """The caller's answer to an :class:`InputRequiredEvent` (``handler.send_event``).

    Attributes:
        response: the answer.
        request_id: the ``request_id`` of the request it answers; None answers the
            oldest open request. The answer goes to the step that asked that request
            when that step waits for it. Sending the same answer again changes nothing;
            a different answer to a request answered already is refused.
    """

    response: Any = ""
    request_id: StrictStr | StrictInt | None = None
