"""Graph export: ``to_mermaid()`` and ``to_dot()`` give exactly the expected text.

For an executor graph with every kind of edge (a chain, a named condition, a
lambda condition, fan-outs with and without a selector, a fan-in, a switch with
a Case and a Default): nodes in graph order, a ``__start__`` node pointing at the
start executor, edges in declaration order, fan-out edges dashed and labelled,
fan-in edges meeting at a junction node, switch edges labelled by case. For a
``@step`` workflow: edges from the annotations, labelled by event type, the
StopEvent going to ``__end__``, and InputRequiredEvent/HumanResponseEvent going
out to and back from ``__caller__``. The expected texts are written out in full.
"""

from __future__ import annotations

from typing import Any

from stepgraph import (
    Case,
    Default,
    Event,
    FunctionExecutor,
    GraphWorkflow,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    step,
)


def node(id: str) -> FunctionExecutor:
    async def body(message: Any, ctx: WorkflowContext) -> None: ...

    return executor(body, id=id)


@executor(id="join")
async def join(messages: list[Any], ctx: WorkflowContext) -> None: ...


def is_big(message: Any) -> bool:
    return True


def pick_first(message: Any, target_ids: list[str]) -> list[str]:
    return target_ids[:1]


def is_urgent(message: Any) -> bool:
    return True


def every_kind_of_edge() -> GraphWorkflow:
    source, parse, check, big, small, left, right, urgent, email = (
        node(i)
        for i in [
            "source",
            "parse",
            "check",
            "big",
            "small",
            "left",
            "right",
            "urgent",
            "send email",
        ]
    )
    return (
        WorkflowBuilder(start=source, name="export demo")
        .add_chain([source, parse, check])
        .add_edge(check, big, condition=is_big)
        .add_edge(check, small, condition=lambda message: not message)
        .add_fan_out(big, [left, right])
        .add_fan_out(small, [left, right], selector=pick_first)
        .add_fan_in([left, right], join)
        .add_switch(join, [Case(is_urgent, urgent), Default(email)])
        .build()
    )


EXPECTED_MERMAID = """\
flowchart TD
    __start__(["start"])
    source["source"]
    parse["parse"]
    check["check"]
    big["big"]
    small["small"]
    left["left"]
    right["right"]
    join["join"]
    urgent["urgent"]
    send_email["send email"]
    __fan_in_0__((fan-in))
    __fan_in_0__ --> join
    __start__ --> source
    source --> parse
    parse --> check
    check -->|is_big| big
    check -->|lambda| small
    big -.->|fan-out| left
    big -.->|fan-out| right
    small -.->|fan-out: pick_first| left
    small -.->|fan-out: pick_first| right
    left --> __fan_in_0__
    right --> __fan_in_0__
    join -->|is_urgent| urgent
    join -->|default| send_email
"""

EXPECTED_DOT = """\
digraph "export demo" {
    rankdir=TB;
    "__start__" [label="start", shape=oval];
    "source" [shape=box];
    "parse" [shape=box];
    "check" [shape=box];
    "big" [shape=box];
    "small" [shape=box];
    "left" [shape=box];
    "right" [shape=box];
    "join" [shape=box];
    "urgent" [shape=box];
    "send email" [shape=box];
    "__fan_in_0__" [label="fan-in", shape=circle];
    "__fan_in_0__" -> "join";
    "__start__" -> "source";
    "source" -> "parse";
    "parse" -> "check";
    "check" -> "big" [label="is_big"];
    "check" -> "small" [label="lambda"];
    "big" -> "left" [label="fan-out", style=dashed];
    "big" -> "right" [label="fan-out", style=dashed];
    "small" -> "left" [label="fan-out: pick_first", style=dashed];
    "small" -> "right" [label="fan-out: pick_first", style=dashed];
    "left" -> "__fan_in_0__";
    "right" -> "__fan_in_0__";
    "join" -> "urgent" [label="is_urgent"];
    "join" -> "send email" [label="default"];
}
"""


def test_mermaid_of_an_executor_graph_shows_every_kind_of_edge_in_declaration_order() -> None:
    assert every_kind_of_edge().to_mermaid() == EXPECTED_MERMAID


def test_dot_of_an_executor_graph_shows_every_kind_of_edge_in_declaration_order() -> None:
    assert every_kind_of_edge().to_dot() == EXPECTED_DOT


def test_export_is_the_same_after_the_graph_has_run() -> None:
    wf = WorkflowBuilder(start=node("only"), name="single").build()
    before = wf.to_mermaid(), wf.to_dot()
    assert wf.run_sync("x").outputs == []
    assert (wf.to_mermaid(), wf.to_dot()) == before
    assert before[0] == 'flowchart TD\n    __start__(["start"])\n    only["only"]\n' + (
        "    __start__ --> only\n"
    )
    assert before[1] == (
        'digraph "single" {\n'
        "    rankdir=TB;\n"
        '    "__start__" [label="start", shape=oval];\n'
        '    "only" [shape=box];\n'
        '    "__start__" -> "only";\n'
        "}\n"
    )


def test_the_start_executor_is_first_even_when_registered_later() -> None:
    a, b = node("a"), node("b")
    wf = WorkflowBuilder().add_edge(a, b).set_start_executor(b).add_edge(b, a).build()
    assert wf.to_mermaid() == (
        "flowchart TD\n"
        '    __start__(["start"])\n'
        '    b["b"]\n'
        '    a["a"]\n'
        "    __start__ --> b\n"
        "    a --> b\n"
        "    b --> a\n"
    )


# -- @step workflows ----------------------------------------------------------------------------


class Plan(Event):
    topic: str = ""


class Draft(Event):
    text: str = ""


class Note(Event):
    text: str = ""


class Writing(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Plan | InputRequiredEvent:
        return Plan()

    @step
    async def write(self, ev: Plan | Note) -> Draft:
        return Draft()

    @step
    async def review(self, ev: Draft) -> Note | StopEvent:
        return StopEvent()

    @step
    async def answer(self, ev: HumanResponseEvent) -> Plan:
        return Plan()


EXPECTED_STEP_MERMAID = """\
flowchart TD
    __start__(["start"])
    start["start"]
    write["write"]
    review["review"]
    answer["answer"]
    __end__(["end"])
    __caller__(["caller"])
    __start__ --> start
    start -->|Plan| write
    start -->|InputRequiredEvent| __caller__
    write -->|Draft| review
    review -->|Note| write
    review -->|StopEvent| __end__
    answer -->|Plan| write
    __caller__ -->|HumanResponseEvent| answer
"""

EXPECTED_STEP_DOT = """\
digraph "Writing" {
    rankdir=TB;
    "__start__" [label="start", shape=oval];
    "start" [shape=box];
    "write" [shape=box];
    "review" [shape=box];
    "answer" [shape=box];
    "__end__" [label="end", shape=oval];
    "__caller__" [label="caller", shape=oval];
    "__start__" -> "start";
    "start" -> "write" [label="Plan"];
    "start" -> "__caller__" [label="InputRequiredEvent"];
    "write" -> "review" [label="Draft"];
    "review" -> "write" [label="Note"];
    "review" -> "__end__" [label="StopEvent"];
    "answer" -> "write" [label="Plan"];
    "__caller__" -> "answer" [label="HumanResponseEvent"];
}
"""


def test_mermaid_of_a_step_workflow_draws_edges_from_the_annotations() -> None:
    assert Writing().to_mermaid() == EXPECTED_STEP_MERMAID


def test_dot_of_a_step_workflow_draws_edges_from_the_annotations() -> None:
    assert Writing().to_dot() == EXPECTED_STEP_DOT


def test_dot_of_a_named_step_workflow_is_named_after_its_name() -> None:
    named = Writing(name="essay writer").to_dot()
    assert named.splitlines()[0] == 'digraph "essay writer" {'
    assert named.splitlines()[1:] == EXPECTED_STEP_DOT.splitlines()[1:]


class Straight(Workflow):
    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=1)


def test_a_step_workflow_without_human_input_has_no_caller_node() -> None:
    assert Straight().to_mermaid() == (
        "flowchart TD\n"
        '    __start__(["start"])\n'
        '    only["only"]\n'
        '    __end__(["end"])\n'
        "    __start__ --> only\n"
        "    only -->|StopEvent| __end__\n"
    )
