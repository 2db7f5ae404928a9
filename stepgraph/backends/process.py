"""A pool of worker processes, with cloudpickle: lambdas and closures travel too."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from traceback import format_exception
from typing import Any

from ..errors import MissingExtraError, RecordedError, SerializationError, WorkerDiedError
from .base import BackendBase, LoopSemaphores, call_to_end
from .commands import Command, CommandResult, run_command_async

__all__ = ["ProcessBackend", "dumps", "load_outcome", "run_outcome", "run_pickled"]


def dumps(value: object) -> bytes:
    """``value`` pickled by cloudpickle (functions by value when they must be).

    Raises:
        SerializationError: something in ``value`` cannot be pickled (the message says
            what, and where when ``value`` is a call: which argument, which field).
    """
    try:
        import cloudpickle  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingExtraError(
            "running bodies in other processes", "cloudpickle", "process"
        ) from exc
    try:
        return cloudpickle.dumps(value)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle {_culprit(value, cloudpickle.dumps)}: {type(exc).__name__}: {exc}"
        ) from exc


def _culprit(value: object, pickle: Callable[[object], bytes]) -> str:
    """What in ``value`` cannot be pickled: an argument of a call, a field of a model."""
    if isinstance(value, tuple) and len(value) == 3 and callable(value[0]):
        fn, args, kwargs = value
        parts = [(f"argument {i + 1} ", a) for i, a in enumerate(args)]
        parts += [(f"argument {k}= ", v) for k, v in kwargs.items()]
        last = f"the function {getattr(fn, '__qualname__', fn)!s} or what it refers to"
    else:
        parts, last = [("", value)], f"a {type(value).__name__}"
    for label, part in parts:
        try:
            pickle(part)
        except Exception:
            for name in getattr(type(part), "model_fields", None) or {}:
                try:
                    pickle(getattr(part, name))
                except Exception:
                    return f"{label}(a {type(part).__name__}): its field {name!r}"
            return f"{label}(a {type(part).__name__})"
    return last


def run_pickled(payload: bytes) -> Any:
    """In a worker: unpickle ``(fn, args, kwargs)``, call it, run it if it is a coroutine."""
    fn, args, kwargs = pickle.loads(payload)
    return call_to_end(fn, args, kwargs)


def run_outcome(payload: bytes) -> bytes:
    """In a worker: unpickle ``(fn, args, kwargs)``, run it, and send its outcome back
    cloudpickled: ``("ok", result)`` or ``("error", (exception pickled or None,
    (module, name, message, traceback)))``.

    What travels back is bytes, whatever the body gave or raised: an exception that does
    not pickle, or does not unpickle (its ``__init__`` takes other arguments than its
    ``args``), a class defined in ``__main__``, never break the pool nor lose the error
    (:func:`load_outcome` falls back to its text).
    """
    try:
        fn, args, kwargs = pickle.loads(payload)
        result = call_to_end(fn, args, kwargs)
        try:
            return dumps(("ok", result))
        except SerializationError as exc:
            name = getattr(fn, "__name__", repr(fn))
            raise SerializationError(f"the result of {name} cannot come back: {exc}") from None
    except BaseException as exc:
        kind = type(exc)
        text = (kind.__module__, kind.__qualname__, str(exc), "".join(format_exception(exc)))
        try:
            pickled: bytes | None = dumps(exc)
        except Exception:
            pickled = None
        return dumps(("error", (pickled, text)))


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process: its ``__cause__`` here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def load_outcome(data: bytes, what: str, backend: str) -> Any:
    """The result :func:`run_outcome` sent back; or raise the body's exception (itself,
    caused by its traceback in the worker; or a :class:`~stepgraph.errors.RecordedError`
    of its type, message and traceback when it does not unpickle here).

    Raises:
        SerializationError: the result does not unpickle here.
    """
    try:
        kind, value = pickle.loads(data)
    except Exception as exc:
        raise SerializationError(
            f"the result of {what} on backend {backend!r} cannot be unpickled here: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if kind == "ok":
        return value
    pickled, (module, name, message, text) = value
    error: object = None
    if pickled is not None:
        with contextlib.suppress(Exception):
            error = pickle.loads(pickled)
    if isinstance(error, BaseException):
        if error.__cause__ is None:
            error.__cause__ = _RemoteTraceback(text)
        raise error
    raise RecordedError(
        f"{name}: {message}", type=f"{module}.{name}", message=message, traceback=text
    )


class ProcessBackend(BackendBase):
    """Bodies run in a pool of worker processes (``concurrent.futures``), pickled with
    cloudpickle (the extra ``process``; ``dask`` includes it).

    Args:
        max_workers: the number of worker processes (None: the number of CPUs).
        name: the backend's name in messages.
        start_method: how workers start (``"spawn"``, ``"forkserver"``, ``"fork"``;
            None: ``"spawn"``, safe beside threads and the event loop).

    A body's exception comes back with its own type and message. A worker that dies
    while it runs a body (killed, out of memory) fails that body with
    :class:`~stepgraph.errors.WorkerDiedError`, and the next body gets a fresh pool.
    A running body cannot be stopped: cancelling it stops waiting for it; it finishes in
    the background, unless the backend shuts down first (leaving its flow): then the
    workers still running bodies nobody awaits are terminated.
    """

    in_process = False

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        name: str = "process",
        start_method: str | None = None,
    ) -> None:
        self.name = name
        self.max_workers = max_workers
        self.start_method = start_method or "spawn"
        self._pool: ProcessPoolExecutor | None = None
        self._commands = LoopSemaphores(max_workers or os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._abandoned: set[Future[bytes]] = set()  # bodies cancelled while they ran

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context(self.start_method)
                self._pool = ProcessPoolExecutor(self.max_workers, mp_context=context)
            return self._pool

    async def start(self) -> None:
        dumps(None)  # the extra is there, or say so now
        self._executor()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        payload = dumps((fn, args, kwargs))
        pool = self._executor()
        try:
            future = pool.submit(run_outcome, payload)
        except BrokenProcessPool:  # a worker died while idle: a fresh pool takes the body
            self._discard(pool)
            pool = self._executor()
            future = pool.submit(run_outcome, payload)
        return self._watch(pool, future, getattr(fn, "__name__", repr(fn)))

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Drop a broken ``pool``: the next body gets a fresh one."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def run_command(self, command: Command) -> Awaitable[CommandResult]:
        """An executable runs as a child of this process (as it would of a worker: the
        same machine), at most ``max_workers`` at once; cancelling it terminates it."""
        return self._bounded_command(command)

    async def _bounded_command(self, command: Command) -> CommandResult:
        async with self._commands.get():
            return await run_command_async(command)

    async def _watch(self, pool: ProcessPoolExecutor, future: Future[bytes], what: str) -> Any:
        try:
            data = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancel():  # it runs: it goes on in the background
                self._abandoned.add(future)
                future.add_done_callback(self._abandoned.discard)
            raise
        except BrokenProcessPool as exc:
            self._discard(pool)
            raise WorkerDiedError(
                f"the worker process running {what} on backend {self.name!r} died (killed, "
                f"out of memory, or started from a script without `if __name__ == '__main__':`)"
            ) from exc
        return load_outcome(data, what, self.name)

    async def shutdown(self, *, cancel: bool = False) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if cancel or any(not f.done() for f in self._abandoned):  # nobody waits: stop them
            processes = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:  # running bodies cannot be cancelled: stop them
                if process.is_alive():
                    process.terminate()
            await asyncio.to_thread(_join, processes)
        else:
            await asyncio.to_thread(pool.shutdown, True)


def _join(processes: list[Any]) -> None:
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
