"""Workflows and executors defined inside functions resolve their (string) annotations."""

from __future__ import annotations

from stepgraph import (
    Event,
    Executor,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
    step,
)


async def test_a_workflow_defined_in_a_function_sees_its_local_event_classes() -> None:
    class Local(Event):
        n: int

    class Inner(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Local:
            return Local(n=ev.n)

        @step
        async def finish(self, ev: Local) -> StopEvent:
            return StopEvent(result=ev.n + 1)

    assert await Inner().run(n=1) == 2


async def test_executors_defined_in_a_function_see_their_local_classes() -> None:
    class Order:
        def __init__(self, item: str) -> None:
            self.item = item

    class Desk(Executor):
        @handler
        async def on_order(self, order: Order, ctx: WorkflowContext[str]) -> None:
            await ctx.send_message(order.item)

    @executor(id="shout")
    async def shout(text: str, ctx: WorkflowContext) -> None:
        await ctx.yield_output(text.upper())

    desk = Desk(id="desk")
    wf = WorkflowBuilder(start=desk).add_edge(desk, shout).build()
    assert (await wf.run(Order("tea"))).outputs == ["TEA"]
