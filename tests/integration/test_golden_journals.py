"""Replay is exact: golden journals, journal files, and divergence named at its tick.

``tests/golden/*.jsonl`` are runs recorded once (``python -m tests.golden.record``): their
ticks, the commands each produced, and the kernel state at the end. Replaying them, in
this process and in a fresh one, must produce the same commands tick by tick and the same
final state (shared state, open requests and armed timers included): a change to the
kernel's semantics shows as a failing replay here, and the golden files' diff shows what
changed. Live runs written to a journal file and read back replay to their live state.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from stepgraph import RunObserver
from stepgraph.core import (
    TICK_TYPES,
    RunState,
    RunStatus,
    StartStep,
    StepCompleted,
)
from stepgraph.errors import ReplayDivergenceError, SerializationError
from stepgraph.journal import Journal, JournalRecord, read_journal, replay
from stepgraph.runtime.observers import RunInfo
from tests.golden import files
from tests.golden.flows import FLOWS

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = sorted(files.HERE.glob("*.jsonl"))


def test_there_is_a_golden_journal_for_every_flow_and_a_flow_for_every_journal() -> None:
    assert sorted(path.stem for path in GOLDEN) == sorted(FLOWS)
    assert len(GOLDEN) >= 8


def test_the_golden_journals_cover_modes_styles_and_every_kind_of_tick() -> None:
    kinds: set[str] = set()
    modes: set[str] = set()
    styles: set[str] = set()
    statuses: set[str] = set()
    for path in GOLDEN:
        header, records, snapshot = files.read(path)
        kinds.update(record.tick.kind for record in records)
        workflow = FLOWS[header["flow"]].make(Journal())
        modes.add(workflow.options.mode.value)
        styles.add(workflow._stepgraph_plan().graph.node_kind)
        statuses.add(files.decode_snapshot(snapshot)["status"])
    assert modes == {"superstep", "async"}
    assert styles == {"step", "executor"}
    assert statuses == {"finished", "failed", "cancelled"}
    missing = {cls.kind for cls in TICK_TYPES} - kinds - {"run_aborted"}  # type: ignore[attr-defined]
    assert missing == set(), f"no golden journal has a {sorted(missing)} tick"


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_a_golden_journal_replays_tick_by_tick_to_its_recorded_state(path: Path) -> None:
    recorded, replayed = files.replay_file(path)  # raises ReplayDivergenceError on a difference
    assert replayed == recorded


def test_the_golden_journals_replay_the_same_in_a_fresh_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.golden.check", *map(str, GOLDEN)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [word for p in GOLDEN for word in ("ok", p.stem)]


def _records(name: str) -> tuple[object, list[JournalRecord]]:
    header, records, _ = files.read(files.path_of(name))
    return FLOWS[header["flow"]].make(Journal()), records


def test_a_journal_whose_commands_differ_raises_replay_divergence_naming_the_tick() -> None:
    workflow, records = _records("steps_retry_backoff")
    position = next(i for i, r in enumerate(records) if r.tick.kind == "attempt_failed")
    changed = list(records)
    changed[position] = dataclasses.replace(records[position], commands=())
    with pytest.raises(ReplayDivergenceError) as info:
        replay(workflow, changed)  # type: ignore[arg-type]
    assert info.value.position == position
    assert f"tick {position} (attempt_failed)" in str(info.value)
    assert "arm_timer" in str(info.value)


def test_a_journal_with_a_tick_the_kernel_refuses_raises_replay_divergence() -> None:
    workflow, records = _records("steps_fan_in_superstep")
    position = next(i for i, r in enumerate(records) if isinstance(r.tick, StepCompleted))
    bogus = dataclasses.replace(records[position], tick=StepCompleted(invocation=99))
    changed = [*records[:position], bogus, *records[position + 1 :]]
    with pytest.raises(ReplayDivergenceError, match=rf"tick {position} \(step_completed\).*99"):
        replay(workflow, changed)  # type: ignore[arg-type]


def test_a_journal_missing_a_tick_diverges_where_the_kernel_first_disagrees() -> None:
    workflow, records = _records("graph_fan_in_reducers_async")
    position = next(
        i for i, r in enumerate(records) if any(isinstance(c, StartStep) for c in r.commands)
    )
    changed = [*records[:position], *records[position + 1 :]]
    with pytest.raises(ReplayDivergenceError) as info:
        replay(workflow, changed)  # type: ignore[arg-type]
    assert info.value.position >= position


class FinalState(RunObserver):
    """Keeps the kernel state of the run it watched, as it was when the run ended."""

    state: RunState | None = None

    def run_ended(
        self, run: RunInfo, status: RunStatus, result: object, error: BaseException | None
    ) -> None:
        self.state = run.state


@pytest.mark.parametrize("name", sorted(FLOWS))
async def test_a_live_run_replayed_from_its_journal_file_gives_its_live_state(
    name: str, tmp_path: Path
) -> None:
    flow = FLOWS[name]
    journal, final = Journal(tmp_path / "runs.jsonl"), FinalState()
    workflow = flow.make(journal)
    observers = (*workflow.options.observers, final)
    workflow.options = dataclasses.replace(workflow.options, observers=observers)
    handler = await flow.play(workflow, flow.start())
    assert final.state is not None
    from_file = read_journal(tmp_path / "runs.jsonl", handler.run_id)
    assert [r.tick.kind for r in from_file] == [
        r.tick.kind for r in journal.records(handler.run_id)
    ]
    replayed = replay(flow.make(Journal()), from_file)
    assert files.snapshot_json(replayed) == files.snapshot_json(final.state)
    assert replayed.snapshot() == final.state.snapshot()  # tracebacks, events and all


def test_a_journal_file_line_that_is_not_a_record_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"run_id": "r", "seq": 0, "tick": {"kind": "no_such_tick"}, "commands": []}\n')
    with pytest.raises(SerializationError, match=r"broken.jsonl, line 1.*no_such_tick"):
        read_journal(path)
