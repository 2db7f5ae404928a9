"""A run resumed by a workflow whose steps were reordered, removed or added since.

The journal names steps by their position in the graph that wrote it: a resume by a
workflow that numbers them otherwise renumbers what it replays, by name, and writes a
checkpoint of its own before it goes on. A lenient resume (``strict=False``) routes a
removed step's messages nowhere, in both modes, not to a step added since.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from typing import Any

import pytest

from stepgraph import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    step,
)
from stepgraph.errors import CheckpointError, WorkflowStalled
from stepgraph.testing import crash, settled

from .conftest import StoreFactory

pytestmark = pytest.mark.parametrize("mode", ["superstep", "async"])

GATE: list[asyncio.Event] = []


class Parcel(Event):
    to: str


class Holding(Event):
    step: str


async def _held(step: str, ctx: Context) -> None:
    ctx.write_event_to_stream(Holding(step=step))
    await GATE[0].wait()


async def _got(ctx: Context, step: str, parcel: Parcel) -> StopEvent | None:
    """Record that ``step`` got ``parcel``; the second to record ends the run."""
    async with ctx.store.edit() as state:
        got = [*state.get("got", []), f"{step} got {parcel.to}"]
        state["got"] = got
    return StopEvent(result=sorted(got)) if len(got) == 2 else None


class Sorting(Workflow):
    """``start`` sends a parcel to ``two`` by name (the caller sends one to ``one``)."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(Parcel(to="two"), step="two")

    @step
    async def one(self, ctx: Context, ev: Parcel) -> StopEvent | None:
        return await _got(ctx, "one", ev)

    @step
    async def two(self, ctx: Context, ev: Parcel) -> StopEvent | None:
        await _held("two", ctx)
        return await _got(ctx, "two", ev)


class Resorted(Workflow):
    """``Sorting`` (its runs are made with ``name="Sorting"``), its steps in another order."""

    @step
    async def two(self, ctx: Context, ev: Parcel) -> StopEvent | None:
        await _held("two", ctx)
        return await _got(ctx, "two", ev)

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(Parcel(to="two"), step="two")

    @step
    async def one(self, ctx: Context, ev: Parcel) -> StopEvent | None:
        return await _got(ctx, "one", ev)


async def _until_held(handler: object, step: str) -> None:
    async for event in handler.stream_events():  # type: ignore[attr-defined]
        if isinstance(event, Holding) and event.step == step:
            return


async def test_a_resume_by_a_workflow_with_its_steps_reordered_delivers_as_sent(
    stores: StoreFactory, mode: str
) -> None:
    """What a step and the caller sent to a step by name before the crash goes to that
    step, whatever its position in the resuming workflow; so does what they send once it
    resumed, should it crash in turn (it goes after a checkpoint the resuming workflow
    wrote)."""
    GATE[:] = [asyncio.Event()]
    first = Sorting(store=stores(), mode=mode).run()  # type: ignore[arg-type]
    await _until_held(first, "two")
    first.send_event(Parcel(to="one"), step="one")
    await settled(first)
    await crash(first)
    before = await stores().list_checkpoints(first.run_id)

    again = Resorted(store=stores(), name="Sorting", mode=mode).resume(first.run_id)  # type: ignore[arg-type]
    await _until_held(again, "two")  # (strict: the same steps, only reordered)
    await crash(again)
    after = await stores().list_checkpoints(first.run_id)
    assert after[: len(before)] == before
    assert len(after) == len(before) + 1  # the resuming workflow's own, written first

    GATE[0].set()
    result = await Resorted(store=stores(), name="Sorting", mode=mode).resume(first.run_id)  # type: ignore[arg-type]
    assert result == ["one got one", "two got two"]


async def resumed_after_crash(
    workflow: Any, run_id: str, *, strict: bool = False
) -> tuple[Any, list[str]]:
    """Resume ``run_id`` (crashed, held at ``GATE``, which opens now) with ``workflow``:
    its result, and the warnings the resume gave."""
    GATE[0].set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = await workflow.resume(run_id, strict=strict)
    return result, [str(w.message) for w in caught]


class Handing(Workflow):
    """``first`` hands a parcel on, by type, to ``second``, held there."""

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Parcel:
        return Parcel(to="second")

    @step
    async def second(self, ctx: Context, ev: Parcel) -> StopEvent:
        await _held("second", ctx)
        return StopEvent(result="second")


class Rehanded(Workflow):
    """``Handing`` with ``second`` gone and ``third``, which takes parcels too, added."""

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Parcel:
        return Parcel(to="second")

    @step
    async def third(self, ctx: Context, ev: Parcel) -> StopEvent:
        return StopEvent(result="third")


async def test_a_lenient_resume_gives_a_removed_steps_message_to_no_added_step(
    stores: StoreFactory, mode: str
) -> None:
    """``second`` had the parcel when the run crashed: resumed without ``second``, the
    parcel is dropped with a warning naming it, never given to ``third``, and with
    nothing left to run the run stalls (in async mode the parcel is in the journal, not
    in the checkpoint)."""
    GATE[:] = [asyncio.Event()]
    handler = Handing(store=stores(), mode=mode).run()  # type: ignore[arg-type]
    await _until_held(handler, "second")
    await crash(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = Rehanded(store=stores(), name="Handing", mode=mode).resume(  # type: ignore[arg-type]
            handler.run_id, strict=False
        )
        with pytest.raises(WorkflowStalled):
            await resumed
    assert any(
        "'second'" in str(w.message) and "dropped with them: Parcel" in str(w.message)
        for w in caught
    )
    assert (await stores().get_run(handler.run_id)).status == "failed"


class Gone(Event):
    """An event class a later version of the code no longer has."""

    n: int


class Before(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Gone:
        return Gone(n=1)

    @step
    async def takes(self, ctx: Context, ev: Gone) -> StopEvent:
        await _held("takes", ctx)
        return StopEvent(result=ev.n)


class Kept(Event):
    n: int


class After(Workflow):
    """``Before`` (its runs are made with ``name="Before"``) once ``Gone`` became ``Kept``."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Kept:
        return Kept(n=1)

    @step
    async def takes(self, ctx: Context, ev: Kept) -> StopEvent:
        return StopEvent(result=ev.n)


async def test_a_strict_resume_after_an_event_class_went_names_the_changed_steps(
    stores: StoreFactory, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored run holds a ``Gone`` its code can no longer import: the error names the
    steps whose types changed, as for a checkpoint that reads."""
    GATE[:] = [asyncio.Event()]
    handler = Before(store=stores(), mode=mode).run()  # type: ignore[arg-type]
    await _until_held(handler, "takes")
    await crash(handler)
    monkeypatch.delattr(sys.modules[__name__], "Gone")
    with pytest.raises(
        CheckpointError, match="changed the types accepted or returned by 'start', 'takes'"
    ) as raised:
        await After(store=stores(), name="Before", mode=mode).resume(handler.run_id)  # type: ignore[arg-type]
    assert raised.value.run_id == handler.run_id


class Relaying(Workflow):
    """``start`` sends a parcel to ``relay`` by name; ``relay`` hands it on to ``end``."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(Parcel(to="relay"), step="relay")

    @step
    async def relay(self, ctx: Context, ev: Parcel) -> Holding:
        return Holding(step="end")

    @step
    async def end(self, ctx: Context, ev: Holding) -> StopEvent:
        await _held("end", ctx)
        return StopEvent(result="end")


class Unrelayed(Workflow):
    """``Relaying`` without ``relay`` (its runs are made with ``name="Relaying"``)."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Holding:
        return Holding(step="end")

    @step
    async def end(self, ctx: Context, ev: Holding) -> StopEvent:
        await _held("end", ctx)
        return StopEvent(result="end")


async def test_a_lenient_resume_replays_what_a_removed_step_did_before_it_drops_it(
    stores: StoreFactory, mode: str
) -> None:
    """``relay`` ran and handed on before the crash: the journal (async mode) records it.
    Resumed without ``relay``, the run goes on as it was (``end`` runs again, as it was
    in flight), not as if what ``relay`` did had not happened."""
    GATE[:] = [asyncio.Event()]
    handler = Relaying(store=stores(), mode=mode).run()  # type: ignore[arg-type]
    await _until_held(handler, "end")
    await crash(handler)
    later = Unrelayed(store=stores(), name="Relaying", mode=mode)  # type: ignore[arg-type]
    result, said = await resumed_after_crash(later, handler.run_id)
    assert result == "end"
    assert any("'relay'" in text for text in said)


class Asked(Workflow):
    """``start`` asks and waits for the answer (held after it); ``later`` takes answers."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(InputRequiredEvent(prefix="name?", request_id="name"))
        answer = await ctx.wait_for_event(HumanResponseEvent)
        await _held("start", ctx)
        return StopEvent(result=f"start got {answer.response}")

    @step
    async def later(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result="later")


class AskedMore(Asked):
    """``Asked`` (runs made with ``name="Asked"``) with ``more``, which takes answers too."""

    @step
    async def more(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result="more")


async def test_a_lenient_resume_keeps_an_answer_where_it_went(
    stores: StoreFactory, mode: str
) -> None:
    """The answer went to the wait of the step that asked: resumed by a workflow with a
    step added that takes answers, it still goes there, to no other step."""
    GATE[:] = [asyncio.Event()]
    handler = Asked(store=stores(), mode=mode).run()  # type: ignore[arg-type]
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            handler.send_event(HumanResponseEvent(response="ada", request_id="name"))
        elif isinstance(event, Holding):
            break
    await crash(handler)
    later = AskedMore(store=stores(), name="Asked", mode=mode)  # type: ignore[arg-type]
    assert (await resumed_after_crash(later, handler.run_id))[0] == "start got ada"


class Job(Event):
    n: int


class Done(Event):
    n: int


class Jobs(Workflow):
    """Two jobs, each to ``side`` (two at once) and to ``main`` (one at a time)."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(Job(n=0))
        ctx.send_event(Job(n=1))

    @step(num_workers=2)
    async def side(self, ctx: Context, ev: Job) -> None:
        await _held(f"side {ev.n}", ctx)

    @step
    async def main(self, ctx: Context, ev: Job) -> Done:
        if ev.n == 1:
            await _held("main 1", ctx)
        return Done(n=ev.n)

    @step
    async def end(self, ctx: Context, ev: Done) -> StopEvent | None:
        done = ctx.collect_events(ev, [Done, Done])
        return None if done is None else StopEvent(result=sorted(d.n for d in done))


class JobsWithoutSide(Workflow):
    """``Jobs`` (runs made with ``name="Jobs"``) without ``side``."""

    @step
    async def start(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(Job(n=0))
        ctx.send_event(Job(n=1))

    @step
    async def main(self, ctx: Context, ev: Job) -> Done:
        return Done(n=ev.n)

    @step
    async def end(self, ctx: Context, ev: Done) -> StopEvent | None:
        done = ctx.collect_events(ev, [Done, Done])
        return None if done is None else StopEvent(result=sorted(d.n for d in done))


async def test_a_lenient_resume_replays_a_removed_step_that_ran_several_at_once(
    stores: StoreFactory, mode: str
) -> None:
    """``side`` ran both jobs at once (``num_workers=2``) when the run crashed, ``main``
    the second: the journal replays as written only with ``side``'s two workers (the
    checkpoint keeps them), so ``main``, in flight, runs again and nothing runs twice."""
    if mode == "superstep":
        pytest.skip("a journal of every step is async mode's")
    GATE[:] = [asyncio.Event()]
    handler = Jobs(store=stores(), mode=mode).run()  # type: ignore[arg-type]
    held: set[str] = set()
    async for event in handler.stream_events():
        if isinstance(event, Holding):
            held.add(event.step)
            if held == {"side 0", "side 1", "main 1"}:
                break
    await crash(handler)
    later = JobsWithoutSide(store=stores(), name="Jobs", mode=mode)  # type: ignore[arg-type]
    assert (await resumed_after_crash(later, handler.run_id))[0] == [0, 1]


def _worker(name: str, held: bool = False) -> Any:
    async def work(text: str, ctx: WorkflowContext[str]) -> None:
        if held:
            ctx.write_event_to_stream(Holding(step=name))  # type: ignore[attr-defined]
            await GATE[0].wait()
        await ctx.send_message(f"{name}:{text}")

    return executor(work, id=name)


@executor(id="join")
async def _join(parts: list[str], ctx: WorkflowContext[str]) -> None:
    await ctx.yield_output(" | ".join(parts))


def _fanned(*sources: str, **options: Any) -> Any:
    """``ingest`` fans out to ``w_a``, ``w_b`` (and ``pre_c``, which hands on to ``w_c``,
    held), which fan in to ``join`` (``sources``: its sources)."""
    ingest, pre_c = _worker("ingest"), _worker("pre_c")
    workers = {name: _worker(name, held=name == "w_c") for name in sources}
    firsts = [workers["w_a"], workers["w_b"], *([pre_c] if "w_c" in workers else [])]
    builder = WorkflowBuilder(start=ingest, name="fanned").add_fan_out(ingest, firsts)
    if "w_c" in workers:
        builder.add_edge(pre_c, workers["w_c"])
    return builder.add_fan_in(list(workers.values()), _join).build(**options)


async def test_a_lenient_resume_drops_the_part_of_a_batch_a_removed_fan_in_source_held(
    stores: StoreFactory, mode: str
) -> None:
    """``w_a`` and ``w_b`` had sent their parts of a fan-in batch when the run crashed in
    ``w_c``: resumed without ``pre_c`` and ``w_c`` (the fan-in now of ``w_a`` and ``w_b``),
    the part held is dropped with a warning, in both modes (the checkpoint keeps the fan-ins
    of the graph that wrote it), and the run ends with nothing left to do."""
    GATE[:] = [asyncio.Event()]
    first = _fanned("w_a", "w_b", "w_c", store=stores(), mode=mode)
    handler = first.run("x")
    await _until_held(handler, "w_c")
    await crash(handler)
    later = _fanned("w_a", "w_b", store=stores(), mode=mode)
    result, said = await resumed_after_crash(later, handler.run_id)
    assert result.outputs == []
    assert any("collected event (2)" in text for text in said), said


@executor(id="join")
async def _join_either(parts: list[str] | str, ctx: WorkflowContext[str]) -> None:
    await ctx.yield_output(parts if isinstance(parts, str) else " | ".join(parts))


def _rewired(direct: bool, **options: Any) -> Any:
    """``_fanned``'s steps, ``join`` taking a batch or one part: ``w_c`` in the fan-in, or
    (``direct``) sending to ``join`` on its own."""
    ingest, pre_c = _worker("ingest"), _worker("pre_c")
    w_a, w_b, w_c = _worker("w_a"), _worker("w_b"), _worker("w_c", held=True)
    builder = WorkflowBuilder(start=ingest, name="rewired").add_fan_out(ingest, [w_a, w_b, pre_c])
    builder.add_edge(pre_c, w_c)
    if direct:
        return (
            builder.add_fan_in([w_a, w_b], _join_either)
            .add_edge(w_c, _join_either)
            .build(**options)
        )
    return builder.add_fan_in([w_a, w_b, w_c], _join_either).build(**options)


async def test_a_resume_whose_fan_in_edges_changed_warns_of_the_batch_it_dropped(
    stores: StoreFactory, mode: str
) -> None:
    """The same steps, but ``w_c`` no longer in the fan-in: the part of the batch the old
    fan-in held is dropped with a warning saying so, and ``w_c`` goes on as the new
    workflow wires it."""
    GATE[:] = [asyncio.Event()]
    handler = _rewired(False, store=stores(), mode=mode).run("x")
    await _until_held(handler, "w_c")
    await crash(handler)
    later = _rewired(True, store=stores(), mode=mode)
    result, said = await resumed_after_crash(later, handler.run_id, strict=True)
    assert result.outputs == ["w_c:pre_c:ingest:x"]
    assert any("fan-in edges" in text and "collected event (2)" in text for text in said), said
