"""Route support tickets to teams with a switch (an executor graph).

``intake`` sends each ticket of the batch on; ``classify`` tags it with a
category; a switch sends it to the first team whose case holds (billing, then
bugs), or to the ``Default`` team (general support). Each team executor yields
one output per ticket: who handles it and the first reply. The graph is
printed as a Mermaid flowchart.

Run it with ``python examples/graph_ticket_triage.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from stepgraph import (
    Case,
    Default,
    Executor,
    GraphWorkflow,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
)


@dataclass(frozen=True)
class Ticket:
    """A support ticket as it arrives."""

    id: int
    subject: str


@dataclass(frozen=True)
class Classified:
    """A ticket tagged with its category."""

    ticket: Ticket
    category: str


@dataclass(frozen=True)
class Routed:
    """A workflow output: which team took the ticket, and its first reply."""

    ticket_id: int
    team: str
    reply: str


KEYWORDS = {
    "billing": ("invoice", "refund", "charge", "payment"),
    "bug": ("error", "crash", "broken", "fails"),
}


def is_billing(message: Classified) -> bool:
    return message.category == "billing"


def is_bug(message: Classified) -> bool:
    return message.category == "bug"


@executor(id="intake")
async def intake(tickets: list[Ticket], ctx: WorkflowContext[Ticket]) -> None:
    """Send each ticket of the batch on, in order."""
    for ticket in tickets:
        await ctx.send_message(ticket)


@executor(id="classify")
async def classify(ticket: Ticket, ctx: WorkflowContext[Classified]) -> None:
    """Tag the ticket with the first category whose keywords its subject mentions."""
    words = ticket.subject.lower()
    category = next(
        (name for name, keys in KEYWORDS.items() if any(key in words for key in keys)), "other"
    )
    await ctx.send_message(Classified(ticket, category))


class Team(Executor):
    """A support team: answers each ticket it receives with its own template."""

    def __init__(self, id: str, template: str) -> None:
        super().__init__(id)
        self.template = template

    @handler
    async def take(self, message: Classified, ctx: WorkflowContext) -> None:
        ticket = message.ticket
        reply = self.template.format(subject=ticket.subject)
        await ctx.yield_output(Routed(ticket.id, self.id, reply))


def build_triage() -> GraphWorkflow:
    """intake -> classify -> switch(billing | bugs | general)."""
    billing = Team("billing", "We are looking into your payment: {subject!r}.")
    bugs = Team("engineering", "Thanks for the report, we filed a bug: {subject!r}.")
    general = Team("general", "Thanks for reaching out about {subject!r}.")
    return (
        WorkflowBuilder(start=intake, name="ticket-triage")
        .add_edge(intake, classify)
        .add_switch(classify, [Case(is_billing, billing), Case(is_bug, bugs), Default(general)])
        .build()
    )


TICKETS = [
    Ticket(1, "Refund for a double charge"),
    Ticket(2, "App crash on login"),
    Ticket(3, "How do I change my avatar?"),
    Ticket(4, "Invoice address is wrong"),
    Ticket(5, "Export fails with an error"),
]


async def triage(tickets: list[Ticket]) -> list[Routed]:
    """Route every ticket; returns one ``Routed`` per ticket, in ticket order."""
    result = await build_triage().run(tickets)
    routed: list[Routed] = result.outputs
    return sorted(routed, key=lambda r: r.ticket_id)


def main() -> None:
    print(build_triage().to_mermaid())
    for routed in asyncio.run(triage(TICKETS)):
        print(f"#{routed.ticket_id} -> {routed.team:<11} {routed.reply}")


if __name__ == "__main__":
    main()
