"""Edge groups as declared on a WorkflowBuilder, and the switch branches ``Case``/``Default``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .executor import Executor

__all__ = ["Case", "Condition", "Default", "EdgeGroup", "NodeRef", "Selector", "label", "node_id"]

NodeRef = Executor | str
Condition = Callable[[Any], bool]
Selector = Callable[[Any, list[str]], Iterable[str]]


@dataclass(frozen=True, slots=True)
class Case:
    """A branch of ``add_switch``: messages for which ``condition`` holds go to ``target``."""

    condition: Condition
    target: NodeRef


@dataclass(frozen=True, slots=True)
class Default:
    """The branch of ``add_switch`` taken when no Case holds."""

    target: NodeRef


@dataclass(frozen=True, slots=True)
class EdgeGroup:
    """An edge group as declared: kind, sources, targets, and its routing function."""

    kind: str  # "edge" | "fan_out" | "fan_in" | "switch"
    sources: tuple[NodeRef, ...]
    targets: tuple[NodeRef, ...]
    condition: Condition | None = None
    selector: Selector | None = None
    cases: tuple[Case | Default, ...] = ()


def label(fn: Callable[..., Any] | None) -> str:
    if fn is None:
        return ""
    name = getattr(fn, "__name__", type(fn).__name__)
    return "lambda" if name == "<lambda>" else name


def node_id(node: NodeRef) -> str:
    return node if isinstance(node, str) else node.id
