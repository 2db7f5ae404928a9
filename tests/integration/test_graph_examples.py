"""The executor-graph examples run and do what their docstrings say; so does docs/graphs.md.

Each example is imported and its main function called, with its result
asserted on (routing, fan-in order, reducer totals, the pause for a human, the
inner graph's requests reaching the outer caller); and each runs as a real
script (``python examples/graph_x.py``) in a subprocess, with its printed output
asserted on. The code blocks of ``docs/graphs.md`` run as one script, as the
page says, and their assertions hold.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from stepgraph import RunResult
from tests.integration.example_scripts import check_script, run_scripts

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GRAPHS_DOC = ROOT / "docs" / "graphs.md"


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (registered, so annotations resolve)."""
    module_name = f"stepgraph_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# -- ticket triage: a switch with Cases and a Default -------------------------------------------


async def test_ticket_triage_routes_each_ticket_to_the_first_matching_case_or_the_default() -> None:
    example = load("graph_ticket_triage")
    routed = await example.triage(example.TICKETS)
    assert [(r.ticket_id, r.team) for r in routed] == [
        (1, "billing"),
        (2, "engineering"),
        (3, "general"),
        (4, "billing"),
        (5, "engineering"),
    ]
    assert routed[2].reply == "Thanks for reaching out about 'How do I change my avatar?'."


async def test_ticket_triage_outputs_come_in_executor_order_then_arrival_order() -> None:
    example = load("graph_ticket_triage")
    result: RunResult = await example.build_triage().run(example.TICKETS)
    # superstep mode: all teams run in the same superstep; outputs are ordered by
    # executor (billing, engineering, general), then by the order each got its tickets
    assert [r.ticket_id for r in result.outputs] == [1, 4, 2, 5, 3]


async def test_ticket_triage_with_no_tickets_finishes_with_no_outputs() -> None:
    example = load("graph_ticket_triage")
    assert await example.triage([]) == []


def test_ticket_triage_mermaid_labels_the_switch_edges_by_case() -> None:
    example = load("graph_ticket_triage")
    chart = example.build_triage().to_mermaid()
    assert "    classify -->|is_billing| billing\n" in chart
    assert "    classify -->|is_bug| engineering\n" in chart
    assert "    classify -->|default| general\n" in chart


# -- map-reduce: fan-out with a selector, fan-in, a reducer key ---------------------------------


@pytest.mark.parametrize("mappers", [1, 3, 5])
async def test_map_reduce_counts_every_word_once_whatever_the_number_of_mappers(
    mappers: int,
) -> None:
    example = load("graph_map_reduce")
    output, state = await example.word_count(example.TEXT, mappers)
    ids = [f"mapper_{i}" for i in range(mappers)]
    assert output.counted == 33
    assert output.in_state == 33  # the reducer key merged every mapper's write
    assert state["words"] == 33
    assert output.sources == ids  # the fan-in list is in source order
    assert state["mappers"] == ids  # reducer writes merge in executor order
    assert output.top == [("the", 9), ("and", 2), ("moon", 2), ("power", 2), ("pulls", 2)]


async def test_map_reduce_with_more_mappers_than_words_still_releases_the_fan_in() -> None:
    example = load("graph_map_reduce")
    output, state = await example.word_count("one two", 4)
    assert output.counted == 2 and state["words"] == 2
    assert output.top == [("one", 1), ("two", 1)]
    assert output.sources == [f"mapper_{i}" for i in range(4)]


# -- review loop: conditional edges and a request for a human -----------------------------------


@pytest.mark.parametrize(("answer", "verdict"), [("yes", "published"), ("no", "rejected")])
async def test_review_loop_revises_until_accepted_then_pauses_for_the_human(
    answer: str, verdict: str
) -> None:
    example = load("graph_review_loop")
    prompts: list[str] = []

    def human(prompt: str) -> str:
        prompts.append(prompt)
        return answer

    outcome = await example.review_and_publish("tidal power", human)
    text = "Tidal power: what it is. Also why it matters. Also what it costs."
    assert outcome.questions == [example.Draft(3, text)]  # asked once, about the final draft
    assert len(prompts) == 1 and prompts[0].startswith("Publish draft v3? ")
    assert outcome.reviews == 3  # two revisions, then accepted
    assert outcome.outputs == [f"draft v3 {verdict}: {text}"]
    assert outcome.streamed == outcome.outputs


def test_review_loop_mermaid_shows_both_conditional_edges() -> None:
    example = load("graph_review_loop")
    chart = example.build_review_loop().to_mermaid()
    assert "    reviewer -->|needs_revision| writer\n" in chart
    assert "    reviewer -->|is_accepted| publisher\n" in chart


# -- nested workflow: the inner graph's requests reach the outer caller -------------------------


async def test_nested_workflow_surfaces_inner_requests_and_sends_inner_outputs_on() -> None:
    example = load("graph_nested_workflow")
    report = await example.process(example.REPORT, lambda expense: expense.amount < 500)
    assert report.asked == [
        ("approval", example.Expense("hotel", 420)),
        ("approval", example.Expense("first-class upgrade", 900)),
    ]
    assert report.lines == [
        "taxi: approved by policy",
        "hotel: approved by manager",
        "lunch: approved by policy",
        "first-class upgrade: refused by manager",
    ]
    assert report.reimbursed == 40 + 420 + 25


async def test_nested_workflow_that_asks_nothing_needs_no_answers() -> None:
    example = load("graph_nested_workflow")

    def no_questions(expense: object) -> bool:
        raise AssertionError(f"asked about {expense}")

    small = [example.Expense("coffee", 4), example.Expense("train", 60)]
    report = await example.process(small, no_questions)
    assert report.asked == []
    assert report.reimbursed == 64


# -- the guide's code ---------------------------------------------------------------------------


def test_the_code_of_the_graphs_guide_runs_as_one_script() -> None:
    blocks = re.findall(r"```python\n(.*?)```", GRAPHS_DOC.read_text(), re.DOTALL)
    assert len(blocks) >= 10
    namespace: dict[str, object] = {"__name__": "graphs_guide"}
    code = compile("\n".join(blocks), str(GRAPHS_DOC), "exec", dont_inherit=True)  # as a script
    exec(code, namespace)
    assert "assert " in blocks[1]  # the blocks check themselves


# -- as scripts ---------------------------------------------------------------------------------

# script -> (arguments, standard input, lines its output must contain)
SCRIPTS: dict[str, tuple[list[str], str, list[str]]] = {
    "graph_ticket_triage.py": (
        [],
        "",
        [
            "flowchart TD",
            "    classify -->|default| general",
            "#1 -> billing     We are looking into your payment: 'Refund for a double charge'.",
            "#3 -> general     Thanks for reaching out about 'How do I change my avatar?'.",
            "#5 -> engineering Thanks for the report, we filed a bug: 'Export fails with",
        ],
    ),
    "graph_map_reduce.py": (
        [],
        "",
        [
            "fan-in order:  mapper_0, mapper_1, mapper_2",
            "words: 33 counted, 33 in shared state",
            "  the    9",
        ],
    ),
    "graph_review_loop.py": (
        [],
        "",
        [
            "[yes/no] yes  (answered automatically",
            "reviews: 3",
            "draft v3 published: Tidal power: what it is. Also why it matters. Also what it costs.",
        ],
    ),
    "graph_review_loop.py --interactive": (
        ["--interactive"],
        "no\n",
        ["Publish draft v3? ", "draft v3 rejected: "],
    ),
    "graph_nested_workflow.py": (
        [],
        "",
        [
            "manager asked about hotel (420): yes",
            "manager asked about first-class upgrade (900): no",
            "first-class upgrade: refused by manager",
            "reimbursed: 485",
        ],
    ),
}


def test_every_graph_example_is_run_as_a_script() -> None:
    on_disk = {path.name for path in EXAMPLES.glob("graph_*.py")}
    assert on_disk == {key.split()[0] for key in SCRIPTS}


@pytest.fixture(scope="module")
def script_outputs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Run every script at once, each in its own process, and collect what each printed."""
    yield from run_scripts(SCRIPTS)


@pytest.mark.parametrize("key", list(SCRIPTS))
def test_graph_example_runs_as_a_script_and_prints_its_result(
    key: str, script_outputs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    check_script(script_outputs[key], SCRIPTS[key][2])
