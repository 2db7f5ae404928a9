"""Executors: the nodes of executor graphs, with handlers chosen by message type.

An :class:`Executor` subclass declares ``@handler`` methods; the handler whose
first parameter's annotation matches the message's type (unions allowed,
subclasses match, ``list[str]`` matches any list) processes the message.
``@response_handler`` methods receive answers to ``ctx.request_info``.
``@executor`` turns one function into an executor.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from ..core import ResponseMessage
from ..core.text import short_repr
from ..core.types import closest
from ..errors import UnroutableEventError, WorkflowValidationError
from ..runtime.backends import Backend, body_caller
from ..runtime.plan import StepConfig
from ..runtime.retry import RetryPolicy
from ..runtime.workflow_context import WorkflowContext
from .introspect import caller_locals, node_config, runtime_types

__all__ = [
    "Executor",
    "ExecutorProgram",
    "FunctionExecutor",
    "HandlerSpec",
    "executor",
    "handler",
    "response_handler",
]

F = TypeVar("F", bound=Callable[..., Any])

_HANDLER = "__stepgraph_handler__"
_RESPONSE = "__stepgraph_response_handler__"


def handler(func: F) -> F:
    """Mark an executor method as a message handler.

    The handler takes ``(self, message: T, ctx: WorkflowContext)``; ``T`` selects
    which messages it handles. The ``ctx`` parameter is optional.

    Example::

        class Upper(Executor):
            @handler
            async def on_text(self, text: str, ctx: WorkflowContext) -> None:
                await ctx.send_message(text.upper())
    """
    setattr(func, _HANDLER, True)
    return func


def response_handler(func: F) -> F:
    """Mark an executor method as the receiver of answers to ``ctx.request_info``.

    It takes ``(self, request, response: T, ctx)``: the request's data and the
    caller's answer; ``T`` selects which answers it receives.
    """
    setattr(func, _RESPONSE, True)
    return func


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One handler: the types it takes, what it may send, and how to call it."""

    name: str
    types: tuple[type, ...]
    output_types: tuple[type, ...] | None  # from WorkflowContext[T]; None: undeclared
    body: Callable[[Any, Any], Any]  # (message, ctx) -> result, sync or async
    call: Callable[[Any, Any], Awaitable[Any]]  # (message, ctx) -> awaitable
    is_async: bool  # whether the handler is async (``body`` may be a plain wrapper of it)


def _inspect_handler(
    owner: str,
    func: Callable[..., Any],
    bound_self: object,
    *,
    response: bool,
    localns: dict[str, Any] | None = None,
) -> HandlerSpec:
    where = f"{'response handler' if response else 'handler'} {func.__name__!r} of {owner!r}"
    try:
        hints = typing.get_type_hints(func, localns=localns, include_extras=True)
    except Exception as exc:
        raise WorkflowValidationError(f"{where}: cannot resolve its annotations: {exc}") from exc
    params = list(inspect.signature(func).parameters.values())
    if bound_self is not None:
        params = params[1:]
    ctx_index: int | None = None
    values: list[inspect.Parameter] = []
    for param in params:
        hint = hints.get(param.name)
        base = typing.get_origin(hint) or hint
        if (isinstance(base, type) and issubclass(base, WorkflowContext)) or (
            hint is None and param.name in ("ctx", "context")
        ):
            ctx_index = len(values)
        else:
            values.append(param)
    wanted = 2 if response else 1
    if len(values) != wanted:
        shape = "(self, request, response: T, ctx)" if response else "(self, message: T, ctx)"
        raise WorkflowValidationError(f"{where} must take {shape}; got {len(values)} values")
    typed = values[-1]
    if typed.name not in hints:
        raise WorkflowValidationError(
            f"{where}: annotate parameter {typed.name!r} with the type it handles"
        )
    accepted = runtime_types(hints[typed.name])
    if not accepted:
        raise WorkflowValidationError(
            f"{where}: cannot dispatch on annotation {hints[typed.name]!r} of {typed.name!r}"
        )
    output_types: tuple[type, ...] | None = None
    ctx_hint = next(
        (hints.get(p.name) for p in params if p.name not in [v.name for v in values]), None
    )
    if ctx_hint is not None and typing.get_args(ctx_hint):
        declared = typing.get_args(ctx_hint)[0]
        output_types = runtime_types(declared)
        if output_types is None:
            raise WorkflowValidationError(
                f"{where}: WorkflowContext[{declared!r}] declares what the handler sends, "
                f"but {declared!r} is not a type; write WorkflowContext[T] with T a class, a "
                f"union of classes, or Any"
            )
        if output_types == (object,):
            output_types = None  # WorkflowContext[Any]: sends anything, nothing to check
    target = func if bound_self is None else func.__get__(bound_self)
    body = _arranged(target, ctx_index, response)
    is_async = inspect.iscoroutinefunction(func)
    call = body_caller(body, is_async)
    return HandlerSpec(func.__name__, accepted, output_types, body, call, is_async)


def _arranged(
    target: Callable[..., Any], ctx_index: int | None, response: bool
) -> Callable[[Any, Any], Any]:
    """``target`` taking ``(message, ctx)``, its arguments put in place once per handler."""
    if not response and ctx_index == 1:
        return target

    def arrange(message: Any, ctx: Any) -> Any:
        values: list[Any] = [message.data, message.response] if response else [message]
        if ctx_index is not None:
            values.insert(ctx_index, ctx)
        return target(*values)

    arrange.__name__ = getattr(target, "__name__", arrange.__name__)  # as its errors name it
    arrange.__qualname__ = getattr(target, "__qualname__", arrange.__qualname__)
    return arrange


class Executor:
    """A node of an executor graph. Subclass it and add ``@handler`` methods.

    Args:
        id: the node's unique id in a graph (default: the class name).
        num_workers: how many messages it may process at once (default 1: serial).
        retry_policy: how a failing handler is retried.
        timeout: seconds one attempt of a handler may take.

    Keep per-run data in ``ctx.store``, not on ``self``: one executor object serves
    every run of the graphs it is part of.
    """

    def __init__(
        self,
        id: str | None = None,
        *,
        num_workers: int = 1,
        retry_policy: RetryPolicy | None = None,
        timeout: float | None = None,
        backend: str | None = None,
        limiter: str | None = None,
    ) -> None:
        self.id = id or type(self).__name__
        if not isinstance(self.id, str) or not self.id:
            raise WorkflowValidationError(f"{type(self).__name__}(id={id!r}): id must be a str")
        self.config = node_config(
            f"executor {self.id!r}",
            num_workers=num_workers,
            retry_policy=retry_policy,
            timeout=timeout,
            backend=backend,
            limiter=limiter,
        )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._stepgraph_localns_ = caller_locals()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"

    def _localns(self) -> dict[str, Any] | None:
        names: dict[str, Any] = {}
        for klass in reversed(type(self).__mro__):
            names.update(vars(klass).get("_stepgraph_localns_") or {})
        return names or None

    def handler_specs(self) -> tuple[list[HandlerSpec], list[HandlerSpec]]:
        """The message handlers and the response handlers, in definition order."""
        handlers: dict[str, Any] = {}
        responses: dict[str, Any] = {}
        for klass in reversed(type(self).__mro__):
            for name, value in vars(klass).items():
                if getattr(value, _HANDLER, False):
                    handlers[name] = value
                if getattr(value, _RESPONSE, False):
                    responses[name] = value
        localns = self._localns()
        return (
            [
                _inspect_handler(self.id, f, self, response=False, localns=localns)
                for f in handlers.values()
            ],
            [
                _inspect_handler(self.id, f, self, response=True, localns=localns)
                for f in responses.values()
            ],
        )


class FunctionExecutor(Executor):
    """An executor made of one function (see :func:`executor`)."""

    def __init__(
        self,
        func: Callable[..., Any],
        id: str | None = None,
        *,
        localns: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(id or func.__name__, **options)
        self.func = func
        self.localns = localns

    def handler_specs(self) -> tuple[list[HandlerSpec], list[HandlerSpec]]:
        spec = _inspect_handler(self.id, self.func, None, response=False, localns=self.localns)
        return [spec], []


@overload
def executor(func: Callable[..., Any], /) -> FunctionExecutor: ...
@overload
def executor(
    *, id: str | None = None, **options: Any
) -> Callable[[Callable[..., Any]], FunctionExecutor]: ...


def executor(func: Any = None, /, *, id: str | None = None, **options: Any) -> Any:
    """Turn a function ``(message: T, ctx: WorkflowContext) -> None`` into an executor.

    Example::

        @executor(id="rev")
        async def rev(text: str, ctx: WorkflowContext) -> None:
            await ctx.yield_output(text[::-1])
    """
    localns = caller_locals()
    if func is not None:
        return FunctionExecutor(func, id, localns=localns, **options)
    return lambda f: FunctionExecutor(f, id, localns=localns, **options)


@dataclass(frozen=True, slots=True)
class ExecutorProgram:
    """An executor compiled for the runtime: dispatch by type to its handlers.

    ``body`` is a plain function that dispatches to the handler, sync or async, so
    ``is_async_for(message)`` says whether it gives a coroutine for ``message`` (an
    executor may have both kinds of handlers).
    """

    name: str
    config: StepConfig
    body: Callable[[Any, Any, Any], Any]
    call: Callable[[Any, Any, Any], Awaitable[Any]]
    accepts: tuple[type, ...]
    handlers: tuple[HandlerSpec, ...]
    responses: tuple[HandlerSpec, ...]
    is_async_for: Callable[[Any], bool]
    returns_events: bool = False
    backend: Backend | None = None
    asks: bool = False


def compile_executor(node: Executor) -> ExecutorProgram:
    """Introspect an executor's handlers and build its dispatching program."""
    handlers, responses = node.handler_specs()
    if not handlers and not responses:
        raise WorkflowValidationError(
            f"executor {node.id!r} ({type(node).__name__}) has no @handler methods"
        )
    accepts = tuple(t for h in handlers for t in h.types)
    if responses:
        accepts += (ResponseMessage,)
    cache: dict[type, HandlerSpec | None] = {}

    def pick(kind: type, pool: list[HandlerSpec]) -> HandlerSpec | None:
        """The most specific matching handler (closest in the MRO); ties: definition order."""
        return closest(kind, pool, _types_of)

    def chosen(message: Any) -> HandlerSpec:
        kind = type(message)
        if kind is ResponseMessage:
            spec = pick(type(message.response), responses)
        else:
            try:
                spec = cache[kind]
            except KeyError:
                spec = cache[kind] = pick(kind, handlers)
        if spec is None:
            raise UnroutableEventError(
                f"executor {node.id!r} has no handler for {kind.__name__} ({short_repr(message)})"
            )
        return spec

    def call(owner: Any, ctx: Any, message: Any) -> Awaitable[Any]:
        return chosen(message).call(message, ctx)

    def body(owner: Any, ctx: Any, message: Any) -> Any:
        return chosen(message).body(message, ctx)

    def is_async_for(message: Any) -> bool:
        return chosen(message).is_async

    if len(handlers) == 1 and not responses:
        # One handler: the kernel only delivers what it accepts, so skip the dispatch.
        only = handlers[0]
        only_call, only_body, only_async = only.call, only.body, only.is_async

        def call(owner: Any, ctx: Any, message: Any) -> Awaitable[Any]:
            return only_call(message, ctx)

        def body(owner: Any, ctx: Any, message: Any) -> Any:
            return only_body(message, ctx)

        def is_async_for(message: Any) -> bool:
            return only_async

    return ExecutorProgram(
        name=node.id,
        config=node.config,
        body=body,
        call=call,
        accepts=accepts,
        handlers=tuple(handlers),
        responses=tuple(responses),
        is_async_for=is_async_for,
    )


def _types_of(spec: HandlerSpec) -> tuple[type, ...]:
    return spec.types
