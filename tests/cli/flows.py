"""Workflows the CLI tests run as ``flows:ATTR``, from this folder (the tests' cwd).

Imported by the ``stepgraph`` subprocesses, never by the tests themselves: the events a
store keeps name their classes by module (``flows.Hop``), the same in every process.
"""

from __future__ import annotations

import asyncio
import os
import signal

from stepgraph import (
    Context,
    Event,
    Executor,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
    response_handler,
    step,
)


def _crash_once(marker: str) -> None:
    """Kill this process (as ``kill -9`` would), unless the file ``marker`` exists."""
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


class Hop(Event):
    n: int


class Count(Workflow):
    """Counts from 0 to ``upto``, one superstep per hop; the result is ``upto * scale``.

    With ``crash_at`` = k (and no file ``crash_marker`` yet) the process kills itself
    (SIGKILL) in hop k, after creating the marker: the run stays in the store as a crashed
    run, and a resume goes on from the checkpoint before hop k.
    """

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Hop:
        await ctx.store.set("upto", ev.upto)
        await ctx.store.set("scale", ev.get("scale", 1))
        await ctx.store.set("crash_at", ev.get("crash_at", -1))
        await ctx.store.set("crash_marker", ev.get("crash_marker", ""))
        return Hop(n=0)

    @step
    async def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:
        if ev.n == await ctx.store.get("crash_at"):
            _crash_once(await ctx.store.get("crash_marker"))
        if ev.n == await ctx.store.get("upto"):
            return StopEvent(result={"n": ev.n, "total": ev.n * await ctx.store.get("scale")})
        return Hop(n=ev.n + 1)


count = Count(timeout=30)  # an instance: the CLI copies it, never changes it


class Boom(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Hop:
        return Hop(n=1)

    @step
    async def explode(self, ev: Hop) -> StopEvent:
        raise ValueError(f"bad hop {ev.n}")


class Ask(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="name?"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        return StopEvent(result=f"hello {answer.response}")


class Gate(Workflow):
    """For the terminal test: ``wait_at_gate`` blocks (in a thread) until the FIFO named by
    ``$STEPGRAPH_TEST_GATE`` is written to, so the test sees the live display while that
    step runs."""

    @step
    async def warm_up(self, ev: StartEvent) -> Hop:
        return Hop(n=0)

    @step
    def wait_at_gate(self, ev: Hop) -> StopEvent:
        with open(os.environ["STEPGRAPH_TEST_GATE"]) as fifo:
            fifo.read()
        return StopEvent(result="through")


class Greeting(StartEvent):
    name: str
    times: int = 1


class Greet(Workflow):
    @step
    async def greet(self, ev: Greeting) -> StopEvent:
        return StopEvent(result=" ".join([f"hi {ev.name}"] * ev.times))


class Unserializable:
    def __repr__(self) -> str:
        return "<Unserializable>"


class Odd(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=Unserializable())


@executor(id="upper")
async def upper(text: str, ctx: WorkflowContext[str]) -> None:
    await ctx.send_message(str(text).upper())


@executor(id="exclaim")
async def exclaim(text: str, ctx: WorkflowContext) -> None:
    await ctx.yield_output(text + "!")


shout = WorkflowBuilder(start=upper).add_edge(upper, exclaim).build()


@executor(id="keys")
async def keys(message: dict, ctx: WorkflowContext) -> None:  # type: ignore[type-arg]
    await ctx.yield_output(sorted(message))


keys_graph = WorkflowBuilder(start=keys).build()


class Approver(Executor):
    @handler
    async def on_plan(self, plan: str, ctx: WorkflowContext) -> None:
        await ctx.request_info(plan, response_type=bool)

    @response_handler
    async def on_answer(self, plan: str, approved: bool, ctx: WorkflowContext) -> None:
        await ctx.yield_output(f"{plan}: {'go' if approved else 'stop'}")


approval = WorkflowBuilder(start=Approver(id="approver")).build()

not_a_workflow = 42


class Scores(Workflow):
    """A result JSON has no number for (NaN, infinity): printed as its repr."""

    @step
    async def score(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result={"score": float("inf"), "mean": float("nan")})


class Nested(Workflow):
    """A result holding an event: JSON, the event as its fields."""

    @step
    async def nest(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result={"hops": [Hop(n=1), Hop(n=2)], "when": 1})


class Verdict(StopEvent):
    answer: int
    note: str


class Judged(Workflow):
    """Ends with a StopEvent of its own: printed as the JSON of its fields."""

    @step
    async def judge(self, ctx: Context, ev: StartEvent) -> Verdict:
        return Verdict(answer=42, note="fine")


class Invalid(Workflow):
    """No step ends the run: an invalid workflow."""

    @step
    async def only(self, ctx: Context, ev: StartEvent) -> Hop:
        return Hop(n=1)


def simulate(i: int) -> int:
    return i * i


class Campaign(Workflow):
    """A step that runs a task flow of its own: its tasks show in the progress display."""

    @step
    async def run_tasks(self, ctx: Context, ev: StartEvent) -> StopEvent:
        from stepgraph.backends import InlineBackend
        from stepgraph.tasks import TaskFlow

        async with TaskFlow({"default": InlineBackend()}) as flow:
            task = flow.function_task(simulate)
            results = await asyncio.gather(*(task(i) for i in range(3)))
        return StopEvent(result=sum(results))


def __getattr__(name: str) -> object:
    """Instances that bring their own store or event log (``$STEPGRAPH_TEST_OWN``, a
    path), made when the CLI asks for them (importing this module creates no file)."""
    from stepgraph.stores import MemoryStore, SqliteStore

    if name == "asks_in_its_store":  # a SQLite file: a pause outlives the process
        return Ask(store=SqliteStore(os.environ["STEPGRAPH_TEST_OWN"]))
    if name == "asks_in_memory":  # a store in this process only: it cannot
        return Ask(store=MemoryStore())
    if name == "counts_to_its_log":
        return Count(timeout=30, event_log=os.environ["STEPGRAPH_TEST_OWN"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
