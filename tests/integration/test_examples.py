"""The examples run and do what they say.

Each example is checked twice: imported, with its main function called and its
result asserted on; and as a real script (``python examples/x.py``) in a
subprocess, with its output asserted on. Every file in examples/ must be
covered here, and the README's code block must be ``examples/readme_example.py``
and run as shown.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.integration.example_scripts import check_script, run_scripts

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"

# script -> (arguments, standard input, strings its output must contain)
SCRIPTS: dict[str, tuple[list[str], str, list[str]]] = {
    "hello_steps.py": ([], "", ["Hello, stepgraph!"]),
    "fan_out_fan_in.py": (
        [],
        "",
        ["squares:      [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]", "peak workers: 4"],
    ),
    "loop_with_retries.py": (
        [],
        "",
        ["loop iterations: 3", "page 3: succeeded on attempt 3 of 3", "retries in total: 6"],
    ),
    "human_in_the_loop.py": ([], "", ["Approve? yes", "billing-api: deployed"]),
    "human_in_the_loop.py --interactive": (
        ["--interactive"],
        "no\n",
        ["Approve? ", "billing-api: not deployed"],
    ),
    "streaming_progress.py": (
        [],
        "",
        ["1/7  plan", "7/7  assemble", "# Report: tidal energy", "13 progress events streamed"],
    ),
    "readme_example.py": ([], "", ["42"]),
    "tracing.py": (
        [],
        "",
        [
            "answer: an answer about tracing",
            "pages: 3",
            "  stepgraph.run Answer",
            "      stepgraph.step draft ERROR TimeoutError (retried)",
            "  stepgraph.workflow crawl-1",
            "    stepgraph.block crawl",
            "      stepgraph.task count",
            "event log: 30 records, 1 retry, 4 tasks and 1 block resolved",
        ],
    ),
    "hpc_campaign.py": (
        [],
        "",
        [
            "campaign-1: 4 members on default=ThreadBackend, process=ProcessBackend; "
            "slots {'cpu': 2, 'gpu': 1}",
            "  member 3: write_deck -> simulate -> analyze (DAG built)",
            "  member 0: T = 1.0, variance 0.516 (T/k = 0.500), simulated in a worker process",
            "train:    fitted k = 2.07 (true k = 2.0)",
            "evaluate: relative error 3.4%",
            "wc -l:    16 lines in 4 input decks",
            "captured: 10 stdout/stderr files of executables in <work_dir>/run-1/",
            "(cpu slots: 2)",
            "analyze 1 at once (gpu slots: 1)",
            "scope:    every future carries workflow id 'campaign-1'",
        ],
    ),
    "hpc_campaign_dask.py": (
        [],
        "",
        [
            "campaign-1: 4 members on default=DaskBackend, process=DaskBackend; "
            "slots {'cpu': 2, 'gpu': 1}",
            "  member 3: write_deck -> simulate -> analyze (DAG built)",
            "  member 0: T = 1.0, variance 0.516 (T/k = 0.500), simulated in this process",
            "train:    fitted k = 2.07 (true k = 2.0)",
            "wc -l:    16 lines in 4 input decks",
            "analyze 1 at once (gpu slots: 1)",
            "scope:    every future carries workflow id 'campaign-1'",
        ],
    ),
    "distributed_workers.py": (
        [],
        "",
        [
            "submitted: 6 runs to queue 'default'",
            "streamed Fetched, Summarized, StopEvent",
            "result:    tides: 20 words",
            "result:    reefs: 20 words",
            "workers:   2 stopped (exit codes [0, 0])",
        ],
    ),
    "resume_after_crash.py": (
        [],
        "",
        [
            "[child] ship:    A-17",
            "killed:  the child (exit status -9)",
            "stored:  run order-A-17 is running, 3 checkpoints",
            "resumed: A-17 shipped, paid by pay-1 (completed)",
            "charged: 1 time(s)",
        ],
    ),
}


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (registered, so pydantic can resolve it)."""
    module_name = f"stepgraph_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# -- every example is covered -------------------------------------------------------------------


def test_every_example_file_is_run_by_this_module_or_the_graph_examples_module() -> None:
    on_disk = {path.name for path in EXAMPLES.glob("*.py")}
    covered = {key.split()[0] for key in SCRIPTS}
    graphs = {path.name for path in EXAMPLES.glob("graph_*.py")}  # test_graph_examples.py
    assert on_disk == covered | graphs
    assert not covered & graphs


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_every_example_is_a_script_with_a_docstring_and_a_main(path: Path) -> None:
    module = load(path.stem)
    assert module.__doc__ and module.__doc__.strip()
    assert callable(module.main)
    assert 'if __name__ == "__main__":\n    main()' in path.read_text()


# -- imported: the main logic returns the right result ------------------------------------------


async def test_hello_steps_passes_the_greeting_through_three_steps() -> None:
    example = load("hello_steps")
    assert await example.hello("stepgraph") == "Hello, stepgraph!"
    assert example.HelloSteps().steps == ["greet", "polish"]


async def test_fan_out_fan_in_gathers_every_result_with_four_workers_at_most() -> None:
    example = load("fan_out_fan_in")
    result = await example.fan_out_fan_in(list(range(1, 11)))
    assert result["squares"] == [n * n for n in range(1, 11)]
    assert result["peak_workers"] == 4  # parallel, and never more than num_workers


async def test_fan_out_fan_in_with_fewer_items_than_workers() -> None:
    example = load("fan_out_fan_in")
    result = await example.fan_out_fan_in([7, 3])
    assert result == {"squares": [49, 9], "peak_workers": 2}


async def test_loop_with_retries_loops_once_per_page_and_retries_each_fetch_twice() -> None:
    example = load("loop_with_retries")
    result = await example.crawl(3)
    assert result["loop_iterations"] == 3
    assert result["attempts"] == {1: 3, 2: 3, 3: 3}
    assert result["retries"] == 6
    assert result["contents"] == [f"content of page {p}" for p in (1, 2, 3)]


async def test_loop_with_retries_with_one_page_does_not_loop() -> None:
    example = load("loop_with_retries")
    result = await example.crawl(1)
    assert result["loop_iterations"] == 1
    assert result["attempts"] == {1: 3}


@pytest.mark.parametrize(("answer", "outcome"), [("yes", "deployed"), ("no", "not deployed")])
async def test_human_in_the_loop_pauses_for_the_answer_and_finishes_with_it(
    answer: str, outcome: str
) -> None:
    example = load("human_in_the_loop")
    prompts, result = await example.ask_and_run("search", lambda prompt: answer)
    assert prompts == ["Deploy search to production. Approve? "]
    assert result == f"search: {outcome}"


async def test_streaming_progress_streams_every_stage_in_order_and_returns_the_report() -> None:
    example = load("streaming_progress")
    seen: list[tuple[Any, float]] = []
    run = await example.research_report("tides", lambda ev, t: seen.append((ev, t)))

    titles = list(example.OUTLINE)
    assert run.report.startswith("# Report: tides\n")
    assert [line[3:] for line in run.report.splitlines() if line.startswith("## ")] == titles
    assert [ev for ev, _ in seen] == run.progress  # the callback saw each event as it arrived
    assert [t for _, t in seen] == sorted(t for _, t in seen)

    stages = [ev.stage for ev in run.progress]
    assert stages == ["plan"] + ["write"] * (2 * len(titles)) + ["collect", "assemble"]
    details = [ev.detail for ev in run.progress]
    drafting = [i for i, d in enumerate(details) if d.startswith("drafting")]
    finished = [i for i, d in enumerate(details) if d.startswith("finished")]
    assert max(drafting) < min(finished)  # the five writers work at the same time
    dones = [ev.done for ev in run.progress]
    assert dones == sorted(dones) and dones[0] == 1 and dones[-1] == run.progress[-1].total == 7
    assert run.seconds > 0


def test_streaming_progress_line_shows_time_bar_count_stage_and_detail() -> None:
    example = load("streaming_progress")
    ev = example.Progress(stage="write", detail="finished 'Risks'", done=3, total=6)
    line = example.progress_line(ev, 0.0125, width=10)
    assert line == "  12.5 ms [#####.....] 3/6  write    finished 'Risks'"


def test_resume_after_crash_resumes_the_killed_run_and_charges_once(tmp_path: Path) -> None:
    example = load("resume_after_crash")
    output = io.StringIO()
    with redirect_stdout(output):
        result = example.main(str(tmp_path))
    assert result == "A-17 shipped, paid by pay-1"
    lines = output.getvalue().splitlines()
    assert lines.count("ship:    A-17") == 1  # the interrupted step ran again after the resume
    assert "charged: 1 time(s)" in lines


def test_hpc_campaign_fits_k_within_its_slots_and_captures_what_executables_print(
    tmp_path: Path,
) -> None:
    example = load("hpc_campaign")
    with redirect_stdout(io.StringIO()):
        result = example.main(work_dir=str(tmp_path))
    assert result["error"] < 0.1 and abs(result["k"] - example.TRUE_K) < 0.2
    assert os.getpid() not in result["pids"]  # simulate ran in the pool's worker processes
    assert 1 <= result["most_at_once"]["simulate"] <= example.RESOURCES["cpu"]
    assert result["most_at_once"]["analyze"] == 1  # one gpu slot: one analysis at a time
    assert result["wc_total"] == 16  # 4 decks of 4 lines
    captured = result["captured"]  # write_deck x4 and count_lines: stdout and stderr each
    assert len(captured) == 10 and {Path(name).suffix for name in captured} == {
        ".stdout",
        ".stderr",
    }
    assert result["scopes"] == {"campaign-1"}


def test_hpc_campaign_dask_differs_by_its_backends_only(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    example = load("hpc_campaign_dask")
    chosen = example.backends()
    assert set(chosen) == set(example.hpc_campaign.backends())  # the same names
    (dask,) = set(chosen.values())  # one Dask backend under both names
    assert type(dask).__name__ == "DaskBackend"
    with redirect_stdout(io.StringIO()):
        result = example.hpc_campaign.main(lambda: chosen, str(tmp_path))
    assert result["pids"] == {os.getpid()}  # the LocalCluster's workers are in this process
    assert result["wc_total"] == 16 and len(result["captured"]) == 10
    assert result["most_at_once"]["analyze"] == 1
    assert result["scopes"] == {"campaign-1"}


def test_readme_example_prints_the_answer() -> None:
    example = load("readme_example")
    out = io.StringIO()
    with redirect_stdout(out):
        example.main()
    assert out.getvalue() == "42\n"


# -- the README's code block is the readme example, and runs ------------------------------------


def readme_code_block() -> str:
    match = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert match is not None, "README.md has no ```python block"
    return match.group(1)


def test_readme_code_block_is_exactly_the_readme_example_after_its_docstring() -> None:
    source = (EXAMPLES / "readme_example.py").read_text()
    docstring_end = source.index('"""', 3) + 3
    assert source[docstring_end:].lstrip("\n") == readme_code_block()


def test_readme_code_block_runs_as_shown() -> None:
    namespace: dict[str, Any] = {"__name__": "readme_block"}
    exec(compile(readme_code_block(), "README.md", "exec"), namespace)
    out = io.StringIO()
    with redirect_stdout(out):
        namespace["main"]()
    assert out.getvalue() == "42\n"


# -- as scripts: `python examples/x.py` ---------------------------------------------------------


@pytest.fixture(scope="module")
def script_outputs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Run every script at once, each in its own process, and collect what each printed."""
    yield from run_scripts(SCRIPTS)


@pytest.mark.parametrize("key", list(SCRIPTS))
def test_example_runs_as_a_script_and_prints_its_result(
    key: str, script_outputs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    check_script(script_outputs[key], SCRIPTS[key][2])


def test_hpc_campaign_gives_the_same_results_on_processes_and_on_dask(
    script_outputs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    def findings(key: str) -> list[str]:
        lines = script_outputs[key].stdout.splitlines()
        kept = [line.split(", simulated in")[0] for line in lines if "variance" in line]
        return kept + [line for line in lines if line.startswith(("train:", "evaluate:", "wc"))]

    local = findings("hpc_campaign.py")
    assert len(local) == 4 + 3
    assert findings("hpc_campaign_dask.py") == local


def test_every_other_readme_code_block_runs_and_prints_what_its_comment_says() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)[1:]
    assert blocks, "README.md shows only one python block"
    for block in blocks:
        out = io.StringIO()
        with redirect_stdout(out):
            code = compile(block, "README.md", "exec", dont_inherit=True)
            exec(code, {"__name__": "__main__"})  # as a script runs it
        promised = re.findall(r"print\(.*\)\s+#\s*(.+)", block)
        assert promised and out.getvalue().splitlines() == promised


async def test_distributed_workers_run_submitted_runs_and_stream_them_to_an_attached_handler(
    tmp_path: Path,
) -> None:
    example = load("distributed_workers")
    url = f"sqlite:///{tmp_path}/runs.db"
    workers = [example.start_worker(url) for _ in range(2)]
    try:
        outcome = await example.submit_and_follow(url, ["tides", "dunes"])
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(60) for worker in workers]
    assert codes == [0, 0]
    assert outcome["streamed"] == ["Fetched", "Summarized", "StopEvent"]
    assert [r["summary"] for r in outcome["results"]] == ["tides: 20 words", "dunes: 20 words"]


def test_tracing_sends_its_spans_over_otlp_when_an_endpoint_is_set() -> None:
    """examples/tracing.py with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: the spans reach an
    OTLP/HTTP receiver (here a local one that keeps what it is sent)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[tuple[str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # (the name http.server calls)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "tracing.py")],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    finally:
        server.shutdown()
        server.server_close()
    check_script(done, ["answer: an answer about tracing", f"spans sent to {endpoint}"])
    names: list[str] = []
    for path, body in received:
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        names += [
            span.name
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
    for name in ("stepgraph.run", "stepgraph.step", "stepgraph.workflow", "stepgraph.task"):
        assert name in names, names
