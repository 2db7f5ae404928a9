"""The task flow's core, checked over random DAGs, claims, outcomes and cancellations.

Hypothesis draws tasks (each with 0-3 dependencies among the earlier ones and a claim
on 0-2 resources) and a script interleaving: adding the next task, finishing a running
one (well or not), and cancelling one that has not finished. A model of the shell
drives the :class:`~stepgraph.tasks.dag.Dag` as ``TaskFlow`` does (only unfinished
dependencies are passed; a finished one that failed or was cancelled is named).

Checked after every step: a task starts only after each of its dependencies finished
well; the claims of running tasks never exceed the slots; every task ends exactly once
(it ran, failed through a dependency, or was cancelled), a failure names a direct
dependency that failed, a cancellation one that was cancelled; and nothing waits for
slots while they are free, so a flow with nothing running has nothing left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepgraph.tasks.dag import CANCEL, FAIL, START, Dag

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

CAPACITY = {"cpu": 3, "gpu": 1}


@dataclass
class Spec:
    deps: list[int]
    claims: dict[str, int]


@st.composite
def flows(draw: st.DrawFn) -> tuple[list[Spec], list[tuple[str, int, bool]]]:
    n = draw(st.integers(1, 14))
    specs = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        claims = draw(
            st.dictionaries(
                st.sampled_from(sorted(CAPACITY)),
                st.integers(0, 3),
                max_size=2,
            ).map(lambda c: {k: min(v, CAPACITY[k]) for k, v in c.items()})
        )
        specs.append(Spec(deps, claims))
    script = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["add", "finish", "cancel"]), st.integers(0, 50), st.booleans()
            ),
            max_size=60,
        )
    )
    return specs, script


@dataclass
class Model:
    """The shell's view: each task's state, as its future would show it."""

    dag: Dag
    specs: list[Spec]
    state: dict[int, str] = field(default_factory=dict)  # waiting running ok failed cancelled
    abandoned: set[int] = field(default_factory=set)  # cancelled while running
    ends: dict[int, int] = field(default_factory=dict)

    def done(self, task: int) -> bool:
        return self.state[task] in ("ok", "failed", "cancelled")

    def end(self, task: int, how: str) -> None:
        assert task not in self.ends or how == "ran", f"task {task} ended twice"
        self.ends[task] = self.ends.get(task, 0) + 1
        assert self.ends[task] == 1, f"task {task} ended twice"
        self.state[task] = how

    def carry(self, commands: list[tuple[int, int, int]]) -> None:
        for kind, task, cause in commands:
            assert self.state[task] == "waiting", (kind, task, self.state[task])
            if kind == START:
                for dep in self.specs[task].deps:
                    assert self.state[dep] == "ok", f"task {task} started before {dep} was done"
                self.state[task] = "running"
            elif kind == FAIL:
                assert cause in self.specs[task].deps
                assert self.state[cause] == "failed"
                self.end(task, "failed")
            elif kind == CANCEL:
                assert cause in self.specs[task].deps
                assert self.state[cause] == "cancelled"
                self.end(task, "cancelled")

    def add(self, task: int) -> None:
        spec = self.specs[task]
        self.state[task] = "waiting"
        pending: list[int] = []
        failed = cancelled = -1
        for dep in spec.deps:
            if not self.done(dep):
                pending.append(dep)
            elif self.state[dep] == "cancelled":
                cancelled = dep
            elif self.state[dep] == "failed":
                failed = dep
        claims = self.dag.claims(spec.claims, f"task {task}")
        self.carry(self.dag.add(task, pending, claims, failed=failed, cancelled=cancelled))

    def finish(self, task: int, ok: bool) -> None:
        if task in self.abandoned:
            self.abandoned.discard(task)
            self.carry(self.dag.finished(task, False))
            return
        self.end(task, "ok" if ok else "failed")
        self.carry(self.dag.finished(task, ok))

    def cancel(self, task: int) -> None:
        running = self.state[task] == "running"
        self.end(task, "cancelled")
        if running:
            self.abandoned.add(task)
        self.carry(self.dag.cancel(task))

    def check_slots(self) -> None:
        used = dict.fromkeys(CAPACITY, 0)
        for task, state in self.state.items():
            if state == "running" or task in self.abandoned:
                for name, count in self.specs[task].claims.items():
                    used[name] += count
        for name, count in used.items():
            assert count <= CAPACITY[name], f"{name}: {count} claimed of {CAPACITY[name]}"


@SETTINGS
@given(flows())
def test_tasks_start_after_their_dependencies_within_their_slots_and_end_once(
    flow: tuple[list[Spec], list[tuple[str, int, bool]]],
) -> None:
    specs, script = flow
    model = Model(Dag(CAPACITY), specs)
    added = 0
    for action, pick, ok in script:
        running = sorted(t for t, s in model.state.items() if s == "running") + sorted(
            model.abandoned
        )
        open_ = sorted(t for t, s in model.state.items() if s in ("waiting", "running"))
        if action == "add" and added < len(specs):
            model.add(added)
            added += 1
        elif action == "finish" and running:
            model.finish(running[pick % len(running)], ok)
        elif action == "cancel" and open_:
            model.cancel(open_[pick % len(open_)])
        model.check_slots()
    while added < len(specs):
        model.add(added)
        added += 1
        model.check_slots()
    while True:  # drain: finish what runs, well
        running = sorted(t for t, s in model.state.items() if s == "running")
        running += sorted(model.abandoned)
        if not running:
            break
        model.finish(running[0], True)
        model.check_slots()
    assert not model.dag.tasks, f"left in the core: {sorted(model.dag.tasks)}"
    assert all(model.ends.get(t) == 1 for t in range(len(specs)))
    assert model.dag.free == CAPACITY


def test_cancelling_the_first_queued_task_starts_the_one_behind_that_fits() -> None:
    dag = Dag({"cpu": 4})
    four, three = dag.claims({"cpu": 4}, "a"), dag.claims({"cpu": 3}, "b")
    assert dag.add(0, (), dag.claims({"cpu": 1}, "r")) == [(START, 0, -1)]  # holds 1 of 4
    assert dag.add(1, (), four) == []  # needs all 4: queued
    assert dag.add(2, (), three) == []  # 3 would fit, but waits behind it
    assert dag.cancel(1) == [(START, 2, -1)]
