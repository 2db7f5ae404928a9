"""How the event log and the spans name an error (the same way in both)."""

from __future__ import annotations

from ..errors import RecordedError, TaskFailed


def body_error(error: BaseException) -> BaseException:
    """What a task's body raised: a ``TaskFailed``'s cause (any other error is itself)."""
    if isinstance(error, TaskFailed) and error.__cause__ is not None:
        return error.__cause__
    return error


def error_type(error: BaseException) -> str:
    """The class name of ``error``; of a ``RecordedError``, the name of the class it
    records (an exception that could not cross from another process as itself)."""
    if isinstance(error, RecordedError) and error.type:
        return error.type.rsplit(".", 1)[-1]
    return type(error).__name__
