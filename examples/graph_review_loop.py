"""A writer/reviewer loop with conditional edges, then a human approves the result.

``writer`` drafts a text about a topic; ``reviewer`` checks it against a list of
points it must cover. Two conditional edges leave the reviewer: when the review
``needs_revision`` it goes back to the writer, which adds the missing point and
tries again; when the draft ``is_accepted`` it goes to ``publisher``.

``publisher`` asks a human with ``ctx.request_info(draft, response_type=bool)``:
a ``RequestInfoEvent`` appears on the stream and the run pauses (a pause, not a
stall). The caller answers with ``handler.send_response(request_id, True)``;
the publisher's ``@response_handler`` receives the draft and the answer and
yields the outcome as the workflow's output.

Run it with ``python examples/graph_review_loop.py`` (answers "yes" by itself),
or ``python examples/graph_review_loop.py --interactive`` to type the answer.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from stepgraph import (
    Executor,
    GraphWorkflow,
    RequestInfoEvent,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowOutputEvent,
    handler,
    response_handler,
)

POINTS = ("what it is", "why it matters", "what it costs")


@dataclass(frozen=True)
class Draft:
    """A version of the text."""

    version: int
    text: str


@dataclass(frozen=True)
class Review:
    """The reviewer's verdict on a draft: the points it still misses."""

    draft: Draft
    missing: tuple[str, ...]


def needs_revision(review: Review) -> bool:
    return bool(review.missing)


def is_accepted(review: Review) -> bool:
    return not review.missing


class Writer(Executor):
    """Writes the first draft from the topic, then revises it after each review."""

    @handler
    async def first_draft(self, topic: str, ctx: WorkflowContext[Draft]) -> None:
        await ctx.send_message(Draft(1, f"{topic.capitalize()}: {POINTS[0]}."))

    @handler
    async def revise(self, review: Review, ctx: WorkflowContext[Draft]) -> None:
        point = review.missing[0]
        draft = review.draft
        await ctx.send_message(Draft(draft.version + 1, f"{draft.text} Also {point}."))


class Reviewer(Executor):
    """Lists the points a draft does not cover yet."""

    @handler
    async def review(self, draft: Draft, ctx: WorkflowContext[Review]) -> None:
        missing = tuple(point for point in POINTS if point not in draft.text)
        await ctx.store.update("reviews", lambda n: (n or 0) + 1)
        await ctx.send_message(Review(draft, missing))


class Publisher(Executor):
    """Asks a human to approve the accepted draft, then publishes it or not."""

    @handler
    async def ask(self, review: Review, ctx: WorkflowContext) -> None:
        await ctx.request_info(review.draft, response_type=bool)

    @response_handler
    async def decide(self, draft: Draft, approved: bool, ctx: WorkflowContext) -> None:
        verdict = "published" if approved else "rejected"
        await ctx.yield_output(f"draft v{draft.version} {verdict}: {draft.text}")


def build_review_loop() -> GraphWorkflow:
    """writer -> reviewer -(needs_revision)-> writer; reviewer -(is_accepted)-> publisher."""
    writer, reviewer, publisher = Writer("writer"), Reviewer("reviewer"), Publisher("publisher")
    return (
        WorkflowBuilder(start=writer, name="review-loop")
        .add_edge(writer, reviewer)
        .add_edge(reviewer, writer, condition=needs_revision)
        .add_edge(reviewer, publisher, condition=is_accepted)
        .build(timeout=60)
    )


@dataclass
class Outcome:
    """What happened.

    Attributes:
        questions: the drafts the human was asked about.
        outputs: the run's outputs (``RunResult.outputs``).
        streamed: the outputs as they appeared on the stream.
        reviews: how many reviews it took (a shared-state counter).
    """

    questions: list[Draft]
    outputs: list[str]
    streamed: list[str]
    reviews: int


async def review_and_publish(topic: str, answer: Callable[[str], str]) -> Outcome:
    """Run once; ``answer(prompt)`` is the human's reply ("yes" approves)."""
    handler = build_review_loop().run(topic)
    questions: list[Draft] = []
    streamed: list[str] = []
    async for event in handler.stream_events():
        if isinstance(event, RequestInfoEvent):
            draft: Draft = event.data
            questions.append(draft)
            prompt = f"Publish draft v{draft.version}? {draft.text!r} [yes/no] "
            reply = await asyncio.to_thread(answer, prompt)  # input() must not block the loop
            approved = reply.strip().lower() in ("y", "yes")
            await handler.send_response(event.request_id, approved)
        elif isinstance(event, WorkflowOutputEvent):
            streamed.append(event.data)
    result = await handler
    return Outcome(questions, result.outputs, streamed, result.state["reviews"])


def auto_answer(prompt: str) -> str:
    print(f"{prompt}yes  (answered automatically; pass --interactive to type it)")
    return "yes"


def main() -> None:
    parser = argparse.ArgumentParser(description="Write, review, and approve a text.")
    parser.add_argument("--interactive", action="store_true", help="read the answer from stdin")
    args = parser.parse_args()
    answer = input if args.interactive else auto_answer
    outcome = asyncio.run(review_and_publish("tidal power", answer))
    print(f"reviews: {outcome.reviews}")
    for output in outcome.outputs:
        print(output)


if __name__ == "__main__":
    main()
