"""Distributed runs on PostgreSQL: ``python -m bench --only distributed``.

Worker processes take queued runs from PostgreSQL and run them: stepgraph (``wf.submit``
and ``stepgraph worker``) against a minimal queue written by hand in this module with
psycopg 3 (:func:`baseline_worker`), measured in the same run, on a database the bench
creates for itself (``stepgraph_bench_<pid>``, dropped afterwards; each measurement in a
schema of its own). Skipped, with the reason, when no PostgreSQL server answers.

- **dist-throughput**: a batch of :data:`RUNS` runs, submitted beforehand, released to
  the workers at once (one transaction moves them into the served queue and NOTIFYs), run
  by 1, 2 and 4 worker processes; runs per second from the release to the last run's end
  (the time its worker stamped as it stored that end). stepgraph runs
  :class:`bench.distributed_flows.Three` (a -> b -> c: three supersteps, trivial bodies)
  under ``stepgraph worker --concurrency`` :data:`CONCURRENCY`; the baseline worker claims
  one run (``UPDATE ... WHERE id = (SELECT id ... FOR UPDATE SKIP LOCKED LIMIT 1)
  RETURNING id``), commits three small "checkpoint" rows, one transaction each, then the
  run's end: 5 commits a run; an idle one waits on LISTEN (a quarter-second poll behind
  it). Repetitions interleave the two; the figure is the median, the ratio the median of
  per-repetition ratios. Target: stepgraph >= 0.75x the baseline at each worker count.
  **Transactions per run**, beside it: the growth of ``pg_stat_database.xact_commit`` of
  the bench's database over the workers' lives (read once their server sessions have
  ended, so that every count is flushed; no other client uses that database), minus the
  bench's own statements and what idle workers cost (a worker started and stopped with
  nothing to do, measured once per contender), divided by the runs. It counts every
  transaction: a statement outside a transaction block is one, reads included.
- **dist-pickup**: runs submitted one at a time, :data:`PICKUP_PAUSE` apart, to
  :data:`PICKUP_WORKERS` idle worker processes of each contender, samples interleaved:
  seconds from just before the submit to the start of step ``a`` (stepgraph; ``a`` returns
  its ``time.time()``) or to the claim's return (the baseline's worker stamps it). p50 and
  p99. Target: stepgraph's p50 within 2x of the baseline's.
- **dist-recovery**: two ``stepgraph worker --lease-seconds`` :data:`LEASE` processes; a
  run whose step ``b`` sleeps the first time it runs; once ``b`` has started, after a
  random part of a lease renewal period, the worker holding it is killed (SIGKILL to its
  process group): seconds from the kill until ``b`` starts again on the other worker, over
  :data:`KILLS` kills (a new worker replaces each killed one before the next). p50 and max.
  Target: max <= lease + 1 s.
- **limiter overhead**: not measured yet (see :func:`limiter_overhead`).

Every worker process runs in a process group of its own and is stopped (SIGTERM, then
SIGKILL) when its measurement ends, on error too.

``python -m bench.distributed SCHEMA DSN`` runs one baseline worker (the bench starts them;
stepgraph is imported only where it is used, so that a baseline worker starts without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bench.report import REPO_ROOT
from bench.timing import median

RUNS = 400
"""Runs per throughput batch."""
WORKERS = (1, 2, 4)
"""Worker processes of the throughput batches."""
CONCURRENCY = 8
"""``stepgraph worker --concurrency``: runs each stepgraph worker process holds at once."""
REPS = 5
"""Throughput repetitions at most (each starts its workers anew)."""
PICKUP_SAMPLES = 100
PICKUP_SAMPLES_QUICK = 20
PICKUP_WORKERS = 2
PICKUP_PAUSE = (0.05, 0.1)
"""Seconds between two pick-up samples (uniformly drawn): the workers are idle again."""
LEASE = 2.0
"""``--lease-seconds`` of the recovery measurement."""
KILLS = 20
KILLS_QUICK = 5
HOLD = 60.0
"""Seconds step ``b`` sleeps the first time it runs (the worker is killed during it)."""
THROUGHPUT_TARGET = 0.75
PICKUP_TARGET = 2.0
RECOVERY_MARGIN = 1.0
"""Recovery target: the lease plus this."""
CHECKPOINT_BYTES = 256
"""Size of the baseline's "checkpoint" rows."""
SETTLE = 0.1
"""Seconds the workers idle after they said they are ready, before a batch is released."""
HELD = "held"
"""The queue stepgraph's batch waits in before its release (no worker serves it)."""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- the baseline: a queue written by hand ------------------------------------------------------

_BASELINE_TABLES = """
CREATE SCHEMA {s};
CREATE TABLE {s}.runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status TEXT NOT NULL,
    claimed DOUBLE PRECISION,  -- time.time() as the claim returned to its worker
    done DOUBLE PRECISION  -- time.time() as its worker stored its end
);
CREATE INDEX ON {s}.runs (id) WHERE status = 'queued';
CREATE TABLE {s}.checkpoints (
    run_id BIGINT NOT NULL, n INTEGER NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (run_id, n)
);
"""


def baseline_worker(dsn: str, schema: str) -> None:
    """The hand-written queue's worker, until killed: it LISTENs on the channel named
    ``schema``; it claims one queued run, commits 3 checkpoint rows (a transaction each),
    then the run's end: 5 commits a run."""
    import psycopg

    s = _ident(schema)
    claim = (
        f"UPDATE {s}.runs SET status = 'running' WHERE id = (SELECT id FROM {s}.runs "
        "WHERE status = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id"
    )
    checkpoint = f"INSERT INTO {s}.checkpoints (run_id, n, data) VALUES (%s, %s, %s)"
    end = f"UPDATE {s}.runs SET status = 'done', claimed = %s, done = %s WHERE id = %s"
    data = os.urandom(CHECKPOINT_BYTES)
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        psycopg.connect(dsn, autocommit=True) as listen,
    ):
        listen.execute(f"LISTEN {s}")
        print("ready", flush=True)
        while True:
            row = conn.execute(claim).fetchone()
            if row is None:  # idle: a NOTIFY (a submit) wakes it, or a poll
                for _ in listen.notifies(timeout=0.25, stop_after=1):
                    pass
                continue
            claimed = time.time()
            for n in range(3):
                conn.execute(checkpoint, (row[0], n, data))
            conn.execute(end, (claimed, time.time(), row[0]))


# -- worker processes ---------------------------------------------------------------------------


@dataclass
class _Proc:
    popen: subprocess.Popen[bytes]
    output: Path

    def said(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""


def _python_path() -> str:
    """The workers' ``PYTHONPATH``: the repository first (``bench.distributed_flows``)."""
    return os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


@dataclass
class _Pool:
    """Worker processes, each in a process group of its own, their output in files."""

    command: list[str]
    ready: str  # what a worker's output holds once it is ready
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[_Proc] = field(default_factory=list)

    async def start(self, count: int) -> list[_Proc]:
        """Start ``count`` workers; return once each has said it is ready."""
        started = [self._spawn() for _ in range(count)]
        deadline = time.monotonic() + 60
        for proc in started:
            while self.ready not in proc.said():
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a worker did not start: {proc.said()[-2000:]}")
                await asyncio.sleep(0.01)
        return started

    def _spawn(self) -> _Proc:
        output = self.folder / f"worker-{uuid.uuid4().hex[:8]}.log"
        with output.open("wb") as sink:
            popen = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONPATH": _python_path(), **self.env},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(_Proc(popen, output))
        return self.procs[-1]

    def by_pid(self, pid: int) -> _Proc:
        return next(proc for proc in self.procs if proc.popen.pid == pid)

    @staticmethod
    def kill(proc: _Proc) -> None:
        """SIGKILL to the worker's process group (unless it has ended: its id may be reused)."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait()

    async def stop(self) -> None:
        """SIGTERM to every worker (a stepgraph worker stops gracefully), SIGKILL to any
        still there after 15 s; wait for them all."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        for _ in range(1500):  # 15 s
            if all(p.popen.poll() is not None for p in self.procs):
                break
            await asyncio.sleep(0.01)
        for proc in self.procs:
            self.kill(proc)
        self.procs.clear()

    def close(self) -> None:
        """Kill whatever is left (on error)."""
        for proc in self.procs:
            self.kill(proc)
        self.procs.clear()


@contextlib.contextmanager
def _pool(command: list[str], ready: str, folder: Path, **env: str) -> Iterator[_Pool]:
    pool = _Pool(command, ready, folder, env)
    try:
        yield pool
    finally:
        pool.close()


def _baseline_command(dsn: str, schema: str) -> list[str]:
    return [sys.executable, "-m", "bench.distributed", schema, dsn]


def _stepgraph_command(
    dsn: str, schema: str, concurrency: int, lease: float | None = None
) -> list[str]:
    parts = urlsplit(dsn)
    query = urlencode([*parse_qsl(parts.query), ("schema", schema)])
    url = urlunsplit(parts._replace(query=query))
    command = [sys.executable, "-m", "stepgraph.cli", "worker", "bench.distributed_flows:Three"]
    command += ["--store", url, "--concurrency", str(concurrency), "--grace-seconds", "5"]
    if lease is not None:
        command += ["--lease-seconds", f"{lease:g}"]
    return command


_STEPGRAPH_READY = "stepgraph: worker "  # "... serving queue(s) ..."
_BASELINE_READY = "ready"


# -- the database -------------------------------------------------------------------------------


class _Database:
    """A database of the bench's own (its transaction counts are the workers'), and a
    connection to the server's original one to watch it from."""

    def __init__(self, admin_dsn: str) -> None:
        import psycopg

        self.name = f"stepgraph_bench_{os.getpid()}"
        self.admin = psycopg.connect(admin_dsn, autocommit=True)
        self.admin.execute(f"DROP DATABASE IF EXISTS {_ident(self.name)}")
        self.admin.execute(f"CREATE DATABASE {_ident(self.name)}")
        self.dsn = urlunsplit(urlsplit(admin_dsn)._replace(path="/" + self.name))

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def drop(self) -> None:
        self.admin.execute(f"DROP DATABASE IF EXISTS {_ident(self.name)} WITH (FORCE)")
        self.admin.close()

    def drop_schema(self, schema: str) -> None:
        with self.connect() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {_ident(schema)} CASCADE")

    async def transactions(self) -> int:
        """Transactions committed in the database so far, once no client session is left
        in it (a session's counts are complete once it has ended)."""
        deadline = time.monotonic() + 30
        while True:
            row = self.admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND backend_type = 'client backend'",
                (self.name,),
            ).fetchone()
            if row[0] == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        row = self.admin.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self.name,)
        ).fetchone()
        return int(row[0])


def _schema(kind: str) -> str:
    return f"bench_{kind}_{uuid.uuid4().hex[:8]}"


# -- throughput ---------------------------------------------------------------------------------


@dataclass
class _Batch:
    runs_per_s: float
    transactions: int  # in the database over the workers' lives, the bench's own excluded


async def _baseline_batch(db: _Database, workers: int, runs: int, folder: Path) -> _Batch:
    schema = _schema("q")
    s = _ident(schema)
    try:
        with db.connect() as conn:
            conn.execute(_BASELINE_TABLES.format(s=s))
            if runs:
                conn.execute(
                    f"INSERT INTO {s}.runs (status) SELECT 'held' FROM generate_series(1, %s)",
                    (runs,),
                )

        def release(conn: Any) -> None:
            with conn.transaction():
                conn.execute(f"UPDATE {s}.runs SET status = 'queued' WHERE status = 'held'")
                conn.execute(f"NOTIFY {s}")

        progress = f"SELECT count(*) FILTER (WHERE status = 'done'), max(done), 0 FROM {s}.runs"
        command = _baseline_command(db.dsn, schema)
        return await _batch(db, command, _BASELINE_READY, workers, runs, folder, release, progress)
    finally:
        db.drop_schema(schema)


async def _stepgraph_batch(
    db: _Database, workers: int, runs: int, concurrency: int, folder: Path
) -> _Batch:
    from bench.distributed_flows import Three
    from stepgraph.stores import PostgresStore

    schema = _schema("sg")
    s = _ident(schema)
    store = PostgresStore(db.dsn, schema=schema)
    try:
        wf = Three(store=store)
        for _ in range(runs):
            await wf.submit(queue=HELD)
        if not runs:
            await store.get_run("")  # the tables
        await store.aclose()

        def release(conn: Any) -> None:
            with conn.transaction():
                conn.execute(
                    f"UPDATE {s}.stepgraph_runs SET queue = 'default' WHERE queue = %s", (HELD,)
                )
                conn.execute("NOTIFY stepgraph_work, 'default'")

        progress = (
            "SELECT count(*) FILTER (WHERE status = 'completed'), "
            "extract(epoch FROM max(updated_at)), "
            f"count(*) FILTER (WHERE status IN ('failed', 'cancelled')) FROM {s}.stepgraph_runs"
        )
        command = _stepgraph_command(db.dsn, schema, concurrency)
        return await _batch(db, command, _STEPGRAPH_READY, workers, runs, folder, release, progress)
    finally:
        await store.aclose()
        db.drop_schema(schema)


async def _batch(
    db: _Database,
    command: list[str],
    ready: str,
    workers: int,
    runs: int,
    folder: Path,
    release: Any,
    progress: str,
) -> _Batch:
    """Start the workers, release the batch, wait for its end, stop the workers.

    ``progress`` reads (runs ended, the latest end as a Unix time, runs failed)."""
    before = await db.transactions()
    own = 0  # the bench's statements in the database while it counts
    with _pool(command, ready, folder) as pool:
        await pool.start(workers)
        await asyncio.sleep(SETTLE)
        with db.connect() as conn:
            released = time.time()
            release(conn)
            own += 1
            deadline = time.monotonic() + 120 + runs
            while True:
                done, last, failed = conn.execute(progress).fetchone()
                own += 1
                if failed:
                    raise RuntimeError(f"{failed} run(s) failed: {pool.procs[0].said()[-2000:]}")
                if done >= runs:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the batch did not end: {done} of {runs} runs ended")
                await asyncio.sleep(0.02)
        await pool.stop()
    after = await db.transactions()
    seconds = float(last) - released if runs else 1.0
    return _Batch(runs / seconds, after - before - own)


async def throughput(
    db: _Database,
    folder: Path,
    counts: Sequence[int],
    runs: int,
    reps: int,
    concurrency: int,
) -> list[dict[str, Any]]:
    """dist-throughput at each worker count, stepgraph against the baseline."""
    # What a worker costs with nothing to do (started, idle for SETTLE, stopped).
    idle = {
        "baseline": (await _baseline_batch(db, 1, 0, folder)).transactions,
        "stepgraph": (await _stepgraph_batch(db, 1, 0, concurrency, folder)).transactions,
    }
    samples: dict[tuple[str, int], list[_Batch]] = {}
    for _ in range(reps):
        for n in counts:
            samples.setdefault(("baseline", n), []).append(
                await _baseline_batch(db, n, runs, folder)
            )
            samples.setdefault(("stepgraph", n), []).append(
                await _stepgraph_batch(db, n, runs, concurrency, folder)
            )
    entries = []
    for n in counts:
        ours, base = samples[("stepgraph", n)], samples[("baseline", n)]
        ratio = statistics.median(
            a.runs_per_s / b.runs_per_s for a, b in zip(ours, base, strict=True)
        )
        per_run = {
            side: median([(b.transactions - n * idle[side]) / runs for b in batches])
            for side, batches in (("stepgraph", ours), ("baseline", base))
        }
        entries.append(
            {
                "workload": "dist-throughput",
                "title": f"{runs} runs of 3 supersteps, pre-submitted",
                "mode": f"{n} worker{'s' if n > 1 else ''}",
                "workers": n,
                "concurrency": concurrency,
                "size": runs,
                "runs_per_s": round(median([b.runs_per_s for b in ours]), 1),
                "baseline": "hand-written queue",
                "baseline_runs_per_s": round(median([b.runs_per_s for b in base]), 1),
                "throughput_ratio": round(ratio, 3),
                "target_throughput_ratio": THROUGHPUT_TARGET,
                "passed": ratio >= THROUGHPUT_TARGET,
                "transactions_per_run": round(per_run["stepgraph"], 2),
                "baseline_transactions_per_run": round(per_run["baseline"], 2),
                "idle_worker_transactions": idle["stepgraph"],
                "baseline_idle_worker_transactions": idle["baseline"],
                "reps": reps,
            }
        )
    return entries


# -- pick-up latency ----------------------------------------------------------------------------


def _p99(samples: list[float]) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


async def pickup(db: _Database, folder: Path, samples: int, warmup: int) -> list[dict[str, Any]]:
    """dist-pickup: submit -> claim (baseline) and submit -> step ``a`` starts (stepgraph)."""
    from bench.distributed_flows import Three
    from stepgraph.stores import PostgresStore

    base_schema, sg_schema = _schema("qp"), _schema("sgp")
    s = _ident(base_schema)
    store = PostgresStore(db.dsn, schema=sg_schema)
    wf = Three(store=store)
    await store.get_run("")  # the tables, before the workers start
    conn = db.connect()
    try:
        conn.execute(_BASELINE_TABLES.format(s=s))
        submit = (
            f"WITH r AS (INSERT INTO {s}.runs (status) VALUES ('queued') RETURNING id) "
            "SELECT id, pg_notify(%s, '') FROM r"
        )
        claimed = f"SELECT claimed FROM {s}.runs WHERE id = %s AND done IS NOT NULL"

        async def baseline_once() -> float:
            started = time.time()
            (run_id, _) = conn.execute(submit, (base_schema,)).fetchone()
            pause = 0.002
            deadline = time.monotonic() + 30
            while (row := conn.execute(claimed, (run_id,)).fetchone()) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the baseline's workers took no run in 30 s")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.25)
            return float(row[0]) - started

        async def stepgraph_once() -> float:
            started = time.time()
            run_id = await wf.submit()
            return float(await store.result(run_id, timeout=30)) - started

        ours: list[float] = []
        base: list[float] = []
        with (
            _pool(_baseline_command(db.dsn, base_schema), _BASELINE_READY, folder) as bpool,
            _pool(
                _stepgraph_command(db.dsn, sg_schema, CONCURRENCY), _STEPGRAPH_READY, folder
            ) as spool,
        ):
            await asyncio.gather(bpool.start(PICKUP_WORKERS), spool.start(PICKUP_WORKERS))
            await asyncio.sleep(SETTLE)
            for i in range(warmup + samples):
                b = await baseline_once()
                await asyncio.sleep(random.uniform(*PICKUP_PAUSE))
                o = await stepgraph_once()
                await asyncio.sleep(random.uniform(*PICKUP_PAUSE))
                if i >= warmup:
                    base.append(b)
                    ours.append(o)
            await spool.stop()
            await bpool.stop()
    finally:
        conn.close()
        await store.aclose()
        db.drop_schema(base_schema)
        db.drop_schema(sg_schema)
    ratio = median(ours) / median(base)
    return [
        {
            "workload": "dist-pickup",
            "title": "submit -> first step (claim, baseline), idle workers",
            "mode": f"{PICKUP_WORKERS} workers",
            "workers": PICKUP_WORKERS,
            "size": samples,
            "p50_ms": round(median(ours) * 1e3, 2),
            "p99_ms": round(_p99(ours) * 1e3, 2),
            "baseline": "hand-written queue",
            "baseline_p50_ms": round(median(base) * 1e3, 2),
            "baseline_p99_ms": round(_p99(base) * 1e3, 2),
            "p50_ratio": round(ratio, 3),
            "target_p50_ratio": PICKUP_TARGET,
            "passed": ratio <= PICKUP_TARGET,
        }
    ]


# -- recovery after kill -9 ---------------------------------------------------------------------


def _b_starts(log: Path, run_id: str) -> list[tuple[int, float]]:
    """(pid, time) of each start of step ``b`` of run ``run_id``, from the log."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        run, _, pid, at = line.split()
        if run == run_id:
            found.append((int(pid), float(at)))
    return found


async def _nth_b_start(log: Path, run_id: str, n: int, timeout: float) -> tuple[int, float]:
    deadline = time.monotonic() + timeout
    while len(starts := _b_starts(log, run_id)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"step b of run {run_id} did not start {n} time(s) in {timeout} s")
        await asyncio.sleep(0.005)
    return starts[n - 1]


async def recovery(db: _Database, folder: Path, kills: int) -> list[dict[str, Any]]:
    """dist-recovery: seconds from a SIGKILL to the run's next step on another worker."""
    from bench.distributed_flows import LOG_ENV, Three
    from stepgraph.stores import PostgresStore

    schema = _schema("sgr")
    store = PostgresStore(db.dsn, schema=schema)
    wf = Three(store=store)
    log = folder / "steps.log"
    seconds: list[float] = []
    try:
        await store.get_run("")  # the tables, before the workers start
        command = _stepgraph_command(db.dsn, schema, CONCURRENCY, LEASE)
        with _pool(command, _STEPGRAPH_READY, folder, **{LOG_ENV: str(log)}) as pool:
            await pool.start(2)
            for _ in range(kills):
                await asyncio.sleep(SETTLE)
                run_id = await wf.submit(hold=HOLD)
                pid, _ = await _nth_b_start(log, run_id, 1, timeout=30)
                # anywhere in the victim's lease renewal period (a third of the lease)
                await asyncio.sleep(random.uniform(0.05, 0.05 + LEASE / 3))
                victim = pool.by_pid(pid)
                killed = time.time()
                pool.kill(victim)
                pool.procs.remove(victim)
                other, again = await _nth_b_start(log, run_id, 2, timeout=LEASE * 5 + 30)
                if other == pid:
                    raise RuntimeError(f"step b of run {run_id} ran again in the killed worker")
                seconds.append(again - killed)
                await store.result(run_id, timeout=30)
                await pool.start(1)
            await pool.stop()
    finally:
        await store.aclose()
        db.drop_schema(schema)
    target = LEASE + RECOVERY_MARGIN
    return [
        {
            "workload": "dist-recovery",
            "title": "kill -9 of the worker mid-step -> the step again on another worker",
            "mode": f"lease {LEASE:g} s",
            "lease_seconds": LEASE,
            "size": kills,
            "p50_s": round(median(seconds), 3),
            "max_s": round(max(seconds), 3),
            "min_s": round(min(seconds), 3),
            "target_s": target,
            "passed": max(seconds) <= target,
        }
    ]


# -- limiter overhead ---------------------------------------------------------------------------


LIMITER_PAIRS = 300  # acquisitions per process
LIMITER_PROCESSES = 3


async def _holds(gate: Any, count: int) -> float:
    """Seconds for ``count`` acquisitions and releases of ``gate`` (empty bodies)."""
    started = time.perf_counter()
    for _ in range(count):
        async with gate.hold():
            pass
    return time.perf_counter() - started


def limiter_child(dsn: str, schema: str, count: str) -> None:
    """A contending process: ``count`` holds of the shared limiter; prints its seconds."""
    from stepgraph import Limiter
    from stepgraph.stores.pg_limits import PostgresGate

    async def main() -> None:
        gate = PostgresGate(dsn, Limiter("bench", max_concurrency=2), schema=schema)
        await _holds(gate, 1)  # connected, declared
        print("ready", flush=True)
        sys.stdin.readline()  # all start together
        print(f"{await _holds(gate, int(count)):.6f}", flush=True)
        await gate.aclose()

    asyncio.run(main())


def _contend(db: _Database, schema: str) -> list[float]:
    """Each contending process's seconds for its holds (they start together)."""
    command = [sys.executable, "-m", "bench.distributed", "limiter", db.dsn, schema]
    children = [
        subprocess.Popen(
            [*command, str(LIMITER_PAIRS)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(LIMITER_PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        seconds = [float(child.stdout.readline()) for child in children if child.stdout]
        for child in children:
            child.wait(60)
        return seconds
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(60)
        db.drop_schema(schema)


async def limiter_overhead(db: _Database, folder: Path) -> list[dict[str, Any]]:
    """A PostgreSQL limiter's cost per acquisition: alone in one process, and with three
    processes contending for 2 slots; the in-process gate alone as the baseline."""
    del folder
    from stepgraph import Limiter
    from stepgraph.limits import Gate
    from stepgraph.stores.pg_limits import PostgresGate

    schema = "bench_limiter"
    limiter = Limiter("bench", max_concurrency=2)
    local = Gate(limiter)
    local_us = await _holds(local, LIMITER_PAIRS) / LIMITER_PAIRS * 1e6
    gate = PostgresGate(db.dsn, limiter, schema=schema)
    try:
        await _holds(gate, 10)  # warm: connected, table made, declared
        alone_us = await _holds(gate, LIMITER_PAIRS) / LIMITER_PAIRS * 1e6
    finally:
        await gate.aclose()
    seconds = await asyncio.to_thread(_contend, db, schema)
    contended_us = max(seconds) / (LIMITER_PAIRS * LIMITER_PROCESSES) * 1e6
    return [
        {
            "workload": "dist-limiter",
            "title": "a PostgreSQL limiter's acquisition and release (max_concurrency=2)",
            "mode": mode,
            "size": count,
            "us_per_acquisition": round(us, 1),
            "baseline": "in-process Gate",
            "baseline_us": round(local_us, 2),
            "passed": True,
        }
        for mode, count, us in (
            ("1 process", LIMITER_PAIRS, alone_us),
            (f"{LIMITER_PROCESSES} processes", LIMITER_PAIRS * LIMITER_PROCESSES, contended_us),
        )
    ]


# -- the group ----------------------------------------------------------------------------------


async def _pg_missing(dsn: str) -> str | None:
    from bench.durability import postgres_missing

    if not dsn.startswith(("postgresql://", "postgres://")):
        return f"STEPGRAPH_TEST_PG must be a postgresql:// URL here (the workers' --store): {dsn}"
    return await postgres_missing(dsn)


async def run(
    *,
    quick: bool,
    reps: int,
    warmup: int,
    runs: int = RUNS,
    workers: Sequence[int] = WORKERS,
    kills: int | None = None,
    concurrency: int = CONCURRENCY,
    dsn: str | None = None,
) -> list[dict[str, Any]]:
    """Every distributed measurement; one ``skipped`` entry when PostgreSQL is missing.

    ``dsn``: the server (by default ``bench.durability.PG_DSN``: the environment variable
    ``STEPGRAPH_TEST_PG``, or a local server with a database ``test``)."""
    if dsn is None:
        from bench.durability import PG_DSN

        dsn = PG_DSN
    missing = await _pg_missing(dsn)
    if missing is not None:
        print(f"distributed: skipped: {missing}", file=sys.stderr)
        return [{"workload": "distributed", "mode": "", "skipped": missing, "passed": True}]
    kills = (KILLS_QUICK if quick else KILLS) if kills is None else kills
    samples = min(PICKUP_SAMPLES_QUICK if quick else PICKUP_SAMPLES, max(runs, 1))
    entries: list[dict[str, Any]] = []
    try:
        db = _Database(dsn)
    except Exception as exc:
        reason = f"cannot create a database of its own: {' '.join(str(exc).split())}"
        print(f"distributed: skipped: {reason}", file=sys.stderr)
        return [{"workload": "distributed", "mode": "", "skipped": reason, "passed": True}]
    try:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            started = time.perf_counter()
            entries += await throughput(db, folder, workers, runs, min(reps, REPS), concurrency)
            print(f"dist-throughput: {time.perf_counter() - started:.1f} s", file=sys.stderr)
            started = time.perf_counter()
            entries += await pickup(db, folder, samples, min(warmup, 2))
            print(f"dist-pickup: {time.perf_counter() - started:.1f} s", file=sys.stderr)
            if kills:
                started = time.perf_counter()
                entries += await recovery(db, folder, kills)
                print(f"dist-recovery: {time.perf_counter() - started:.1f} s", file=sys.stderr)
            entries += await limiter_overhead(db, folder)
    finally:
        db.drop()
    return entries


if __name__ == "__main__":
    if sys.argv[1] == "limiter":
        limiter_child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        baseline_worker(sys.argv[2], sys.argv[1])
