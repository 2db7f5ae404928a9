"""Shared run state: the store behind ``ctx.store``."""

from .store import StateStore

__all__ = ["StateStore"]
