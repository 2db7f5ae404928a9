"""Bodies on a Dask cluster (``distributed``): a LocalCluster it starts, or any scheduler."""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import BackendError, MissingExtraError, WorkerDiedError
from .base import BackendBase, call_to_end
from .commands import Command, CommandResult, CommandStopped, run_command_blocking
from .process import dumps, load_outcome, run_outcome

__all__ = ["DaskBackend"]


class DaskBackend(BackendBase):
    """Bodies run on a Dask cluster through a ``distributed.Client`` (the extra ``dask``).

    Args:
        address: a running scheduler (``"tcp://host:8786"``): any Dask deployment works
            (dask-jobqueue on Slurm or PBS, Kubernetes, a cloud). None: start a
            ``LocalCluster`` with ``cluster_kwargs`` (``processes=``, ``n_workers=``,
            ``threads_per_worker=``...) and close it at shutdown.
        name: the backend's name in messages.
        allowed_failures: how many times the scheduler retries a body whose worker died
            before it gives up (None: Dask's setting, 3 by default); applies to the
            cluster this backend starts.
        **cluster_kwargs: passed to ``LocalCluster``.

    A body's exception comes back with its own type and message. When Dask would pickle
    what travels (workers in other processes, or a scheduler at a ``tcp://`` address), a
    body travels as the ``ProcessBackend``'s do: cloudpickled, its outcome back as bytes;
    an exception comes back of its own type (rebuilt without its ``__init__`` if need
    be), or, when it cannot be pickled, as a :class:`~stepgraph.errors.RecordedError`
    (its type, message and the worker's traceback); a result that cannot be pickled is a
    :class:`~stepgraph.errors.SerializationError` naming the function. With workers in
    this process (``processes=False``, an ``inproc://`` scheduler) nothing is pickled: a
    body's result and exception come back as they are (the same objects). A body whose
    worker died (more than ``allowed_failures`` times) fails with
    :class:`~stepgraph.errors.WorkerDiedError`. Cancelling a body cancels its Dask future.
    """

    in_process = False

    def __init__(
        self,
        address: str | None = None,
        *,
        name: str = "dask",
        allowed_failures: int | None = None,
        **cluster_kwargs: Any,
    ) -> None:
        self.name = name
        self.address = address
        self.allowed_failures = allowed_failures
        self.cluster_kwargs = cluster_kwargs
        self._cluster: Any = None
        self._client: Any = None
        self._starting: asyncio.Lock | None = None
        self._in_memory = False  # the workers share this process: Dask pickles nothing

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (once started)."""
        if self._client is None:
            raise BackendError(f"Dask backend {self.name!r} is not started")
        return self._client

    async def start(self) -> None:
        if self._client is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:  # two first bodies at once start one cluster
            if self._client is None:
                await self._start()

    async def _start(self) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise MissingExtraError("DaskBackend", "dask.distributed", "dask") from exc
        settings: dict[str, Any] = {}
        if self.allowed_failures is not None:
            settings["distributed.scheduler.allowed-failures"] = self.allowed_failures
        with dask.config.set(settings):
            if self.address is None:
                kwargs = {"dashboard_address": None, **self.cluster_kwargs}
                if kwargs["dashboard_address"] is None:  # its HTTP server still starts:
                    kwargs["scheduler_kwargs"] = {  # on a free port, never a taken 8787
                        "dashboard_address": ":0",
                        **kwargs.get("scheduler_kwargs", {}),
                    }
                self._cluster = await LocalCluster(asynchronous=True, **kwargs)  # type: ignore[no-untyped-call]
                target: Any = self._cluster
            else:
                target = self.address
            try:
                client = await Client(target, asynchronous=True)  # type: ignore[no-untyped-call]
            except Exception:
                if self._cluster is not None:
                    await self._cluster.close()
                    self._cluster = None
                raise
            self._in_memory = str(client.scheduler.address).startswith("inproc://")
            self._client = client

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        what = getattr(fn, "__name__", repr(fn))
        if self._in_memory:
            return self._in_memory_outcome(fn, args, kwargs, what)
        return self._pickled_outcome(dumps((fn, args, kwargs)), what)

    # (handed to the cluster once awaited, not before: a cancel before that, of a task
    # that never ran a step, then means the body never runs)

    async def _in_memory_outcome(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], what: str
    ) -> Any:
        key = f"{id(self)}:{next(_CALLS)}"  # the call stays here: Dask carries only its key
        _IN_MEMORY[key] = (fn, args, kwargs)
        try:
            future = self.client.submit(_call_in_memory, key, pure=False)
            value = await self._result(future, what)
        finally:
            _IN_MEMORY.pop(key, None)
        if type(value) is _Raised:
            raise value.error
        return value

    async def _pickled_outcome(self, payload: bytes, what: str) -> Any:
        future = self.client.submit(run_outcome, payload, pure=False)
        return load_outcome(await self._result(future, what), what, self.name)

    def run_command(self, command: Command) -> Awaitable[CommandResult]:
        return self._command(command)

    async def _command(self, command: Command) -> CommandResult:
        """Run ``command`` on a worker; cancelling it stops the child there (a Dask event
        the worker watches; on workers in this process, a thread event: a Dask event
        would wait for a scheduler that a closing flow may have shut down), then cancels
        the Dask future."""
        if self._in_memory:
            return await self._command_here(command)
        from distributed import Event

        stop = Event(f"stepgraph-stop-{uuid.uuid4().hex}", client=self.client)  # type: ignore[no-untyped-call]
        future = self.client.submit(_run_watched, command, stop.name, pure=False)
        try:
            result: CommandResult = await self._result(future, command.program)
            return result
        except asyncio.CancelledError:
            await stop.set()  # type: ignore[no-untyped-call]
            raise

    async def _command_here(self, command: Command) -> CommandResult:
        key = f"stepgraph-stop-{uuid.uuid4().hex}"
        stop = _STOPS[key] = threading.Event()
        future = self.client.submit(_run_stopped_here, command, key, pure=False)
        try:
            result: CommandResult = await self._result(future, command.program)
            return result
        except asyncio.CancelledError:
            stop.set()
            raise
        finally:
            _STOPS.pop(key, None)

    async def _result(self, future: Any, what: str) -> Any:
        from distributed import KilledWorker

        try:
            return await future
        except asyncio.CancelledError:
            if self._client is not None:
                await self._client.cancel([future])
            raise
        except KilledWorker as exc:
            raise WorkerDiedError(
                f"the Dask worker running {what} on backend {self.name!r} died: {exc}"
            ) from exc

    async def shutdown(self, *, cancel: bool = False) -> None:
        client, self._client = self._client, None
        cluster, self._cluster = self._cluster, None
        if client is not None:
            await client.close()
        if cluster is not None:
            await _release_threads(cluster)
            await cluster.close()


async def _release_threads(cluster: Any) -> None:
    """Close the in-process workers of a cluster this backend started, without waiting
    for the bodies still running in their threads (cancelled ones: a flow waits for the
    others). A thread cannot be stopped: it finishes in the background, as with a
    ``ThreadBackend``. ``LocalCluster.close()`` alone would wait for it, for as long as it
    runs. (Worker processes are left to ``close()``: Dask kills them after a grace period.)
    """
    from distributed import Worker

    workers = [w for w in list(cluster.workers.values()) if isinstance(w, Worker)]
    await asyncio.gather(
        *(w.close(executor_wait=False, reason="stepgraph-shutdown") for w in workers),
        return_exceptions=True,
    )


class _Raised:
    """What a body raised on a worker in this process, handed back as its result: Dask
    pickles a task's exception (an unpicklable one becomes a bare ``Exception`` of its
    repr), never a result that stays in this process."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


# The calls handed to workers in this process, by key: Dask pickles what it is given to
# submit, even to an in-process scheduler, so the call itself (function, arguments) never
# goes through Dask, and arguments arrive as the very objects, as on a thread.
_IN_MEMORY: dict[str, tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = {}
_CALLS = itertools.count()


def _call_in_memory(key: str) -> Any:
    """On a worker in this process: the result of call ``key``, or :class:`_Raised` with
    its exception."""
    fn, args, kwargs = _IN_MEMORY[key]
    try:
        return call_to_end(fn, args, kwargs)
    except BaseException as exc:
        return _Raised(exc)


_STOPS: dict[str, threading.Event] = {}  # the stops of commands on workers in this process


def _run_stopped_here(command: Command, key: str) -> CommandResult:
    """On a worker in this process: run ``command``, and stop it when its thread event is
    set; not at all when its caller has gone already."""
    stop = _STOPS.get(key)
    if stop is None or stop.is_set():
        raise CommandStopped(f"{command.program} was stopped before it started")
    return run_command_blocking(command, stop=stop.is_set, poll=0.25)


def _run_watched(command: Command, stop_event: str) -> CommandResult:
    """On a Dask worker: run ``command``, and stop it when the event ``stop_event`` is set."""
    from distributed import Event

    stop = Event(stop_event)  # type: ignore[no-untyped-call]
    return run_command_blocking(command, stop=stop.is_set, poll=0.25)
