"""Describing values in messages, safely."""

from __future__ import annotations

__all__ = ["short_repr"]


def short_repr(value: object, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises (a broken ``__repr__``
    must not hide the error being reported)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
