"""The ``stepgraph`` command, end to end: real subprocesses, real SQLite files.

Every command runs in ``tests/cli`` (so ``flows:ATTR`` imports ``tests/cli/flows.py``),
as ``python -m stepgraph.cli`` or the installed ``stepgraph`` script.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = Path(sys.executable).with_name("stepgraph")
TIMEOUT = 60
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours, cursor moves, erasing


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STEPGRAPH_STORE", "COLUMNS")}
    env.update(extra)
    return env


def cli(
    *args: str, env: dict[str, str] | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``stepgraph ARGS`` in tests/cli and wait for it."""
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "stepgraph.cli"]
    return subprocess.run(
        [*command, *args],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env or _env(),
    )


def cli_all(
    *commands: Sequence[str], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent ``stepgraph`` commands at once (a few at a time)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: cli(*args, env=env), commands))


def started(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``stepgraph ARGS`` started in tests/cli, its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "stepgraph.cli", *args],
        cwd=HERE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or _env(),
    )


def read_until(fd: int, pattern: str, buffer: bytearray, timeout: float = TIMEOUT) -> str:
    """Read ``fd`` into ``buffer`` until its text (ANSI codes left out) matches ``pattern``."""
    deadline = time.monotonic() + timeout
    wanted = re.compile(pattern)
    while True:
        text = ANSI.sub("", buffer.decode(errors="replace"))
        if wanted.search(text):
            return text
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        if not ready:
            raise AssertionError(f"timed out waiting for {pattern!r}; got:\n{text}")
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:  # a pty whose other side closed
            if exc.errno != errno.EIO:
                raise
            chunk = b""
        if not chunk:
            raise AssertionError(f"{pattern!r} never came; the output ended with:\n{text}")
        buffer.extend(chunk)


def open_gate(path: Path) -> None:
    """Let the ``Gate`` workflow's blocked step go on (open its FIFO and write)."""

    def write() -> None:
        with open(path, "w") as fifo:  # blocks until the step opens it to read
            fifo.write("go")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(TIMEOUT)
    assert not writer.is_alive(), "the gated step never opened its FIFO"


def one_error_line(stderr: str) -> str:
    """The error line of a command that failed with exit 2 (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("stepgraph: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"  # an absolute path: sqlite:////tmp/...


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    path = tmp_path / "gate"
    os.mkfifo(path)
    return path


# -- stepgraph run ---------------------------------------------------------------------------------


def test_python_dash_m_stepgraph_is_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stepgraph", "graph", "flows:Count", "--format", "mermaid"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == cli("graph", "flows:Count", "--format", "mermaid").stdout != ""


def test_run_an_instance_with_the_installed_script() -> None:
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not installed (pip install -e .)")
    # an instance is copied with the options (--mode), never changed
    done = cli("run", "flows:count", "--arg", "upto=3", "--arg", "scale=2", "--mode", "async",
               script=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"n": 3, "total": 6}
    # without a terminal, progress is plain lines on stderr naming the steps
    assert "start done" in done.stderr and "hop done" in done.stderr
    assert "Count completed" in done.stderr and "async mode" in done.stderr


def test_run_arguments_graphs_and_repr() -> None:
    greet, shout, keys, odd = cli_all(
        # --arg values are JSON when they parse (times=2), else strings (name=Ada)
        ["run", "flows:Greet", "--arg", "name=Ada", "--arg", "times=2", "--no-progress"],
        # a built graph: --arg message=... is the start message, other --arg sets a dict
        ["run", "flows:shout", "--arg", "message=hey", "--no-progress"],
        ["run", "flows:keys_graph", "--arg", "b=1", "--arg", "a=[2]", "--no-progress"],
        ["run", "flows:Odd", "--no-progress"],  # a result JSON cannot hold: its repr
    )
    scores, judged, nested = cli_all(
        ["run", "flows:Scores", "--no-progress"],  # NaN and infinity are not JSON: a repr
        ["run", "flows:Judged", "--no-progress"],  # a StopEvent of its own: its fields
        ["run", "flows:Nested", "--no-progress"],  # events inside the result: their fields
    )
    assert json.loads(nested.stdout) == {"hops": [{"n": 1}, {"n": 2}], "when": 1}
    assert (scores.returncode, scores.stdout) == (0, "{'score': inf, 'mean': nan}\n")
    assert json.loads(judged.stdout) == {"result": None, "answer": 42, "note": "fine"}
    assert (greet.returncode, greet.stdout, greet.stderr) == (0, '"hi Ada hi Ada"\n', "")
    assert json.loads(shout.stdout) == ["HEY!"]
    assert json.loads(keys.stdout) == [["a", "b"]]
    assert (odd.returncode, odd.stdout) == (0, "<Unserializable>\n")


def test_bad_usage_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()  # an empty SQLite database: a store without runs
    db = f"sqlite:///{empty}"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 100)
    used = f"sqlite:///{tmp_path / 'used.db'}"
    made = cli("run", "flows:Count", "--arg", "upto=1", "--store", used, "--run-id", "job-1")
    assert made.returncode == 0, made.stderr
    cases = [
        (["run", "flows:Count", "--event-log", str(tmp_path)], "--event-log"),
        (["run", "flows:Boom", "--store", used, "--run-id", "job-1"], "run id 'job-1' is taken"),
        (["run", "no_such_module:Flow"], "cannot import module 'no_such_module'"),
        (["graph", "flows:NoSuchFlow"], "no attribute 'NoSuchFlow'"),
        (["run", "flows:not_a_workflow"], "not a Workflow subclass or instance"),
        (["run", "flows:Count", "--arg", "upto"], "malformed --arg 'upto'"),
        (["run", "flows:Count", "--store", "runs.db"], "bad store URL 'runs.db'"),
        (["run", "flows:Count", "--store", f"sqlite:///{junk}"], "cannot open the store"),
        (["runs", "list", "--store", "sqlite:///missing.db"], "no file 'missing.db'"),
        (["runs", "show", "nope", "--store", db], "no run 'nope'"),
        (["runs", "resume", "r1", "--store", db], "no run 'r1'"),
        (["run", "flows:Count", "--store", ""], "--store '': give a store URL"),
        (["graph", "flows:Count", "--format", "png"], "argument --format: invalid choice"),
        (["events", "plot", "missing.jsonl"], "the following arguments are required"),
        (["run", "flows:Invalid", "--no-progress"], "WorkflowValidationError: workflow"),
        (["graph", "flows:Invalid"], "WorkflowValidationError: workflow"),
    ]
    for (args, expected), done in zip(cases, cli_all(*(a for a, _ in cases)), strict=True):
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert expected in one_error_line(done.stderr), (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)  # and no more
        assert done.stdout == "", args


# -- stored runs -----------------------------------------------------------------------------------


def test_stored_runs_listed_and_shown_with_full_ids_a_failure_and_an_event_log(
    db: str, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "events.jsonl"
    long_id = "order-" + "x" * 90 + "-end"
    made = cli("run", "flows:Count", "--arg", "upto=2", "--store", db, "--run-id", long_id,
               "--event-log", str(log))  # fmt: skip
    assert made.returncode == 0, made.stderr
    boom = cli("run", "flows:Boom", "--store", db, "--event-log", str(log), "--no-progress")
    # a failing run: exit 1, one line naming the step and the error, no traceback
    assert (boom.returncode, boom.stdout) == (1, "")
    [boom_id] = re.findall(
        r"^stepgraph: error: run (\w+) failed: step 'explode' raised ValueError: bad hop 1\n$",
        boom.stderr,
    )
    assert len(boom_id) == 32  # a generated id, shown whole below
    with log.open("a") as f:
        f.write('{"kind": "step_sta')  # a write cut by a kill -9: skipped

    listing, as_json, show, tail = cli_all(
        ["runs", "list", "--store", db],
        ["runs", "list", "--store", db, "--json"],
        ["runs", "show", long_id, "--store", db],
        ["events", "tail", str(log), "-n", "3"],
        env=_env(COLUMNS="40"),  # a narrow terminal cuts nothing
    )
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["RUN", "ID", "STATUS", "WORKFLOW", "CREATED", "UPDATED", "PARENT"]
    assert lines[1].split()[:3] == [long_id, "completed", "Count"]
    assert lines[2].split()[:3] == [boom_id, "failed", "Boom"]
    assert [r["run_id"] for r in json.loads(as_json.stdout)] == [long_id, boom_id]

    assert show.returncode == 0, show.stderr
    assert re.search(rf"^run\s+{long_id}$", show.stdout, re.M)
    assert re.search(r"^status\s+completed$", show.stdout, re.M)
    assert re.search(r'^result\s+\{"n": 2, "total": 2\}$', show.stdout, re.M)
    assert "checkpoints (4):" in show.stdout
    for seq in range(4):
        assert re.search(rf"^  {long_id}:{seq}\s+{seq}\s+running\s", show.stdout, re.M)

    # --event-log wrote both runs' records; events tail shows the last ones, readably
    records = [json.loads(line) for line in log.read_text().splitlines()[:-1]]
    assert {r["run_id"] for r in records} == {long_id, boom_id}
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "run_started" and "checkpoint_written" in kinds
    assert "run_completed" in kinds and kinds[-1] == "run_failed"
    assert tail.returncode == 0, tail.stderr
    started_line, failed_line, run_failed = tail.stdout.splitlines()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  step_started ", started_line)
    assert f"run {boom_id}  Boom.explode  (superstep 1, event Hop)" in started_line
    assert "step_failed" in failed_line and "Boom.explode" in failed_line
    assert failed_line.endswith("error: ValueError: bad hop 1")
    assert "run_failed" in run_failed and run_failed.endswith("error: ValueError: bad hop 1")


def test_resume_a_crashed_run(db: str, tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    crashed = cli(
        "run", "flows:Count", "--arg", "upto=4", "--arg", "crash_at=2",
        "--arg", f"crash_marker={marker}", "--store", db, "--run-id", "c1",
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL  # killed in hop 2, mid-superstep 3
    assert "hop started" in crashed.stderr
    show = cli("runs", "show", "c1", "--store", db).stdout
    assert re.search(r"^status\s+running$", show, re.M) and "checkpoints (4):" in show

    resumed = cli("runs", "resume", "c1", "--store", db)  # the run says where Count is
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"n": 4, "total": 4}
    assert "Count completed" in resumed.stderr and "run c1" in resumed.stderr


def test_a_run_of_a_class_resumes_under_the_bounds_it_ran_under(tmp_path: Path) -> None:
    """A run started from Python with ``Count(max_supersteps=3)``: the command line makes
    the class with the bounds its checkpoint keeps, not the class's defaults."""
    path, marker = tmp_path / "runs.db", tmp_path / "crashed-once"
    started_in_python = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from flows import Count; "
            "from stepgraph.stores import SqliteStore; "
            "wf = Count(store=SqliteStore(sys.argv[1]), max_supersteps=3); "
            "wf.run_sync(run_id='b1', upto=6, crash_at=2, crash_marker=sys.argv[2])",
            str(path),
            str(marker),
        ],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    assert started_in_python.returncode == -signal.SIGKILL, started_in_python.stderr
    resumed = cli("runs", "resume", "b1", "--store", f"sqlite:///{path}", "--no-progress")
    assert resumed.returncode == 1, resumed.stderr  # past its 3 supersteps, as it would have
    assert "max_supersteps=3" in resumed.stderr


def test_a_paused_run_exits_3_and_resumes_with_an_answer(db: str) -> None:
    paused, answered_at_once, lost, graph = cli_all(
        ["run", "flows:Ask", "--store", db, "--run-id", "ask-1", "--no-progress"],
        # without a store, --respond answers at once; without an answer the run cannot wait
        ["run", "flows:Ask", "--respond", "Bo"],
        ["run", "flows:Ask", "--no-progress"],
        # a graph's request (ctx.request_info) gets its answer (JSON: a bool) the same way
        ["run", "flows:approval", "--arg", "message=deploy", "--respond", "true"],
    )
    assert json.loads(graph.stdout) == ["deploy: go"]
    assert paused.returncode == 3, paused.stderr
    assert paused.stdout == ""
    assert "run ask-1 is waiting for input" in paused.stderr and "name?" in paused.stderr
    assert "stepgraph runs resume ask-1 --store" in paused.stderr
    assert json.loads(answered_at_once.stdout) == "hello Bo"
    assert lost.returncode == 1 and "no store" in lost.stderr

    answered = cli(
        "runs", "resume", "ask-1", "--workflow", "flows:Ask", "--store", db, "--respond", "Ada"
    )
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout) == "hello Ada"


def test_a_graph_run_resumes_where_it_was_run_from_and_a_run_that_does_not_say_needs_it(
    db: str,
) -> None:
    paused = cli("run", "flows:approval", "--arg", "message=ship", "--store", db, "--run-id", "g")
    assert paused.returncode == 3, paused.stderr
    # a run of the same graph, started from Python: a built graph does not say where it is
    made = subprocess.run(
        [sys.executable, "-c", FROM_PYTHON, db.removeprefix("sqlite:///")],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert made.returncode == 0, made.stderr
    answered, unsaid = cli_all(
        ["runs", "resume", "g", "--store", db, "--respond", "true"],
        ["runs", "resume", "py", "--store", db, "--respond", "true"],
    )
    told = cli(
        "runs", "resume", "py", "--workflow", "flows:approval", "--store", db, "--respond", "false"
    )
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout) == ["ship: go"]
    assert unsaid.returncode == 2
    assert "give --workflow MODULE:ATTR" in one_error_line(unsaid.stderr)
    assert told.returncode == 0, told.stderr
    assert json.loads(told.stdout) == ["py: stop"]


FROM_PYTHON = """
import asyncio, sys
from flows import Approver
from stepgraph import WorkflowBuilder
from stepgraph.stores import SqliteStore

async def main():
    store = SqliteStore(sys.argv[1])
    built = WorkflowBuilder(start=Approver(id="approver")).build(store=store)
    handler = built.run("py", run_id="py")
    async for event in handler.stream_events():
        if type(event).__name__ == "RequestInfoEvent":
            break
    store.close()

asyncio.run(main())
"""


def test_a_workflow_with_a_store_of_its_own_pauses_in_it_and_says_how_to_resume_it(
    tmp_path: Path,
) -> None:
    own = tmp_path / "own.db"
    paused, in_memory = cli_all(
        ["run", "flows:asks_in_its_store", "--run-id", "own-1", "--no-progress"],
        ["run", "flows:asks_in_memory", "--no-progress"],  # gone with the process: no pause
        env=_env(STEPGRAPH_TEST_OWN=str(own)),
    )
    assert paused.returncode == 3, paused.stderr
    assert f"stepgraph runs resume own-1 --store sqlite:///{own}" in paused.stderr
    assert in_memory.returncode == 1, in_memory.stderr
    assert "no store that outlives this process" in in_memory.stderr
    answered = cli("runs", "resume", "own-1", "--store", f"sqlite:///{own}", "--respond", "Ada",
                   env=_env(STEPGRAPH_TEST_OWN=str(own)))  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout) == "hello Ada"


def test_event_log_naming_the_workflows_own_log_writes_each_record_once(tmp_path: Path) -> None:
    log = tmp_path / "own.jsonl"
    made = cli("run", "flows:counts_to_its_log", "--arg", "upto=1", "--no-progress",
               "--event-log", str(log), env=_env(STEPGRAPH_TEST_OWN=str(log)))  # fmt: skip
    assert made.returncode == 0, made.stderr
    kinds = [json.loads(line)["kind"] for line in log.read_text().splitlines()]
    assert kinds.count("run_started") == 1 and kinds.count("run_completed") == 1, kinds
    assert kinds.count("step_started") == 3, kinds


def test_fork_from_a_checkpoint(db: str) -> None:
    made = cli("run", "flows:Count", "--arg", "upto=3", "--store", db, "--run-id", "p")
    assert made.returncode == 0, made.stderr
    fork = cli("runs", "fork", "p", "--checkpoint", "p:2", "--store", db)
    assert fork.returncode == 0, fork.stderr
    assert json.loads(fork.stdout) == {"n": 3, "total": 3}
    [child] = re.findall(r"run (\S+) is a fork of run p at p:2", fork.stderr)
    show, unknown = cli_all(
        ["runs", "show", child, "--store", db],
        ["runs", "fork", "p", "--checkpoint", "p:99", "--workflow", "flows:Count", "--store", db],
    )
    assert unknown.returncode == 2
    assert "run 'p' has no checkpoint 'p:99'" in one_error_line(unknown.stderr)
    assert re.search(rf"^run\s+{child}$", show.stdout, re.M)
    assert re.search(r"^parent\s+p \(checkpoint p:2\)$", show.stdout, re.M)
    assert re.search(rf"^  {child}:0\s+2\s", show.stdout, re.M)  # it starts at superstep 2


def test_cancel_a_paused_run_and_refuse_a_live_one(db: str, gate: Path) -> None:
    assert cli("run", "flows:Ask", "--store", db, "--run-id", "a").returncode == 3
    cancelled = cli("runs", "cancel", "a", "--store", db)
    assert (cancelled.returncode, cancelled.stdout) == (0, "run a cancelled (it was paused)\n")

    live = started(
        "run", "flows:Gate", "--store", db, "--run-id", "live-1",
        env=_env(STEPGRAPH_TEST_GATE=str(gate)),
    )  # fmt: skip
    try:
        assert live.stderr is not None and live.stdout is not None
        read_until(live.stderr.fileno(), r"wait_at_gate started", bytearray())
        refused, locked, show = cli_all(
            ["runs", "cancel", "live-1", "--store", db],
            ["runs", "resume", "live-1", "--workflow", "flows:Gate", "--store", db],
            ["runs", "show", "a", "--store", db],
        )
        assert refused.returncode == 2
        assert "run 'live-1' (running) is live in another process" in one_error_line(refused.stderr)
        assert locked.returncode == 2
        assert "run 'live-1' is owned by another coordinator" in one_error_line(locked.stderr)
        open_gate(gate)
        assert live.wait(TIMEOUT) == 0
        assert json.loads(live.stdout.read()) == "through"
    finally:
        if live.poll() is None:
            live.kill()
        live.communicate()
    assert re.search(r"^status\s+cancelled$", show.stdout, re.M)
    assert re.search(r"^error\s+WorkflowCancelled: ", show.stdout, re.M)


# -- graphs and event logs -------------------------------------------------------------------------


def test_graph_mermaid_and_dot() -> None:
    mermaid, dot = cli_all(["graph", "flows:Count"], ["graph", "flows:shout", "--format", "dot"])
    assert mermaid.returncode == 0
    assert mermaid.stdout.startswith("flowchart TD\n")
    assert "start -->|Hop| hop" in mermaid.stdout and "hop -->|Hop| hop" in mermaid.stdout
    assert dot.stdout.startswith('digraph "')
    assert '"upper" -> "exclaim";' in dot.stdout


def test_events_tail_prints_the_last_n_records_or_all_when_there_are_fewer(
    tmp_path: Path,
) -> None:
    log = tmp_path / "events.jsonl"
    record = {"schema_version": 1, "kind": "run_started", "time": 1.7e9, "monotonic": 1.0,
              "workflow": "W", "mode": "superstep"}  # fmt: skip
    log.write_text("".join(json.dumps({**record, "run_id": f"r{i}"}) + "\n" for i in range(7)))
    default, two, none = cli_all(
        ["events", "tail", str(log)], ["events", "tail", str(log), "-n", "2"],
        ["events", "tail", str(log), "-n", "0"],
    )  # fmt: skip
    assert [re.search(r"run (r\d)", line)[1] for line in default.stdout.splitlines()] == [  # type: ignore[index]
        f"r{i}" for i in range(7)
    ]
    assert ["r5" in two.stdout, "r6" in two.stdout, "r4" in two.stdout] == [True, True, False]
    assert (none.returncode, none.stdout) == (0, "")


def test_events_tail_shows_a_flow_start_and_skips_lines_that_are_no_records(
    tmp_path: Path,
) -> None:
    log = tmp_path / "events.jsonl"
    flow = {"schema_version": 1, "kind": "flow_started", "time": 1.7e9, "monotonic": 1.0,
            "flow_id": "flow.abc", "capacity": {"cpu": 2, "gpu": 1}}  # fmt: skip
    far = {**flow, "kind": "run_started", "time": 1e300, "run_id": "r"}  # no date: as it is
    log.write_text("\n".join(json.dumps(r) for r in ({"a": 1}, flow, far)) + "\n")
    done = cli("events", "tail", str(log))
    assert done.returncode == 0, done.stderr
    line, far_line = done.stdout.splitlines()
    assert "flow_started" in line and "flow flow.abc" in line and "slots: cpu 2, gpu 1" in line
    assert far_line.startswith("(time 1e+300)  run_started"), far_line


def test_events_tail_follow(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    record = {"schema_version": 1, "kind": "run_started", "time": 1.7e9, "monotonic": 1.0,
              "run_id": "r-old", "workflow": "W", "mode": "superstep"}  # fmt: skip
    log.write_text(json.dumps(record) + "\n" + json.dumps({**record, "run_id": "r-last"}) + "\n")
    follower = started("events", "tail", str(log), "-n", "1", "--follow")
    try:
        assert follower.stdout is not None
        out = bytearray()
        read_until(follower.stdout.fileno(), r"run r-last", out)
        assert "r-old" not in out.decode()
        error = {"type": "KeyError", "message": "k"}
        failed = {**record, "kind": "step_failed", "run_id": "r-new", "step": "s",
                  "invocation": 0, "attempt": 2, "error": error}  # fmt: skip
        with log.open("a") as f:
            f.write("not json\n")
            f.write(json.dumps(failed) + "\n")
        text = read_until(follower.stdout.fileno(), r"run r-new.*\n", out)
        [line] = [line for line in text.splitlines() if "r-new" in line]
        assert "step_failed" in line and "W.s" in line and "attempt 2" in line
        assert line.endswith("error: KeyError: k")
        assert "not json" not in text
        follower.send_signal(signal.SIGINT)
        assert follower.wait(TIMEOUT) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.communicate()


PLOT_STUB = """\
import sys, types
from stepgraph.errors import MissingExtraError
mode = sys.argv.pop(1)
if mode == "missing":
    sys.modules["stepgraph.telemetry.plot"] = None  # the module is not there
else:
    stub = types.ModuleType("stepgraph.telemetry.plot")
    def plot_timeline(events_path, out_path):
        if mode == "no-extra":
            raise MissingExtraError("stepgraph plot", "matplotlib", "plot")
        with open(out_path, "w") as f:
            f.write("timeline of " + str(events_path))
    stub.plot_timeline = plot_timeline
    sys.modules["stepgraph.telemetry.plot"] = stub
from stepgraph.cli import main
sys.exit(main(["plot", *sys.argv[1:]]))
"""


def test_plot_calls_plot_timeline_or_says_what_is_missing(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text("")
    out = tmp_path / "out.png"

    def plot(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", PLOT_STUB, mode, str(log), "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=HERE,
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        drawn, missing, no_extra = pool.map(plot, ["stub", "missing", "no-extra"])
    assert drawn.returncode == 0, drawn.stderr
    assert out.read_text() == f"timeline of {log}"
    assert missing.returncode == 2
    assert "stepgraph.telemetry.plot is missing" in one_error_line(missing.stderr)
    assert no_extra.returncode == 2
    assert "pip install 'stepgraph[plot]'" in one_error_line(no_extra.stderr)


# -- progress --------------------------------------------------------------------------------------


def test_without_rich_progress_is_plain_lines_and_a_hint(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "rich"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('rich is not installed')\n")
    done = cli("run", "flows:Count", "--arg", "upto=1", env=_env(PYTHONPATH=str(shadow.parent)))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"n": 1, "total": 1}
    assert done.stderr.count("pip install 'stepgraph[cli]'") == 1
    for text in ("superstep 0: start started", "start done", "superstep 1: hop started"):
        assert text in done.stderr
    assert done.stderr.splitlines()[-1].startswith("stepgraph: Count completed in ")


def test_the_progress_display_names_the_tasks_of_a_steps_task_flow(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "rich"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('rich is not installed')\n")
    done = cli("run", "flows:Campaign", env=_env(PYTHONPATH=str(shadow.parent)))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "5\n"
    assert done.stderr.count("task simulate started") == 3
    assert done.stderr.count("task simulate done") == 3
    assert "tasks done: simulate x3" in done.stderr.splitlines()[-1]


def screen(output: str, width: int) -> list[str]:
    """What a terminal shows after ``output``: enough of VT100 for rich's live display
    (CR, LF, cursor up, erase line; colours and cursor visibility ignored)."""
    lines = [""]
    row = col = 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]", output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            col = 0
            if row == len(lines):
                lines.append("")
        elif token.startswith("\x1b["):
            code, args = token[-1], token[2:-1]
            if code == "A":
                row = max(0, row - int(args or 1))
            elif code == "K":
                lines[row] = "" if args == "2" else lines[row][:col]
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + 1 :]
            col = min(col + 1, width)
    return [line.rstrip() for line in lines]


def test_live_progress_in_a_terminal(gate: Path) -> None:
    """The live display names the steps as they run and leaves one summary line."""
    rows, columns = 30, 120
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = _env(STEPGRAPH_TEST_GATE=str(gate), TERM="xterm-256color")
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "LINES"):
        env.pop(name, None)  # what would make rich treat the terminal otherwise
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepgraph.cli", "run", "flows:Gate"],
        cwd=HERE,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    out = bytearray()
    try:
        # while the gated step runs: the first step done, the second named as running
        live = read_until(master, r"wait_at_gate\s+running", out)
        assert re.search(r"warm_up\s+done", live)
        assert re.search(r"Gate · superstep 1 · \d+\.\ds · run \w+", live)
        open_gate(gate)
        read_until(master, r'"through"', out)
        assert proc.wait(TIMEOUT) == 0
        while True:  # the rest, until the terminal closes
            ready, _, _ = select.select([master], [], [], TIMEOUT)
            try:
                chunk = os.read(master, 65536) if ready else b""
            except OSError:
                chunk = b""
            if not chunk:
                break
            out.extend(chunk)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = out.decode()
    # the region was redrawn as the run went on: the gated step running, then done
    assert re.search(r"wait_at_gate\s+running.*wait_at_gate\s+done", ANSI.sub("", text), re.S)
    assert "\x1b[?25h" in text  # the cursor is shown again
    shown = [line for line in screen(text, columns) if line]
    assert len(shown) == 2, shown  # no leftover of the live region: the summary, the result
    summary, result = shown
    assert re.fullmatch(
        r"✓ Gate completed in \d+\.\d\ds · superstep 1 · done: warm_up, wait_at_gate · run \w+",
        summary,
    )
    assert result == '"through"'


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    from tests.pg import PG_DSN, pg_schema, require_pg

    require_pg()
    with pg_schema() as schema:
        yield f"{PG_DSN}?schema={schema}"


def test_a_postgresql_store(pg_url: str) -> None:
    done = cli("run", "flows:Count", "--arg", "upto=2", "--store", pg_url, "--run-id", "pg-1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"n": 2, "total": 2}
    show = cli("runs", "show", "pg-1", "--store", pg_url)
    assert re.search(r"^status\s+completed$", show.stdout, re.M)
    assert "checkpoints (4):" in show.stdout
    assert re.search(r'^result\s+\{"n": 2', show.stdout, re.M)


def test_a_store_of_another_kind_is_named_by_python_module_attr(tmp_path: Path) -> None:
    env = _env(CLI_TEST_DB=str(tmp_path / "third.db"))
    store = "python:cli_stores:make"
    made = cli("run", "flows:Count", "--arg", "upto=2", "--store", store, "--run-id", "third-1",
               "--no-progress", env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    listing = cli("runs", "list", "--store", store, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "third-1" in listing.stdout
    for attr, said in [
        ("nothing", "module 'cli_stores' has no attribute 'nothing'"),
        ("NOT_A_STORE", "it names a str, not a store"),
        ("broken", "making the store 'python:cli_stores:broken' failed: OSError: the bucket"),
    ]:
        bad = cli("runs", "list", "--store", f"python:cli_stores:{attr}", env=env)
        assert bad.returncode == 2, bad.stderr
        assert said in one_error_line(bad.stderr)
