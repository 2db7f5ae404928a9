"""The ``@step`` decorator and the introspection that turns a method into a step spec."""

from __future__ import annotations

import ast
import asyncio
import contextvars
import inspect
import sys
import textwrap
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ..errors import WorkflowValidationError
from ..events import Event
from ..runtime.retry import RetryPolicy

__all__ = ["StepConfig", "StepSpec", "step"]

F = TypeVar("F", bound=Callable[..., Any])

STEP_ATTRIBUTE = "__stepgraph_step__"


@dataclass(frozen=True, slots=True, kw_only=True)
class StepConfig:
    """What ``@step(...)`` was given."""

    num_workers: int = 1
    retry_policy: RetryPolicy | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSpec:
    """A step, introspected and checked: everything the runtime needs to call it.

    Attributes:
        name: the method's name.
        func: the undecorated function (unbound).
        accepts: event types of its event parameter (a union gives several).
        returns: event types its return annotation names (``None`` excluded).
        ctx_position: 0 or 1: where the Context goes among (ctx, event); None: no ctx.
        is_async: whether ``func`` is a coroutine function (sync steps run in a thread).
        config: the decorator's options.
        call: ``call(workflow, ctx, event)`` -> awaitable of the step's result; sync steps
            run in the loop's default thread pool with the caller's context variables.
    """

    name: str
    func: Callable[..., Any]
    accepts: tuple[type[Event], ...]
    returns: tuple[type[Event], ...]
    ctx_position: int | None
    is_async: bool
    config: StepConfig
    call: Callable[[Any, Any, Any], Awaitable[Any]]
    returns_events: bool = True


@overload
def step(func: F, /) -> F: ...
@overload
def step(
    *,
    num_workers: int = 1,
    retry_policy: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Callable[[F], F]: ...


def step(
    func: Any = None,
    /,
    *,
    num_workers: int = 1,
    retry_policy: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Any:
    """Mark a workflow method as a step.

    The step receives every event whose type matches its event parameter's
    annotation (unions allowed, subclasses match) and returns an event, or None.
    A ``ctx: Context`` parameter is optional. A plain ``def`` step runs in a thread.

    Args:
        num_workers: how many events the step may process at once (default 1: serial).
        retry_policy: how a failing step is retried (default: not retried).
        timeout: seconds one attempt may take; exceeding it counts as a failed attempt.

    Example::

        class Echo(Workflow):
            @step
            async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
                return StopEvent(result=ev.text)
    """
    if not isinstance(num_workers, int) or num_workers < 1:
        raise WorkflowValidationError(f"@step(num_workers={num_workers!r}): must be an int >= 1")
    if timeout is not None and timeout <= 0:
        raise WorkflowValidationError(f"@step(timeout={timeout!r}): must be > 0 seconds or None")
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise WorkflowValidationError(
            f"@step(retry_policy={retry_policy!r}): expected a RetryPolicy(...)"
        )
    config = StepConfig(num_workers=num_workers, retry_policy=retry_policy, timeout=timeout)

    def mark(fn: F) -> F:
        if not callable(fn):
            raise WorkflowValidationError(f"@step decorates a function, not {fn!r}")
        setattr(fn, STEP_ATTRIBUTE, config)
        return fn

    if func is not None:
        return mark(func)
    return mark


def _event_types(annotation: Any) -> tuple[type, ...] | None:
    """The classes named by an annotation (a class, a union, Optional); None if not classes."""
    if annotation is None or annotation is type(None):
        return ()
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        found: list[type] = []
        for arg in typing.get_args(annotation):
            inner = _event_types(arg)
            if inner is None:
                return None
            found.extend(inner)
        return tuple(found)
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


def awaited_types(func: Callable[..., Any], localns: dict[str, Any] | None) -> set[type]:
    """Event types a step passes to ``ctx.wait_for_event`` (read from its source, if any).

    Validation accepts a returned type with no accepting step when some step waits for
    it. Only names and tuples of names are recognised; anything else is left unseen.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return set()
    names: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        callee = node.func
        if isinstance(callee, ast.Attribute) and callee.attr == "wait_for_event":
            first = node.args[0]
            items = first.elts if isinstance(first, ast.Tuple) else [first]
            names.extend(item.id for item in items if isinstance(item, ast.Name))
    scope = {**getattr(func, "__globals__", {}), **(localns or {})}
    return {scope[n] for n in names if isinstance(scope.get(n), type)}


def inspect_step(
    owner: str,
    func: Callable[..., Any],
    context_type: type,
    localns: dict[str, Any] | None = None,
) -> StepSpec:
    """Check a step's signature and build its spec; errors name the workflow and step."""
    name = func.__name__
    where = f"step {name!r} of workflow {owner!r}"
    config: StepConfig = getattr(func, STEP_ATTRIBUTE)
    try:
        hints = typing.get_type_hints(func, localns=localns)
    except Exception as exc:
        raise WorkflowValidationError(f"{where}: cannot resolve its annotations: {exc}") from exc
    params = list(inspect.signature(func).parameters.values())[1:]  # drop self
    ctx_position: int | None = None
    event_param: inspect.Parameter | None = None
    others: list[str] = []
    for param in params:
        hint = hints.get(param.name)
        is_ctx = (isinstance(hint, type) and issubclass(hint, context_type)) or (
            hint is None and param.name in ("ctx", "context")
        )
        if is_ctx and ctx_position is None:
            ctx_position = 0 if event_param is None else 1
        elif event_param is None:
            event_param = param
        elif param.default is inspect.Parameter.empty:
            others.append(param.name)
    if event_param is None:
        raise WorkflowValidationError(
            f"{where} has no event parameter: declare one annotated with an Event type, "
            f"e.g. `async def {name}(self, ctx: Context, ev: StartEvent) -> StopEvent`"
        )
    if others:
        raise WorkflowValidationError(
            f"{where} has parameters {others} besides the context and the event "
            f"{event_param.name!r}; a step takes (self, [ctx,] event)"
        )
    accepts = _event_types(hints.get(event_param.name))
    if not accepts or not all(issubclass(t, Event) for t in accepts):
        raise WorkflowValidationError(
            f"{where}: parameter {event_param.name!r} must be annotated with Event "
            f"subclasses (a union is allowed), got {hints.get(event_param.name)!r}"
        )
    if "return" not in hints:
        raise WorkflowValidationError(
            f"{where} has no return annotation: annotate the events it returns, "
            f"e.g. `-> Ping | StopEvent`, or `-> None`"
        )
    returns = _event_types(hints["return"])
    if returns is None or not all(issubclass(t, Event) for t in returns):
        raise WorkflowValidationError(
            f"{where}: its return annotation must name Event subclasses or None, "
            f"got {hints['return']!r}"
        )
    is_async = inspect.iscoroutinefunction(func)
    return StepSpec(
        name=name,
        func=func,
        accepts=tuple(accepts),
        returns=tuple(returns),
        ctx_position=ctx_position,
        is_async=is_async,
        config=config,
        call=_caller(func, ctx_position, is_async),
    )


def _caller(
    func: Callable[..., Any], ctx_position: int | None, is_async: bool
) -> Callable[[Any, Any, Any], Awaitable[Any]]:
    """Build ``call(workflow, ctx, event)`` once per step, so a hop does no introspection."""
    if ctx_position is None:

        def arrange(w: Any, c: Any, e: Any) -> tuple[Any, ...]:
            return (w, e)
    elif ctx_position == 0:

        def arrange(w: Any, c: Any, e: Any) -> tuple[Any, ...]:
            return (w, c, e)
    else:

        def arrange(w: Any, c: Any, e: Any) -> tuple[Any, ...]:
            return (w, e, c)

    if not is_async:

        def call_in_thread(w: Any, c: Any, e: Any) -> Awaitable[Any]:
            context = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            return loop.run_in_executor(None, context.run, func, *arrange(w, c, e))

        return call_in_thread
    if ctx_position is None:
        return lambda w, c, e: func(w, e)
    if ctx_position == 0:
        return func
    return lambda w, c, e: func(w, e, c)
