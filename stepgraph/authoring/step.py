"""The ``@step`` decorator and the introspection that turns a method into a step spec."""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ..errors import WorkflowValidationError
from ..events import Event, InputRequiredEvent
from ..runtime.backends import Backend, body_caller
from ..runtime.plan import StepConfig
from ..runtime.retry import RetryPolicy
from .introspect import node_config, runtime_types

__all__ = ["StepConfig", "StepSpec", "step"]

F = TypeVar("F", bound=Callable[..., Any])

STEP_ATTRIBUTE = "__stepgraph_step__"


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
        body: ``body(workflow, ctx, event)``: the step called with its arguments in place
            (a plain function around an async step that takes no ctx, or not first: see
            :meth:`is_async_for`).
        call: ``call(workflow, ctx, event)`` -> awaitable of the step's result: the body
            itself when async, else the body on the thread backend.
        backend: where the body runs when not the default (see ``NodeProgram``).
    """

    name: str
    func: Callable[..., Any]
    accepts: tuple[type[Event], ...]
    returns: tuple[type[Event], ...]
    ctx_position: int | None
    is_async: bool
    config: StepConfig
    body: Callable[[Any, Any, Any], Any]
    call: Callable[[Any, Any, Any], Awaitable[Any]]
    returns_events: bool = True
    backend: Backend | None = None
    asks: bool = False  # may return an input request (its id is set as it is returned)

    def is_async_for(self, message: object) -> bool:
        """Whether ``body`` gives a coroutine for ``message``: whether the step is async.

        ``body`` may be a plain function putting the arguments in place around an
        ``async def`` step, so a backend cannot tell from it: the runtime asks this.
        """
        return self.is_async


@overload
def step(func: F, /) -> F: ...
@overload
def step(
    *,
    num_workers: int = 1,
    retry_policy: RetryPolicy | None = None,
    timeout: float | None = None,
    backend: str | None = None,
    limiter: str | None = None,
) -> Callable[[F], F]: ...


def step(
    func: Any = None,
    /,
    *,
    num_workers: int = 1,
    retry_policy: RetryPolicy | None = None,
    timeout: float | None = None,
    backend: str | None = None,
    limiter: str | None = None,
) -> Any:
    """Mark a workflow method as a step.

    The step receives every event whose type matches its event parameter's
    annotation (unions allowed, subclasses match) and returns an event, or None.
    A ``ctx: Context`` parameter is optional. A plain ``def`` step runs in a thread.

    Args:
        num_workers: how many events the step may process at once (default 1: serial).
        retry_policy: how a failing step is retried (default: not retried).
        timeout: seconds one attempt may take; exceeding it counts as a failed attempt.
        backend: the name of the backend its body runs on, among the workflow's
            ``backends={...}`` (default: ``async def`` on the event loop, ``def`` on a
            thread). A backend in another process gets the event pickled (cloudpickle)
            and a recording context (see docs/backends.md).
        limiter: the name of a limiter its body holds while it runs, among the
            workflow's ``limiters=[...]`` (see ``stepgraph.Limiter``).

    Example::

        class Echo(Workflow):
            @step
            async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
                return StopEvent(result=ev.text)
    """
    config = node_config(
        "@step",
        num_workers=num_workers,
        retry_policy=retry_policy,
        timeout=timeout,
        backend=backend,
        limiter=limiter,
    )

    def mark(fn: F) -> F:
        if not callable(fn):
            raise WorkflowValidationError(f"@step decorates a function, not {fn!r}")
        setattr(fn, STEP_ATTRIBUTE, config)
        return fn

    if func is not None:
        return mark(func)
    return mark


def _event_types(annotation: Any) -> tuple[type, ...] | None:
    """The classes an annotation names, ``None`` left out; None if it names no class."""
    found = runtime_types(annotation)
    if found is None or object in found:
        return None
    return tuple(t for t in found if t is not type(None))


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
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise WorkflowValidationError(
            f"{where} is a generator (it yields); a step returns one event or None: send "
            f"several with ctx.send_event(...), or stream progress with "
            f"ctx.write_event_to_stream(...)"
        )
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
    body = _arranged(func, ctx_position)
    return StepSpec(
        name=name,
        func=func,
        accepts=tuple(accepts),
        returns=tuple(returns),
        ctx_position=ctx_position,
        is_async=is_async,
        config=config,
        body=body,
        call=body_caller(body, is_async),
        asks=any(issubclass(t, InputRequiredEvent) or t is Event for t in returns),
    )


def _arranged(func: Callable[..., Any], ctx_position: int | None) -> Callable[[Any, Any, Any], Any]:
    """``func`` taking ``(workflow, ctx, event)``, built once per step (no per-hop work)."""
    if ctx_position == 0:
        return func
    if ctx_position is None:
        arranged: Callable[[Any, Any, Any], Any] = lambda w, c, e: func(w, e)  # noqa: E731
    else:
        arranged = lambda w, c, e: func(w, e, c)  # noqa: E731
    arranged.__name__, arranged.__qualname__ = func.__name__, func.__qualname__  # its errors
    return arranged
