"""Workers as real processes (``stepgraph worker``) on a real PostgreSQL and SQLite file.

Each step of ``flows.Three`` appends ``<run id> <step> <pid>`` to an execution log
(``STEPGRAPH_TEST_EXEC_LOG``), so the tests count what ran, where and how often. Workers
run from the repository root, as ``python -m stepgraph.cli worker tests.distributed.flows:...``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stepgraph.stores import PostgresStore, SqliteStore
from tests.pg import PG_DSN, pg_schema, require_pg

from .flows import Three

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll ``condition`` (every 10 ms) until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Workers:
    """``stepgraph worker`` processes on one store, with one execution log."""

    def __init__(self, url: str, log: Path, target: str = "tests.distributed.flows:Three") -> None:
        self.url, self.log, self.target = url, log, target
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, STEPGRAPH_TEST_EXEC_LOG=str(self.log))
        env.pop("STEPGRAPH_STORE", None)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stepgraph.cli",
                "worker",
                self.target,
                "--store",
                self.url,
                *list(extra),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.procs.append(proc)
        assert proc.stderr is not None
        first = proc.stderr.readline().decode()  # blocks until it serves (or exits)
        assert "serving queue(s)" in first, first + proc.stderr.read().decode()
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)
        self.killed.add(proc.pid)

    def stop_all(self) -> list[int]:
        """SIGTERM every live worker; their exit codes."""
        live = [p for p in self.procs if p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        return [proc.wait(TIMEOUT) for proc in live]

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(TIMEOUT)
            if proc.stderr is not None:
                proc.stderr.close()

    def executions(self) -> list[tuple[str, str, int]]:
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        return [(run, step, int(pid)) for run, step, pid, *_ in (line.split() for line in lines)]

    def holds(self) -> list[tuple[float, float, int]]:
        """(start, end, pid) of each hold ``flows.Limited`` logged."""
        lines = [line.split() for line in self.log.read_text().splitlines()]
        return [(float(a), float(b), int(pid)) for _, what, pid, a, b in lines if what == "hold"]

    def lines_by(self, pid: int) -> int:
        return sum(1 for _, _, who in self.executions() if who == pid)


@contextmanager
def workers(
    url: str, log: Path, target: str = "tests.distributed.flows:Three"
) -> Iterator[Workers]:
    made = Workers(url, log, target)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def pg_url() -> Iterator[tuple[str, str]]:
    require_pg()
    with pg_schema() as schema:
        yield f"{PG_DSN}?schema={schema}", schema


async def _submit_all(store: Any, count: int, **fields: Any) -> list[str]:
    wf = Three(store=store)
    return [await wf.submit(n=i, **fields) for i in range(count)]


async def _results(store: Any, ids: list[str]) -> list[Any]:
    try:
        return [await store.result(run_id, timeout=TIMEOUT) for run_id in ids]
    finally:
        if isinstance(store, PostgresStore):
            await store.aclose()


def test_four_workers_run_two_hundred_queued_runs_each_exactly_once(
    pg_url: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = pg_url
    with workers(url, tmp_path / "exec.log") as crew:
        for _ in range(4):  # all serving before the runs come: one alone could take them all
            crew.start("--concurrency", "8")
        ids = asyncio.run(_submit_all(PostgresStore(PG_DSN, schema=schema), 200))
        results = asyncio.run(_results(PostgresStore(PG_DSN, schema=schema), ids))
        assert crew.stop_all() == [0, 0, 0, 0]
        runs = crew.executions()
    assert results == [n + 3 for n in range(200)]
    counts = Counter((run, step) for run, step, _ in runs)
    assert set(counts.values()) == {1}, [k for k, v in counts.items() if v != 1][:5]
    assert {run for run, _ in counts} == set(ids)
    assert len({pid for _, _, pid in runs}) > 1  # the work was shared


def test_runs_of_killed_workers_finish_on_the_others_each_superstep_committed_once(
    pg_url: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = pg_url
    with workers(url, tmp_path / "exec.log") as crew:
        ids = asyncio.run(_submit_all(PostgresStore(PG_DSN, schema=schema), 40, pause=0.05))
        args = ("--concurrency", "4", "--lease-seconds", "1")
        for _ in range(3):  # a worker alone takes runs; kill -9 it mid-run; three times
            victim = crew.start(*args)
            wait_until(lambda victim=victim: crew.lines_by(victim.pid) >= 2, "the victim's steps")
            crew.kill(victim)
        crew.start(*args)  # two workers finish: the runs left queued, and the dead ones'
        crew.start(*args)
        results = asyncio.run(_results(PostgresStore(PG_DSN, schema=schema), ids))
        crew.stop_all()
        runs = crew.executions()
    assert results == [n + 3 for n in range(40)]
    assert crew.killed and any(pid in crew.killed for _, _, pid in runs)

    async def supersteps() -> list[list[int]]:
        store = PostgresStore(PG_DSN, schema=schema)
        try:
            return [[i.superstep for i in await store.list_checkpoints(r)] for r in ids]
        finally:
            await store.aclose()

    for found in asyncio.run(supersteps()):
        assert found == list(range(len(found))), found  # one checkpoint per superstep
    by_step: dict[tuple[str, str], list[int]] = {}
    for run, step, pid in runs:
        by_step.setdefault((run, step), []).append(pid)
    for (run, step), pids in by_step.items():
        # a step ran again only because the worker running it was killed mid-superstep
        assert all(pid in crew.killed for pid in pids[:-1]), (run, step, pids)


def test_sigterm_lets_the_superstep_in_flight_commit_and_another_worker_goes_on(
    pg_url: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = pg_url
    with workers(url, tmp_path / "exec.log") as crew:
        (run_id,) = asyncio.run(_submit_all(PostgresStore(PG_DSN, schema=schema), 1, pause=0.5))
        first = crew.start()
        wait_until(lambda: crew.lines_by(first.pid) >= 1, "step a to start")
        first.send_signal(signal.SIGTERM)
        assert first.wait(TIMEOUT) == 0
        assert first.stderr is not None
        said = first.stderr.read().decode()
        assert "stopping (grace 30 s)" in said and "stopped after taking 1 run(s)" in said
        crew.start()
        (result,) = asyncio.run(_results(PostgresStore(PG_DSN, schema=schema), [run_id]))
        crew.stop_all()
        runs = crew.executions()
    assert result == 3
    assert [step for _, step, _ in runs] == ["a", "b", "c"]  # step a did not run again
    assert runs[0][2] == first.pid and runs[1][2] != first.pid


def test_workers_share_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with workers(f"sqlite:///{path}", tmp_path / "exec.log") as crew:
        ids = asyncio.run(_submit_all(SqliteStore(path), 20))
        crew.start()
        crew.start()
        results = asyncio.run(_results(SqliteStore(path), ids))
        assert crew.stop_all() == [0, 0]
        runs = crew.executions()
    assert results == [n + 3 for n in range(20)]
    assert set(Counter((run, step) for run, step, _ in runs).values()) == {1}


def test_a_worker_whose_limiter_the_store_has_with_other_limits_refuses_to_start(
    pg_url: tuple[str, str], tmp_path: Path
) -> None:
    from stepgraph import Limiter
    from stepgraph.stores.pg_limits import postgres_gate

    from .flows import LLM

    url, schema = pg_url

    async def declare_otherwise() -> None:  # (another deployment's limits)
        other = Limiter(LLM.name, max_concurrency=1)
        gate = postgres_gate(PG_DSN, schema, other)
        try:
            await gate.declare()
        finally:
            await gate.aclose()

    asyncio.run(declare_otherwise())
    env = {k: v for k, v in os.environ.items() if k != "STEPGRAPH_STORE"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "stepgraph.cli", "worker", "tests.distributed.flows:limited",
         "--store", url],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"limiter {LLM.name!r} is declared with" in lines[0], done.stderr


def test_a_worker_whose_stderr_reader_is_gone_still_stops_on_sigterm(tmp_path: Path) -> None:
    with workers(f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "exec.log") as crew:
        proc = crew.start()
        assert proc.stderr is not None
        proc.stderr.close()  # its log's reader died: what it says next finds a broken pipe
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tests.distributed.flows:Three", "--store", "mysql://x"], "bad store URL 'mysql://x'"),
        (
            ["tests.distributed.flows:Three", "--store", "postgresql://127.0.0.1:1/test"],
            "cannot open the store 'postgresql://127.0.0.1:1/test'",
        ),
        (["tests.distributed.nope:Three", "--store", "sqlite:///x.db"], "cannot import module"),
        (["tests.distributed.flows:Nope", "--store", "sqlite:///x.db"], "has no attribute 'Nope'"),
        (
            ["tests.distributed.flows:Go", "--store", "sqlite:///x.db"],
            "is not a Workflow subclass or instance",
        ),
        (
            ["tests.distributed.flows:Three", "--store", "sqlite:///x.db", "--concurrency", "0"],
            "--concurrency must be >= 1",
        ),
        (
            ["tests.distributed.flows:Three", "--store", "sqlite:///x.db", "--lease-seconds", "0"],
            "--lease-seconds must be a number > 0",
        ),
        (
            [
                "tests.distributed.flows:Three",
                "--store",
                "sqlite:///x.db",
                "--lease-seconds",
                "nan",
            ],
            "--lease-seconds must be a number > 0, got nan",
        ),
        (
            [
                "tests.distributed.flows:Three",
                "--store",
                "sqlite:///x.db",
                "--grace-seconds",
                "inf",
            ],
            "--grace-seconds must be a number > 0, got inf",
        ),
        (["tests.distributed.flows:Three"], "give the store with --store URL"),
        (
            ["tests.distributed.flows:SAME_NAME_TWICE", "--store", "sqlite:///x.db"],
            "the registry names two workflows 'dup'",
        ),
    ],
)
def test_bad_worker_arguments_exit_2_with_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STEPGRAPH_STORE"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "stepgraph.cli", "worker", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_limiter_holds_across_three_worker_processes(
    pg_url: tuple[str, str], tmp_path: Path
) -> None:
    from .flows import LLM, Limited

    url, schema = pg_url

    async def submit() -> list[str]:
        store = PostgresStore(PG_DSN, schema=schema)
        wf = Limited(store=store, limiters=[LLM])
        try:
            return [await wf.submit(n=i, pause=0.05) for i in range(24)]
        finally:
            await store.aclose()

    with workers(url, tmp_path / "exec.log", "tests.distributed.flows:limited") as crew:
        ids = asyncio.run(submit())
        for _ in range(3):
            crew.start("--concurrency", "4")
        results = asyncio.run(_results(PostgresStore(PG_DSN, schema=schema), ids))
        crew.stop_all()
        holds = crew.holds()
        said = "".join(proc.stderr.read().decode() for proc in crew.procs if proc.stderr)
    assert results == list(range(24))
    assert "for limiter 'shared-llm'" in said  # a wait is said (stepgraph.limits, INFO)
    assert len({pid for _, _, pid in holds}) > 1  # several processes shared the limiter
    moments = sorted([(start, 1) for start, _, _ in holds] + [(end, -1) for _, end, _ in holds])
    peak = now = 0
    for _, change in moments:
        now += change
        peak = max(peak, now)
    assert peak <= LLM.max_concurrency, peak  # never more than 3 at once, across processes
    starts = sorted(start for start, _, _ in holds)
    for i, first in enumerate(starts):  # the token bucket: burst 10, then 10 a second
        for j in range(i, len(starts)):
            window = starts[j] - first
            assert j - i + 1 <= LLM.burst + LLM.per_second * (window + 0.05), (i, j, window)


TASKS_WITH_A_LIMITER = """
import asyncio, os, sys, time
from stepgraph import Limiter
from stepgraph.backends import InlineBackend
from stepgraph.stores import PostgresStore
from stepgraph.tasks import TaskFlow

async def main():
    dsn, schema, log = sys.argv[1:]
    store = PostgresStore(dsn, schema=schema)
    limiter = Limiter("shared-gpu", max_concurrency=1)
    async with TaskFlow({"default": InlineBackend()}, limiters=[limiter], store=store) as flow:

        @flow.function_task(limiter="shared-gpu")
        async def hold(i):
            started = time.time()
            await asyncio.sleep(0.05)
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {started} {time.time()}\\n")

        await asyncio.gather(*(hold(i) for i in range(6)))
    await store.aclose()

asyncio.run(main())
"""


def test_a_task_flow_limiter_on_postgresql_holds_across_processes(
    pg_url: tuple[str, str], tmp_path: Path
) -> None:
    _, schema = pg_url
    log = tmp_path / "holds"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", TASKS_WITH_A_LIMITER, PG_DSN, schema, str(log)], env=env
        )
        for _ in range(2)
    ]
    assert [child.wait(timeout=60) for child in children] == [0, 0]
    holds = [line.split() for line in log.read_text().splitlines()]
    assert len(holds) == 12 and len({pid for pid, _, _ in holds}) == 2
    spans = sorted((float(start), float(end)) for _, start, end in holds)
    assert all(end <= after for (_, end), (after, _) in itertools.pairwise(spans))  # one at once


def test_a_worker_process_freezes_its_startup_objects_and_collects_young_ones_less_often() -> None:
    script = (
        "import gc\n"
        "from stepgraph.cli.worker import _YOUNG_OBJECTS, _settle_memory\n"
        "before = gc.get_threshold()\n"
        "_settle_memory()\n"
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count()\n"
        "assert gc.get_threshold() == (_YOUNG_OBJECTS, *before[1:]), gc.get_threshold()\n"
        "assert _YOUNG_OBJECTS > before[0]\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
