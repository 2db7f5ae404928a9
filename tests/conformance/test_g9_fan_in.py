"""G9 fan-in: ``ctx.collect_events`` releases one batch per full set, in declared order.

A batch holds one event of each expected type in the order of the expected list,
whatever order they arrived in; extra events wait for the next batch and are never
lost; a large ``[Result] * n`` collector gathers every event; an empty expected list
is an error naming the step.
"""

import asyncio
from typing import Any

import pytest
from _helpers_b import both_modes, failure, finish

from stepgraph import Context, Event, RetryPolicy, StartEvent, StopEvent, Workflow, step
from stepgraph.errors import StepgraphError, WorkflowRuntimeError


class A(Event):
    n: int = 0


class B(Event):
    n: int = 0


class Result(Event):
    value: int


@both_modes
@pytest.mark.parametrize("arrival", ["AB", "BA"])
async def test_batch_is_in_declared_order_whatever_the_arrival_order(
    mode: str, arrival: str
) -> None:
    arrived: list[str] = []

    class Join(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for kind in arrival:
                ctx.send_event(A() if kind == "A" else B())

        @step
        async def join(self, ctx: Context, ev: A | B) -> StopEvent | None:
            arrived.append(type(ev).__name__)
            batch = ctx.collect_events(ev, [A, B])
            if batch is None:
                return None
            return StopEvent(result=[type(e).__name__ for e in batch])

    assert await finish(Join(mode=mode).run()) == ["A", "B"]
    assert "".join(arrived) == arrival


@both_modes
async def test_extra_events_wait_for_the_next_batch_and_none_is_lost(mode: str) -> None:
    batches: list[list[tuple[str, int]]] = []

    class TwoBatches(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(A(n=1))
            ctx.send_event(A(n=2))
            ctx.send_event(B(n=1))
            ctx.send_event(B(n=2))

        @step
        async def join(self, ctx: Context, ev: A | B) -> StopEvent | None:
            batch = ctx.collect_events(ev, [A, B])
            if batch is None:
                return None
            batches.append([(type(e).__name__, e.n) for e in batch])
            return StopEvent(result=len(batches)) if len(batches) == 2 else None

    handler = TwoBatches(mode=mode).run()
    assert await finish(handler) == 2
    assert batches == [[("A", 1), ("B", 1)], [("A", 2), ("B", 2)]]
    assert handler._run.state.collectors == {}, "an event stayed behind in the collector"


@both_modes
async def test_a_collector_of_a_thousand_results_gathers_all_of_them(mode: str) -> None:
    count = 1000

    class Gather(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for i in range(count):
                ctx.send_event(Result(value=i))

        @step
        async def gather(self, ctx: Context, ev: Result) -> StopEvent | None:
            batch = ctx.collect_events(ev, [Result] * count)
            if batch is None:
                return None
            return StopEvent(result=[r.value for r in batch])

    values = await finish(Gather(mode=mode).run())
    assert len(values) == count
    assert set(values) == set(range(count))


@both_modes
async def test_collect_events_with_an_empty_list_raises_naming_the_step(mode: str) -> None:
    class EmptyJoin(Workflow):
        @step
        async def start(self, ev: StartEvent) -> A:
            return A()

        @step
        async def empty_join(self, ctx: Context, ev: A) -> StopEvent | None:
            ctx.collect_events(ev, [])
            return StopEvent(result="unreachable")

    exc = await failure(EmptyJoin(mode=mode).run())
    assert isinstance(exc, StepgraphError)
    assert "'empty_join'" in str(exc)
    assert "collect_events" in str(exc)


class C(Event):
    n: int = 0


@both_modes
async def test_two_long_collectors_of_one_step_keep_their_events_apart(mode: str) -> None:
    with_b = [A] + [B] * 8 + [A]
    with_c = [A] + [C] * 8 + [A]  # same length and ends as with_b, different middle
    batches: list[list[str]] = []

    class TwoLists(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            # both collectors are open at once: the B batch completes last
            for event in [A(n=1), A(n=1), A(n=2), A(n=2), *[C(n=2)] * 8, *[B(n=1)] * 8]:
                ctx.send_event(event)

        @step
        async def join(self, ctx: Context, ev: A | B | C) -> StopEvent | None:
            expected = with_b if ev.n == 1 else with_c
            batch = ctx.collect_events(ev, expected)
            if batch is None:
                return None
            batches.append([type(e).__name__ for e in batch])
            return StopEvent(result=len(batches)) if len(batches) == 2 else None

    assert await finish(TwoLists(mode=mode).run()) == 2
    assert sorted(batches) == sorted([[t.__name__ for t in with_b], [t.__name__ for t in with_c]])


@both_modes
async def test_a_retried_fan_in_step_sees_the_batch_its_failed_attempt_saw(mode: str) -> None:
    attempts: list[int | None] = []

    class Gather(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for value in range(3):
                ctx.send_event(Result(value=value))

        @step(retry_policy=RetryPolicy(max_attempts=2))
        async def gather(self, ctx: Context, ev: Result) -> StopEvent | None:
            batch = ctx.collect_events(ev, [Result] * 3)
            attempts.append(None if batch is None else len(batch))
            if batch is None:
                return None
            if attempts.count(3) == 1:
                raise ConnectionError("failed after the batch was complete")
            return StopEvent(result=sorted(e.value for e in batch))

    assert await finish(Gather(mode=mode).run()) == [0, 1, 2]
    assert attempts == [None, None, 3, 3]  # the retry got the whole batch again


@both_modes
async def test_an_event_a_failed_attempt_handed_in_goes_to_one_batch_only(mode: str) -> None:
    """Two workers: the attempt for Result 0 hands it in and waits; the one for Result 1
    completes a batch with it, then Result 0's attempt fails. Its retry must not hand
    Result 0 in again (it is in a batch): Result 2 alone is left, and the run says so."""
    gate = asyncio.Event()
    seen: list[tuple[int, int | None]] = []

    class Pairs(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for value in range(3):
                ctx.send_event(Result(value=value))

        @step(num_workers=2, retry_policy=RetryPolicy(max_attempts=2))
        async def pair(self, ctx: Context, ev: Result) -> StopEvent | None:
            batch = ctx.collect_events(ev, [Result] * 2)
            seen.append((ev.value, None if batch is None else len(batch)))
            if ev.value == 0 and seen.count((0, None)) == 1:
                await gate.wait()  # until Result 1's attempt has its batch
                raise ConnectionError("fails once, after its event went to a batch")
            if batch is not None:
                assert sorted(e.value for e in batch) == [0, 1]
                gate.set()
            return None

    exc = await failure(Pairs(mode=mode).run())
    assert type(exc).__name__ == "WorkflowStalled"
    assert "step 'pair' collects Result 1/2" in str(exc)  # Result 2, alone
    assert seen.count((0, None)) == 2  # the retry's collect got None, as the attempt did


@both_modes
async def test_a_long_expected_list_is_compared_in_full_once_per_batch_not_per_event(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepgraph.core.collector import Collector

    compared: list[int] = []
    original = Collector.same_expected

    def counting(self: Collector, expected: Any) -> bool:
        compared.append(len(expected))
        return original(self, expected)

    monkeypatch.setattr(Collector, "same_expected", counting)
    n = 300

    class Gather(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for value in range(2 * n):
                ctx.send_event(Result(value=value))

        @step
        async def gather(self, ctx: Context, ev: Result) -> StopEvent | None:
            batch = ctx.collect_events(ev, [Result] * n)  # the list is rebuilt on every call
            if batch is None:
                return None
            done = await ctx.store.update("batches", lambda b: (b or 0) + 1)
            return StopEvent(result=done) if done == 2 else None

    assert await finish(Gather(mode=mode).run()) == 2
    assert compared == [n, n]  # one full comparison per batch: O(1) per arriving event


@both_modes
async def test_one_type_with_count_collects_like_the_list_it_stands_for(mode: str) -> None:
    class Gather(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for value in range(12):
                ctx.send_event(Result(value=value))

        @step
        async def gather(self, ctx: Context, ev: Result) -> StopEvent | None:
            batch = ctx.collect_events(ev, Result, count=12)  # no list built per call
            return None if batch is None else StopEvent(result=[r.value for r in batch])

    assert sorted(await finish(Gather(mode=mode).run())) == list(range(12))


@both_modes
async def test_two_long_lists_that_differ_in_the_middle_fill_two_batches_without_stalling(
    mode: str,
) -> None:
    first = [Result] * 5 + [A] + [Result] * 5
    second = [Result] * 5 + [B] + [Result] * 5

    class Two(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for value in range(20):
                ctx.send_event(Result(value=value))
            ctx.send_event(A(n=1))
            ctx.send_event(B(n=2))

        @step
        async def gather(self, ctx: Context, ev: Result | A | B) -> StopEvent | None:
            wants = second if isinstance(ev, B) or getattr(ev, "value", 0) % 2 else first
            batch = ctx.collect_events(ev, wants)
            if batch is None:
                return None
            done = await ctx.store.update("done", lambda d: [*(d or []), type(batch[5]).__name__])
            return StopEvent(result=sorted(done)) if len(done) == 2 else None

    assert await finish(Two(mode=mode).run()) == ["A", "B"]


@both_modes
async def test_a_different_long_list_with_the_same_length_and_samples_is_refused_clearly(
    mode: str,
) -> None:
    same = [Result] * 11
    odd = [Result] * 11
    odd[1] = A  # differs where the key does not look: caught when the batch completes

    class Mixed(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            for value in range(11):
                ctx.send_event(Result(value=value))

        @step
        async def gather(self, ctx: Context, ev: Result) -> StopEvent | None:
            batch = ctx.collect_events(ev, same if ev.value < 10 else odd)
            return None if batch is None else StopEvent(result="mixed")

    exc = await failure(Mixed(mode=mode).run())
    assert isinstance(exc, WorkflowRuntimeError)
    assert "step 'gather'" in str(exc) and "pass the same list" in str(exc)
