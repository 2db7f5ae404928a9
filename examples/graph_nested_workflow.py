"""A workflow inside a workflow: an approval graph used as one node of a report graph.

The inner graph, ``expense-approval``, approves small expenses by policy and
asks a manager (``ctx.request_info(expense, response_type=bool)``) about the
others. The outer graph, ``expense-report``, sends each expense of a report
through ``WorkflowExecutor(approval_graph)``: for every message that node runs
the inner graph, and sends the inner graph's outputs on along its own edges,
to ``ledger``.

The inner graph's requests surface on the *outer* run's stream, with the same
request id; the caller answers them there with ``handler.send_response`` and
the answers go back to the inner run. ``ledger`` adds up the reimbursed amounts
in a shared-state key with the ``add`` reducer.

Run it with ``python examples/graph_nested_workflow.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from stepgraph import (
    Executor,
    GraphWorkflow,
    RequestInfoEvent,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowExecutor,
    executor,
    handler,
    response_handler,
)
from stepgraph.state import add

POLICY_LIMIT = 100


@dataclass(frozen=True)
class Expense:
    """One line of an expense report."""

    item: str
    amount: int


@dataclass(frozen=True)
class Decision:
    """The inner graph's output: whether the expense is approved, and by whom."""

    expense: Expense
    approved: bool
    by: str


class Policy(Executor):
    """Approves expenses up to POLICY_LIMIT; asks a manager about the others."""

    @handler
    async def check(self, expense: Expense, ctx: WorkflowContext) -> None:
        if expense.amount <= POLICY_LIMIT:
            await ctx.yield_output(Decision(expense, approved=True, by="policy"))
        else:
            await ctx.request_info(expense, response_type=bool)

    @response_handler
    async def manager_says(self, expense: Expense, approved: bool, ctx: WorkflowContext) -> None:
        await ctx.yield_output(Decision(expense, approved=approved, by="manager"))


def build_approval() -> GraphWorkflow:
    """The inner graph: one executor that decides or asks."""
    return WorkflowBuilder(start=Policy("policy"), name="expense-approval").build()


@executor(id="intake")
async def intake(report: list[Expense], ctx: WorkflowContext[Expense]) -> None:
    """Send each expense of the report on."""
    for expense in report:
        await ctx.send_message(expense)


@executor(id="ledger")
async def ledger(decision: Decision, ctx: WorkflowContext) -> None:
    """Record the decision; add approved amounts to the shared ``reimbursed`` total."""
    if decision.approved:
        await ctx.store.set("reimbursed", decision.expense.amount)  # `add` reducer
    verdict = "approved" if decision.approved else "refused"
    await ctx.yield_output(f"{decision.expense.item}: {verdict} by {decision.by}")


def build_report() -> GraphWorkflow:
    """intake -> approval (the inner graph) -> ledger."""
    approval = WorkflowExecutor(build_approval(), id="approval")
    return (
        WorkflowBuilder(start=intake, reducers={"reimbursed": add}, name="expense-report")
        .add_chain([intake, approval, ledger])
        .build(timeout=60)
    )


@dataclass
class Report:
    """What the outer run produced, and what the manager was asked."""

    lines: list[str]
    reimbursed: int
    asked: list[tuple[str, Expense]] = field(default_factory=list)  # (source executor, data)


async def process(report: list[Expense], manager: Callable[[Expense], bool]) -> Report:
    """Run the report graph; ``manager(expense)`` answers each request of the inner graph."""
    handler = build_report().run(report)
    asked: list[tuple[str, Expense]] = []
    async for event in handler.stream_events():
        if isinstance(event, RequestInfoEvent):  # raised inside the inner graph
            asked.append((event.source_executor_id, event.data))
            await handler.send_response(event.request_id, manager(event.data))
    result = await handler
    return Report(result.outputs, result.state.get("reimbursed", 0), asked)


REPORT = [
    Expense("taxi", 40),
    Expense("hotel", 420),
    Expense("lunch", 25),
    Expense("first-class upgrade", 900),
]


def strict_manager(expense: Expense) -> bool:
    """Approves anything under 500, and says so."""
    approved = expense.amount < 500
    print(f"manager asked about {expense.item} ({expense.amount}): {'yes' if approved else 'no'}")
    return approved


def main() -> None:
    report = asyncio.run(process(REPORT, strict_manager))
    for line in report.lines:
        print(line)
    print(f"reimbursed: {report.reimbursed}")


if __name__ == "__main__":
    main()
