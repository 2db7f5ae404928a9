"""The workflows of the crash tests, and what an uninterrupted run of each gives.

They live at module level because a durable run names its classes by module path: the
child process (``python -m tests.crash.child``) and the process that resumes the run both
import this module as ``tests.crash.flows``.

Every flow runs 20 supersteps (0 to 19) and its result depends on the work of every one:
each step folds what it did into a running hash in the shared state (``ctx.store``), so a
superstep lost, done twice or done out of order changes the result. Its steps are
at-least-once safe the way durable runs expect (see ``stepgraph.durability.run``): each
makes its shared-state writes after its last ``await`` and returns right after them, so
an interrupted attempt leaves nothing the resumed attempt would apply a second time.

Each step calls :func:`started` first, which tells the reporter (the child prints
``step <superstep> <name>``, flushed) and then paces the step (the child sets a pace so
that kills land in the middle of runs; the resuming process runs at full speed). A step
that writes a large value reports ``big <superstep>`` right after its writes, just before
it returns: in superstep mode that is just before the barrier whose checkpoint holds
the value; in async mode, just before the commit of its journal entry.

The flows (:data:`FLOWS`):

- ``relay``: :class:`Relay` (``@step`` style): ``begin`` (superstep 0); ``left`` and
  ``right`` at once in supersteps 1 to 18, each hashing the lap into its own key;
  ``finish`` (superstep 19) collects both lanes;
- ``big``: the same, also writing a few MB of text to the shared state at three
  supersteps the seed picks, so that kills land during large checkpoint writes;
- ``ring``: an executor graph (:func:`ring`): ``seed`` (0); ``hub`` (odd supersteps)
  fans out to ``a`` and ``b`` (even supersteps), which fan in back to ``hub``; the
  tenth ``hub`` (superstep 19) yields the output;
- ``eager``: ``relay`` whose lanes write first and then take their pace, an ``await``
  after the write. In async mode the other lane's commit can carry the write of a lane
  still in flight; after a kill then, the resume must undo that write before it starts
  the lane's step again (``RunResumed`` does), or the lap counts twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stepgraph import (
    Context,
    Event,
    Executor,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowHandler,
    handler,
    step,
)
from stepgraph.graph_events import RunResult
from stepgraph.stores import Store

__all__ = [
    "FLOWS",
    "LAST_SUPERSTEP",
    "FlowSpec",
    "Relay",
    "mix",
    "ring",
    "set_pace",
    "set_reporter",
    "started",
]

LAST_SUPERSTEP = 19
"""Every flow runs supersteps 0 to 19."""

LAPS = 18
"""Relay: ``left`` and ``right`` run laps 1 to 18 (supersteps 1 to 18)."""

ROUNDS = 10
"""Ring: ``hub`` runs rounds 1 to 10 (supersteps 1, 3, ... 19)."""

Reporter = Callable[[str, str], None]
"""``(run_id, line)``: told of each line a flow reports."""

_reporter: Reporter | None = None
_pace: Callable[[int, str], float] | None = None


def set_reporter(reporter: Reporter | None) -> None:
    """Send the flows' lines to ``reporter`` (None: nowhere)."""
    global _reporter
    _reporter = reporter


def set_pace(pace: Callable[[int, str], float] | None) -> None:
    """Make each step wait ``pace(superstep, name)`` seconds after it reports (None: none)."""
    global _pace
    _pace = pace


def _report(run_id: str, line: str) -> None:
    if _reporter is not None:
        _reporter(run_id, line)


async def started(run_id: str, superstep: int, name: str, *, paced: bool = True) -> None:
    """A step has started: report ``step <superstep> <name>``, then take the step's pace."""
    _report(run_id, f"step {superstep} {name}")
    if paced:
        await _take_pace(superstep, name)


async def _take_pace(superstep: int, name: str) -> None:
    if _pace is not None:
        delay = _pace(superstep, name)
        if delay > 0:
            await asyncio.sleep(delay)


def mix(*parts: object) -> int:
    """A 48-bit hash of ``parts`` (ints, strings and tuples of them: stable reprs)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=6).digest(), "big")


def digest(text: str) -> str:
    """A short digest of ``text`` (a result holds it rather than megabytes)."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def big_text(salt: int, superstep: int, size: int) -> str:
    """``size`` characters of pseudo-random hex (the large value of ``big``)."""
    return random.Random(mix(salt, superstep)).randbytes(size // 2).hex()


# -- relay and big: @step ------------------------------------------------------------------------


class Go(StartEvent):
    """Relay's start: the salt of its hashes, where it writes large values, and whether
    its lanes write before their pace (``eager``)."""

    salt: int
    big_at: list[int] = []
    big_size: int = 0
    write_first: bool = False


class Lap(Event):
    n: int


class LaneDone(Event):
    lane: str


class Relay(Workflow):
    """Two lanes side by side for 18 supersteps, between a first and a last step."""

    @step
    async def begin(self, ctx: Context, ev: Go) -> Lap:
        await started(ctx.run_id, 0, "begin")
        plan = {
            "salt": ev.salt,
            "big_at": list(ev.big_at),
            "big_size": ev.big_size,
            "write_first": ev.write_first,
        }
        await ctx.store.set("plan", plan)
        return Lap(n=1)

    @step
    async def left(self, ctx: Context, ev: Lap) -> Lap | LaneDone:
        await _lap(ctx, "left", ev.n)
        return Lap(n=ev.n + 1) if ev.n < LAPS else LaneDone(lane="left")

    @step
    async def right(self, ctx: Context, ev: Lap) -> LaneDone | None:
        await _lap(ctx, "right", ev.n)
        return LaneDone(lane="right") if ev.n == LAPS else None

    @step
    async def finish(self, ctx: Context, ev: LaneDone) -> StopEvent | None:
        if ctx.collect_events(ev, [LaneDone, LaneDone]) is None:
            return None
        await started(ctx.run_id, LAST_SUPERSTEP, "finish")
        plan = await ctx.store.get("plan")
        result = {
            "salt": plan["salt"],
            "left": await ctx.store.get("left"),
            "right": await ctx.store.get("right"),
            "blob": digest(await ctx.store.get("blob", "")),
            "blobs": await ctx.store.get("blobs", 0),
        }
        return StopEvent(result=result)


async def _lap(ctx: Context, lane: str, n: int) -> None:
    """Lap ``n`` of ``lane``: hash it into the lane's key; ``left`` may write a large value."""
    plan = await ctx.store.get("plan")
    big = n in plan["big_at"]
    salt = plan["salt"]
    if plan["write_first"]:  # `eager`: the write, then an await (see the module docstring)
        await started(ctx.run_id, n, lane, paced=False)
        await ctx.store.update(lane, lambda acc: mix(acc or 0, lane, n, salt))
        await _take_pace(n, lane)
        return
    await started(ctx.run_id, n, lane, paced=not big)
    if big and lane == "left":
        for _ in range(3):  # let `right` finish its lap first: the barrier follows this step
            await asyncio.sleep(0)
        blob = big_text(salt, n, plan["big_size"])
        # the writes, after the last await (see the module docstring)
        await ctx.store.update(lane, lambda acc: mix(acc or 0, lane, n, salt))
        await ctx.store.set("blob", blob)
        await ctx.store.update("blobs", lambda count: (count or 0) + 1)
        _report(ctx.run_id, f"big {n}")
        return
    await ctx.store.update(lane, lambda acc: mix(acc or 0, lane, n, salt))


def relay_expected(salt: int, big_at: list[int], big_size: int) -> dict[str, Any]:
    """What an uninterrupted Relay run returns (computed without stepgraph)."""
    left = right = 0
    for n in range(1, LAPS + 1):
        left = mix(left, "left", n, salt)
        right = mix(right, "right", n, salt)
    blob = big_text(salt, max(big_at), big_size) if big_at else ""
    return {"salt": salt, "left": left, "right": right, "blob": digest(blob), "blobs": len(big_at)}


# -- ring: an executor graph ---------------------------------------------------------------------


@dataclass(frozen=True)
class Kickoff:
    salt: int


@dataclass(frozen=True)
class Task:
    k: int


@dataclass(frozen=True)
class Part:
    lane: str
    k: int
    value: int


class Seed(Executor):
    @handler
    async def on_kickoff(self, kickoff: Kickoff, ctx: WorkflowContext[int]) -> None:
        await started(ctx.run_id, 0, self.id)
        await ctx.store.set("salt", kickoff.salt)
        await ctx.send_message(1)  # hub's first round


class Hub(Executor):
    @handler
    async def on_first(self, k: int, ctx: WorkflowContext[Task]) -> None:
        await self._round(ctx, k, ())

    @handler
    async def on_parts(self, parts: list[Part], ctx: WorkflowContext[Task]) -> None:
        await self._round(ctx, parts[0].k + 1, tuple(part.value for part in parts))

    async def _round(self, ctx: WorkflowContext[Task], k: int, values: tuple[int, ...]) -> None:
        await started(ctx.run_id, 2 * k - 1, self.id)
        salt = await ctx.store.get("salt")
        acc = await ctx.store.update("hub", lambda acc: mix(acc or 0, "hub", k, salt, values))
        if k < ROUNDS:
            await ctx.send_message(Task(k=k))
            return
        result = {
            "salt": salt,
            "hub": acc,
            "a": await ctx.store.get("a"),
            "b": await ctx.store.get("b"),
        }
        await ctx.yield_output(result)


class Worker(Executor):
    @handler
    async def on_task(self, task: Task, ctx: WorkflowContext[Part]) -> None:
        await started(ctx.run_id, 2 * task.k, self.id)
        salt = await ctx.store.get("salt")
        lane, k = self.id, task.k
        value = await ctx.store.update(lane, lambda acc: mix(acc or 0, lane, k, salt))
        await ctx.send_message(Part(lane=lane, k=k, value=value))


def ring(store: Store | None = None, mode: str = "superstep") -> Any:
    """The ring graph: seed -> hub -> (a, b) -> hub -> ..., ten rounds of hub."""
    seed, hub = Seed(id="seed"), Hub(id="hub")
    workers = [Worker(id="a"), Worker(id="b")]
    return (
        WorkflowBuilder(start=seed, name="ring")
        .add_edge(seed, hub)
        .add_fan_out(hub, workers)
        .add_fan_in(workers, hub)
        .build(store=store, mode=mode)
    )


def ring_expected(salt: int) -> list[dict[str, Any]]:
    """The outputs of an uninterrupted ring run (computed without stepgraph)."""
    hub = a = b = 0
    values: tuple[int, ...] = ()
    for k in range(1, ROUNDS + 1):
        hub = mix(hub, "hub", k, salt, values)
        if k == ROUNDS:
            break
        a = mix(a, "a", k, salt)
        b = mix(b, "b", k, salt)
        values = (a, b)
    return [{"salt": salt, "hub": hub, "a": a, "b": b}]


# -- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSpec:
    """A flow of the crash tests: how to build, start and check it, all from a seed.

    Attributes:
        name: its name (the child's ``flow`` argument).
        build: ``(store, mode)`` to the workflow.
        start: ``(workflow, run_id, seed)`` to the started run's handler.
        expected: ``seed`` to what an uninterrupted run gives (as :attr:`outcome` gives it).
        outcome: what awaiting a run gives, to the part that is compared.
        big_at: ``seed`` to the supersteps that write a large value (none for most).
        lines: how many lines an uninterrupted run reports.
    """

    name: str
    build: Callable[[Store | None, str], Any]
    start: Callable[[Any, str, int], WorkflowHandler]
    expected: Callable[[int], Any]
    outcome: Callable[[Any], Any]
    big_at: Callable[[int], list[int]]
    lines: Callable[[int], int]


def _salt(seed: int) -> int:
    return random.Random(f"salt-{seed}").randrange(1 << 30)


def _big_plan(seed: int) -> tuple[list[int], int]:
    """Three supersteps of 2 to 18, and a size of 2 to 4 MB."""
    rng = random.Random(f"big-{seed}")
    return sorted(rng.sample(range(2, LAPS + 1), 3)), rng.choice([2, 3, 4]) << 20


def _relay(name: str) -> FlowSpec:
    def plan(seed: int) -> tuple[list[int], int]:
        return _big_plan(seed) if name == "big" else ([], 0)

    def start(wf: Any, run_id: str, seed: int) -> WorkflowHandler:
        big_at, size = plan(seed)
        handler: WorkflowHandler = wf.run(
            run_id=run_id,
            salt=_salt(seed),
            big_at=big_at,
            big_size=size,
            write_first=name == "eager",
        )
        return handler

    return FlowSpec(
        name=name,
        build=lambda store, mode: Relay(store=store, mode=mode),
        start=start,
        expected=lambda seed: relay_expected(_salt(seed), *plan(seed)),
        outcome=lambda value: value,
        big_at=lambda seed: plan(seed)[0],
        lines=lambda seed: 2 + 2 * LAPS + len(plan(seed)[0]),
    )


def _ring_start(wf: Any, run_id: str, seed: int) -> WorkflowHandler:
    handler: WorkflowHandler = wf.run(Kickoff(salt=_salt(seed)), run_id=run_id)
    return handler


def _ring_outcome(value: Any) -> Any:
    return list(value.outputs) if isinstance(value, RunResult) else value


FLOWS: dict[str, FlowSpec] = {
    "relay": _relay("relay"),
    "big": _relay("big"),
    "eager": _relay("eager"),
    "ring": FlowSpec(
        name="ring",
        build=ring,
        start=_ring_start,
        expected=lambda seed: ring_expected(_salt(seed)),
        outcome=_ring_outcome,
        big_at=lambda seed: [],
        lines=lambda seed: 1 + ROUNDS + 2 * (ROUNDS - 1),
    ),
}
"""The flows, by name."""
