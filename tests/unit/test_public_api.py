"""The public API is exactly the pinned names, each importable, and the errors form one tree.

Changing ``stepgraph.__all__`` or ``stepgraph.errors.__all__`` is an API change:
these tests fail until the expected lists below are updated with it.
"""

from __future__ import annotations

import importlib

import pytest

import stepgraph
import stepgraph.errors

PUBLIC_NAMES = [
    "Case",
    "Context",
    "Default",
    "Event",
    "Executor",
    "ExecutorCompletedEvent",
    "ExecutorInvokedEvent",
    "FunctionExecutor",
    "GraphWorkflow",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "Limiter",
    "RequestInfoEvent",
    "RetryPolicy",
    "RunObserver",
    "RunResult",
    "StartEvent",
    "StopEvent",
    "SuperstepCompletedEvent",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowContext",
    "WorkflowEvent",
    "WorkflowExecutor",
    "WorkflowHandler",
    "WorkflowOutputEvent",
    "executor",
    "get_context",
    "handler",
    "response_handler",
    "step",
]

ERROR_NAMES = [
    "BackendError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigurationError",
    "DependencyFailed",
    "InvalidResponseError",
    "InvalidStartEventError",
    "InvalidStepResultError",
    "KernelError",
    "MissingExtraError",
    "RecordedError",
    "ReplayDivergenceError",
    "RequestAnsweredError",
    "RequestNotFoundError",
    "ResourceError",
    "RunFinishedError",
    "RunIdConflictError",
    "RunLockedError",
    "RunNotFoundError",
    "SerializationError",
    "StepTimeoutError",
    "StepgraphError",
    "StoreError",
    "StoreUnavailableError",
    "SuperstepLimitExceeded",
    "TaskFailed",
    "UnknownStepError",
    "UnroutableEventError",
    "WaitForEventTimeoutError",
    "WorkerDiedError",
    "WorkflowCancelled",
    "WorkflowRuntimeError",
    "WorkflowStalled",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
]


def test_stepgraph_exports_exactly_the_pinned_names_in_sorted_order() -> None:
    assert stepgraph.__all__ == sorted(stepgraph.__all__)
    assert sorted(stepgraph.__all__) == PUBLIC_NAMES


def test_stepgraph_errors_exports_exactly_the_pinned_names_in_sorted_order() -> None:
    assert stepgraph.errors.__all__ == sorted(stepgraph.errors.__all__)
    assert sorted(stepgraph.errors.__all__) == ERROR_NAMES


@pytest.mark.parametrize(
    ("module", "name"),
    [("stepgraph", n) for n in PUBLIC_NAMES] + [("stepgraph.errors", n) for n in ERROR_NAMES],
)
def test_every_pinned_name_imports_and_is_defined(module: str, name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module} import {name}", namespace)
    assert namespace[name] is getattr(importlib.import_module(module), name)
    assert getattr(namespace[name], "__doc__", None), f"{module}.{name} has no docstring"


def test_the_issue_s_import_lines_work_as_written() -> None:
    from stepgraph import (  # noqa: F401
        Context,
        Event,
        HumanResponseEvent,
        InputRequiredEvent,
        RetryPolicy,
        StartEvent,
        StopEvent,
        Workflow,
        WorkflowHandler,
        get_context,
        step,
    )
    from stepgraph.errors import (  # noqa: F401
        StepgraphError,
        SuperstepLimitExceeded,
        WorkflowCancelled,
        WorkflowStalled,
        WorkflowTimeoutError,
        WorkflowValidationError,
    )


def test_every_error_class_derives_from_stepgraph_error() -> None:
    # Errors raised by step code itself are re-raised unchanged (not wrapped), so they are not
    # in this module; everything stepgraph raises on its own account is.
    for name in ERROR_NAMES:
        error = getattr(stepgraph.errors, name)
        assert isinstance(error, type) and issubclass(error, Exception), name
        assert issubclass(error, stepgraph.errors.StepgraphError), name


def test_every_exception_class_defined_in_errors_is_exported() -> None:
    defined = {
        name
        for name, value in vars(stepgraph.errors).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == "stepgraph.errors"
    }
    assert defined == set(ERROR_NAMES)


def test_timeout_errors_are_also_builtin_timeout_errors() -> None:
    errors = stepgraph.errors
    for error in (errors.WorkflowTimeoutError, errors.StepTimeoutError):
        assert issubclass(error, TimeoutError)
    assert issubclass(errors.WaitForEventTimeoutError, errors.WorkflowTimeoutError)


class Boom(stepgraph.Workflow):
    @stepgraph.step
    async def explode(self, ev: stepgraph.StartEvent) -> stepgraph.StopEvent:
        raise KeyError("missing")


async def test_a_step_s_own_exception_is_re_raised_as_itself_outside_the_tree() -> None:
    with pytest.raises(KeyError) as caught:
        await Boom().run()
    assert not isinstance(caught.value, stepgraph.errors.StepgraphError)
    assert any("explode" in note for note in getattr(caught.value, "__notes__", []))


class Graphless(stepgraph.Executor):
    @stepgraph.handler
    async def on_text(self, text: str, ctx: stepgraph.WorkflowContext) -> None:
        await ctx.yield_output(text)


async def test_contexts_and_handlers_can_be_weakly_referenced_for_caches_and_leak_checks() -> None:
    import weakref

    step_handler = Boom().run()
    graph_handler = stepgraph.WorkflowBuilder(start=Graphless(id="g")).build().run("x")
    for handler in (step_handler, graph_handler):
        assert weakref.ref(handler)() is handler
        assert weakref.ref(handler.ctx)() is handler.ctx
    with pytest.raises(KeyError):
        await step_handler
    assert (await graph_handler).outputs == ["x"]


def test_the_task_dag_issue_s_import_lines_work_as_written() -> None:
    from stepgraph.backends import (  # noqa: F401
        DaskBackend,
        InlineBackend,
        NoopBackend,
        ProcessBackend,
        SubprocessBackend,
        ThreadBackend,
    )
    from stepgraph.errors import StepgraphError
    from stepgraph.tasks import DependencyFailed, TaskFailed, TaskFlow  # noqa: F401

    assert issubclass(TaskFailed, StepgraphError) and issubclass(DependencyFailed, StepgraphError)
