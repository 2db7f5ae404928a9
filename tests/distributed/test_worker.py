"""Submitting runs, workers taking them, and handlers attached from elsewhere, in one process.

The same scenarios run on every store (memory, SQLite, PostgreSQL): a worker here is the
same object ``stepgraph worker`` runs; the tests with several processes are in
``test_processes.py``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from stepgraph import HumanResponseEvent, InputRequiredEvent, StopEvent
from stepgraph.core import CancelRequested
from stepgraph.distributed.worker import Worker, registry
from stepgraph.durability.run import DurableRun, _owner
from stepgraph.errors import (
    CheckpointError,
    InvalidStartEventError,
    RunFinishedError,
    RunIdConflictError,
    StepgraphError,
    StoreError,
    StoreUnavailableError,
    WorkflowCancelled,
)
from stepgraph.runtime.handler import WorkflowHandler
from stepgraph.stores import MemoryStore
from stepgraph.stores.queue import take

from .flows import CALLS, GATES, Asks, Gated, Go, Progress, Renamed, Stranger, Three, reached


@asynccontextmanager
async def working(
    store: Any, *workflows: Any, queues: tuple[str, ...] = ("default",)
) -> AsyncIterator[Worker]:
    worker = Worker(store, registry((None, wf) for wf in workflows), queues=queues, lease_seconds=5)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.stop()
        await task


async def reaching(*keys: str) -> None:
    """Wait (at most 10 s) until the steps counted under ``keys`` have run."""
    async with asyncio.timeout(10):
        for key in keys:
            await reached(key).wait()


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def _gated(store: Any) -> tuple[str, Gated, str]:
    """A run of Gated submitted, the gate of its slow step closed: tag, workflow, run id."""
    t = tag()
    GATES[t] = asyncio.Event()
    wf = Gated(store=store)
    return t, wf, await wf.submit(tag=t)


async def test_a_submit_with_arguments_its_start_event_refuses_names_submit_and_queues_nothing(
    store: Any,
) -> None:
    with pytest.raises(InvalidStartEventError, match=r"Three\.submit\(\) arguments \['n'\]"):
        await Three(store=store).submit(n="not a number")
    assert await store.list_runs() == []


async def test_submitted_runs_are_queued_until_a_worker_runs_them(store: Any) -> None:
    wf = Three(store=store)
    ids = [await wf.submit(n=i) for i in range(4)]
    assert len(set(ids)) == 4
    queued = await store.list_runs(status="queued")
    assert [r.run_id for r in queued] == ids
    assert all(r.queue == "default" and r.workflow == "Three" for r in queued)
    async with working(store, wf):
        results = [await store.result(run_id, timeout=10) for run_id in ids]
    assert results == [3, 4, 5, 6]
    assert {r.status for r in await store.list_runs()} == {"completed"}


async def test_submit_is_idempotent_by_run_id(store: Any) -> None:
    wf = Three(store=store)
    assert await wf.submit(n=1, run_id="order-17") == "order-17"
    assert await wf.submit(n=99, run_id="order-17") == "order-17"  # written once: n=1 stays
    async with working(store, wf):
        assert await store.result("order-17", timeout=10) == 4
    assert len(await store.list_runs()) == 1


async def test_submit_with_the_run_id_of_another_workflows_run_is_refused(store: Any) -> None:
    assert await Three(store=store).submit(n=1, run_id="order-18") == "order-18"
    with pytest.raises(RunIdConflictError, match=r"'order-18'.*workflow 'Three'"):
        await Stranger(store=store).submit(run_id="order-18")
    assert [(r.run_id, r.workflow) for r in await store.list_runs()] == [("order-18", "Three")]


async def test_a_run_of_a_workflow_the_worker_does_not_know_waits_and_is_said(
    store: Any,
) -> None:
    import logging

    run_id = await Stranger(store=store).submit()
    said = asyncio.Event()

    class Heard(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if run_id in record.getMessage():
                self.message = record.getMessage()
                said.set()

    heard = Heard()
    logging.getLogger("stepgraph.worker").addHandler(heard)
    try:
        async with working(store, Three(store=store)), asyncio.timeout(10):
            await said.wait()
    finally:
        logging.getLogger("stepgraph.worker").removeHandler(heard)
    assert "of workflow 'Stranger' waits in queue 'default'" in heard.message
    assert "it runs: Three" in heard.message
    assert (await store.get_run(run_id)).status == "queued"  # left for a worker that knows it


async def test_a_run_in_a_queue_nobody_serves_stays_queued(store: Any) -> None:
    wf = Three(store=store)
    later = await wf.submit(queue="nightly", n=0)
    now = await wf.submit(n=1)
    async with working(store, wf):
        assert await store.result(now, timeout=10) == 4
        record = await store.get_run(later)
        assert record.status == "queued" and record.queue == "nightly"
    assert [r.run_id for r in await store.list_runs(status="queued")] == [later]
    async with working(store, wf, queues=("nightly",)):
        assert await store.result(later, timeout=10) == 3


async def test_a_worker_leaves_the_runs_of_workflows_it_does_not_know_to_one_that_knows_them(
    store: Any,
) -> None:
    unknown = await Stranger(store=store).submit()
    known = await Three(store=store).submit(n=0)
    async with working(store, Three(store=store)):
        assert await store.result(known, timeout=10) == 3
        again = await Three(store=store).submit(n=1)  # (claimed after the unknown one)
        assert await store.result(again, timeout=10) == 4
        assert (await store.get_run(unknown)).status == "queued"  # left for another worker
    async with working(store, Three(store=store), Stranger(store=store)):
        assert await store.result(unknown, timeout=10) == "stranger"


async def test_runs_claimed_as_the_worker_stops_are_given_back_with_their_leases(
    store: Any,
) -> None:
    run_id = await Three(store=store).submit(n=0)
    worker = Worker(store, registry([(None, Three(store=store))]), lease_seconds=30)
    claim = store.claim

    async def claim_then_stop(*args: Any, **options: Any) -> Any:
        got = await claim(*args, **options)
        worker._stopping = True  # a SIGTERM while the claim was on its way
        return got

    store.claim = claim_then_stop
    try:
        assert await worker._claim() == 0 and not worker.held
    finally:
        del store.claim
    assert [r.run_id for r in await store.claim("other", ["default"], 5, 30.0)] == [run_id]
    assert await store.acquire(run_id, "other")


async def test_a_run_whose_code_changed_since_submit_fails_with_a_stored_error(store: Any) -> None:
    changed = await Three(store=store).submit(n=0)
    async with working(store, Renamed(store=store, name="Three")):
        with pytest.raises(Exception, match=r"could not resume run .* CheckpointError: .* removed"):
            await store.result(changed, timeout=10)
    after = await Three(store=store).submit(n=5)
    async with working(store, Three(store=store)):  # a worker with the right code goes on
        assert await store.result(after, timeout=10) == 8


async def test_attach_streams_the_stored_events_from_the_start_ending_with_the_stop_event(
    store: Any,
) -> None:
    wf = Three(store=store)
    run_id = await wf.submit(n=0)
    early = wf.attach(run_id)  # attached before any worker runs it
    async with working(store, wf):
        seen = [ev async for ev in early.stream_events()]
        assert await early == 3
    assert [type(ev).__name__ for ev in seen] == ["Progress", "Progress", "Progress", "StopEvent"]
    assert [ev.n for ev in seen[:3]] == [1, 2, 3]
    late = [ev async for ev in Three(store=store).attach(run_id).stream_events()]
    assert late == seen  # whenever it attaches: the whole stream, in order


async def test_an_attached_handler_reads_on_through_a_store_outage(store: Any) -> None:
    wf = Three(store=store)
    run_id = await wf.submit(n=0)
    failures = {"get_run": 2, "read_events": 2}

    def flaky(name: str) -> Any:
        real = getattr(store, name)

        async def read(*args: Any) -> Any:
            if failures[name]:
                failures[name] -= 1
                raise StoreUnavailableError(f"{name}: the server closed the connection")
            return await real(*args)

        return read

    store.get_run, store.read_events = flaky("get_run"), flaky("read_events")
    handler = wf.attach(run_id)
    async with working(store, wf):
        seen = [type(ev).__name__ async for ev in handler.stream_events()]
        assert await handler == 3  # not failed by the outage
    assert seen == ["Progress", "Progress", "Progress", "StopEvent"]  # nor cut short
    assert failures == {"get_run": 0, "read_events": 0}


async def test_a_send_the_store_could_not_take_is_logged_naming_the_run(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wf = Asks(store=store)
    run_id = await wf.submit()

    async def down(*args: Any) -> None:
        raise StoreUnavailableError("the server closed the connection")

    store.post = down
    handler = wf.attach(run_id)
    handler.send_event(HumanResponseEvent(response="Ada"))  # nobody awaits it: ...
    await asyncio.gather(*handler._run._posts)  # ... it says so, not the loop's "never retrieved"
    assert f"what was sent to run {run_id!r} is lost" in caplog.text
    assert "the server closed the connection" in caplog.text


async def test_an_answer_sent_through_an_attached_handler_reaches_the_paused_run(
    store: Any,
) -> None:
    wf = Asks(store=store)
    run_id = await wf.submit()
    async with working(store, wf):
        handler = wf.attach(run_id)
        async for ev in handler.stream_events():
            if isinstance(ev, InputRequiredEvent):
                assert (await store.get_run(run_id)).status == "paused"
                handler.send_event(HumanResponseEvent(response="Ada", request_id=ev.request_id))
            if isinstance(ev, StopEvent):
                break
        assert await handler == "hello Ada"
    box = await store.inbox([run_id])
    assert box == []  # delivered once, and consumed


async def test_an_answer_posted_while_no_worker_holds_the_run_is_delivered_when_one_does(
    store: Any,
) -> None:
    wf = Asks(store=store)
    run_id = await wf.submit()
    handler = wf.attach(run_id)
    handler.send_event(HumanResponseEvent(response="Grace"))  # before anyone runs it
    await asyncio.gather(*handler._run._posts)  # posted: no worker has it yet
    async with working(store, wf):
        assert await handler == "hello Grace"


async def test_what_reaches_a_completed_run_through_an_attached_handler_is_not_stored(
    store: Any,
) -> None:
    wf = Asks(store=store)
    run_id = await wf.submit()
    handler = wf.attach(run_id)
    handler.send_event(HumanResponseEvent(response="Ada"))
    async with working(store, wf):
        assert await handler == "hello Ada"
    late = wf.attach(run_id)  # has not read the run's end yet: sends go to the store
    late.send_event(HumanResponseEvent(response="again"))  # dropped, as a local run does
    with pytest.raises(RunFinishedError, match=run_id):
        await late.send_response("nobody-asked", "too late")
    await asyncio.gather(*late._run._posts)
    assert await late == "hello Ada"
    assert await store.inbox([run_id]) == []  # nothing left that nobody will read


async def test_cancel_through_an_attached_handler_cancels_the_run(store: Any) -> None:
    wf = Asks(store=store)
    run_id = await wf.submit()
    async with working(store, wf):
        handler = wf.attach(run_id)
        async for ev in handler.stream_events():
            if isinstance(ev, InputRequiredEvent):
                await handler.cancel()
        with pytest.raises(WorkflowCancelled):
            await handler
    assert (await store.get_run(run_id)).status == "cancelled"


async def test_a_caller_that_cancels_through_an_attached_handler_is_told_of_nothing_left(
    store: Any,
) -> None:
    wf = Asks(store=store)
    run_id = await wf.submit()
    unretrieved: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context["message"]))
    try:
        async with working(store, wf):
            handler = wf.attach(run_id)
            async for ev in handler.stream_events():
                if isinstance(ev, InputRequiredEvent):
                    await handler.cancel()  # and never awaited
            with pytest.raises(WorkflowCancelled):
                await store.result(run_id, timeout=10)
            await handler._run._watch  # its outcome is set
        del handler, ev
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert unretrieved == []  # no "Future exception was never retrieved"


async def test_what_is_sent_to_an_unknown_run_is_said_lost_and_flush_raises(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Three(store=store).attach("nobody")
    handler.send_event(HumanResponseEvent(response="anyone?"))
    with pytest.raises(StoreError, match="what was sent to run 'nobody' was not stored"):
        await handler.flush()
    assert "what was sent to run 'nobody' is lost" in caplog.text
    async with asyncio.timeout(10):
        await asyncio.wait({handler._run.outcome})  # (its own read of the store says so)
    del handler
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_a_run_that_had_ended_when_attached_needs_no_await(store: Any) -> None:
    wf = Asks(store=store)
    run_id = await wf.submit()
    await wf.attach(run_id).cancel()  # (queued: stored as cancelled at once)
    unretrieved: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context["message"]))
    try:
        late = wf.attach(run_id)  # attach, send, flush, and leave without awaiting it
        late.send_event(HumanResponseEvent(response="too late"))
        await late.flush()
        async with asyncio.timeout(10):
            await asyncio.wait({late._run.outcome})
        del late
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert unretrieved == []  # no "Future exception was never retrieved"


async def test_graceful_stop_commits_the_superstep_in_flight_and_nothing_finished_runs_again(
    store: Any,
) -> None:
    t, wf, run_id = await _gated(store)
    worker = Worker(store, registry([(None, wf)]), lease_seconds=5, grace_seconds=10)
    task = asyncio.create_task(worker.run())
    await reaching(f"{t}:work0", f"{t}:work1")
    stopping = asyncio.create_task(worker.stop())
    await asyncio.sleep(0)  # stop() has begun: no more claims
    assert worker._stopping
    GATES[t].set()  # the slow step of the superstep in flight ends: the barrier commits
    await stopping
    await task
    record = await store.get_run(run_id)
    assert record.status == "running" and record.worker is None  # left for another worker
    supersteps = [info.superstep for info in await store.list_checkpoints(run_id)]
    assert supersteps == list(range(len(supersteps)))
    async with working(store, wf):
        assert await store.result(run_id, timeout=10) == [0, 1]
    assert CALLS[f"{t}:start"] == 1 and CALLS[f"{t}:work0"] == 1 and CALLS[f"{t}:work1"] == 1
    assert CALLS[f"{t}:last"] == 1


async def test_a_stop_whose_grace_runs_out_stores_what_finished_and_only_the_rest_runs_again(
    store: Any,
) -> None:
    t, wf, run_id = await _gated(store)
    worker = Worker(store, registry([(None, wf)]), lease_seconds=5, grace_seconds=0.01)
    task = asyncio.create_task(worker.run())
    await reaching(f"{t}:work0", f"{t}:work1")  # work0 has finished, work1 waits on its gate
    await worker.stop()  # the superstep does not end within the grace: stopped where it is
    await task
    record = await store.get_run(run_id)
    assert record.status == "running" and record.worker is None  # left for another worker
    del GATES[t]  # (the step that runs again goes through)
    async with working(store, wf):
        assert await store.result(run_id, timeout=10) == [0, 1]
    assert CALLS[f"{t}:work0"] == 1  # finished before the stop: stored, never run again
    assert CALLS[f"{t}:work1"] == 2  # still running at the stop: runs again
    assert CALLS[f"{t}:start"] == 1 and CALLS[f"{t}:last"] == 1


async def test_a_run_whose_worker_died_is_resumed_by_another_once_its_lease_expires() -> None:
    store = MemoryStore()
    t, wf, run_id = await _gated(store)
    dying = Worker(store, registry([(None, wf)]), lease_seconds=0.3)
    task = asyncio.create_task(dying.run())
    await reaching(f"{t}:work1")
    task.cancel()  # the worker stops renewing; its run stops as a killed process's would
    for held in list(dying.held.values()):
        await held.run.crash()
    del GATES[t]
    async with working(store, wf):
        assert await store.result(run_id, timeout=10) == [0, 1]
    assert CALLS[f"{t}:work1"] == 2  # the superstep in flight ran again: at least once
    assert CALLS[f"{t}:start"] == 1  # the committed one did not


async def test_submit_and_attach_need_a_store_with_a_queue() -> None:
    with pytest.raises(StepgraphError, match="has no store"):
        await Three().submit()
    with pytest.raises(StepgraphError, match="queue must be a non-empty str"):
        await Three(store=MemoryStore()).submit(queue="")
    with pytest.raises(StepgraphError, match="has no store"):
        Three().attach("x")


async def test_a_registry_a_worker_cannot_run_is_refused_naming_the_workflow(
    tmp_path: Any,
) -> None:
    from stepgraph.stores import SqliteStore

    store, other = SqliteStore(tmp_path / "a.db"), SqliteStore(tmp_path / "b.db")
    try:
        with pytest.raises(StepgraphError, match="give a mapping of names to workflows"):
            Worker(store, [Three(store=store)])  # type: ignore[arg-type]
        with pytest.raises(StepgraphError, match=r"workflow 'Three' .* is not bound to a store"):
            Worker(store, {"Three": Three})  # a class: `stepgraph worker` binds them itself
        with pytest.raises(StepgraphError, match=r"'Three' is bound to SqliteStore\('.*b\.db"):
            Worker(store, registry([(None, Three(store=other))]))
        again = SqliteStore(tmp_path / "a.db")  # another object over the same file: fine
        worker = Worker(store, registry([(None, Three(store=again))]), lease_seconds=5)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0)  # (it has begun)
        with pytest.raises(StepgraphError, match=r"run\(\) was called already"):
            await worker.run()
        await worker.stop()
        await task
    finally:
        for each in (store, other):
            each.close()


def test_two_spellings_of_one_postgresql_database_are_one_store() -> None:
    from stepgraph.stores import PostgresStore

    url = PostgresStore("postgresql://postgres@127.0.0.1:5432/test", schema="s")
    pairs = PostgresStore("port=5432 dbname=test host=127.0.0.1 user=postgres", schema="s")
    assert url.location == pairs.location
    assert url.location != PostgresStore(url.dsn, schema="t").location  # another schema
    assert url.location != PostgresStore(url.dsn.replace("test", "other"), schema="s").location
    Worker(url, registry([(None, Three(store=pairs))]))  # bound to its store: not refused


def test_worker_options_are_checked() -> None:
    store = MemoryStore()
    with pytest.raises(StepgraphError, match="concurrency"):
        Worker(store, {}, concurrency=0)
    with pytest.raises(StepgraphError, match="lease_seconds"):
        Worker(store, {}, lease_seconds=0)
    with pytest.raises(StepgraphError, match="queues"):
        Worker(store, {}, queues="default")
    with pytest.raises(StepgraphError, match="no run queue"):
        Worker(object(), {})


async def test_attach_an_unknown_run_raises_run_not_found(store: Any) -> None:
    from stepgraph.errors import RunNotFoundError

    with pytest.raises(RunNotFoundError):
        await Three(store=store).attach("nobody")
    with pytest.raises(RunNotFoundError, match="nobody"):  # its stream says so too
        async with asyncio.timeout(10):
            [event async for event in Three(store=store).attach("nobody").stream_events()]


async def test_an_answer_sent_through_attach_reaches_a_run_started_with_run(
    store: Any,
) -> None:
    local = Asks(store=store).run()  # no worker: this process runs it
    async with asyncio.timeout(10):
        async for event in local.stream_events():
            if isinstance(event, InputRequiredEvent):  # paused, in this process
                attached = Asks(store=store).attach(local.run_id)  # as another process would
                attached.send_event(HumanResponseEvent(response="Ada"))
        assert await local == "hello Ada"
    assert await Asks(store=store).attach(local.run_id) == "hello Ada"


async def test_a_cancel_sent_through_attach_reaches_a_run_started_with_run(store: Any) -> None:
    t, wf, _ = await _gated(store)
    local = wf.run(tag=t)
    await reaching(f"{t}:work1")  # it runs here, held at its gate
    await Gated(store=store).attach(local.run_id).cancel()
    with pytest.raises(WorkflowCancelled):
        async with asyncio.timeout(10):
            await local
    assert (await store.get_run(local.run_id)).status == "cancelled"


async def test_attaching_a_run_with_another_workflow_is_refused(store: Any) -> None:
    done = Three(store=store).run(n=1)
    assert await done == 4
    with pytest.raises(RunIdConflictError, match="of workflow 'Three', not of 'Stranger'"):
        await Stranger(store=store).attach(done.run_id)
    with pytest.raises(RunIdConflictError):
        async with asyncio.timeout(10):
            [event async for event in Stranger(store=store).attach(done.run_id).stream_events()]
    assert await Three(store=store).attach(done.run_id) == 4


async def test_an_answer_to_an_unknown_run_raises_once_and_leaves_no_unheard_error(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from stepgraph.errors import RunNotFoundError

    handler = Three(store=store).attach("nobody")
    with pytest.raises(RunNotFoundError):
        await handler.send_response("r", True)
    async with asyncio.timeout(10):
        await asyncio.wait({handler._run.outcome})  # (its own read of the store says so)
    del handler
    gc.collect()
    assert "never retrieved" not in caplog.text


_ = (Go, Progress)


class _Flaky:
    """A MemoryStore whose first ``failures`` claims fail, as a lost connection's would."""

    def __init__(self, store: MemoryStore, failures: int) -> None:
        self._store, self.failures = store, failures

    async def claim(self, *args: Any, **options: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise StoreError("claiming runs failed: the server closed the connection")
        return await self._store.claim(*args, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_worker_retries_with_a_back_off_when_its_store_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = MemoryStore()
    wf = Three(store=inner)
    run_id = await wf.submit(n=1)
    flaky = _Flaky(inner, failures=2)
    async with working(flaky, wf):
        assert await inner.result(run_id, timeout=10) == 4
    assert flaky.failures == 0
    retried = [r for r in caplog.records if "the store failed" in r.getMessage()]
    assert len(retried) == 2 and "retrying in 0.1 s" in retried[0].getMessage()


class _Blip(MemoryStore):
    """A MemoryStore that cannot be reached once: at its first commit of checkpoint 2."""

    def __init__(self) -> None:
        super().__init__()
        self.blips = 1

    def commit(self, batch: Any) -> Any:
        if self.blips and batch.checkpoint is not None and batch.checkpoint.seq == 2:
            self.blips -= 1
            raise StoreUnavailableError("writing run failed: the server closed the connection")
        return super().commit(batch)


async def test_a_worker_that_cannot_renew_its_leases_stops_its_runs_before_they_expire(
    store: Any,
) -> None:
    t, wf, run_id = await _gated(store)
    worker = Worker(store, registry([(None, wf)]), lease_seconds=0.3)
    task = asyncio.create_task(worker.run())
    try:
        await reaching(f"{t}:work1")  # in a long step
        held = worker.held[run_id]

        async def down(*args: Any, **options: Any) -> Any:
            raise StoreUnavailableError("the server closed the connection")

        store.claim = store.renew = down  # the store is away for the worker
        with pytest.raises(WorkflowCancelled, match="could not renew the run's lease"):
            async with asyncio.timeout(10):
                await held.handler  # stopped: another worker could take it over soon
        del store.claim, store.renew  # the store is back
        GATES[t].set()
        assert await store.result(run_id, timeout=10) == [0, 1]  # taken over (here)
        assert CALLS[f"{t}:work1"] == 2  # the step that was under way ran again
        assert CALLS[f"{t}:start"] == 1  # what was committed did not
    finally:
        await worker.stop()
        await task


async def test_a_commit_refused_because_another_coordinator_wrote_first_stores_no_failure(
    store: Any,
) -> None:
    from stepgraph.errors import RunLockedError

    wf = Three(store=store)
    run_id = await wf.submit(n=1)
    worker = Worker(store, registry([(None, wf)]), lease_seconds=5)
    real_commit = store.commit

    def commit(batch: Any) -> Any:
        if batch.checkpoint is not None and batch.checkpoint.seq == 2:
            store.commit = real_commit
            raise RunLockedError(f"checkpoint 2 of run {run_id!r} exists already: ...")
        return real_commit(batch)

    store.commit = commit  # (as a second coordinator's commit would be refused)
    assert await worker._claim() == 1
    held = worker.held[run_id]
    with pytest.raises(RunLockedError, match="exists already"):
        await held.handler
    assert held.task is not None
    await held.task  # the worker is done with it
    record = await store.get_run(run_id)
    assert record.status == "running"  # not failed: the run is the other coordinator's


async def test_a_run_whose_store_went_away_mid_run_is_given_back_and_resumed_not_failed() -> None:
    store = _Blip()
    wf = Three(store=store)
    run_id = await wf.submit(n=1, tag=(key := tag()))
    async with working(store, wf) as worker:
        assert await store.result(run_id, timeout=10) == 4
    assert store.blips == 0 and worker.started == 2  # taken again after it was given back
    assert (await store.get_run(run_id)).status == "completed"
    assert CALLS[f"{key}:a"] == 1  # resumed from its last checkpoint: a did not run again


async def test_a_stream_event_that_cannot_be_stored_fails_the_durable_run_naming_it() -> None:
    from stepgraph.errors import SerializationError

    from .flows import StreamsOpaque

    store = MemoryStore()
    handler = StreamsOpaque(store=store).run()
    with pytest.raises(
        SerializationError, match=r"step 'leak' .* wrote an event of type Opaque to the stream"
    ):
        await handler
    assert (await store.get_run(handler.run_id)).status == "failed"


async def test_a_response_sent_through_an_attached_handler_answers_a_graphs_request(
    store: Any,
) -> None:
    from stepgraph import RequestInfoEvent
    from tests.durability.flows import asker_graph

    graph: Any = asker_graph(store=store)
    run_id = await graph.submit("how many?")
    async with working(store, graph):
        handler = graph.attach(run_id)
        async for ev in handler.stream_events():
            if isinstance(ev, RequestInfoEvent):
                await handler.send_response(ev.request_id, 7)
        result = await handler
    assert result.outputs == [("how many?", 7)]
    assert await store.inbox([run_id]) == []


async def test_what_is_sent_after_a_cancel_while_its_commit_is_on_its_way_changes_nothing(
    store: Any,
) -> None:
    wf = Asks(store=store)
    handler = wf.run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            run = handler._run
            run._by_caller = True
            run.feed(CancelRequested(reason="once"))  # its end goes to the store (PostgreSQL:
            waiting = len(run._queue)  # over the network) ...
            assert run.feed(CancelRequested(reason="twice")) == []
            assert len(run._queue) == waiting  # nothing more to write after its end
            if run.running:  # ... meanwhile, what is sent is dropped, and nothing written
                handler.send_event(HumanResponseEvent(response="late"))
    with pytest.raises(WorkflowCancelled):
        await handler
    assert (await store.get_run(handler.run_id)).status == "cancelled"


async def test_a_run_that_only_waits_for_an_answer_frees_its_slot_until_one_comes(
    store: Any,
) -> None:
    wf = Asks(store=store)
    run_id = await wf.submit()
    three = Three(store=store)
    worker = Worker(store, registry([(None, wf), (None, three)]), lease_seconds=0.3, concurrency=1)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(1000):  # parked within two renewals (0.1 s apart) of its pause
            if not worker.held:  # given up (its claim first, then its slot)
                record = await store.get_run(run_id)
                if record.status == "paused":
                    break
            await asyncio.sleep(0.01)
        assert record.status == "paused" and record.worker is None and not worker.held
        other = await three.submit(n=1)  # its only slot is free for other runs
        assert await store.result(other, timeout=10) == 4
        handler = wf.attach(run_id)
        handler.send_event(HumanResponseEvent(response="Ada"))  # claimable again: resumed
        assert await handler == "hello Ada"
    finally:
        await worker.stop()
        await task


async def test_a_run_this_process_coordinates_is_not_started_again_by_its_worker(
    store: Any,
) -> None:
    t, wf, run_id = await _gated(store)
    local = wf.resume(run_id)  # the application resumes it itself: its lease is this
    await reaching(f"{t}:work1")  # process's, and it runs without a worker's claim
    worker = Worker(store, registry([(None, wf)]), lease_seconds=5)
    assert await worker._claim() == 1  # the claim returns it (running, unclaimed) ...
    assert worker.held == {} and worker.started == 0  # ... and the worker leaves it be
    GATES[t].set()
    assert await local == [0, 1]  # its lease was not let go under it either
    assert (CALLS[f"{t}:start"], CALLS[f"{t}:work1"], CALLS[f"{t}:last"]) == (1, 1, 1)


async def _claimed_until_it_asks(store: Any, wf: Asks) -> tuple[Worker, str, Any]:
    """A run of ``wf`` submitted and claimed by a worker (not running its loop), once it
    has asked for input: the worker, the run's id and what the worker holds of it."""
    run_id = await wf.submit()
    worker = Worker(store, registry([(None, wf)]), lease_seconds=5)
    assert await worker._claim() == 1
    held = worker.held[run_id]
    async for ev in held.handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            break  # stored as paused before it is streamed
    return worker, run_id, held


async def test_a_run_claimed_as_its_worker_gives_it_up_is_taken_anew_by_that_claim(
    store: Any,
) -> None:
    wf = Asks(store=store)
    worker, run_id, held = await _claimed_until_it_asks(store, wf)
    answering = wf.attach(run_id)
    answering.send_event(HumanResponseEvent(response="Ada"))
    await asyncio.gather(*answering._run._posts)  # answered while its worker holds it
    claims: list[asyncio.Task[int]] = []
    claim_back = asyncio.Event()
    real_claim, real_unclaim = store.claim, store.unclaim

    async def claim(*args: Any, **options: Any) -> Any:
        records = await real_claim(*args, **options)
        claim_back.set()
        return records

    async def unclaim(owner: str, run_ids: Any, *, idle: bool = False) -> None:
        await real_unclaim(owner, run_ids, idle=idle)  # given up as idle, with an answer:
        worker._took_over = -math.inf  # (its next claim looks for runs to take over)
        claims.append(asyncio.create_task(worker._claim()))  # claimable; this claim takes
        await claim_back.wait()  # it back before the run leaves `held`
        store.unclaim = real_unclaim

    store.claim, store.unclaim = claim, unclaim
    worker._park_idle()
    worker._park_idle()  # waiting since the last renewal: parked
    assert held.parked
    await held.task
    assert await claims[0] == 1
    assert run_id in worker.held and worker.held[run_id] is not held  # started anew
    task = asyncio.create_task(worker.run())
    try:
        assert await store.result(run_id, timeout=10) == "hello Ada"
    finally:
        await worker.stop()
        await task


async def test_a_claim_the_store_will_not_give_up_is_logged_and_lapses_with_its_lease(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wf = Asks(store=store)
    worker, run_id, held = await _claimed_until_it_asks(store, wf)

    async def refuse(*args: Any, **options: Any) -> None:
        raise StoreError("the store refuses")

    store.unclaim = refuse
    try:
        worker._park_idle()
        worker._park_idle()  # waiting since the last renewal: parked
        assert held.parked
        await held.task
    finally:
        del store.unclaim
    assert f"could not give up its claim on run {run_id!r}" in caplog.text
    assert (await store.get_run(run_id)).worker == worker.name  # lapses with its lease


async def _claimed_and_taken(store: Any, wf: Any) -> tuple[str, Any, Any]:
    """A run of ``wf`` submitted, claimed, and its lease and checkpoint taken (as a
    worker does): its id, record and latest checkpoint."""
    run_id = await wf.submit(n=1, tag=tag())
    [record] = await store.claim("w", ["default"], 1, 30.0)
    taken = await take(store, _owner(store), [run_id])
    return run_id, record, taken[run_id]


async def test_a_run_resumed_with_its_lease_and_checkpoint_in_hand_starts_at_once(
    store: Any,
) -> None:
    wf = Three(store=store)
    run_id, record, latest = await _claimed_and_taken(store, wf)
    run = DurableRun(wf._placed(wf._compiled()), wf, wf.options, run_id=run_id)
    handler = WorkflowHandler(run)
    run.resume(run_id, None, True, record, latest, leased=True)
    assert run._boot is None and not run._booting  # restored before resume returned
    assert run.state.running == 1  # its first step is started
    assert await handler == 4


async def test_a_run_that_cannot_be_restored_with_its_lease_in_hand_fails_and_lets_it_go(
    store: Any,
) -> None:
    run_id, record, latest = await _claimed_and_taken(store, Three(store=store))
    changed = Renamed(store=store, name="Three")  # its steps differ from the stored ones
    run = DurableRun(changed._placed(changed._compiled()), changed, changed.options, run_id=run_id)
    handler = WorkflowHandler(run)
    run.resume(run_id, None, True, record, latest, leased=True)
    with pytest.raises(CheckpointError, match="removed"):
        await handler
    assert await store.acquire(run_id, "another process")  # its lease was given up


async def test_on_postgres_a_message_left_for_a_completed_run_goes_with_a_renewal(
    pg_store_schema: str,
) -> None:
    """A post that locks the run before its completing commit does is stored after that
    commit's snapshot, which cannot see it to delete it: the next renewal sweeps it."""
    import psycopg

    from stepgraph.stores import PostgresStore
    from stepgraph.stores.base import Commit, StoredStatus
    from tests.pg import PG_DSN

    store = PostgresStore(PG_DSN, schema=pg_store_schema)
    try:
        wf = Three(store=store)
        done, going = await wf.submit(n=0), await wf.submit(n=0)
        [record] = await store.claim("w", ["default"], 1, 30.0)
        assert record.run_id == done
        completing = store.commit(Commit(run_id=done, status=StoredStatus.COMPLETED))
        if completing is not None:
            await completing
        await store.post(going, b"for the run going on")
        with psycopg.connect(PG_DSN, autocommit=True) as conn:  # as the race leaves it
            conn.execute(
                f'INSERT INTO "{pg_store_schema}".stepgraph_inbox (run_id, data) VALUES (%s, %s)',
                (done, b"posted as it completed"),
            )
        assert len(await store.inbox([done, going])) == 2
        await store.renew("w", [done], 30.0)
        assert [m.run_id for m in await store.inbox([done, going])] == [going]
    finally:
        await store.aclose()


async def test_a_worker_whose_database_sessions_are_cut_goes_on_once_it_answers(
    pg_store_schema: str,
) -> None:
    import psycopg

    from stepgraph.stores import PostgresStore
    from tests.pg import PG_DSN

    name = f"cut-{tag()}"
    store = PostgresStore(f"{PG_DSN}?application_name={name}", schema=pg_store_schema)
    caller = PostgresStore(PG_DSN, schema=pg_store_schema)  # (its sessions are not cut)
    wf = Three(store=caller)
    try:
        assert await caller.list_runs() == []  # (the tables are made before the worker asks)
        async with working(store, Three(store=store)) as worker:
            assert await caller.result(await wf.submit(n=1), timeout=10) == 4
            with psycopg.connect(PG_DSN, autocommit=True) as conn:  # a server restart, say
                cut = conn.execute(
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                ).fetchall()
            assert cut  # the worker's sessions (its wait for work among them)
            assert await caller.result(await wf.submit(n=2), timeout=30) == 5
            assert not worker._stopping
    finally:
        await store.aclose()
        await caller.aclose()


async def test_store_result_reads_on_through_a_lost_connection(pg_store_schema: str) -> None:
    import psycopg

    from stepgraph.stores import PostgresStore
    from tests.pg import PG_DSN

    name = f"result-{tag()}"
    store = PostgresStore(f"{PG_DSN}?application_name={name}", schema=pg_store_schema)
    try:
        done = Three(store=store).run(n=1)
        assert await done == 4
        assert await store.result(done.run_id, timeout=10) == 4
        with psycopg.connect(PG_DSN, autocommit=True) as conn:  # its idle session is cut
            cut = conn.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            ).fetchall()
        assert cut
        assert await store.result(done.run_id, timeout=10) == 4  # read on, not raised
    finally:
        await store.aclose()


async def test_a_queued_run_cancelled_through_an_attached_handler_never_starts(
    store: Any,
) -> None:
    t, wf, run_id = await _gated(store)  # no worker yet: it stays queued
    handler = wf.attach(run_id)
    await handler.cancel()
    # stored when cancel returns: a caller that exits at once has cancelled it
    assert (await store.get_run(run_id)).status == "cancelled"
    with pytest.raises(WorkflowCancelled):
        async with asyncio.timeout(10):  # (no worker runs: only the cancel can end it)
            await handler
    assert (await store.get_run(run_id)).status == "cancelled"
    async with working(store, wf, Three(store=store)):
        with pytest.raises(WorkflowCancelled):
            await store.result(run_id, timeout=10)
        later = await Three(store=store).submit(n=0)  # a worker that would have taken it
        assert await store.result(later, timeout=10) == 3
    assert not any(key.startswith(f"{t}:") for key in CALLS)  # none of its steps ran


async def test_what_an_attached_handler_sent_is_stored_once_flush_returns(store: Any) -> None:
    _, wf, run_id = await _gated(store)  # no worker: what is sent waits in its inbox
    handler = wf.attach(run_id)
    handler.send_event(HumanResponseEvent(response="first"))
    handler.send_event(HumanResponseEvent(response="second"))
    await handler.flush()
    assert len(await store.inbox([run_id])) == 2  # a caller that exits now lost nothing
    await handler.cancel()


def test_a_worker_logs_each_record_on_one_line() -> None:
    from stepgraph.cli.worker import _OneLine

    record = logging.LogRecord(
        "stepgraph.distributed", logging.WARNING, __file__, 1, "the store failed (%s)",
        ("server closed the connection\n\tThis probably means the server restarted\n",), None,
    )  # fmt: skip
    assert _OneLine("%(levelname)s %(message)s").format(record) == (
        "WARNING the store failed (server closed the connection This probably means the "
        "server restarted )"
    )


class RefusingPosts(MemoryStore):
    """A store whose inboxes take nothing (a disk that is full)."""

    async def post(self, run_id: str, data: bytes) -> None:
        raise StoreError(f"cannot post to run {run_id!r}: the disk is full")


async def test_a_cancel_or_a_send_the_store_refused_is_raised_not_passed_over() -> None:
    store = RefusingPosts()
    handler = Asks(store=store).run()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            break
    await handler.detach()  # paused, in its store: a cancel goes to its inbox
    attached = Asks(store=store).attach(handler.run_id)
    attached.send_event(HumanResponseEvent(response="ada"))
    with pytest.raises(StoreError, match=r"was not stored: .*disk is full"):
        await attached.flush()
    with pytest.raises(StoreError, match="disk is full"):
        await attached.cancel()
    assert (await store.get_run(handler.run_id)).status == "paused"
