"""A run's tick journal is a complete record: replaying it rebuilds the run's kernel state.

Real workflows run on the asyncio runtime with a journal (both modes): a fan-out/fan-in
with ``collect_events`` and a thread-run sync step, a ``wait_for_event`` answered by
``handler.send_event``, a step that succeeds on its third attempt, a step failure and a
stall. Their journal is then folded with ``apply`` into a fresh ``RunState``: the
snapshot must equal the live run's, and replaying twice must give the same commands
(so the kernel reads nothing but its ticks: no clock, no ids, no randomness).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from stepgraph import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RetryPolicy,
    RunObserver,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowHandler,
    step,
)
from stepgraph.core import RunEnded, RunState, RunStatus
from stepgraph.errors import WorkflowStalled
from stepgraph.journal import Journal, replay
from stepgraph.runtime.observers import RunInfo

GUARD_SECONDS = 5.0  # a safety net against a hung run; every run here ends in milliseconds


class Fan(StartEvent):
    n: int


class Item(Event):
    i: int


class Squared(Event):
    value: int


class Counted(Event):
    i: int


class FanOutFanIn(Workflow):
    """Fan out ``n`` items to a 3-worker step, square them in a thread, gather them all."""

    @step
    async def fan_out(self, ctx: Context, ev: Fan) -> None:
        for i in range(ev.n):
            ctx.send_event(Item(i=i))

    @step(num_workers=3)
    async def square(self, ev: Item) -> Squared:
        await asyncio.sleep(0)
        return Squared(value=ev.i * ev.i)

    @step
    def count(self, ev: Squared) -> Counted:  # a sync step: runs in a thread
        return Counted(i=ev.value)

    @step
    async def gather(self, ctx: Context, ev: Counted) -> StopEvent | None:
        batch = ctx.collect_events(ev, [Counted] * 4)
        if batch is None:
            return None
        return StopEvent(result=sorted(e.i for e in batch))


class Asked(Event):
    question: str


class AskTheCaller(Workflow):
    """One step sends an input request, then waits for the caller's answer."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.send_event(InputRequiredEvent(prefix="name?"))
        answer = await ctx.wait_for_event(HumanResponseEvent, timeout=GUARD_SECONDS)
        return StopEvent(result=f"hello {answer.response}")


class Flaky(Workflow):
    """``fetch`` fails twice, then succeeds: only the final attempt reaches the kernel."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attempts = 0

    @step
    async def start(self, ev: StartEvent) -> Item:
        return Item(i=7)

    @step(retry_policy=RetryPolicy(max_attempts=3, backoff=0.0))
    async def fetch(self, ev: Item) -> StopEvent:
        self.attempts += 1
        if self.attempts < 3:
            raise ConnectionError(f"attempt {self.attempts}")
        return StopEvent(result=ev.i)


class Broken(Workflow):
    """A step raises: the run fails with the step's own error."""

    @step
    async def start(self, ev: StartEvent) -> Item:
        return Item(i=1)

    @step
    async def explode(self, ev: Item) -> StopEvent:
        raise ValueError(f"bad item {ev.i}")


class Stuck(Workflow):
    """The collector waits for two items and gets one: the run stalls."""

    @step
    async def start(self, ev: StartEvent) -> Item:
        return Item(i=1)

    @step
    async def gather(self, ctx: Context, ev: Item) -> StopEvent | None:
        if ctx.collect_events(ev, [Item, Item]) is None:
            return None
        return StopEvent(result="never")


async def answer_the_caller(handler: WorkflowHandler) -> None:
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            handler.send_event(HumanResponseEvent(response="Ada"))


async def no_interaction(handler: WorkflowHandler) -> None:
    return None


Case = tuple[type[Workflow], Callable[[], StartEvent], Callable[[WorkflowHandler], Any], object]

CASES: dict[str, Case] = {
    "fan-out/fan-in": (FanOutFanIn, lambda: Fan(n=4), no_interaction, [0, 1, 4, 9]),
    "wait answered by send_event": (AskTheCaller, StartEvent, answer_the_caller, "hello Ada"),
    "retry": (Flaky, StartEvent, no_interaction, 7),
    "step failure": (Broken, StartEvent, no_interaction, ValueError),
    "stall": (Stuck, StartEvent, no_interaction, WorkflowStalled),
}


class FinalState(RunObserver):
    """Keeps the kernel state of the run it watched, as it was when the run ended."""

    state: RunState | None = None

    def run_ended(
        self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
    ) -> None:
        self.state = run.state


@pytest.mark.parametrize("mode", ["superstep", "async"])
@pytest.mark.parametrize("case", list(CASES))
async def test_replay_rebuilds_identical_state(case: str, mode: str) -> None:
    workflow, start_event, interact, expected = CASES[case]
    journal, final = Journal(), FinalState()
    wf = workflow(
        mode=mode,
        max_concurrency=3 if case == "fan-out/fan-in" else None,
        journal=journal,
        observers=[final],
    )
    handler = wf.run(start_event=start_event())
    async with asyncio.timeout(GUARD_SECONDS):
        await interact(handler)
        if isinstance(expected, type):
            with pytest.raises(expected):
                await handler
        else:
            assert await handler == expected
    if isinstance(wf, Flaky):
        assert wf.attempts == 3  # two failed attempts, each a tick of its own
    live = final.state
    records = journal.records(handler.run_id)
    assert live is not None and len(records) > 2
    assert live.status in (RunStatus.FINISHED, RunStatus.FAILED)

    fresh = replay(wf, records)  # also checks every tick gives the commands recorded
    assert fresh.snapshot() == live.snapshot()
    again = replay(wf, records)
    assert again.snapshot() == live.snapshot()
    assert any(isinstance(c, RunEnded) for c in records[-1].commands)  # it ends with the end
