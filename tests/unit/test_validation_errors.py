"""A wrong workflow definition gets a clear WorkflowValidationError, never a hang.

Definition errors are found when the workflow is validated (``wf.validate()``) and
again when a run starts (``wf.run()``), before anything runs; bad ``@step`` and
``Workflow`` options are rejected where they are given. Every message names the
workflow, step, event or option at fault.
"""

from typing import Any

import pytest

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step
from stepgraph.errors import StepgraphError, WorkflowValidationError


class Ping(Event):
    pass


class Orphan(Event):
    pass


class NoEventAnnotation(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def untyped(self, ctx: Context, ev) -> StopEvent:  # type: ignore[no-untyped-def]
        return StopEvent()


class NonEventAnnotation(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def takes_int(self, ev: int) -> StopEvent:
        return StopEvent()


class ReturnsUnaccepted(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Orphan | StopEvent:
        return StopEvent()


class NoStartStep(Workflow):
    @step
    async def middle(self, ev: Ping) -> StopEvent:
        return StopEvent()


class NoStopStep(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def forever(self, ev: Ping) -> Ping:
        return Ping()


class NoReturnAnnotation(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def unannotated_return(self, ev: Ping):  # type: ignore[no-untyped-def]
        return StopEvent()


class NonEventReturn(Workflow):
    @step
    async def start(self, ev: StartEvent) -> int:
        return 1


class NoSteps(Workflow):
    pass


INVALID: list[tuple[type[Workflow], list[str]]] = [
    (NoEventAnnotation, ["'untyped'", "'NoEventAnnotation'", "'ev'"]),
    (NonEventAnnotation, ["'takes_int'", "'ev'", "int"]),
    (ReturnsUnaccepted, ["'start'", "'ReturnsUnaccepted'", "Orphan"]),
    (NoStartStep, ["'NoStartStep'", "StartEvent"]),
    (NoStopStep, ["'NoStopStep'", "StopEvent"]),
    (NoReturnAnnotation, ["'unannotated_return'", "return annotation"]),
    (NonEventReturn, ["'start'", "return annotation", "int"]),
    (NoSteps, ["'NoSteps'", "@step"]),
]
IDS = [wf.__name__ for wf, _ in INVALID]


@pytest.mark.parametrize(("workflow", "named"), INVALID, ids=IDS)
def test_validate_rejects_an_invalid_definition_naming_the_fault(
    workflow: type[Workflow], named: list[str]
) -> None:
    with pytest.raises(WorkflowValidationError) as info:
        workflow().validate()
    for name in named:
        assert name in str(info.value)


@pytest.mark.parametrize(("workflow", "named"), INVALID, ids=IDS)
async def test_run_start_rejects_an_invalid_definition_before_anything_runs(
    workflow: type[Workflow], named: list[str]
) -> None:
    with pytest.raises(WorkflowValidationError) as info:
        workflow().run()  # raised by run() itself, not when awaiting a handler
    for name in named:
        assert name in str(info.value)


def test_a_definition_error_is_raised_again_on_every_validation() -> None:
    for _ in range(2):  # a failed compilation is not cached as a success
        with pytest.raises(WorkflowValidationError, match="'untyped'"):
            NoEventAnnotation().validate()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"num_workers": 0}, "num_workers=0"),
        ({"num_workers": -2}, "num_workers=-2"),
        ({"timeout": -1.0}, "timeout=-1.0"),
        ({"timeout": 0}, "timeout=0"),
        ({"retry_policy": "twice"}, "retry_policy='twice'"),
    ],
)
def test_bad_step_options_are_rejected_at_decoration(options: dict[str, Any], named: str) -> None:
    with pytest.raises(WorkflowValidationError) as info:
        step(**options)
    assert named in str(info.value)
    assert "@step" in str(info.value)


def test_a_bad_step_option_fails_the_class_definition() -> None:
    with pytest.raises(WorkflowValidationError, match="num_workers=0"):

        class BadWorkers(Workflow):
            @step(num_workers=0)
            async def start(self, ev: StartEvent) -> StopEvent:
                return StopEvent()


class Valid(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="ok")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"mode": "x"}, "mode='x'"),
        ({"timeout": 0}, "timeout=0"),
        ({"timeout": -5}, "timeout=-5"),
        ({"max_supersteps": 0}, "max_supersteps=0"),
        ({"max_concurrency": 0}, "max_concurrency=0"),
    ],
)
def test_bad_workflow_options_are_rejected_naming_the_workflow_and_option(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(WorkflowValidationError) as info:
        Valid(**options)
    assert named in str(info.value)
    assert "Valid" in str(info.value)


def test_a_valid_definition_validates() -> None:
    Valid().validate()
    assert Valid().steps == ["start"]


def test_validation_errors_are_stepgraph_errors() -> None:
    assert issubclass(WorkflowValidationError, StepgraphError)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"timeout": "1"}, "timeout='1'"),
        ({"timeout": float("nan")}, "timeout=nan"),
        ({"timeout": float("inf")}, "timeout=inf"),
        ({"timeout": True}, "timeout=True"),
        ({"max_supersteps": "5"}, "max_supersteps='5'"),
        ({"max_supersteps": 1.5}, "max_supersteps=1.5"),
        ({"max_concurrency": 2.0}, "max_concurrency=2.0"),
        ({"verbose": "yes"}, "verbose='yes'"),
    ],
)
def test_workflow_options_of_the_wrong_type_are_rejected_naming_the_option(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(WorkflowValidationError) as info:
        Valid(**options)
    assert named in str(info.value) and "Valid" in str(info.value)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"timeout": "2"}, "timeout='2'"),
        ({"timeout": float("nan")}, "timeout=nan"),
        ({"num_workers": 2.5}, "num_workers=2.5"),
        ({"num_workers": True}, "num_workers=True"),
    ],
)
def test_step_options_of_the_wrong_type_are_rejected_naming_the_option(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(WorkflowValidationError) as info:
        step(**options)
    assert named in str(info.value) and "@step" in str(info.value)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"backoff": float("nan")}, "backoff=nan"),
        ({"backoff": -1}, "backoff=-1"),
        ({"backoff_factor": 0.5}, "backoff_factor=0.5"),
        ({"max_backoff": float("inf")}, "max_backoff=inf"),
        ({"max_attempts": 0}, "max_attempts=0"),
        ({"max_attempts": 2.5}, "max_attempts=2.5"),
        ({"retry_on": ValueError}, "retry_on="),
        ({"retry_on": ("x",)}, "retry_on=('x',)"),
    ],
)
def test_retry_policy_values_out_of_range_are_rejected_naming_the_option(
    options: dict[str, Any], named: str
) -> None:
    from stepgraph import RetryPolicy

    with pytest.raises(WorkflowValidationError) as info:
        RetryPolicy(**options)
    assert named in str(info.value) and "RetryPolicy" in str(info.value)


def test_an_async_generator_step_is_rejected_by_validate_naming_it() -> None:
    class Yields(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:  # type: ignore[misc]
            yield StopEvent()

    with pytest.raises(WorkflowValidationError, match=r"step 'start'.*generator"):
        Yields().validate()


def test_a_static_method_step_is_rejected_for_what_it_is() -> None:
    class Static(Workflow):
        @step
        @staticmethod
        async def start(ev: StartEvent) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match=r"step 'start'.*staticmethod"):
        Static().validate()
