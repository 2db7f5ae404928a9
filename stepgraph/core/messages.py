"""Messages the kernel itself builds: the answer to a request for information."""

from __future__ import annotations

__all__ = ["ResponseMessage"]


class ResponseMessage:
    """The caller's answer to a request, delivered to the node that asked.

    Attributes:
        request_id: the request it answers.
        data: what the node asked about (``request_info``'s ``data``).
        response: the caller's answer.
    """

    __slots__ = ("data", "request_id", "response")

    def __init__(self, request_id: str, data: object, response: object) -> None:
        self.request_id = request_id
        self.data = data
        self.response = response

    def __eq__(self, other: object) -> bool:
        if type(other) is not ResponseMessage:
            return NotImplemented
        return (self.request_id, self.data, self.response) == (
            other.request_id,
            other.data,
            other.response,
        )

    __hash__ = None  # type: ignore[assignment]  # compared by value, like the events it carries

    def __repr__(self) -> str:
        return f"ResponseMessage(request_id={self.request_id!r}, response={self.response!r})"
