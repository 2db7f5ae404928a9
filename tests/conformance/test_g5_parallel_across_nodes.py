"""G5 parallel across nodes: distinct ready steps run concurrently, within max_concurrency.

Checks, in both modes, that two steps ready at the same time overlap (a rendezvous:
each waits for the other to have started, so the run completes only if both run
at once); that fan-out to many steps runs them all at once; that a step blocked
on something does not stop another step from processing its messages; that
``max_concurrency=1`` serializes all steps; and that ``max_concurrency=N`` lets
exactly N run at once.
"""

import asyncio

from _helpers_a import both_modes, finish, reached, spin

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step


class Go(Event):
    pass


class Item(Event):
    n: int


class Tick(Event):
    n: int


@both_modes
async def test_two_ready_steps_run_at_the_same_time(mode: str) -> None:
    a_in = asyncio.Event()
    b_in = asyncio.Event()

    class Rendezvous(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Go(), step="a")
            ctx.send_event(Go(), step="b")

        @step
        async def a(self, ev: Go) -> Tick:
            a_in.set()
            await b_in.wait()  # completes only if b runs while a is inside
            return Tick(n=1)

        @step
        async def b(self, ev: Go) -> Tick:
            b_in.set()
            await a_in.wait()  # completes only if a runs while b is inside
            return Tick(n=2)

        @step
        async def join(self, ctx: Context, ev: Tick) -> StopEvent | None:
            ticks = ctx.collect_events(ev, [Tick, Tick])
            return None if ticks is None else StopEvent(result=sorted(t.n for t in ticks))

    assert await finish(Rendezvous(mode=mode, timeout=5).run()) == [1, 2]


@both_modes
async def test_fan_out_to_many_steps_runs_them_all_at_once(mode: str) -> None:
    inside = 0
    all_in = asyncio.Event()

    async def meet() -> Tick:
        nonlocal inside
        inside += 1
        if inside == 4:
            all_in.set()
        await all_in.wait()  # nobody leaves until all four are inside
        return Tick(n=inside)

    class FanOut(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Go:
            return Go()  # one event, four accepting steps

        @step
        async def s1(self, ev: Go) -> Tick:
            return await meet()

        @step
        async def s2(self, ev: Go) -> Tick:
            return await meet()

        @step
        async def s3(self, ev: Go) -> Tick:
            return await meet()

        @step
        async def s4(self, ev: Go) -> Tick:
            return await meet()

        @step
        async def join(self, ctx: Context, ev: Tick) -> StopEvent | None:
            ticks = ctx.collect_events(ev, [Tick] * 4)
            return None if ticks is None else StopEvent(result=[t.n for t in ticks])

    assert await finish(FanOut(mode=mode, timeout=5).run()) == [4, 4, 4, 4]


@both_modes
async def test_a_blocked_step_does_not_block_another_steps_progress(mode: str) -> None:
    gate = asyncio.Event()
    blocked_in = asyncio.Event()
    busy_done = asyncio.Event()
    processed: list[int] = []

    class OneBlocks(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Go(), step="blocked")
            for n in range(5):
                ctx.send_event(Item(n=n), step="busy")

        @step
        async def blocked(self, ev: Go) -> Tick:
            blocked_in.set()
            await gate.wait()  # held until the test has seen `busy` finish all its work
            return Tick(n=0)

        @step
        async def busy(self, ev: Item) -> Tick | None:
            await asyncio.sleep(0)
            processed.append(ev.n)
            if len(processed) == 5:
                busy_done.set()
                return Tick(n=1)
            return None

        @step
        async def join(self, ctx: Context, ev: Tick) -> StopEvent | None:
            ticks = ctx.collect_events(ev, [Tick, Tick])
            return None if ticks is None else StopEvent(result=sorted(t.n for t in ticks))

    handler = OneBlocks(mode=mode).run()
    await reached(blocked_in, "the blocking step started")
    await reached(busy_done, "the busy step processed its five messages while the other blocked")
    assert processed == [0, 1, 2, 3, 4]
    assert not handler.done()

    gate.set()
    assert await finish(handler) == [0, 1]


@both_modes
async def test_max_concurrency_1_serializes_all_steps(mode: str) -> None:
    gate = asyncio.Event()
    entered: list[str] = []
    first_in = asyncio.Event()

    class Serialized(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Go(), step="a")
            ctx.send_event(Go(), step="b")

        @step
        async def a(self, ev: Go) -> Tick:
            return await self._hold("a")

        @step
        async def b(self, ev: Go) -> Tick:
            return await self._hold("b")

        async def _hold(self, name: str) -> Tick:
            entered.append(name)
            first_in.set()
            await gate.wait()
            return Tick(n=len(entered))

        @step
        async def join(self, ctx: Context, ev: Tick) -> StopEvent | None:
            ticks = ctx.collect_events(ev, [Tick, Tick])
            return None if ticks is None else StopEvent(result=entered)

    handler = Serialized(mode=mode, max_concurrency=1).run()
    await reached(first_in, "one of the two steps started")
    await spin()  # the other step would have started by now, were it allowed to
    assert len(entered) == 1
    assert handler._run.state.running == 1

    gate.set()
    assert sorted(await finish(handler)) == ["a", "b"]


@both_modes
async def test_max_concurrency_n_lets_exactly_n_steps_run_at_once(mode: str) -> None:
    gate = asyncio.Event()
    inside = 0
    most = 0
    two_in = asyncio.Event()

    async def hold() -> Tick:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        if inside == 2:
            two_in.set()
        await gate.wait()
        inside -= 1
        return Tick(n=0)

    class Bounded(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Go:
            return Go()

        @step
        async def s1(self, ev: Go) -> Tick:
            return await hold()

        @step
        async def s2(self, ev: Go) -> Tick:
            return await hold()

        @step
        async def s3(self, ev: Go) -> Tick:
            return await hold()

        @step
        async def s4(self, ev: Go) -> Tick:
            return await hold()

        @step
        async def join(self, ctx: Context, ev: Tick) -> StopEvent | None:
            ticks = ctx.collect_events(ev, [Tick] * 4)
            return None if ticks is None else StopEvent(result=most)

    handler = Bounded(mode=mode, max_concurrency=2).run()
    await reached(two_in, "two steps inside at once")
    await spin()
    assert inside == 2

    gate.set()
    assert await finish(handler) == 2
