"""Describing and comparing user values, safely (their methods may raise)."""

from __future__ import annotations

__all__ = ["error_text", "safely_equal", "short_repr"]


def safely_equal(a: object, b: object) -> bool:
    """``a == b``, False when the comparison raises or gives what ``bool()`` refuses."""
    try:
        return bool(a == b)
    except Exception:
        return False


def short_repr(value: object, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises (a broken ``__repr__``
    must not hide the error being reported)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_text(error: BaseException) -> str:
    """``str(error)``; never raises (an exception whose ``__str__`` is broken must still
    fail what it failed, and be reported)."""
    try:
        return str(error)
    except Exception as exc:
        return f"<{type(error).__name__}: its str() raised {type(exc).__name__}>"


def storable_text(text: str) -> str:
    """``text``, with what UTF-8 cannot hold (a lone surrogate, as ``os.fsdecode`` makes of
    a file name that is not UTF-8) escaped (``\\udce9``): text a store or a log can write."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
