"""Turning a live exception into a :class:`~stepgraph.core.Failure`, traceback text included."""

from __future__ import annotations

import traceback

from ..core import Failure

__all__ = ["failure_of"]


def failure_of(error: BaseException) -> Failure:
    """The failure record of ``error``: its type, message, notes and formatted traceback."""
    try:
        text = "".join(traceback.format_exception(error))
    except Exception:  # a broken __str__ must not hide the error itself
        text = ""
    try:
        return Failure.from_error(error, traceback=text)
    except Exception:
        kind = type(error)
        return Failure(
            type=f"{kind.__module__}.{kind.__qualname__}",
            message=f"<{kind.__name__}: its message could not be read>",
            traceback=text,
            exception=error,
        )
