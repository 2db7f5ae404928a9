"""Replaying a journal: folding its ticks into a fresh run state, checking every step.

Replay runs the kernel only: no step body, condition or reducer runs, and no clock is
read. Where a record carries the commands the kernel produced when the run was live,
replay checks that it produces the same ones now; the first difference raises
:class:`~stepgraph.errors.ReplayDivergenceError` naming the tick and what differs. So a
change to the kernel's semantics shows as a failing replay of an old journal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from ..core import RunState, Tick, apply
from ..errors import KernelError, ReplayDivergenceError
from ..runtime.launch import RunOptions
from ..runtime.plan import RunPlan
from .codec import encode_command
from .records import JournalRecord

__all__ = ["replay"]


class Replayable(Protocol):
    """A workflow whose runs can be replayed: ``Workflow`` objects and built graphs."""

    def _stepgraph_plan(self) -> RunPlan: ...
    @property
    def options(self) -> RunOptions: ...


def fresh_state(workflow: Replayable) -> RunState:
    """The state a run of ``workflow`` starts from (before its first tick)."""
    options = workflow.options
    return RunState(
        workflow._stepgraph_plan().graph,
        mode=options.mode,
        max_supersteps=options.max_supersteps,
        max_concurrency=options.max_concurrency,
        timeout=options.timeout,
    )


def replay(
    workflow: Replayable,
    records: Iterable[JournalRecord | Tick],
    *,
    state: RunState | None = None,
) -> RunState:
    """Fold ``records`` into a fresh state of ``workflow`` (or into ``state``) and return it.

    Raises:
        ReplayDivergenceError: a tick the kernel refuses, or commands different from those
            the record holds; the message names the tick's position and kind.
    """
    state = fresh_state(workflow) if state is None else state
    for position, item in enumerate(records):
        tick = item.tick if isinstance(item, JournalRecord) else item
        try:
            commands = apply(state, tick)
        except KernelError as exc:
            raise ReplayDivergenceError(
                f"replay diverged at tick {position} ({tick.kind}): the kernel refused it: {exc}",
                position=position,
            ) from exc
        if isinstance(item, JournalRecord):
            expected = [encode_command(c) for c in item.commands]
            got = [encode_command(c) for c in commands]
            if got != expected:
                raise ReplayDivergenceError(
                    f"replay diverged at tick {position} ({tick.kind}): the journal recorded "
                    f"{_kinds(expected)} but the kernel now produces {_kinds(got)}; first "
                    f"difference: {_first_difference(expected, got)}",
                    position=position,
                )
    return state


def _kinds(commands: list[dict[str, Any]]) -> str:
    return "[" + ", ".join(str(c.get("kind")) for c in commands) + "]"


def _first_difference(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> str:
    for index, (want, have) in enumerate(zip(expected, got, strict=False)):
        if want != have:
            keys = [k for k in {*want, *have} if want.get(k) != have.get(k)]
            return f"command {index} ({want.get('kind')}) differs in {sorted(keys)}"
    return f"{len(expected)} commands recorded, {len(got)} produced"
