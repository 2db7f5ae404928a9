"""What both authoring styles need from Python itself: annotations, options, reducers."""

from __future__ import annotations

import math
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import WorkflowValidationError
from ..runtime.plan import StepConfig
from ..runtime.retry import RetryPolicy

__all__ = ["caller_locals", "check_reducers", "node_config", "runtime_types"]


def runtime_types(annotation: Any) -> tuple[type, ...] | None:
    """The classes an annotation accepts at run time; None when it names no class.

    ``Any``/``object`` accept everything; unions flatten; ``Annotated[T, ...]`` is ``T``;
    ``list[str]`` is ``list``; ``None`` is ``NoneType``.
    """
    if annotation is Any or annotation is object:
        return (object,)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        found: list[type] = []
        for arg in typing.get_args(annotation):
            inner = runtime_types(arg)
            if inner is None:
                return None
            found.extend(inner)
        return tuple(found)
    if origin is typing.Annotated:
        return runtime_types(typing.get_args(annotation)[0])
    if origin is not None and isinstance(origin, type):
        return (origin,)
    if annotation is None or annotation is type(None):
        return (type(None),)
    if isinstance(annotation, type):
        return (annotation,)
    return None


def caller_locals(depth: int = 2) -> dict[str, Any] | None:
    """The local names where a workflow or executor is defined, if inside a function.

    Annotations are strings under ``from __future__ import annotations``; a class defined
    in a function (in a test, say) refers to local event classes that only this frame
    knows. Kept per class, never per run.
    """
    frame = sys._getframe(depth)
    if frame.f_code.co_name == "<module>":
        return None
    return dict(frame.f_locals)


def node_config(
    where: str,
    *,
    num_workers: object,
    retry_policy: object,
    timeout: object,
    backend: object = None,
    limiter: object = None,
) -> StepConfig:
    """Check a node's options (``@step(...)``, ``Executor(...)``); errors name ``where``."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise WorkflowValidationError(
            f"{where}: num_workers must be an int >= 1, got num_workers={num_workers!r}"
        )
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise WorkflowValidationError(
            f"{where}: timeout must be > 0 seconds or None, got timeout={timeout!r}"
        )
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise WorkflowValidationError(
            f"{where}: expected a RetryPolicy(...), got retry_policy={retry_policy!r}"
        )
    if backend is not None and (not isinstance(backend, str) or not backend):
        raise WorkflowValidationError(
            f"{where}: backend is the name of a backend (a str), got backend={backend!r}"
        )
    if limiter is not None and (not isinstance(limiter, str) or not limiter):
        raise WorkflowValidationError(
            f"{where}: limiter is the name of a limiter (a str), got limiter={limiter!r}"
        )
    return StepConfig(
        num_workers=num_workers,
        retry_policy=retry_policy,
        timeout=timeout,
        backend=backend,
        limiter=limiter,
    )


def check_reducers(
    name: str, reducers: Mapping[str, Callable[[Any, Any], Any]] | None
) -> dict[str, Callable[[Any, Any], Any]]:
    """Check that every reducer is a function ``(old, new) -> merged``."""
    found = dict(reducers or {})
    for key, reducer in found.items():
        if not callable(reducer):
            raise WorkflowValidationError(
                f"workflow {name!r}: reducers[{key!r}] is {reducer!r}, not a function "
                f"(old, new) -> merged"
            )
    return found
