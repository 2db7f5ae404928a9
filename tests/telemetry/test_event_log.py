"""The JSONL event log: what runs and task flows write, against the shipped JSON Schema.

Every record any test of the suite writes is validated as it is written (see
``tests/conftest.py``); these tests check the records' content and order.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stepgraph import (
    Context,
    Event,
    Executor,
    HumanResponseEvent,
    InputRequiredEvent,
    RequestInfoEvent,
    RetryPolicy,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowExecutor,
    handler,
    response_handler,
    step,
)
from stepgraph.backends import InlineBackend, ThreadBackend
from stepgraph.errors import TaskFailed
from stepgraph.stores import SqliteStore
from stepgraph.tasks import DependencyFailed, TaskFlow
from stepgraph.telemetry import EVENT_LOG_SCHEMA, SCHEMA_VERSION, EventLog, read_events


def records(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def kinds(path: Path, **where: Any) -> list[str]:
    return [r["kind"] for r in records(path) if all(r.get(k) == v for k, v in where.items())]


class Hop(Event):
    n: int


class Chain(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Hop:
        return Hop(n=0)

    @step
    async def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:
        return StopEvent(result=ev.n) if ev.n == 2 else Hop(n=ev.n + 1)


def test_the_schema_ships_in_the_package_and_is_a_valid_json_schema() -> None:
    schema = json.loads(Path(EVENT_LOG_SCHEMA).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert Path(EVENT_LOG_SCHEMA).is_relative_to(Path(__file__).resolve().parents[2] / "stepgraph")


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_a_run_logs_its_start_its_steps_its_supersteps_and_its_end(
    tmp_path: Path, mode: str
) -> None:
    log = tmp_path / "logs" / "events.jsonl"  # its folder is made
    handler = Chain(event_log=str(log), mode=mode).run()
    assert await handler == 2
    found = records(log)
    assert {r["run_id"] for r in found} == {handler.run_id}
    assert all(r["schema_version"] == SCHEMA_VERSION and r["workflow"] == "Chain" for r in found)
    assert found[0]["kind"] == "run_started" and found[0]["mode"] == mode
    assert found[-1]["kind"] == "run_completed"
    steps = [(r["kind"], r["step"]) for r in found if r["kind"].startswith("step_")]
    assert steps == [
        ("step_started", "start"),
        ("step_completed", "start"),
        *[("step_started", "hop"), ("step_completed", "hop")] * 3,
    ]
    started = [r for r in found if r["kind"] == "step_started"]
    assert [r["event"] for r in started] == ["StartEvent", "Hop", "Hop", "Hop"]
    assert {r["backend"] for r in started} == {"inline"}  # async steps, on the loop
    assert all(r["attempt"] == 1 for r in started)
    barriers = [r["superstep"] for r in found if r["kind"] == "superstep_completed"]
    assert barriers == ([0, 1, 2] if mode == "superstep" else [])  # none after the stop
    times = [r["monotonic"] for r in found]
    assert times == sorted(times)
    assert abs(found[0]["time"] - found[-1]["time"]) < 60


class Flaky(Workflow):
    @step(retry_policy=RetryPolicy(max_attempts=2))
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        raise ValueError("always")


async def test_retries_and_failures_are_logged_with_their_error(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    with pytest.raises(ValueError, match="always"):
        await Flaky(event_log=EventLog(log)).run()
    found = records(log)
    assert [r["kind"] for r in found] == [
        "run_started",
        "step_started",
        "step_retried",
        "step_started",
        "step_failed",
        "run_failed",
    ]
    retried, failed, ended = found[2], found[4], found[5]
    assert retried["attempt"] == 1 and failed["attempt"] == 2
    assert retried["error"] == {"type": "ValueError", "message": "always"}
    assert ended["error"]["type"] == "ValueError"


class Ask(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="ok? ")

    @step
    async def done(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


async def test_input_requests_and_answers_are_logged(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    handler = Ask(event_log=log).run()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.send_event(HumanResponseEvent(response="yes", request_id=event.request_id))
    assert await handler == "yes"
    found = records(log)
    asked = [r for r in found if r["kind"] == "input_requested"]
    answered = [r for r in found if r["kind"] == "input_received"]
    assert len(asked) == 1 and len(answered) == 1
    assert asked[0]["request_id"] == answered[0]["request_id"]


async def test_an_answer_without_a_request_id_is_logged_with_the_id_it_answered(
    tmp_path: Path,
) -> None:
    log = tmp_path / "events.jsonl"
    handler = Ask(event_log=log).run()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.send_event(HumanResponseEvent(response="yes"))  # the only open request
    assert await handler == "yes"
    found = records(log)
    (asked,) = [r for r in found if r["kind"] == "input_requested"]
    (answered,) = [r for r in found if r["kind"] == "input_received"]
    assert answered["request_id"] == asked["request_id"] is not None


class Approver(Executor):
    @handler
    async def on_plan(self, plan: str, ctx: WorkflowContext) -> None:
        await ctx.request_info(plan, response_type=bool)

    @response_handler
    def on_answer(self, plan: str, approved: bool, ctx: WorkflowContext) -> None:
        ctx.yield_output(approved)


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_a_graph_request_is_logged_once_and_each_step_where_it_ran(
    tmp_path: Path, mode: str
) -> None:
    log = tmp_path / "events.jsonl"
    graph = WorkflowBuilder(start=Approver(id="approver")).build(event_log=log, mode=mode)
    handler = graph.run("ship")
    async for event in handler.stream_events():
        if isinstance(event, RequestInfoEvent):
            await handler.send_response(event.request_id, True)
    assert (await handler).outputs == [True]
    found = records(log)
    (asked,) = [r for r in found if r["kind"] == "input_requested"]
    (answered,) = [r for r in found if r["kind"] == "input_received"]
    assert asked["request_id"] == answered["request_id"]
    started = [(r["event"], r["backend"]) for r in found if r["kind"] == "step_started"]
    assert started == [("str", "inline"), ("ResponseMessage", "thread")]  # a def handler


async def test_a_durable_run_logs_each_checkpoint_with_its_size(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    store = SqliteStore(tmp_path / "runs.db")
    try:
        assert await Chain(store=store, event_log=log).run() == 2
    finally:
        store.close()
    written = [r for r in records(log) if r["kind"] == "checkpoint_written"]
    assert [r["superstep"] for r in written] == [0, 1, 2, 3]
    assert [r["seq"] for r in written] == [0, 1, 2, 3]
    assert all(r["bytes"] > 100 and r["seconds"] >= 0 for r in written)


async def test_a_durable_run_left_paused_logs_run_detached_and_its_resume_goes_on(
    tmp_path: Path,
) -> None:
    log = tmp_path / "events.jsonl"
    store = SqliteStore(tmp_path / "runs.db")
    try:
        handler = Ask(store=store, event_log=log).run()
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                break
        await handler.detach()  # as a caller that exits once it has seen the prompt
        left = kinds(log, run_id=handler.run_id)
        assert "input_requested" in left and left[-1] == "run_detached"
        assert (await store.get_run(handler.run_id)).status == "paused"  # type: ignore[union-attr]
        again = Ask(store=store, event_log=log).resume(handler.run_id)
        again.send_event(HumanResponseEvent(response="yes", request_id=event.request_id))
        assert await again == "yes"
        after = kinds(log, run_id=handler.run_id)
        assert after[after.index("run_detached") + 1] == "run_started"
        assert after[-1] == "run_completed" and "run_cancelled" not in after
        before = len(records(log))
        assert await Ask(store=store, event_log=log).resume(handler.run_id) == "yes"
        assert len(records(log)) == before  # completed: its stored result, nothing logged
    finally:
        store.close()


async def test_a_forks_first_record_is_its_start(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    store = SqliteStore(tmp_path / "runs.db")
    try:
        handler = Chain(store=store).run()
        assert await handler == 2
        second = (await store.list_checkpoints(handler.run_id))[1]
        fork = Chain(store=store, event_log=log).resume(handler.run_id, checkpoint_id=second.id)
        assert await fork == 2
    finally:
        store.close()
    found = kinds(log, run_id=fork.run_id)
    assert found[:2] == ["run_started", "checkpoint_written"] and found[-1] == "run_completed"


async def test_task_flows_log_each_task_with_its_block_scope_backend_and_resources(
    tmp_path: Path,
) -> None:
    log = tmp_path / "events.jsonl"
    async with TaskFlow(
        backends={"default": ThreadBackend(2), "inline": InlineBackend()},
        resources={"gpu": 1},
        event_log=log,
        uid="flow-1",
    ) as flow:

        @flow.function_task(resources={"gpu": 1})
        def simulate(i: int) -> int:
            return i

        @flow.function_task(backend="inline")
        async def broken(x: int) -> int:
            raise KeyError(x)

        @flow.function_task(backend="inline")
        def after(x: int) -> int:
            return x

        @flow.block
        async def member(i: int) -> int:
            return await simulate(i)

        async with flow.workflow_scope("campaign"):
            block = member(1)
            assert await block == 1
        failing = broken(1)
        dependent = after(failing)
        with pytest.raises(DependencyFailed):
            await dependent
        cancelled = after(asyncio.get_running_loop().create_future())  # not a dependency
        cancelled.cancel()
    started, *found = records(log)
    assert started["kind"] == "flow_started" and started["capacity"] == {"gpu": 1}
    assert all(r["flow_id"] == "flow-1" for r in [started, *found])
    inner = [r for r in found if r["task"] == "simulate"]
    assert [r["kind"] for r in inner] == [
        "task_created",
        "task_submitted",
        "task_started",
        "task_resolved",
    ]
    assert all(
        r["block_id"] == block.uid
        and r["workflow_id"] == "campaign"
        and r["backend"] == "default"
        and r["resources"] == {"gpu": 1}
        for r in inner
    )
    assert kinds(log, task_id=block.uid)[-1] == "task_resolved"
    assert kinds(log, task_id=failing.uid)[-1] == "task_failed"
    (broke,) = [r for r in found if r["task_id"] == failing.uid and r["kind"] == "task_failed"]
    assert broke["error"] == {"type": "KeyError", "message": "1"}  # what the body raised
    failed = [r for r in found if r["task_id"] == dependent.uid and r["kind"] == "task_failed"]
    assert failed[0]["error"]["type"] == "DependencyFailed"
    assert kinds(log, task_id=dependent.uid) == ["task_created", "task_failed"]  # never ran
    created = next(r for r in found if r["task_id"] == dependent.uid)
    assert created["dependencies"] == [failing.uid]
    assert kinds(log, task_id=cancelled.uid)[-1] == "task_cancelled"


WRITER = """
import sys
from stepgraph.telemetry import EventLog
log = EventLog(sys.argv[1])
pad = "x" * int(sys.argv[3])
for i in range(int(sys.argv[2])):
    log.write({"schema_version": 1, "kind": "load", "time": 0.0, "monotonic": 0.0,
               "run_id": sys.argv[4], "workflow": pad, "n": i})
print("done", flush=True)
"""


async def test_a_task_waiting_for_a_worker_is_not_started_and_bodies_never_overlap(
    tmp_path: Path,
) -> None:
    log = tmp_path / "events.jsonl"
    entered, gate = threading.Event(), threading.Event()
    ran: list[int] = []

    def work(x: int) -> int:
        ran.append(x)
        entered.set()
        gate.wait(10)
        return x

    async with TaskFlow({"default": ThreadBackend(1)}, event_log=log) as flow:
        task = flow.function_task(work)
        futures = [task(i) for i in range(4)]
        await asyncio.to_thread(entered.wait, 10)  # the first body runs; the rest wait
        await asyncio.sleep(0)  # (the log is written at the end of a loop iteration)
        latest = {r["task_id"]: r["kind"] for r in records(log) if r["kind"].startswith("task")}
        assert list(latest.values()) == ["task_started"] + ["task_created"] * 3
        futures[3].cancel()  # waiting for a worker: it never starts
        gate.set()
        assert await asyncio.gather(*futures[:3]) == [0, 1, 2]
    assert ran == [0, 1, 2]
    found = [r for r in records(log) if r["kind"] in ("task_started", "task_resolved")]
    assert [r["kind"] for r in found] == ["task_started", "task_resolved"] * 3  # one at a time
    assert [r["task_id"] for r in found[::2]] == [f.uid for f in futures[:3]]


class Shout(Executor):
    @handler
    async def shout(self, text: str, ctx: WorkflowContext[Any]) -> None:
        await ctx.yield_output(text.upper())


class Show(Executor):
    @handler
    async def show(self, text: str, ctx: WorkflowContext[Any]) -> None:
        await ctx.yield_output(text + "!")


async def test_a_sub_workflow_run_is_logged_with_its_outer_run(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    inner = WorkflowBuilder(start=Shout("shout")).build(name="inner")
    sub = WorkflowExecutor(inner, id="sub")
    outer = (
        WorkflowBuilder(start=sub).add_edge(sub, Show("show")).build(name="outer", event_log=log)
    )
    handler = outer.run("hi")
    assert (await handler).outputs == ["HI!"]
    found = records(log)
    (started,) = [r for r in found if r["kind"] == "run_started" and r["workflow"] == "inner"]
    assert started["parent_run_id"] == handler.run_id != started["run_id"]
    inner_steps = [r["step"] for r in found if r["run_id"] == started["run_id"] and "step" in r]
    assert "shout" in inner_steps
    assert [r["kind"] for r in found if r["run_id"] == started["run_id"]][-1] == "run_completed"
    (outer_start,) = [r for r in found if r["kind"] == "run_started" and r["workflow"] == "outer"]
    assert "parent_run_id" not in outer_start


async def test_a_sub_workflow_logging_to_its_outer_runs_file_is_logged_once(
    tmp_path: Path,
) -> None:
    """Two logs of one file (the outer run's and the inner workflow's own) write each
    record of the inner run once."""
    log = tmp_path / "events.jsonl"
    inner = WorkflowBuilder(start=Shout("shout")).build(name="inner", event_log=log)
    sub = WorkflowExecutor(inner, id="sub")
    outer = (
        WorkflowBuilder(start=sub)
        .add_edge(sub, Show("show"))
        .build(name="outer", event_log=str(tmp_path / "." / "events.jsonl"))
    )
    assert (await outer.run("hi")).outputs == ["HI!"]
    inner_kinds = [r["kind"] for r in records(log) if r["workflow"] == "inner"]
    assert inner_kinds.count("run_started") == 1 and inner_kinds.count("run_completed") == 1
    assert len(inner_kinds) == len(set(inner_kinds))  # nothing twice


class Campaign(Workflow):
    """A step that runs a task flow; ``own_log``: the flow has an event log of its own."""

    own_log: str | None = None

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        async with TaskFlow({"default": InlineBackend()}, event_log=self.own_log) as flow:

            @flow.function_task
            def square(x: int) -> int:
                return x * x

            total = sum(await asyncio.gather(*(square(i) for i in range(3))))
        return StopEvent(result=total)


@pytest.mark.parametrize("mode", ["superstep", "async"])
async def test_a_task_flow_made_by_a_step_is_logged_with_its_run_and_step(
    tmp_path: Path, mode: str
) -> None:
    log = tmp_path / "events.jsonl"
    handler = Campaign(event_log=log, mode=mode).run()
    assert await handler == 5
    found = records(log)
    (flow,) = [r for r in found if r["kind"] == "flow_started"]
    assert flow["run_id"] == handler.run_id and flow["step"] == "start"
    tasks = [r for r in found if r.get("flow_id") == flow["flow_id"] and r is not flow]
    assert [r["kind"] for r in tasks].count("task_resolved") == 3
    assert {r["task"] for r in tasks} == {"square"}
    kinds_in_order = [r["kind"] for r in found]  # inside the step, before the run's end
    assert (
        kinds_in_order.index("step_started")
        < kinds_in_order.index("flow_started")
        < kinds_in_order.index("step_completed")
        < kinds_in_order.index("run_completed")
    )


async def test_a_task_flow_logging_to_its_runs_file_is_logged_once_and_elsewhere_too(
    tmp_path: Path,
) -> None:
    log = tmp_path / "events.jsonl"
    wf = Campaign(event_log=log)
    wf.own_log = str(tmp_path / "." / "events.jsonl")  # the same file, named another way
    assert await wf.run() == 5
    resolved = [r for r in records(log) if r["kind"] == "task_resolved"]
    assert len(resolved) == 3 == len({r["task_id"] for r in resolved})
    other = tmp_path / "flow.jsonl"
    wf.own_log = str(other)  # a file of its own: the flow is in both
    handler = wf.run()
    assert await handler == 5
    for path in (log, other):
        started = [r for r in records(path) if r["kind"] == "flow_started"]
        assert started[-1]["run_id"] == handler.run_id
        assert len([r for r in records(path) if r["kind"] == "task_resolved"]) == (
            3 if path == other else 6
        )


async def test_a_task_flow_outside_any_step_names_no_run(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    async with TaskFlow({"default": InlineBackend()}, event_log=log) as flow:
        assert flow.parent_run_id is None and flow.parent_step is None

        @flow.function_task
        def one() -> int:
            return 1

        assert await one() == 1
    (started,) = [r for r in records(log) if r["kind"] == "flow_started"]
    assert "run_id" not in started and "step" not in started


class Where(str, enum.Enum):  # noqa: UP042 (not StrEnum: formatted, it gives "Where.GPU")
    GPU = "gpu"


class Ids(Workflow):
    """A step that runs a task flow whose ids are not plain strs."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        flow = TaskFlow({Where.GPU: InlineBackend()}, uid=uuid.UUID(int=5))  # type: ignore[arg-type]
        async with flow:

            @flow.function_task(backend=Where.GPU)
            def one() -> int:
                return 1

            async with flow.workflow_scope(Where.GPU):  # type: ignore[arg-type]
                value = await one()
        return StopEvent(result=value)


async def test_ids_and_names_that_are_not_plain_strs_are_written_as_their_json_values(
    tmp_path: Path,
) -> None:
    """A UUID as a run's or a flow's id, a str enum as a backend's name or a scope's: the
    values pydantic writes for them, the same in every record."""
    log = tmp_path / "events.jsonl"
    handler = Ids(event_log=log).run(run_id=uuid.UUID(int=7))  # type: ignore[arg-type]
    assert await handler == 1
    found = records(log)
    assert {r["run_id"] for r in found if "workflow" in r} == {str(uuid.UUID(int=7))}
    tasks = [r for r in found if r["kind"].startswith("task_")]
    assert {r["flow_id"] for r in tasks} == {str(uuid.UUID(int=5))}
    assert {(r["backend"], r["workflow_id"]) for r in tasks} == {("gpu", "gpu")}
    # a plain "gpu" later in the same log is written the same way
    async with TaskFlow({"gpu": InlineBackend()}, event_log=EventLog(log)) as flow:
        assert await flow.function_task(backend="gpu")(lambda: 2)() == 2
    assert records(log)[-1]["backend"] == "gpu"


class Alpha(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(0)
        return StopEvent(result="a")


class Beta(Alpha):
    pass


async def test_two_workflows_runs_of_one_run_id_on_one_log_are_each_named_by_its_own(
    tmp_path: Path,
) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    results = await asyncio.gather(
        Alpha(event_log=log).run(run_id="req-17"), Beta(event_log=log).run(run_id="req-17")
    )
    assert results == ["a", "a"]
    found = records(log.path)
    kinds = {w: [r["kind"] for r in found if r["workflow"] == w] for w in ("Alpha", "Beta")}
    assert kinds["Alpha"] == kinds["Beta"]  # each its own records, none taken for the other's
    assert kinds["Alpha"][0] == "run_started" and kinds["Alpha"][-1] == "run_completed"
    assert "step_completed" in kinds["Alpha"]


class LeavesATask(Workflow):
    """A step that leaves a task behind; the task makes a flow after the run has ended."""

    left: asyncio.Future[int] | None = None
    go: asyncio.Event | None = None

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        go = self.go = asyncio.Event()

        async def later() -> int:
            await go.wait()
            async with TaskFlow({"default": InlineBackend()}) as flow:
                return int(await flow.function_task(lambda: 3)())

        self.left = asyncio.ensure_future(later())
        return StopEvent(result=0)


async def test_a_flow_made_after_its_run_ended_is_not_in_that_runs_log(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    wf = LeavesATask(event_log=log)
    assert await wf.run() == 0
    assert wf.go is not None and wf.left is not None
    wf.go.set()
    assert await wf.left == 3
    assert records(log)[-1]["kind"] == "run_completed"
    assert not [r for r in records(log) if r["kind"].startswith(("flow_", "task_"))]


NOT_UTF8 = os.fsdecode(b"r\xe9sum\xe9.csv")  # a file name as os.listdir gives it


class Unreadable(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        raise ValueError(f"cannot read {NOT_UTF8}")


async def test_an_error_whose_text_utf8_cannot_hold_is_logged_escaped(tmp_path: Path) -> None:
    """The run fails with its own error, logged (the log does not fail the run)."""
    log = tmp_path / "events.jsonl"
    with pytest.raises(ValueError, match="cannot read"):
        await Unreadable(event_log=log).run()
    (failed,) = [r for r in records(log) if r["kind"] == "step_failed"]
    assert failed["error"] == {
        "type": "ValueError",
        "message": "cannot read r\\udce9sum\\udce9.csv",
    }
    async with TaskFlow(backends={"default": InlineBackend()}, event_log=log) as flow:

        @flow.function_task
        def load() -> None:
            raise ValueError(f"cannot read {NOT_UTF8}")

        with pytest.raises(TaskFailed, match="cannot read"):
            await load()
    (task,) = [r for r in records(log) if r["kind"] == "task_failed"]
    assert task["error"]["message"] == "cannot read r\\udce9sum\\udce9.csv"


async def test_an_async_run_logs_no_superstep_on_its_steps(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    assert await Chain(event_log=log, mode="async").run() == 2
    started = [r for r in records(log) if r["kind"] == "step_started"]
    assert started and all("superstep" not in r for r in started)


def test_a_loop_writes_its_records_while_another_loop_sharing_the_log_is_busy(
    tmp_path: Path,
) -> None:
    """One log, two event loops (threads): each loop writes its own iteration's records;
    the records of one never wait for the other, busy, loop to end its iteration."""
    log = EventLog(tmp_path / "events.jsonl")
    busy, release = threading.Event(), threading.Event()

    def record(kind: str) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "kind": kind, "time": 0.0, "monotonic": 0.0}

    async def blocked() -> None:
        log.write(record("from_a"))
        busy.set()
        release.wait(30)  # the loop is busy (a plain body holding it): no flush here

    thread = threading.Thread(target=asyncio.run, args=(blocked(),))
    thread.start()
    try:
        assert busy.wait(30)

        async def other() -> list[str]:
            log.write(record("from_b"))
            await asyncio.sleep(0)  # the end of this iteration: its records go out
            return [r["kind"] for r in read_events(log.path)]

        assert "from_b" in asyncio.run(other())
    finally:
        release.set()
        thread.join()
    log.close()
    assert sorted(r["kind"] for r in read_events(log.path)) == ["from_a", "from_b"]


def test_processes_appending_to_one_log_never_interleave_lines(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(log), "2000", "3000", f"writer-{w}"],
            stdout=subprocess.PIPE,
        )
        for w in range(3)
    ]
    for writer in writers:
        assert writer.communicate(timeout=60)[0] == b"done\n"
    found = records(log)  # every line parses: none was torn or mixed with another
    assert len(found) == 6000
    for w in range(3):
        assert [r["n"] for r in found if r["run_id"] == f"writer-{w}"] == list(range(2000))


def test_a_writer_killed_mid_log_leaves_whole_lines_and_the_next_writer_goes_on(
    tmp_path: Path,
) -> None:
    log = tmp_path / "events.jsonl"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(log), "100000000", "300", "killed"],
        stdout=subprocess.PIPE,
    )
    with open(log, "a"):  # exists already, or is made: the writer appends to it
        pass
    while os.path.getsize(log) < 1_000_000:  # thousands of lines are in
        os.sched_yield()
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    lines = log.read_bytes().split(b"\n")
    assert all(json.loads(line)["run_id"] == "killed" for line in lines[:-1])  # ended: whole
    with open(log, "ab") as f:  # as if the kill had cut the last write in the middle
        f.write(b'{"schema_version":1,"kind":"lo')
    survivors = len(read_events(log))
    after = EventLog(log)
    after.write({"schema_version": 1, "kind": "load", "time": 0.0, "monotonic": 0.0, "n": 1})
    after.close()
    found = read_events(log)  # the cut line stands alone, skipped; the new record is whole
    assert len(found) == survivors + 1 and found[-1]["n"] == 1
    assert log.read_bytes().endswith(
        b'"kind":"lo\n' + json.dumps(found[-1], separators=(",", ":")).encode() + b"\n"
    )
