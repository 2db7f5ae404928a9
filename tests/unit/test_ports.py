"""The run ports: handlers and contexts talk to whatever runtime ``launch`` is given."""

from __future__ import annotations

from typing import Any

from stepgraph import Context, StartEvent, StopEvent, Workflow, step
from stepgraph.core import RunStatus
from stepgraph.runtime.launch import RunOptions, launch
from stepgraph.runtime.plan import RunPlan
from stepgraph.runtime.ports import CallerPort
from stepgraph.runtime.run import IN_PROCESS


class Hello(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=f"hello from {type(ctx._run).__name__}")


class Recording:
    """A runtime that hands out the in-process runtime's runs and remembers them."""

    def __init__(self) -> None:
        self.created: list[CallerPort] = []

    def create(self, plan: RunPlan, owner: object, options: RunOptions) -> Any:
        port = IN_PROCESS.create(plan, owner, options)
        self.created.append(port)
        return port


async def test_launch_runs_the_plan_on_the_runtime_it_is_given() -> None:
    runtime = Recording()
    wf = Hello()
    handler = launch(wf.plan, wf, wf.options, StartEvent(), runtime=runtime)
    assert await handler == "hello from Run"
    [port] = runtime.created
    assert port.run_id == handler.run_id
    assert port.status is RunStatus.FINISHED and handler.status is RunStatus.FINISHED


async def test_the_handler_s_context_is_the_one_the_run_gave_its_steps() -> None:
    runtime = Recording()
    wf = Hello()
    handler = launch(wf.plan, wf, wf.options, StartEvent(), runtime=runtime)
    assert handler.ctx is runtime.created[0].context
    await handler
    assert runtime.created[0].context is None  # a finished run lets go of its context
    assert handler.ctx.run_id == handler.run_id  # the caller's reference still works
