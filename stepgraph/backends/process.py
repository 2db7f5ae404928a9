"""A pool of worker processes, with cloudpickle: lambdas and closures travel too."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, InvalidStateError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from multiprocessing.queues import SimpleQueue
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
    elif isinstance(value, tuple | list):
        parts = [(f"item {i + 1} ", item) for i, item in enumerate(value)]
        last = f"a {type(value).__name__}"
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
    cloudpickled: ``("ok", result)`` or ``("error", (exception pickled or None, its
    class, args and attributes pickled or None, (module, name, message, traceback)))``.

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
        except SerializationError as whole:
            name = getattr(fn, "__name__", repr(fn))
            reason: Exception = whole
            try:  # what in the result, for the message (the pair said "a tuple")
                dumps(result)
            except SerializationError as part:
                reason = part
            raise SerializationError(f"the result of {name} cannot come back: {reason}") from None
    except BaseException as exc:
        kind = type(exc)
        text = (kind.__module__, kind.__qualname__, str(exc), "".join(format_exception(exc)))
        try:
            pickled: bytes | None = dumps(exc)
        except Exception:
            pickled = None
        shape = _shape(exc)  # (for one that pickles, but does not unpickle)
        return dumps(("error", (pickled, shape, text)))


def _shape(exc: BaseException) -> bytes | None:
    """What rebuilds ``exc`` without its ``__init__`` (which may take other arguments than
    its ``args``): its class, ``args`` and attributes, pickled; the attributes that do not
    pickle (a lock, a connection) left out, and named in a note. None: its class or its
    ``args`` do not pickle."""
    kind, state = type(exc), dict(vars(exc))
    try:
        return dumps((kind, exc.args, state))
    except Exception:
        pass
    dropped = []
    for key, value in list(state.items()):
        try:
            dumps(value)
        except Exception:
            del state[key]
            dropped.append(key)
    if dropped:
        note = (
            f"stepgraph: its attributes {', '.join(map(repr, dropped))} could not be pickled "
            f"in the worker process: they did not come back"
        )
        state["__notes__"] = [*state.get("__notes__", ()), note]
    try:
        return dumps((kind, exc.args, state))
    except Exception:
        return None


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process: its ``__cause__`` here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def load_outcome(data: bytes, what: str, backend: str) -> Any:
    """The result :func:`run_outcome` sent back; or raise the body's exception (itself,
    caused by its traceback in the worker; rebuilt without its ``__init__`` when that
    takes other arguments than its ``args``; or a :class:`~stepgraph.errors.RecordedError`
    of its type, message and traceback when it cannot be made here).

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
    pickled, shape, (module, name, message, text) = value
    error: object = None
    if pickled is not None:
        with contextlib.suppress(Exception):
            error = pickle.loads(pickled)
    if not isinstance(error, BaseException) and shape is not None:
        error = _rebuilt(shape)
    if isinstance(error, BaseException):
        if error.__cause__ is None:
            error.__cause__ = _RemoteTraceback(text)
        raise error
    raise RecordedError(
        f"{name}: {message}", type=f"{module}.{name}", message=message, traceback=text
    )


def _rebuilt(shape: bytes) -> BaseException | None:
    """An exception of its own type from its class, ``args`` and attributes, without its
    ``__init__`` (one taking other arguments than its ``args`` does not unpickle); None
    when it cannot be made so."""
    try:
        kind, args, state = pickle.loads(shape)
        error = kind.__new__(kind)
        error.args = args
        error.__dict__.update(state)
    except Exception:
        return None
    return error if isinstance(error, BaseException) else None


_starts: SimpleQueue[int] | None = None  # in a worker: where it tells the bodies it starts
_withdrawn: Any = None  # in a worker: the bodies cancelled after the pool took them
_WITHDRAWN_SLOTS = 4096  # token % slots: a cancelled body's slot holds its token


def _tell_starts_on(starts: SimpleQueue[int], withdrawn: Any) -> None:
    """In a worker, as it starts: the pipe on which it tells its pool the bodies it
    starts, and the table of the bodies withdrawn before they started."""
    global _starts, _withdrawn
    _starts, _withdrawn = starts, withdrawn


def _run_told(payload: bytes, token: int) -> bytes:
    """In a worker: tell the pool that the body of ``token`` starts (written to the pipe
    before it runs, so it survives a worker killed right after), then, unless it was
    withdrawn meanwhile, :func:`run_outcome`."""
    assert _starts is not None
    _starts.put(token)
    if _withdrawn is not None and _withdrawn[token % _WITHDRAWN_SLOTS] == token:
        return b""  # cancelled before it started: it never starts (nobody reads this)
    return run_outcome(payload)


class _Pool:
    """A process pool whose workers tell, on a pipe of their own, each body they start:
    when a worker dies and the pool fails every body not finished, the bodies that had not
    started can run again elsewhere.

    Each body has a token; a token is forgotten when its body finishes (so the pipe is
    read as the pool goes and never fills up), and kept when the pool breaks.
    """

    def __init__(self, max_workers: int | None, start_method: str) -> None:
        context = multiprocessing.get_context(start_method)
        self._starts: SimpleQueue[int] = context.SimpleQueue()
        # the pool hands bodies to its workers' queue ahead of time, as started: a cancel
        # no longer reaches them there; one withdrawn so is marked here, and skipped
        self._withdrawn = context.RawArray("q", [-1] * _WITHDRAWN_SLOTS)
        self.executor = ProcessPoolExecutor(
            max_workers,
            mp_context=context,
            initializer=_tell_starts_on,
            initargs=(self._starts, self._withdrawn),
        )
        self._workers = self.executor._processes  # the pool's own dict, kept past its shutdown
        self._lock = threading.Lock()
        self._running: set[int] = set()  # tokens of bodies started, not finished
        self._ran = False  # whether a body ever started here
        self._pending: set[Future[bytes]] = set()  # bodies submitted, not finished
        self._watchdog: threading.Thread | None = None

    def submit(self, payload: bytes, token: int) -> Future[bytes]:
        """Run the pickled body ``payload`` in a worker, which tells ``token`` as it starts."""
        future = self.executor.submit(_run_told, payload, token)
        with self._lock:
            self._pending.add(future)
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._strand_none, name="stepgraph-pool-watchdog", daemon=True
                )
                self._watchdog.start()
        future.add_done_callback(lambda done: self._finished(token, done))
        return future

    def _strand_none(self) -> None:
        """(A thread) Once the pool's manager thread has stopped, fail the bodies it left
        unfinished, and stop the workers it left running.

        The manager thread of Python 3.11 dies when a worker dies while a cancelled body
        waits in the pool (it fails every waiting body, the cancelled one included, and
        raises there: CPython gh-107219, fixed in 3.12): the bodies after it would wait
        for good. Failed here, they run again in a fresh pool, as after any breakage.
        """
        manager = getattr(self.executor, "_executor_manager_thread", None)
        if manager is None:
            return
        manager.join()
        with self._lock:
            stranded = [future for future in self._pending if not future.done()]
        if not stranded:
            return
        for worker in self.workers():
            if worker.is_alive():
                worker.terminate()
        error = BrokenProcessPool("the process pool stopped while bodies were waiting in it")
        for future in stranded:
            with contextlib.suppress(InvalidStateError):  # it finished meanwhile
                future.set_exception(error)

    def withdraw(self, token: int) -> bool:
        """Withdraw the body of ``token``, which the pool took as started (its future
        cannot be cancelled): False when it has started already (it goes on)."""
        with self._lock:
            self._withdrawn[token % _WITHDRAWN_SLOTS] = token
            self._collect()  # a start told before the mark was written: too late
            return token not in self._running

    def workers(self) -> list[BaseProcess]:
        """The worker processes the pool started (also once it is shut down)."""
        return list(self._workers.values())

    def _collect(self) -> None:
        """Take in the tokens the workers told (``self._lock`` held)."""
        while not self._starts.empty():
            self._running.add(self._starts.get())
            self._ran = True

    def _finished(self, token: int, future: Future[bytes]) -> None:
        """(A future's callback) forget a body that finished; keep it if the pool broke."""
        with self._lock:
            self._pending.discard(future)
            self._collect()
            if future.cancelled() or not isinstance(future.exception(), BrokenProcessPool):
                self._running.discard(token)

    def may_run_again(self, token: int) -> bool:
        """(Blocking) whether the body of ``token``, failed by this broken pool, never
        started and may run in another pool; told once the pool's workers have all ended
        (the pool stops them all when one dies), so that no start is still on its way.

        Not when nothing ever started here: workers that die before running anything (a
        script without a main guard) would die in every fresh pool too.
        """
        for worker in self.workers():  # a broken pool starts no more
            multiprocessing.connection.wait([worker.sentinel])
        with self._lock:
            self._collect()
            return self._ran and token not in self._running


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
    :class:`~stepgraph.errors.WorkerDiedError`, and so the bodies running in the other
    workers (the pool stops them all); the bodies waiting for a worker, which had not
    started, run in a fresh pool, as the next bodies do.
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
        self._pool: _Pool | None = None
        self._commands = LoopSemaphores(max_workers or os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._abandoned: set[Future[bytes]] = set()  # bodies cancelled while they ran
        self._tokens = itertools.count()  # a token per body: its pool tells when it starts

    def _executor(self) -> _Pool:
        with self._lock:
            if self._pool is None:
                self._pool = _Pool(self.max_workers, self.start_method)
            return self._pool

    async def start(self) -> None:
        dumps(None)  # the extra is there, or say so now
        self._executor()

    def slots(self, kind: str, fn: Callable[..., Any]) -> tuple[str, int] | None:
        """A function takes a worker process; an executable, one of as many places."""
        size = self.max_workers or os.cpu_count() or 1
        if kind == "function":
            return ("processes", size)
        return ("commands", size) if kind == "executable" else None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        payload = dumps((fn, args, kwargs))  # (what cannot be pickled is said at once)
        return self._run(payload, getattr(fn, "__name__", repr(fn)))

    async def _run(self, payload: bytes, what: str) -> Any:
        # handed to the pool once awaited, not before: a cancel before that (of a task
        # that never ran a step) then means it never runs, as a cancel in the pool does
        token = next(self._tokens)
        pool, future = self._send(payload, token)
        return await self._watch(pool, future, payload, token, what)

    def _send(self, payload: bytes, token: int) -> tuple[_Pool, Future[bytes]]:
        """Submit a body to the pool; to a fresh one if the pool is found broken (a worker
        died while idle, or a body killed its worker)."""
        pool = self._executor()
        try:
            return pool, pool.submit(payload, token)
        except BrokenProcessPool:
            self._discard(pool)
            pool = self._executor()
            return pool, pool.submit(payload, token)

    def _discard(self, pool: _Pool) -> None:
        """Drop a broken ``pool``: the next body gets a fresh one (one for all the bodies
        that find this one broken)."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.executor.shutdown(wait=False, cancel_futures=True)

    def run_command(self, command: Command) -> Awaitable[CommandResult]:
        """An executable runs as a child of this process (as it would of a worker: the
        same machine), at most ``max_workers`` at once; cancelling it terminates it."""
        return self._bounded_command(command)

    async def _bounded_command(self, command: Command) -> CommandResult:
        async with self._commands.get():
            return await run_command_async(command)

    async def _watch(
        self, pool: _Pool, future: Future[bytes], payload: bytes, token: int, what: str
    ) -> Any:
        while True:
            try:
                data = await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                if not future.cancel() and not pool.withdraw(token):  # it runs: it goes on
                    self._abandoned.add(future)  # in the background
                    future.add_done_callback(self._abandoned.discard)
                raise
            except BrokenProcessPool as exc:  # a worker died: was the body running?
                self._discard(pool)
                if not await asyncio.to_thread(pool.may_run_again, token):
                    raise WorkerDiedError(
                        f"the worker process running {what} on backend {self.name!r} died "
                        f"(killed, out of memory, or started from a script without "
                        f"`if __name__ == '__main__':`)"
                    ) from exc
                pool, future = self._send(payload, token)  # it was waiting: it runs now
            else:
                return load_outcome(data, what, self.name)

    async def shutdown(self, *, cancel: bool = False) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if cancel or any(not f.done() for f in self._abandoned):  # nobody waits: stop them
            processes = pool.workers()
            pool.executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:  # running bodies cannot be cancelled: stop them
                if process.is_alive():
                    process.terminate()
            await asyncio.to_thread(_join, processes)
        else:
            await asyncio.to_thread(pool.executor.shutdown, True)


def _join(processes: list[Any]) -> None:
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
