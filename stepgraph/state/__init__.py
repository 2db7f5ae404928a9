"""Shared run state: the store behind ``ctx.store``, and reducers for merged keys."""

from .reducers import Reducer, add, append, extend, merge
from .store import StateStore

__all__ = ["Reducer", "StateStore", "add", "append", "extend", "merge"]
