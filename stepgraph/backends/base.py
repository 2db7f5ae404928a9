"""The backend protocol: where a body runs.

A backend runs a function with its arguments somewhere (the event loop, a thread, a
process, a child Python, a Dask cluster, nowhere) and gives back an awaitable of its
result. It is the second plugin seam of stepgraph, beside stores: task flows route each
task to a backend by name, and ``@step(backend=...)`` moves a step's body to one.

The protocol is small:

- ``submit(fn, /, *args, **kwargs)`` returns an awaitable of ``fn(*args, **kwargs)``
  (awaited in turn when ``fn`` is a coroutine function). The body's own exception is
  raised, of its own type, also from another process. **Cancelling** what ``submit``
  returned (or the task awaiting it) cancels the body as far as the backend can: a body
  that has not started never starts; a running coroutine is cancelled; a running child
  process is terminated; a running thread or pool process cannot be stopped: it is no
  longer waited for, and finishes in the background (a process pool terminates the
  workers still running one when it shuts down).
- ``run_command(command)`` runs an executable (:class:`Command`) and returns its
  :class:`CommandResult` (never raising for a non-zero exit); cancelling it terminates
  the child (SIGTERM, then SIGKILL after the backend's grace period).
- ``start()`` and ``shutdown(cancel=False)``: acquire and release what the backend holds
  (pools, clusters). ``shutdown(cancel=True)`` drops bodies that have not started and
  stops what it can of those that run.
- ``slots(kind, fn)`` (optional): the pool a body of that kind takes a place in, and its
  size, as ``(name, size)``; None when a body waits for no place (the event loop, a
  cluster). A task flow hands a backend only as many bodies as it has places, so a
  task that waits for a worker waits in the flow, where it is seen as submitted, not
  started, and a cancel means it never starts.

:class:`BackendBase` gives every method but ``submit`` a default, so a backend of your
own only needs ``submit``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from .commands import Command, CommandResult, run_command_blocking

__all__ = ["Backend", "BackendBase", "LoopSemaphores", "call_to_end", "named"]


def named(backends: Mapping[str, Backend]) -> None:
    """Name each backend by its key (messages then say what the caller calls it); a
    backend under two keys keeps its own name."""
    for name, backend in backends.items():
        if sum(other is backend for other in backends.values()) == 1:
            backend.name = name


class LoopSemaphores:
    """A cap of ``size`` at once, per event loop (an asyncio semaphore belongs to one
    loop; a backend may serve several, one after another or at once)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._by_loop: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def get(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        found = self._by_loop.get(loop)
        if found is None:
            for old in [known for known in self._by_loop if known.is_closed()]:
                del self._by_loop[old]
            found = self._by_loop[loop] = asyncio.Semaphore(self.size)
        return found


def call_to_end(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)`` where a thread, a process or a cluster runs it: a coroutine
    it returns is run to its end on an event loop of its own.

    A ``StopIteration`` becomes a ``RuntimeError``: asyncio cannot carry it through a
    future (it would hang whoever awaits it). So does a ``SystemExit`` (``sys.exit()`` in
    the body): it would end the program that awaits the body, not the worker; and a
    ``GeneratorExit``: raised where the body is awaited, it would stop the coroutine that
    awaits it instead of failing the body.
    """
    try:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            awaitable = result

            async def finish() -> Any:
                return await awaitable

            result = asyncio.run(finish())
        return result
    except StopIteration as exc:
        raise RuntimeError(f"{getattr(fn, '__qualname__', fn)!s} raised StopIteration") from exc
    except SystemExit as exc:  # in a worker thread or process it ends no program: it fails
        raise RuntimeError(
            f"{getattr(fn, '__qualname__', fn)!s} called sys.exit({exc.code!r})"
        ) from exc
    except GeneratorExit as exc:
        raise RuntimeError(f"{getattr(fn, '__qualname__', fn)!s} raised GeneratorExit") from exc


@runtime_checkable
class Backend(Protocol):
    """Where bodies run (see the module docstring).

    Attributes:
        name: a short name, used in messages (a task flow names a backend by its key).
        in_process: whether bodies run in this process and may use their run's live
            context (a step's body elsewhere gets a recording context instead).
    """

    name: str
    in_process: bool

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Run ``fn(*args, **kwargs)``; the awaitable gives its result or raises its error."""
        ...

    def run_command(self, command: Command) -> Awaitable[CommandResult]:
        """Run an executable; its exit code, output and the end of its error output."""
        ...

    async def start(self) -> None:
        """Acquire what the backend needs (a pool, a cluster), before use; called again
        once started (a workflow does, before each body it hands), it does nothing."""
        ...

    async def shutdown(self, *, cancel: bool = False) -> None:
        """Release what it holds; with ``cancel``, stop what has not finished."""
        ...


class BackendBase:
    """Defaults for a backend of your own: implement ``submit``.

    ``run_command`` submits a blocking runner of the command (so it runs wherever the
    backend runs functions); ``start`` and ``shutdown`` do nothing.
    """

    name = "backend"
    in_process = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        raise NotImplementedError

    def run_command(self, command: Command) -> Awaitable[CommandResult]:
        return self.submit(run_command_blocking, command)

    async def start(self) -> None:
        return None

    async def shutdown(self, *, cancel: bool = False) -> None:
        return None

    def slots(self, kind: str, fn: Callable[..., Any]) -> tuple[str, int] | None:
        """The pool a body of ``kind`` (``"function"``, ``"executable"``) running ``fn``
        takes a place in, and its size; None: it waits for no place."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
