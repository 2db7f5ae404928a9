"""The run ports: handlers and contexts talk to whatever runtime ``launch`` is given."""

from __future__ import annotations

from typing import Any

import pytest

from stepgraph import Context, Event, RunObserver, StartEvent, StopEvent, Workflow, step
from stepgraph.core import RunStatus
from stepgraph.journal import Journal
from stepgraph.runtime.launch import RunOptions, launch
from stepgraph.runtime.observers import RunInfo
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
    handler = launch(wf._stepgraph_plan(), wf, wf.options, StartEvent(), runtime=runtime)
    assert await handler == "hello from Run"
    [port] = runtime.created
    assert port.run_id == handler.run_id
    assert port.status is RunStatus.FINISHED and handler.status is RunStatus.FINISHED


async def test_the_handler_s_context_is_the_one_the_run_gave_its_steps() -> None:
    runtime = Recording()
    wf = Hello()
    handler = launch(wf._stepgraph_plan(), wf, wf.options, StartEvent(), runtime=runtime)
    assert handler.ctx is runtime.created[0].context
    await handler
    assert runtime.created[0].context is None  # a finished run lets go of its context
    assert handler.ctx.run_id == handler.run_id  # the caller's reference still works


class Extra(Event):
    n: int


class Echoes(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Extra:
        return Extra(n=1)

    @step
    async def count(self, ctx: Context, ev: Extra) -> StopEvent | None:
        seen = await ctx.store.update("seen", lambda n: (n or 0) + 1)
        return StopEvent(result=seen) if seen == 2 else None


async def test_a_tick_fed_while_commands_are_carried_out_waits_until_they_all_are() -> None:
    journal = Journal()
    handlers: list[Any] = []

    applied_inside: list[bool] = []

    class SendAtTheFirstBarrier(RunObserver):
        def superstep_ended(self, run: RunInfo, superstep: int) -> None:
            if superstep == 0:
                before = len(journal.records(run.run_id))
                handlers[0].send_event(Extra(n=2))  # feeds the run from inside its feed
                applied_inside.append(len(journal.records(run.run_id)) != before)

    handler = Echoes(observers=[SendAtTheFirstBarrier()], journal=journal).run()
    handlers.append(handler)
    assert await handler == 2
    kinds = [record.tick.kind for record in journal.records(handler.run_id)]
    barrier = next(
        i
        for i, record in enumerate(journal.records(handler.run_id))
        if any(c.kind == "superstep_ended" for c in record.commands)
    )
    assert kinds[barrier + 1] == "external_event_received"  # applied right after, not inside
    assert kinds.count("external_event_received") == 1
    assert applied_inside == [False]  # queued, not applied in the middle of the barrier


async def test_a_tick_the_kernel_refuses_fails_the_run_in_the_kernel_too() -> None:
    from stepgraph.core import StepCompleted
    from stepgraph.errors import KernelError

    class Waits(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Extra(n=0))
            await ctx.wait_for_event(Extra, timeout=None)
            return StopEvent(result="never")

    handler = Waits().run()
    async for event in handler.stream_events():
        if isinstance(event, Extra):
            break  # the step waits now
    handler._run.feed(StepCompleted(invocation=99))  # a shell bug, simulated
    with pytest.raises(KernelError, match="no invocation 99") as info:
        await handler
    assert handler.status is RunStatus.FAILED  # the kernel agrees with the handler
    assert any("refused" in note for note in info.value.__notes__)
