"""TaskFlow: task DAGs whose edges are futures passed as arguments.

The flow is the shell around a :class:`~stepgraph.tasks.dag.Dag` (the pure core): it
turns calls into futures, tells the Dag what happened, and carries out what the Dag
answers (start a body on its backend, fail a task whose dependency failed, cancel the
dependents of a cancelled task). See docs/tasks.md.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import functools
import inspect
import os
import shlex
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextvars import Context
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..backends.base import Backend, named
from ..backends.commands import Command
from ..backends.local import InlineBackend, ThreadBackend
from ..backends.noop import NoopBackend
from ..core.text import error_text, short_repr
from ..errors import BackendError, DependencyFailed, StepgraphError, TaskFailed
from ..limits import Limiter, LimiterGate, gate_for, gate_of, limited
from ..runtime.clock import SYSTEM_CLOCK, Clock
from ..runtime.observers import heard_by
from ..runtime.scope import current_scope
from .dag import CANCEL, FAIL, START, Dag, DagCommand
from .futures import _BLOCK_ID, _WORKFLOW_ID, TaskFuture, workflow_scope
from .observers import TaskObserver, ambient_observers
from .prompt import PromptSettings, complete

if TYPE_CHECKING:
    from ..telemetry.event_log import EventLog

__all__ = ["Task", "TaskFlow"]

F = TypeVar("F", bound=Callable[..., Any])

FUNCTION = "function"
EXECUTABLE = "executable"
PROMPT = "prompt"
BLOCK = "block"


class Task:
    """A declared task (or block): call it to get a :class:`TaskFuture` at once.

    Attributes:
        name: the function's ``__name__`` (see ``_name_of``).
        kind: ``"function"``, ``"executable"``, ``"prompt"`` or ``"block"``.
        backend: the name of the backend it goes to.
        resources: the slots each call claims while its body runs.
    """

    __slots__ = (
        "__dict__",
        "backend",
        "claims",
        "direct",
        "flow",
        "fn",
        "gate",
        "kind",
        "late_place",
        "name",
        "noop",
        "options",
        "resources",
        "runner",
    )

    def __init__(
        self,
        flow: TaskFlow,
        fn: Callable[..., Any],
        kind: str,
        backend: str,
        runner: Backend,
        resources: Mapping[str, int] | None,
        options: Any = None,
        gate: LimiterGate | None = None,
    ) -> None:
        self.flow = flow
        self.fn = fn
        self.kind = kind
        self.name = _name_of(fn)
        self.backend = backend
        self.runner = runner
        self.resources = dict(resources or {})
        self.claims = flow._dag.claims(resources, f"{kind} task {self.name!r}")
        # and a place in its backend's pool; a limited task takes it once its limiter lets
        # it (holding the place while it waits for its limiter, it could keep code holding
        # the limiter from the place it needs)
        place = flow._place(backend, runner, kind, fn)
        self.late_place = None if place is None or gate is None else ((place, 1),)
        if place is not None and gate is None:
            self.claims = tuple(sorted((*self.claims, (place, 1))))
        self.noop = isinstance(runner, NoopBackend) and kind != BLOCK
        # a plain function on the loop: run by the flow itself, without a task per call
        self.direct = (
            kind == FUNCTION
            and type(runner) is InlineBackend
            and not inspect.iscoroutinefunction(fn)
            and gate is None
        )
        self.gate = gate  # the limiter its body holds, if any
        self.options = options
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> TaskFuture:
        return self.flow._call(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<{self.kind} task {self.name} on {self.backend!r}>"


def _name_of(fn: Callable[..., Any]) -> str:
    """A task's name: its function's ``__name__`` (a ``functools.partial``'s function's;
    an object without one: its class's)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", None) or type(fn).__name__


def _scan(value: Any, found: dict[TaskFuture, None], seen: set[int] | None = None) -> bool:
    """The task futures in ``value``: itself, or inside lists, tuples and dicts (and
    their subclasses: named tuples, ``OrderedDict``, ``defaultdict``). Each container is
    looked into once (``seen``: their ids), so a list that holds itself is scanned too.
    Whether a container was met twice (it is shared, or holds itself)."""
    kind = type(value)
    if kind is TaskFuture:
        found[value] = None
        return False
    if kind in _PLAIN or not isinstance(value, list | tuple | dict):
        return False
    if seen is None:
        seen = set()
    elif id(value) in seen:
        return True
    seen.add(id(value))
    again = False
    for item in value.values() if isinstance(value, dict) else value:
        if type(item) is TaskFuture:
            found[item] = None
        elif type(item) not in _PLAIN and _scan(item, found, seen):
            again = True
    return again


_PLAIN = frozenset((int, float, str, bytes, bool, type(None)))  # never containers
_AS_IS, _REBUILD, _MEMO = 0, 1, 2  # a call's arguments: as they are; rebuilt with the results
# of the futures in them; rebuilt so, each container once (one is met twice: shared, or
# holding itself)
_CAUSE_SHOWN = 1_000  # the characters of a body's error a TaskFailed's message shows


def _resolved(value: Any, made: dict[int, Any] | None) -> Any:
    """``value`` with every task future in it replaced by its result. Lists, tuples and
    dicts are rebuilt (one of a subclass as its own type, and only when it holds
    futures). ``made``: for a value in which a container is met twice (shared, or
    holding itself), the ids of those rebuilt and their copies, so that each is made
    once (None: no container is met twice)."""
    kind = type(value)
    if kind is TaskFuture:
        return value.result()
    if kind in _PLAIN or not isinstance(value, list | tuple | dict):
        return value
    if made is None:
        if kind is list:
            return [_resolved(item, None) for item in value]
        if kind is tuple:
            return tuple([_resolved(item, None) for item in value])
        if kind is dict:
            return {key: _resolved(item, None) for key, item in value.items()}  # type: ignore[union-attr]
    else:
        at = id(value)
        if at in made:
            return made[at]
        if kind is list:
            made[at] = items = []
            items.extend([_resolved(item, made) for item in value])
            return items
        if kind is tuple:  # (a tuple in a cycle is reached through a list or a dict)
            made[at] = tuple([_resolved(item, made) for item in value])
            return made[at]
        if kind is dict:
            made[at] = mapping = {}
            for key, item in value.items():  # type: ignore[union-attr]
                mapping[key] = _resolved(item, made)
            return mapping
    inside: dict[TaskFuture, None] = {}
    _scan(value, inside)
    if not inside:  # a container of a subclass is rebuilt only when it holds futures
        return value
    copied: Any
    if isinstance(value, dict):
        copied = copy.copy(value)  # (a defaultdict keeps its factory)
        if made is not None:
            made[id(value)] = copied
        for key, item in value.items():
            copied[key] = _resolved(item, made)
        return copied
    if isinstance(value, list):
        copied = copy.copy(value)
        if made is not None:
            made[id(value)] = copied
        copied[:] = [_resolved(item, made) for item in value]
        return copied
    parts = [_resolved(item, made) for item in value]
    make = getattr(kind, "_make", None)  # a named tuple
    try:
        copied = make(parts) if make is not None else kind(parts)
    except Exception:  # a tuple subclass built otherwise: a plain tuple, then
        copied = tuple(parts)
    if made is not None:
        made[id(value)] = copied
    return copied


def _with_results(
    args: tuple[Any, ...], kwargs: dict[str, Any], resolve: int
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A call's arguments with the results of the futures in them (``resolve``: how, see
    ``_REBUILD`` and ``_MEMO``)."""
    made: dict[int, Any] | None = {} if resolve == _MEMO else None
    args = tuple([_resolved(a, made) for a in args])
    if kwargs:
        kwargs = {k: _resolved(v, made) for k, v in kwargs.items()}
    return args, kwargs


def _root(error: BaseException | None) -> BaseException | None:
    """The failure a dependent's ``DependencyFailed`` chains: the first one, not a relay."""
    if isinstance(error, DependencyFailed) and error.__cause__ is not None:
        return error.__cause__
    return error


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [short_repr(a, 60) for a in args]
    parts.extend(f"{k}={short_repr(v, 60)}" for k, v in kwargs.items())
    return short_repr("(" + ", ".join(parts) + ")", 200).strip("'\"")


class TaskFlow:
    """Task DAGs on named backends, with flow-wide resource slots (see docs/tasks.md).

    Args:
        backends: backends by name; a task goes to ``backend=`` or to ``"default"``
            (None: ``{"default": ThreadBackend()}``).
        resources: slots per resource name (``{"cpu": 4, "gpu": 1}``) that tasks claim
            with ``resources=``; the claims of running tasks never exceed them.
        work_dir: where executables' captured output goes, in ``work_dir/<uid>/``.
        uid: the flow's id (None: a generated one).
        observers: :class:`~stepgraph.tasks.TaskObserver` instances told about every task.
        event_log: a path (or an ``EventLog``) to append a JSON line per task event to.
        clock: the clock observers read (default: the system's).
        limiters: :class:`~stepgraph.Limiter` objects tasks hold (``limiter="llm"``).
        store: where the limiters' state lives: a ``PostgresStore`` holds them across
            every process that declares them (None, or another store: this process).

    Use it as ``async with TaskFlow(...) as flow:``. Leaving the block normally waits
    for every task and block still pending or running, then shuts the backends down.
    Leaving it on an error cancels every pending and running task, stops running
    executables and pool processes, shuts the backends down, and lets that same error
    go on.
    """

    def __init__(
        self,
        backends: Mapping[str, Backend] | None = None,
        *,
        resources: Mapping[str, int] | None = None,
        work_dir: str | os.PathLike[str] = ".",
        uid: str | None = None,
        observers: Sequence[TaskObserver] = (),
        event_log: str | os.PathLike[str] | EventLog | None = None,
        clock: Clock | None = None,
        limiters: Sequence[Limiter] = (),
        store: object = None,
    ) -> None:
        chosen: dict[str, Backend] = (
            dict(backends) if backends is not None else {"default": ThreadBackend()}
        )
        for name, backend in chosen.items():
            if not isinstance(backend, Backend):
                raise BackendError(
                    f"backend {name!r} is a {type(backend).__name__}, not a backend (it needs "
                    f"name, in_process, submit, run_command, start and shutdown)"
                )
        named(chosen)  # messages name each backend as the flow does
        self.backends: dict[str, Backend] = chosen
        self.clock: Clock = clock or SYSTEM_CLOCK
        self.limiters: dict[str, LimiterGate] = {}
        for limiter in limiters:
            if not isinstance(limiter, Limiter):
                raise StepgraphError(f"TaskFlow(limiters=[..., {limiter!r}]): expected a Limiter")
            self.limiters[limiter.name] = (
                gate_of(limiter) if store is None else gate_for(store, limiter)
            )
        watchers = list(observers)
        for observer in watchers:
            if not isinstance(observer, TaskObserver):
                raise StepgraphError(
                    f"TaskFlow(observers=[..., {observer!r}]): an observer is an instance of a "
                    f"stepgraph.tasks.TaskObserver subclass"
                )
        if event_log is not None:
            from ..telemetry.event_log import event_log_of  # it observes tasks: imported late

            log = event_log_of(event_log, "TaskFlow")
            if log is not None:
                watchers.append(log)
        scope = current_scope()  # made by a step of a run: the run's event log records it too
        self.parent_run_id: str | None = None if scope is None else scope.run.run_id
        """The run whose step made this flow (None: made outside any step)."""
        self.parent_step: str | None = (
            None if scope is None else scope.run.graph.nodes[scope.node].name
        )
        """That step's name."""
        followed = (  # (not once the run has ended: a task its step left behind made it)
            () if scope is None or not scope.run.running else getattr(scope.run, "observers", ())
        )
        for observer in (
            *ambient_observers(),
            *(o for o in followed if isinstance(o, TaskObserver) and o.follows_task_flows),
        ):
            if not heard_by(watchers, observer):
                watchers.append(observer)
        self.observers: tuple[TaskObserver, ...] = tuple(watchers)
        self.uid = uid or f"flow.{uuid.uuid4().hex[:12]}"
        self.work_dir = Path(work_dir)
        self._dag = Dag(resources)
        self._futures: dict[int, TaskFuture] = {}  # tasks not finished, by number
        # what a task waits with: its arguments, and the caller's context if it has dependencies
        self._waiting: dict[int, tuple[Task, tuple[Any, ...], dict[str, Any], Context, int]] = {}
        self._drivers: dict[int, asyncio.Task[None]] = {}
        # limited tasks waiting for their pool place: the Dag's number of the wait -> its waiter
        self._places: dict[int, asyncio.Future[None]] = {}
        self._traced = False  # spans are on: a body elsewhere carries its trace context
        self._observer_error: Exception | None = None  # the first error an observer raised
        self._thread = 0  # the event loop's thread: tasks are called there
        self._ready: list[tuple[int, Any]] = []  # plain functions to run on the loop, in order
        self._draining = False
        self._count = 0
        self._waits_for_places = 0  # their numbers in the Dag: -1, -2, ... (no task's uid)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "new"

    @property
    def resources(self) -> dict[str, int]:
        """The flow's slots per resource."""
        hidden = self._dag.hidden
        return {name: n for name, n in self._dag.capacity.items() if name not in hidden}

    def _place(self, name: str, backend: Backend, kind: str, fn: Callable[..., Any]) -> str | None:
        """The resource standing for the places of ``backend``'s pool a body of ``kind``
        takes (None: it takes none). So the flow hands the backend only as many bodies
        as it runs at once: one that waits for a worker waits here, submitted, not
        started (its start, span and duration are its body's own), and a cancel means it
        never starts."""
        slots = getattr(backend, "slots", None)
        if slots is None or kind not in (FUNCTION, EXECUTABLE):
            return None
        found = slots(kind, fn)
        if found is None:
            return None
        pool, size = found
        resource = f"{id(backend)}:{pool}"  # one backend under two names: one pool
        self._dag.provide(resource, max(1, size))
        return resource

    @property
    def output_dir(self) -> Path:
        """Where this flow's captured outputs go: ``work_dir/<uid>``."""
        return self.work_dir / self.uid

    # -- declaring ----------------------------------------------------------------------------

    def _backend(self, name: str | None, what: str) -> tuple[str, Backend]:
        chosen = name or "default"
        backend = self.backends.get(chosen)
        if backend is None:
            known = ", ".join(repr(n) for n in self.backends) or "none"
            raise BackendError(
                f"{what} goes to backend {chosen!r}, which the flow does not have (it has: {known})"
            )
        return chosen, backend

    def _declare(
        self,
        fn: Any,
        kind: str,
        backend: str | None,
        resources: Mapping[str, int] | None,
        options: Any,
        check: Callable[[str, Backend, str], None] | None = None,
        limiter: str | None = None,
    ) -> Any:
        def declare(func: Callable[..., Any]) -> Task:
            if not callable(func):
                raise TypeError(f"a {kind} task wraps a function, not {func!r}")
            label = f"{kind} task {getattr(func, '__name__', func)!r}"
            name, runner = self._backend(backend, label)
            if check is not None:
                check(name, runner, label)
            gate = None if limiter is None else limited(limiter, self.limiters, label)
            return Task(self, func, kind, name, runner, resources, options, gate)

        return declare if fn is None else declare(fn)

    @overload
    def function_task(self, fn: Callable[..., Any], /) -> Task: ...
    @overload
    def function_task(
        self,
        fn: None = None,
        /,
        *,
        backend: str | None = None,
        resources: Mapping[str, int] | None = None,
        limiter: str | None = None,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def function_task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        backend: str | None = None,
        resources: Mapping[str, int] | None = None,
        limiter: str | None = None,
    ) -> Any:
        """A Python function (``def`` or ``async def``) as a task: its result is the return
        value. Works bare (``@flow.function_task``), with keywords, and as a plain call.
        ``limiter="llm"`` holds that limiter (``TaskFlow(limiters=[...])``) while it runs."""
        return self._declare(fn, FUNCTION, backend, resources, None, limiter=limiter)

    @overload
    def executable_task(self, fn: Callable[..., Any], /) -> Task: ...
    @overload
    def executable_task(
        self,
        fn: None = None,
        /,
        *,
        backend: str | None = None,
        resources: Mapping[str, int] | None = None,
        capture_stdio: bool = False,
        shell: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def executable_task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        backend: str | None = None,
        resources: Mapping[str, int] | None = None,
        capture_stdio: bool = False,
        shell: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Any:
        """A function returning a command line, as a task that runs it.

        The function returns a string (split as a shell would, with :func:`shlex.split`,
        but run without a shell unless ``shell=True``) or a list of arguments. The
        result is the command's standard output as text; with ``capture_stdio=True``
        its output goes to ``<work_dir>/<flow uid>/<task uid>.stdout`` and ``.stderr``
        and the result is the ``.stdout`` file's path. A non-zero exit fails the task.
        """
        options = {
            "capture": capture_stdio,
            "shell": shell,
            "cwd": None if cwd is None else os.fspath(cwd),
            "env": None if env is None else dict(env),
        }
        return self._declare(fn, EXECUTABLE, backend, resources, options, _check_executable)

    @overload
    def prompt_task(
        self,
        fn: Callable[..., Any],
        /,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        system: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        retry_delay: float = 0.5,
        temperature: float | None = None,
        backend: str | None = None,
        resources: Mapping[str, int] | None = None,
    ) -> Task: ...
    @overload
    def prompt_task(
        self,
        fn: None = None,
        /,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        system: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        retry_delay: float = 0.5,
        temperature: float | None = None,
        backend: str | None = None,
        resources: Mapping[str, int] | None = None,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def prompt_task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        system: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        retry_delay: float = 0.5,
        temperature: float | None = None,
        backend: str | None = None,
        resources: Mapping[str, int] | None = None,
    ) -> Any:
        """A function returning a prompt, as a task that asks a chat model (the extra
        ``prompt``).

        It posts to ``{base_url}/chat/completions`` (any OpenAI-compatible endpoint;
        None: ``OPENAI_BASE_URL``) with ``model`` and the prompt as the last user
        message; the result is the first choice's message content. The key is
        ``api_key`` or ``OPENAI_API_KEY``. Runs on inline or thread backends.
        """

        url = base_url or os.environ.get("OPENAI_BASE_URL")
        settings = PromptSettings(  # checked now: a bad setting fails the declaration
            model=model,
            base_url=url or "",
            api_key=api_key,
            system=system,
            timeout=timeout,
            retries=retries,
            retry_delay=retry_delay,
            temperature=temperature,
        )

        def check(name: str, runner: Backend, label: str) -> None:
            _check_prompt(name, runner, label)
            if not url:
                raise StepgraphError(
                    f"{label} has no endpoint: pass base_url= (an OpenAI-compatible "
                    f"server, e.g. 'http://127.0.0.1:8000/v1') or set OPENAI_BASE_URL"
                )

        return self._declare(fn, PROMPT, backend, resources, settings, check)

    @overload
    def block(self, fn: Callable[..., Any], /) -> Task: ...
    @overload
    def block(
        self, fn: None = None, /, *, backend: str | None = None
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def block(self, fn: Callable[..., Any] | None = None, /, *, backend: str | None = None) -> Any:
        """A group of tasks, as an ``async def`` whose body calls and awaits tasks.

        Calling a block returns a future at once, like a task; its body runs on the
        event loop once the futures among its arguments are done, and blocks nest.
        """
        return self._declare(fn, BLOCK, backend, None, None)

    def workflow_scope(self, workflow_id: str) -> Any:
        """Tasks and blocks created inside carry ``workflow_id`` (see ``workflow_scope``)."""
        return workflow_scope(workflow_id)

    # -- calling ------------------------------------------------------------------------------

    def _call(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskFuture:
        loop = self._loop
        if loop is None or (self._state != "open" and self._state != "draining"):
            raise BackendError(
                f"{task.kind} task {task.name!r} was called while its flow is {self._state}: "
                f"call tasks inside `async with TaskFlow(...) as flow:`"
            )
        if threading.get_ident() != self._thread:
            raise BackendError(
                f"{task.kind} task {task.name!r} was called from another thread: call tasks "
                f"on the flow's event loop (from a thread: asyncio.run_coroutine_threadsafe)"
            )
        found: dict[TaskFuture, None] = {}
        twice = False  # a container met twice in an argument (shared, or holding itself)
        for value in args:
            if _scan(value, found):
                twice = True
        if kwargs:
            for value in kwargs.values():
                if _scan(value, found):
                    twice = True
        pending: list[int] = []
        failed: TaskFuture | None = None  # the first dependency that failed, if any
        cancelled: TaskFuture | None = None  # the first one that was cancelled, if any
        for dependency in found:  # before anything is registered: a refusal leaves nothing
            if dependency._flow is not self:
                raise BackendError(
                    f"{task.kind} task {task.name!r} got a future of another flow "
                    f"({dependency!r}) as an argument"
                )
            if not dependency.done():
                pending.append(dependency._task)
            elif dependency.cancelled():
                if cancelled is None:
                    cancelled = dependency
            elif failed is None and dependency.exception() is not None:
                failed = dependency
        future = TaskFuture(loop=loop)
        self._count = number = self._count + 1
        future._spec = task
        future.workflow_id = _WORKFLOW_ID.get()
        future.block_id = _BLOCK_ID.get()
        future._flow = self
        future._task = number
        self._futures[number] = future
        if self.observers:
            self._tell("task_created", future, [dependency.uid for dependency in found])
        # the body runs in the context of its call
        resolve = (_MEMO if twice else _REBUILD) if found else _AS_IS
        self._waiting[number] = (task, args, kwargs, contextvars.copy_context(), resolve)
        commands = self._dag.add(
            number,
            pending,
            task.claims,
            failed=-1 if failed is None else failed._task,
            cancelled=-1 if cancelled is None else cancelled._task,
        )
        # the dependency the Dag names: a failure wins over a cancellation, as in the Dag
        ended = failed if failed is not None else cancelled
        if ended is None:
            if commands:
                self._carry(commands)
            return future
        forgotten = ended._task not in self._futures  # finished: named in what it causes
        if forgotten:
            self._futures[ended._task] = ended
        try:
            self._carry(commands)
        finally:
            if forgotten:
                del self._futures[ended._task]
        return future

    def _carry(self, commands: list[DagCommand]) -> None:
        """Carry out what the Dag said."""
        futures = self._futures
        settled: list[int] = []
        for kind, number, cause in commands:
            if kind == START:
                place = self._places.pop(number, None)
                if place is not None:  # a limited task's pool place: it goes on
                    if not place.done():
                        place.set_result(None)
                    else:  # cancelled meanwhile: the place goes back at once
                        self._carry(self._dag.finished(number, False))
                    continue
                entry = self._waiting.pop(number)
                task, args, kwargs, context, resolve = entry
                if self.observers:
                    self._tell("task_submitted", futures[number])
                if task.direct:  # a plain function on the loop: no task of its own
                    self._ready.append((number, entry))
                    if not self._draining:
                        self._draining = True
                        assert self._loop is not None
                        self._loop.call_soon(self._run_ready)
                    continue
                self._spawn(
                    number,
                    self._drive(number, futures[number], task, args, kwargs, resolve),
                    context,
                )
                continue
            self._waiting.pop(number, None)
            future = futures[number]
            dependency = futures[cause]
            settled.append(number)
            if kind == FAIL:
                self._fail(future, _dependency_failed(future, dependency))
            elif kind == CANCEL:
                self._cancel(
                    future, f"its dependency {dependency.name!r} ({dependency.uid}) was cancelled"
                )
        for number in settled:
            del futures[number]

    def _spawn(self, number: int, body: Coroutine[Any, Any, None], context: Context) -> None:
        """Run ``body`` (a driver) as a task of its own, in ``context``."""
        assert self._loop is not None
        driver = self._loop.create_task(body, context=context)
        self._drivers[number] = driver
        driver.add_done_callback(functools.partial(self._driver_done, number))

    def _driver_done(self, number: int, driver: asyncio.Task[None]) -> None:
        """A driver cancelled before it ever ran never settled its task: settle it now."""
        if self._drivers.get(number) is driver:
            del self._drivers[number]
            future = self._futures.get(number)
            if future is not None and not future.done():
                self._cancel(future)
            self._settled(number, False)

    def _run_ready(self) -> None:
        """Run the plain functions started for the event loop since the last call, in
        order; each one's future is settled and the Dag told before the next runs."""
        batch, self._ready = self._ready, []
        self._draining = False
        futures = self._futures
        for position, (number, (task, args, kwargs, context, resolve)) in enumerate(batch):
            future = futures.get(number)
            if future is None or future.done():  # cancelled while it waited for its turn
                self._settled(number, False)
                continue
            try:
                context.run(self._run_direct, number, future, task, args, kwargs, resolve, context)
            except BaseException:  # KeyboardInterrupt and the like: the rest waits its turn
                self._ready[:0] = batch[position + 1 :]
                if self._ready and not self._draining:
                    self._draining = True
                    asyncio.get_running_loop().call_soon(self._run_ready)
                raise

    def _run_direct(
        self,
        number: int,
        future: TaskFuture,
        task: Task,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        resolve: int,
        context: Context,
    ) -> None:
        """One plain function on the loop, in the context of its call."""
        observers = self.observers
        if observers:
            self._tell("task_started", future)
        try:
            if resolve:
                args, kwargs = _with_results(args, kwargs, resolve)
            value = task.fn(*args, **kwargs)
        except asyncio.CancelledError:
            self._cancelled_by_body(number, future)
            self._settled(number, False)
            return
        except BaseException as exc:
            self._fail(future, self._failure(task, future, args, kwargs, exc))
            self._settled(number, False)
            if not isinstance(exc, Exception):
                raise
            return
        if inspect.isawaitable(value):  # a plain function that returned a coroutine
            self._spawn(number, self._finish(number, future, task, value, args, kwargs), context)
            return
        future.set_result(value)
        if observers:
            self._tell("task_resolved", future)
        self._settled(number, True)

    async def _finish(
        self,
        number: int,
        future: TaskFuture,
        task: Task,
        awaitable: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        async def value() -> Any:
            return await awaitable

        await self._drive(number, future, task, args, kwargs, False, value, started=True)

    def _tell(self, method: str, future: TaskFuture, *args: Any) -> None:
        """Tell the observers; one that raises never breaks the flow's bookkeeping: its
        error is kept, and leaving the flow raises it."""
        for observer in self.observers:
            try:
                getattr(observer, method)(self, future, *args)
            except Exception as exc:
                if self._observer_error is None:
                    exc.add_note(f"stepgraph: raised by observer {observer!r} in {method}")
                    self._observer_error = exc

    def _resolve(self, future: TaskFuture, value: Any) -> None:
        future.set_result(value)
        if self.observers:
            self._tell("task_resolved", future)

    def _fail(self, future: TaskFuture, error: BaseException) -> None:
        if isinstance(error, StopIteration):  # a future refuses it (PEP 479): say so
            stopped = RuntimeError(f"{future.name!r} ({future.uid}) raised StopIteration")
            stopped.__cause__ = error
            error = stopped
        future.set_exception(error)
        if self.observers:
            self._tell("task_failed", future, error)

    def _cancel(self, future: TaskFuture, msg: Any = None) -> None:
        asyncio.Future.cancel(future, msg)
        if self.observers:
            self._tell("task_cancelled", future)

    def _cancelled_by_body(self, number: int, future: TaskFuture) -> None:
        """The body raised ``CancelledError``: its task is cancelled, as an asyncio task
        would be, and its dependents with it."""
        self._cancel(future)
        self._carry(self._dag.cancel(number))

    def _settled(self, number: int, ok: bool) -> None:
        """A body stopped: tell the Dag, carry out what it says, forget the task."""
        commands = self._dag.finished(number, ok)
        if commands:
            self._carry(commands)
        self._futures.pop(number, None)

    async def _drive(
        self,
        number: int,
        future: TaskFuture,
        task: Task,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        resolve: int,
        body: Callable[[], Any] | None = None,
        *,
        started: bool = False,
    ) -> None:
        """Run one body on its backend, settle its future, tell the Dag."""
        ok = False
        tell = bool(self.observers) and not started
        if tell and task.gate is None:
            self._tell("task_started", future)
        if task.kind == BLOCK:
            _BLOCK_ID.set(future.uid)  # in this driver's context: what its body creates
        try:
            if resolve:
                args, kwargs = _with_results(args, kwargs, resolve)
            if body is not None:
                value = await body()
            elif task.gate is None:
                value = await self._body(task, future, args, kwargs)
            else:
                async with task.gate.hold():  # it starts once its limiter lets it
                    place = None if task.late_place is None else await self._take(task.late_place)
                    try:
                        if tell:
                            self._tell("task_started", future)
                        value = await self._body(task, future, args, kwargs)
                    finally:
                        if place is not None:
                            self._carry(self._dag.finished(place, True))
        except asyncio.CancelledError:
            if not future.done():
                self._cancelled_by_body(number, future)
        except BaseException as exc:
            if not future.done():
                self._fail(future, self._failure(task, future, args, kwargs, exc))
            if not isinstance(exc, Exception):
                raise
        else:
            ok = True
            if not future.done():
                self._resolve(future, value)
        finally:
            del self._drivers[number]
            self._settled(number, ok)

    async def _take(self, claims: tuple[tuple[str, int], ...]) -> int:
        """Wait for ``claims`` (a limited task's pool place) in the Dag, first come, first
        served with the tasks that claim it there; the number to give them back with."""
        assert self._loop is not None
        self._waits_for_places = number = self._waits_for_places - 1  # (tasks count up)
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._places[number] = waiter
        self._carry(self._dag.add(number, (), claims))
        try:
            await waiter
        except asyncio.CancelledError:
            self._places.pop(number, None)
            if waiter.done() and not waiter.cancelled():  # given, then cancelled: give back
                self._carry(self._dag.finished(number, False))
            else:
                self._carry(self._dag.cancel(number))
            raise
        return number

    def _body(
        self, task: Task, future: TaskFuture, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Awaitable[Any]:
        """What to await for the body of ``task`` (by its kind, on its backend)."""
        if task.kind == FUNCTION or task.noop:
            fn = task.fn
            if self._traced and not task.runner.in_process:  # the span goes with it
                from ..telemetry.tracing import carry_trace

                fn = carry_trace(fn)
            return task.runner.submit(fn, *args, **kwargs)
        if task.kind == BLOCK:
            return _awaited(task.fn(*args, **kwargs))
        if task.kind == EXECUTABLE:
            return self._execute(task, future, args, kwargs)
        return self._ask(task, args, kwargs)

    def _failure(
        self,
        task: Task,
        future: TaskFuture,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: BaseException,
    ) -> BaseException:
        if task.kind == BLOCK:
            return exc  # a block is the caller's own code: its error goes on as it is
        text = error_text(exc)
        if len(text) > _CAUSE_SHOWN:  # (the whole of it is the error's __cause__)
            more = len(text) - _CAUSE_SHOWN
            text = f"{text[:_CAUSE_SHOWN]}... ({more:,} more characters: see its __cause__)"
        detail = f"{type(exc).__name__}: {text}"
        if isinstance(exc, subprocess.CalledProcessError) and exc.stderr:
            detail += f" Its standard error ends with: {str(exc.stderr).strip()}"
        error = TaskFailed(
            f"{task.kind} task {task.name!r} ({future.uid}) failed on backend "
            f"{task.backend!r} with arguments {_arguments(args, kwargs)}: {detail}",
            task=task.name,
            backend=task.backend,
        )
        error.__cause__ = exc
        return error

    async def _execute(
        self, task: Task, future: TaskFuture, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        line = task.fn(*args, **kwargs)
        if inspect.isawaitable(line):
            line = await line
        options = task.options
        if options["shell"]:
            if not isinstance(line, str):
                line = shlex.join(str(part) for part in line)
            argv: tuple[str, ...] | str = line
        elif isinstance(line, str):
            argv = tuple(shlex.split(line))
        elif isinstance(line, list | tuple):
            argv = tuple(str(part) for part in line)
        else:
            raise TypeError(
                f"an executable task returns a command line (a string or a list of arguments), "
                f"not {short_repr(line)}"
            )
        if not argv:
            raise ValueError("an executable task returned an empty command line")
        out = err = None
        if options["capture"]:
            folder = self.output_dir
            out = os.fspath(folder / f"{future.uid}.stdout")
            err = os.fspath(folder / f"{future.uid}.stderr")
        command = Command(
            argv,
            shell=options["shell"],
            cwd=options["cwd"],
            env=options["env"],
            stdout_path=out,
            stderr_path=err,
        )
        result = await task.runner.run_command(command)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, command.program, stderr=result.stderr_tail
            ) from None
        return result.stdout

    async def _ask(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        prompt = task.fn(*args, **kwargs)
        if inspect.isawaitable(prompt):
            prompt = await prompt
        settings: PromptSettings = task.options
        if settings.api_key is None and os.environ.get("OPENAI_API_KEY"):
            settings = dataclasses.replace(settings, api_key=os.environ["OPENAI_API_KEY"])
        return await complete(settings, prompt)

    def _cancelled(self, future: TaskFuture, msg: Any) -> bool:
        """``future.cancel()``: cancel the task, its body if it runs, and its dependents."""
        number = future._task
        self._cancel(future, msg)
        commands = self._dag.cancel(number)
        driver = self._drivers.get(number)
        if driver is not None:
            driver.cancel()
        else:
            self._waiting.pop(number, None)
        if commands:
            self._carry(commands)
        if driver is None:
            self._futures.pop(number, None)
        return True

    # -- the flow's life ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the backends (``async with`` does it)."""
        if self._state != "new":
            raise BackendError(f"flow {self.uid!r} is {self._state}: a flow is started once")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        from ..telemetry.tracing import task_tracer  # it observes tasks: imported late

        traced = task_tracer()  # None unless tracing is set up
        if traced is not None:
            self.observers = (*self.observers, traced)
            self._traced = traced.tracer is not None
        for backend in self._own_backends():  # (a backend several flows share: counted)
            _USERS[id(backend)] = _USERS.get(id(backend), 0) + 1
        try:
            results = await asyncio.gather(
                *(backend.start() for backend in self._own_backends()), return_exceptions=True
            )
        except BaseException:  # cancelled while starting: this flow uses none of them
            self._state = "closed"
            for backend in self._own_backends():
                _last_user(backend)
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self._state = "closed"
            await self._shutdown(cancel=True, error=errors[0])
            raise errors[0]
        self._state = "open"

    def _own_backends(self) -> list[Backend]:
        """Its backends, each once (one backend may go by two names)."""
        return list({id(b): b for b in self.backends.values()}.values())

    async def wait(self) -> None:
        """Wait until every task and block of the flow has finished."""
        while self._futures or self._drivers:
            await asyncio.wait([*self._futures.values(), *self._drivers.values()])

    async def close(self, error: BaseException | None = None) -> None:
        """End the flow: wait for its tasks (no ``error``), or cancel them (``error``).

        Waiting, blocks that still run may call more tasks. A close that is itself
        interrupted (cancelled) cancels what is left, as ``error`` would.
        """
        if self._state != "open":
            return
        self._state = "draining"
        try:
            if error is None:
                await self.wait()
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                if error is None:
                    self._state = "closed"
                    await self._shutdown(cancel=False)
                else:
                    self._state = "aborting"
                    await self._abort(error)
                    self._state = "closed"
            finally:
                for observer in self.observers:
                    try:
                        observer.flow_closed(self)
                    except Exception as exc:
                        if self._observer_error is None:
                            self._observer_error = exc
        if self._observer_error is not None and error is None:
            raise self._observer_error

    async def _abort(self, error: BaseException) -> None:
        """Cancel every task; stop bodies and backends concurrently."""
        for future in list(self._futures.values()):
            future.cancel()
        drivers = list(self._drivers.values())
        await asyncio.gather(
            asyncio.gather(*drivers, return_exceptions=True),
            self._shutdown(cancel=True, error=error),
        )

    async def _shutdown(self, *, cancel: bool, error: BaseException | None = None) -> None:
        """Shut down the backends no other open flow uses. A backend that fails to is
        raised, unless the flow ends on ``error``: that one goes on, noted with it."""
        last = [b for b in self._own_backends() if _last_user(b)]  # (others: another flow)
        results = await asyncio.gather(
            *(backend.shutdown(cancel=cancel) for backend in last), return_exceptions=True
        )
        for backend, result in zip(last, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if error is None:
                raise result
            error.add_note(
                f"stepgraph: shutting backend {backend.name!r} down failed too: "
                f"{type(result).__name__}: {error_text(result)}"
            )

    async def __aenter__(self) -> TaskFlow:
        await self.start()
        return self

    async def __aexit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        await self.close(error)

    def __repr__(self) -> str:
        return f"<TaskFlow {self.uid} {self._state}: {len(self._futures)} tasks not finished>"


_USERS: dict[int, int] = {}
"""The open flows using each backend, by ``id``: the last one to end shuts it down."""


def _last_user(backend: Backend) -> bool:
    """A flow stops using ``backend``: whether it was the last one that did."""
    users = _USERS.pop(id(backend), 1) - 1
    if users > 0:
        _USERS[id(backend)] = users
    return users <= 0


def _check_executable(name: str, runner: Backend, label: str) -> None:
    if isinstance(runner, InlineBackend):
        raise BackendError(
            f"{label} goes to backend {name!r}, an InlineBackend: executables run on thread, "
            f"subprocess, process or Dask backends"
        )


def _check_prompt(name: str, runner: Backend, label: str) -> None:
    if not runner.in_process:
        raise BackendError(
            f"{label} goes to backend {name!r}, a {type(runner).__name__}: prompt tasks run "
            f"on inline or thread backends (they wait on the network, not on a CPU)"
        )


def _dependency_failed(future: TaskFuture, dependency: TaskFuture) -> DependencyFailed:
    """The error of ``future``, which did not run because ``dependency`` failed."""
    root = _root(dependency.exception())
    what = "block" if future.uid.startswith("block") else "task"
    error = DependencyFailed(
        f"{what} {future.name!r} ({future.uid}) did not run: its dependency "
        f"{dependency.name!r} ({dependency.uid}) failed"
        + ("" if root is None else f": {type(root).__name__}: {error_text(root)}"),
        task=future.name,
        dependency=dependency.name,
    )
    error.__cause__ = root
    return error


async def _awaited(value: Any) -> Any:
    """``value``, awaited when it is awaitable (a block's body may be a plain function)."""
    if inspect.isawaitable(value):
        return await value
    return value
