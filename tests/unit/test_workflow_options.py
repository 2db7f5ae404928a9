"""Workflow options that change what a run shows: verbose output."""

from __future__ import annotations

import pytest

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step


class Half(Event):
    n: int


class Halve(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Half:
        return Half(n=ev.n // 2)

    @step
    async def done(self, ctx: Context, ev: Half) -> StopEvent:
        return StopEvent(result=ev.n)


@pytest.mark.parametrize("mode", ["superstep", "async"])
def test_verbose_prints_each_step_and_what_it_produced(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Halve(verbose=True, mode=mode).run_sync(n=8) == 4
    assert capsys.readouterr().out.splitlines() == [
        "Running step start",
        "Step start produced Half",
        "Running step done",
        "Step done produced StopEvent",
    ]


def test_a_quiet_workflow_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert Halve().run_sync(n=8) == 4
    assert capsys.readouterr().out == ""


async def test_a_subclass_may_have_its_own_plan_attribute_and_a_step_named_plan() -> None:
    from stepgraph import StopEvent, Workflow, step

    class Planner(Workflow):
        def __init__(self) -> None:
            super().__init__()
            self.plan = ["draft", "review"]  # the user's own attribute

        @step
        async def plan(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent(result="planned")

    assert await Planner().run() == "planned"


async def test_the_shared_state_stays_usable_through_the_handler_after_the_run() -> None:
    from stepgraph import StopEvent, Workflow, step

    class Keeps(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.store.set("n", 1)
            return StopEvent(result="done")

    handler = Keeps().run()
    assert await handler == "done"
    store = handler.ctx.store
    await store.set("n", 2)  # after the run: the store is its own now
    assert await store.get("n") == 2


class _OnlyCommits:
    def commit(self, batch: object) -> None:
        return None


class _OnlySubmits:
    name = "half"
    in_process = False

    def submit(self, fn: object, /, *args: object) -> None:
        return None


def test_a_store_or_a_backend_missing_methods_is_refused_naming_them() -> None:
    from stepgraph.errors import WorkflowValidationError

    class One(Workflow):
        @step
        async def only(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match=r"it has no create_run, .*result"):
        One(store=_OnlyCommits())  # type: ignore[arg-type]
    with pytest.raises(WorkflowValidationError, match=r"it has no run_command, start, shutdown"):
        One(backends={"half": _OnlySubmits()})  # type: ignore[dict-item]
