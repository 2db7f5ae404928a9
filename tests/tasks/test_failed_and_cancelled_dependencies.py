"""A task called with a dependency that failed and another that was cancelled.

A failure wins, in whatever order the arguments come, as it does in the Dag: the task
fails with ``DependencyFailed`` naming the failed dependency, and the flow still closes
(nothing is left pending behind it). Real thread pools and the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stepgraph.backends import InlineBackend, ThreadBackend
from stepgraph.tasks import DependencyFailed, TaskFailed, TaskFlow, TaskFuture


class Broken(ValueError):
    pass


def _boom() -> None:
    raise Broken("no input")


async def _ended(flow: TaskFlow) -> tuple[TaskFuture, TaskFuture]:
    """A task that failed (on a thread) and one that was cancelled (on the loop)."""
    boom = flow.function_task(_boom)
    never = asyncio.Event()

    @flow.function_task(backend="inline")
    async def hang() -> None:
        await never.wait()

    failed = boom()
    await asyncio.wait([failed])
    cancelled = hang()
    assert cancelled.cancel()
    await asyncio.wait([cancelled])
    assert failed.exception() is not None and cancelled.cancelled()
    return failed, cancelled


def _flow() -> TaskFlow:
    return TaskFlow(backends={"default": ThreadBackend(2), "inline": InlineBackend()})


@pytest.mark.parametrize(
    "arguments",
    [
        lambda failed, cancelled: ((failed, cancelled), {}),
        lambda failed, cancelled: ((cancelled, failed), {}),
        lambda failed, cancelled: ((), {"a": [failed], "b": cancelled}),
        lambda failed, cancelled: (([{"x": failed}, cancelled], None), {}),
    ],
    ids=["failed-then-cancelled", "cancelled-then-failed", "keywords", "nested"],
)
async def test_a_failed_dependency_wins_over_a_cancelled_one_in_any_order(
    arguments: Any,
) -> None:
    ran: list[object] = []
    async with _flow() as flow:
        failed, cancelled = await _ended(flow)

        @flow.function_task
        def both(a: object = None, b: object = None) -> None:
            ran.append((a, b))

        args, kwargs = arguments(failed, cancelled)
        future = both(*args, **kwargs)  # no KeyError: a future, failed at once
        assert future.done()
        with pytest.raises(DependencyFailed) as caught:
            await future
        await flow.wait()  # nothing is left pending: the flow can close
        assert not flow._futures and not flow._waiting
    assert ran == []
    error = caught.value
    assert error.task == "both" and error.dependency == "_boom"
    assert f"'both' ({future.uid})" in str(error) and f"({failed.uid}) failed" in str(error)
    assert isinstance(error.__cause__, TaskFailed)
    assert type(error.__cause__.__cause__) is Broken


async def test_a_block_calling_a_task_on_failed_and_cancelled_dependencies_fails() -> None:
    async with _flow() as flow:
        failed, cancelled = await _ended(flow)
        both = flow.function_task(lambda a, b: (a, b))

        @flow.block
        async def stage() -> object:
            return await both(failed, cancelled)

        block = stage()  # nobody awaits it: leaving the flow must still end
        await asyncio.wait([block])
        assert not flow._futures  # nothing is left pending behind it
    with pytest.raises(DependencyFailed) as caught:
        block.result()
    assert caught.value.dependency == "_boom"
    assert type(caught.value.__cause__.__cause__) is Broken  # type: ignore[union-attr]


async def test_a_failed_relay_dependency_chains_the_root_failure() -> None:
    async with _flow() as flow:
        failed, cancelled = await _ended(flow)
        relay = flow.function_task(lambda x: x)(failed)  # fails with DependencyFailed
        both = flow.function_task(lambda a, b: None)
        with pytest.raises(DependencyFailed) as caught:
            await both(relay, cancelled)
    assert caught.value.dependency == "<lambda>"
    assert caught.value.__cause__ is failed.exception()  # the root, not the relay
