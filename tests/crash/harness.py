"""The crash-test driver: kill -9 a durable run at a point its seed picks, resume, classify.

For one seed (:func:`run_seed`):

1. :func:`plan_seed` derives everything from ``random.Random(seed)``: the store, the mode,
   the flow, and where to kill: after a random line (each step prints one as it starts,
   so this is a random superstep), or just after a step wrote a large value (a few lines
   later, sometimes; the kill then races the checkpoint write), or inside a large commit
   (the child holds there, see ``--hold`` in :mod:`tests.crash.child`);
2. a child process runs the flow on the store and prints its lines; reading them is the
   only synchronization: on the chosen line the parent sends SIGKILL, then reads what the
   child printed before it died (with PostgreSQL it also waits for the server to end the
   child's sessions, so that the run's lease is free; a statement of the child the
   server is still running is then cancelled, as if the kill had come before it);
3. this process checks the store is readable (SQLite: ``PRAGMA integrity_check`` too),
   counts the checkpoints, resumes the run with ``resume(run_id)`` and classifies:

   - **resumed**: ``resume`` returned a result;
   - **same result**: the one an uninterrupted run gives (computed without stepgraph);
   - **checkpoints lost**: the store has fewer checkpoints than the child's lines prove
     were committed (a step printing in superstep k proves that the checkpoints of
     supersteps 0 to k were committed: a step starts only once its barrier's checkpoint
     is), its checkpoints have a gap, or the resumed run ran again a step the child's
     lines prove had finished (superstep mode: a step of a superstep before the last one
     printed; async mode: a step before the last one printed by the same step name);
   - **corrupt**: the store could not be read, ``resume`` raised (``CheckpointError`` or
     anything else), the run's record or checkpoints are inconsistent, or the child
     failed by itself.

Nothing in the classification depends on the clock: the counts of a seed are the same
however fast its child ran (only where the kill lands in the child varies, which is what
the test is about). The one timeout is a guard against a resume that hangs (reported as
corrupt), far above what any resume takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stepgraph.stores import PostgresStore, SqliteStore, Store

from . import flows
from .child import pg_dsn, session_name
from .flows import FLOWS

__all__ = [
    "FLOW_WEIGHTS",
    "MODES",
    "STORES",
    "Killed",
    "Outcome",
    "Plan",
    "Tally",
    "Where",
    "crash_stores",
    "plan_seed",
    "run_seed",
    "run_seeds",
]

ROOT = Path(__file__).resolve().parents[2]
"""The repository: the child runs there, so that ``tests.crash`` is importable."""

MODES = ("superstep", "async")
STORES = ("sqlite", "postgres")
FLOW_WEIGHTS = {"relay": 3, "eager": 2, "big": 3, "ring": 2}
"""How often each flow is picked when a seed may pick any."""

RESUME_GUARD = 300.0
"""Seconds after which a resume is taken to hang (a guard, far above any real resume)."""


# -- what a seed decides -------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """One seed's crash.

    Attributes:
        seed: the seed everything comes from.
        store: ``sqlite`` or ``postgres``.
        mode: ``superstep`` or ``async``.
        flow: a name of :data:`tests.crash.flows.FLOWS`.
        kill: ``line`` (after the ``at``-th line), ``big`` (``delay`` lines after the line
            ``big <at>``, printed just before the large write of superstep ``at`` is
            committed) or ``held`` (inside the ``at``-th large commit).
        at: see ``kill``.
        delay: see ``kill``.
    """

    seed: int
    store: str
    mode: str
    flow: str
    kill: str
    at: int
    delay: int = 0

    @property
    def run_id(self) -> str:
        return f"crash-{self.seed}-{self.flow}-{self.mode}"

    def describe(self) -> str:
        where = {
            "line": f"after line {self.at}",
            "big": f"{self.delay} line(s) after 'big {self.at}'",
            "held": f"inside large commit {self.at}",
        }[self.kill]
        return f"seed {self.seed}: {self.flow} on {self.store}, {self.mode} mode, killed {where}"


def plan_seed(
    seed: int,
    stores: Sequence[str] = STORES,
    modes: Sequence[str] = MODES,
    flow_names: Sequence[str] = tuple(FLOW_WEIGHTS),
    kills: Sequence[str] | None = None,
) -> Plan:
    """What seed ``seed`` does, among ``stores``, ``modes``, flows and kinds of kill.

    ``kills`` limits the kinds of kill (``line``, ``big``, ``held``); the large-write
    kinds need the ``big`` flow. By default a ``big`` run is killed at a large write
    two times in three, and the other flows after a random line.
    """
    rng = random.Random(seed)
    store = rng.choice(list(stores))
    mode = rng.choice(list(modes))
    names = list(flow_names)
    flow = rng.choices(names, weights=[FLOW_WEIGHTS.get(name, 1) for name in names])[0]
    spec = FLOWS[flow]
    options = ["line", "big", "held"] if spec.big_at(seed) else ["line"]
    if kills is not None:
        options = [kill for kill in options if kill in kills]
        if not options:
            raise ValueError(f"seed {seed}: flow {flow!r} allows none of the kills {kills}")
    kill = rng.choice(options)
    if kill == "line":
        return Plan(seed, store, mode, flow, "line", rng.randint(1, spec.lines(seed)))
    if kill == "big":
        at = rng.choice(spec.big_at(seed))
        return Plan(seed, store, mode, flow, "big", at, rng.choice([0, 0, 1, 2]))
    return Plan(seed, store, mode, flow, "held", rng.randint(1, len(spec.big_at(seed))))


# -- where the runs are kept ---------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where the stores are: a directory for SQLite files, a PostgreSQL schema.

    Each seed has a SQLite file of its own (removed once checked); on PostgreSQL the
    seeds share the schema, each with its own run id.
    """

    sqlite_dir: Path | None = None
    pg_schema: str | None = None
    pg_dsn: str = field(default_factory=pg_dsn)

    def location(self, plan: Plan) -> str:
        if plan.store == "sqlite":
            if self.sqlite_dir is None:
                raise ValueError("no directory for SQLite stores")
            return str(self.sqlite_dir / f"{plan.run_id}.db")
        if self.pg_schema is None:
            raise ValueError("no PostgreSQL schema")
        return self.pg_schema

    def open(self, plan: Plan) -> Store:
        if plan.store == "sqlite":
            return SqliteStore(self.location(plan))
        return PostgresStore(self.pg_dsn, schema=self.location(plan))

    def discard(self, plan: Plan) -> None:
        """Remove the seed's SQLite files (PostgreSQL keeps its rows until the schema goes)."""
        if plan.store == "sqlite":
            base = self.location(plan)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(base + suffix)


@contextlib.contextmanager
def crash_stores(kinds: Sequence[str] = STORES) -> Iterator[tuple[Where, dict[str, str]]]:
    """A :class:`Where` for ``kinds`` and, by kind, why one cannot be used.

    A temporary directory for SQLite; a new PostgreSQL schema (dropped afterwards) when a
    server answers at ``tests.pg.PG_DSN``.
    """
    skipped: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        directory = None
        if "sqlite" in kinds:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sgcrash-")))
        schema = None
        if "postgres" in kinds:
            from tests.pg import pg_available, pg_schema

            reason = pg_available()
            if reason is None:
                schema = stack.enter_context(pg_schema())
            else:
                skipped["postgres"] = reason
        yield Where(sqlite_dir=directory, pg_schema=schema), skipped


# -- the child ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Killed:
    """What the child did: its lines (those printed before it died included), its end.

    Attributes:
        lines: every line it printed.
        killed: the parent sent SIGKILL (else it ended by itself before the kill point).
        returncode: its exit status (``-9`` when the kill ended it).
        stderr: what it wrote to stderr.
    """

    lines: tuple[str, ...]
    killed: bool
    returncode: int
    stderr: str

    @property
    def finished(self) -> bool:
        """The run completed in the child (it printed its result) before the kill."""
        return any(line.startswith("result ") for line in self.lines)

    @property
    def failed(self) -> bool:
        """The child ended by itself without a result, or wrote a traceback."""
        if self.returncode not in (0, -signal.SIGKILL):
            return True
        return (self.returncode == 0 and not self.finished) or "Traceback" in self.stderr


def _trigger(plan: Plan) -> Callable[[list[str]], bool]:
    """Whether to kill now, given the lines read so far (the last one just read)."""
    if plan.kill == "line":
        return lambda lines: len(lines) >= plan.at
    if plan.kill == "held":
        return lambda lines: lines[-1].startswith("held ")
    marker = f"big {plan.at}"

    def after_big(lines: list[str]) -> bool:
        if marker not in lines:
            return False
        return len(lines) - 1 - lines.index(marker) >= plan.delay

    return after_big


def kill_child(plan: Plan, where: Where) -> Killed:
    """Run the seed's child and SIGKILL it at the planned line."""
    command = [
        sys.executable,
        "-m",
        "tests.crash.child",
        plan.store,
        where.location(plan),
        plan.run_id,
        plan.mode,
        plan.flow,
        str(plan.seed),
    ]
    if plan.kill == "held":
        command += ["--hold", str(plan.at)]
    env = dict(os.environ, STEPGRAPH_TEST_PG=where.pg_dsn, PYTHONUNBUFFERED="1")
    trigger = _trigger(plan)
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        lines: list[str] = []
        killed = False
        try:
            while line := child.stdout.readline():
                lines.append(line.rstrip("\n"))
                if trigger(lines):
                    child.send_signal(signal.SIGKILL)
                    killed = True
                    break
            lines += child.stdout.read().splitlines()  # printed before it died
        finally:
            if child.poll() is None and not killed:
                child.kill()
            returncode = child.wait()
            child.stdout.close()
            child.stdin.close()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if plan.store == "postgres":
        _end_sessions(where.pg_dsn, child.pid)
    return Killed(tuple(lines), killed, returncode, stderr)


def _end_sessions(dsn: str, pid: int) -> None:
    """Wait until the server has ended the sessions of dead child ``pid`` (its lease too)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid, 60000) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (session_name(pid),),
        )


# -- checking the resumed run --------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one seed went.

    Attributes:
        plan: what the seed did.
        resumed: ``resume`` returned a result.
        same: that result is the one of an uninterrupted run.
        lost: checkpoints (or finished steps) the child's lines prove committed were lost.
        corrupt: the store was unreadable or inconsistent, resume raised, or the child
            failed by itself.
        finished: the child completed the run before the kill landed.
        in_large_write: the kill landed during a large write: inside the held commit, or
            after ``big <at>`` and before the next superstep started.
        detail: what went wrong (empty when nothing did).
    """

    plan: Plan
    resumed: bool = False
    same: bool = False
    lost: bool = False
    corrupt: bool = False
    finished: bool = False
    in_large_write: bool = False
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Resumed with the same result; nothing lost, nothing corrupt."""
        return self.resumed and self.same and not self.lost and not self.corrupt


def _steps(lines: Sequence[str]) -> list[tuple[int, str]]:
    """The ``(superstep, name)`` of every ``step <superstep> <name>`` line."""
    steps = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "step":
            steps.append((int(parts[1]), parts[2]))
    return steps


def _finished_steps(mode: str, seen: list[tuple[int, str]]) -> Callable[[int, str], bool]:
    """Which steps the child's lines prove had finished (and were committed) when it died.

    Superstep mode: every step of a superstep before the last one printed (that one
    started after their barrier's checkpoint). Async mode: a step before the last one
    printed by the same step name (steps run one at a time per name and start only once
    the previous completion is committed), and the first step once any other printed.
    """
    if not seen:
        return lambda superstep, name: False
    if mode == "superstep":
        last = max(superstep for superstep, _ in seen)
        return lambda superstep, name: superstep < last
    latest: dict[str, int] = {}
    for superstep, name in seen:
        latest[name] = max(latest.get(name, -1), superstep)
    beyond_first = any(superstep > 0 for superstep, _ in seen)
    return lambda superstep, name: (
        (superstep == 0 and beyond_first) or (superstep < latest.get(name, -1))
    )


def _in_large_write(plan: Plan, lines: Sequence[str]) -> bool:
    if plan.kill == "held":
        return any(line.startswith("held ") for line in lines)
    if plan.kill != "big":
        return False
    marker = f"big {plan.at}"
    if marker not in lines:
        return False
    later = _steps(lines[lines.index(marker) + 1 :])
    return not any(superstep > plan.at for superstep, _ in later)


def _integrity(path: str) -> str:
    """SQLite's ``PRAGMA integrity_check`` of the file (``ok`` when sound)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(row[0]) for row in rows)


class _Lines:
    """The lines the flows report in this process, by run id (while a seed is resumed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, list[str]] = {}

    def __call__(self, run_id: str, line: str) -> None:
        with self._lock:
            lines = self._runs.get(run_id)
            if lines is not None:
                lines.append(line)

    @contextlib.contextmanager
    def collect(self, run_id: str) -> Iterator[list[str]]:
        lines: list[str] = []
        with self._lock:
            self._runs[run_id] = lines
        flows.set_reporter(self)
        try:
            yield lines
        finally:
            with self._lock:
                self._runs.pop(run_id, None)


_LINES = _Lines()


async def check(plan: Plan, where: Where, child: Killed) -> Outcome:
    """Read the store the killed child left, resume the run here, classify the outcome."""
    spec = FLOWS[plan.flow]
    outcome = Outcome(
        plan, finished=child.finished, in_large_write=_in_large_write(plan, child.lines)
    )

    def bad(what: str, **flags: Any) -> Outcome:
        detail = f"{outcome.detail}; {what}" if outcome.detail else what
        return replace(outcome, detail=detail, **flags)

    if child.failed:
        tail = child.stderr.strip().splitlines()[-12:]
        return bad(f"the child failed (exit {child.returncode}): " + "\n".join(tail), corrupt=True)
    seen = _steps(child.lines)
    store = where.open(plan)
    try:
        try:
            if plan.store == "sqlite":
                verdict = _integrity(where.location(plan))
                if verdict != "ok":
                    raise RuntimeError(f"PRAGMA integrity_check: {verdict}")
            before = await store.list_checkpoints(plan.run_id)
            record = await store.get_run(plan.run_id)
            if record is None:
                raise RuntimeError(f"the store has no run {plan.run_id!r}")
            if not record.status.final and await store.load(plan.run_id) is None:
                raise RuntimeError("the run has no checkpoint to resume from")
        except Exception as exc:
            return bad(f"the store is unreadable after the kill: {exc!r}", corrupt=True)
        committed = 1
        if plan.mode == "superstep" and seen:
            committed = max(superstep for superstep, _ in seen) + 1
        if len(before) < committed:
            outcome = bad(
                f"the child's lines prove {committed} checkpoints committed; the store has "
                f"{len(before)}",
                lost=True,
            )
        with _LINES.collect(plan.run_id) as redone:
            try:
                workflow = spec.build(store, plan.mode)
                value = await asyncio.wait_for(workflow.resume(plan.run_id), RESUME_GUARD)
            except Exception as exc:
                return bad(f"resume raised {exc!r}", corrupt=True)
        outcome = replace(outcome, resumed=True)
        got, expected = spec.outcome(value), spec.expected(plan.seed)
        if got == expected:
            outcome = replace(outcome, same=True)
        else:
            outcome = bad(f"resumed to {_short(got)}, not {_short(expected)}")
        finished = _finished_steps(plan.mode, seen)
        again = [(s, n) for s, n in _steps(redone) if finished(s, n)]
        if again:
            outcome = bad(f"resume ran again finished steps {again}", lost=True)
        try:
            after = await store.list_checkpoints(plan.run_id)
            final = await store.get_run(plan.run_id)
        except Exception as exc:
            return bad(f"the store is unreadable after the resume: {exc!r}", corrupt=True)
        if final is None or final.status != "completed":
            outcome = bad(f"after the resume the run's record is {final!r}", corrupt=True)
        seqs = [cp.seq for cp in after]
        if seqs != list(range(len(after))):
            outcome = bad(f"checkpoint seqs {seqs}", corrupt=True)
        if plan.mode == "superstep":
            supersteps = [cp.superstep for cp in after]
            if supersteps != list(range(flows.LAST_SUPERSTEP + 1)):
                gap = len(set(supersteps)) == len(supersteps)
                outcome = bad(f"checkpoints of supersteps {supersteps}", lost=gap, corrupt=not gap)
        return outcome
    finally:
        if isinstance(store, PostgresStore):
            await store.aclose()


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= 200 else text[:200] + "..."


def run_seed(plan: Plan, where: Where) -> Outcome:
    """Kill the seed's child, then resume and check here; remove its SQLite file after."""
    try:
        child = kill_child(plan, where)
        return asyncio.run(check(plan, where, child))
    except Exception as exc:  # the harness itself: reported, not raised, to go on
        return Outcome(plan, corrupt=True, detail=f"the harness failed: {exc!r}")
    finally:
        where.discard(plan)


# -- many seeds -----------------------------------------------------------------------------------


COLUMNS = ("seeds", "resumed", "same result", "checkpoints lost", "corrupt")


@dataclass
class Tally:
    """The outcomes of many seeds, and how long they took."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    jobs: int = 1
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every seed resumed with the same result, nothing lost, nothing corrupt."""
        return all(outcome.ok for outcome in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @staticmethod
    def counts(outcomes: Sequence[Outcome]) -> tuple[int, ...]:
        return (
            len(outcomes),
            sum(o.resumed for o in outcomes),
            sum(o.resumed and o.same for o in outcomes),
            sum(o.lost for o in outcomes),
            sum(o.corrupt for o in outcomes),
        )

    def table(self) -> str:
        """The counts by store and mode, a total, how the kills landed, the time."""
        groups: dict[tuple[str, str], list[Outcome]] = {}
        for outcome in self.outcomes:
            groups.setdefault((outcome.plan.store, outcome.plan.mode), []).append(outcome)
        rows = [
            (store, mode, *self.counts(group)) for (store, mode), group in sorted(groups.items())
        ]
        rows.append(("total", "", *self.counts(self.outcomes)))
        head = ("store", "mode", *COLUMNS)
        widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
        lines = []
        for n, row in enumerate([head, *rows]):
            if n == len(rows):  # the total
                lines.append("  ".join("-" * width for width in widths))
            lines.append(
                "  ".join(
                    str(cell).ljust(width) if i < 2 else str(cell).rjust(width)
                    for i, (cell, width) in enumerate(zip(row, widths, strict=True))
                )
            )
        kills = {
            kind: [o for o in self.outcomes if o.plan.kill == kind]
            for kind in ("line", "big", "held")
        }
        flows_used = {name: sum(o.plan.flow == name for o in self.outcomes) for name in FLOWS}
        lines.append("")
        lines.append(
            "flows: " + ", ".join(f"{name} {count}" for name, count in flows_used.items() if count)
        )
        held = {
            store: sum(o.plan.store == store and o.in_large_write for o in kills["held"])
            for store in STORES
        }
        lines.append(
            f"kills: {len(kills['line'])} after a random step line; {len(kills['big'])} just "
            f"after a step wrote a large value ({sum(o.in_large_write for o in kills['big'])} "
            f"of them before the next superstep started); {len(kills['held'])} during a large "
            f"commit ({held['sqlite']} in SQLite's open transaction, {held['postgres']} as "
            f"PostgreSQL's statement went out)"
        )
        lines.append(
            f"runs that completed before the kill landed: {sum(o.finished for o in self.outcomes)}"
        )
        for kind, reason in self.skipped.items():
            lines.append(f"skipped {kind}: {reason}")
        per = self.seconds / len(self.outcomes) if self.outcomes else 0.0
        lines.append(f"time: {self.seconds:.1f} s ({per:.2f} s a seed, {self.jobs} at a time)")
        return "\n".join(lines)


def run_seeds(
    seeds: Sequence[int],
    where: Where,
    *,
    stores: Sequence[str] = STORES,
    modes: Sequence[str] = MODES,
    flow_names: Sequence[str] = tuple(FLOW_WEIGHTS),
    kills: Sequence[str] | None = None,
    jobs: int = 1,
    progress: Callable[[Outcome], None] | None = None,
) -> Tally:
    """Run ``seeds`` (``jobs`` at a time) and tally them; ``progress`` hears each outcome."""
    plans = [plan_seed(seed, stores, modes, flow_names, kills) for seed in seeds]
    start = time.perf_counter()
    tally = Tally(jobs=jobs)

    def one(plan: Plan) -> Outcome:
        outcome = run_seed(plan, where)
        if progress is not None:
            progress(outcome)
        return outcome

    if jobs <= 1:
        tally.outcomes = [one(plan) for plan in plans]
    else:  # processes, not threads: each reads its child's lines without waiting for a GIL
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(method)) as pool:
            futures = [pool.submit(run_seed, plan, where) for plan in plans]
            if progress is not None:
                for future in as_completed(futures):
                    progress(future.result())
            tally.outcomes = [future.result() for future in futures]
    tally.seconds = time.perf_counter() - start
    return tally
