"""Pause a run for a human's answer, then finish with it.

``propose`` returns an ``InputRequiredEvent``: the run publishes it on the
stream and waits (a pause, not a stall). The caller reads it from
``handler.stream_events()`` and answers with
``handler.send_event(HumanResponseEvent(response=...))``; ``decide``, which
accepts ``HumanResponseEvent``, finishes the run.

Run it with ``python examples/human_in_the_loop.py`` (answers "yes" by itself),
or ``python examples/human_in_the_loop.py --interactive`` to type the answer.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from stepgraph import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


class Deploy(StartEvent):
    """The run's arguments: what to deploy."""

    service: str


class HumanInTheLoop(Workflow):
    """propose (asks) -> the caller answers -> decide."""

    @step
    async def propose(self, ctx: Context, ev: Deploy) -> InputRequiredEvent:
        await ctx.store.set("service", ev.service)
        return InputRequiredEvent(prefix=f"Deploy {ev.service} to production. Approve? ")

    @step
    async def decide(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        service = await ctx.store.get("service")
        approved = str(ev.response).strip().lower() in ("y", "yes")
        return StopEvent(result=f"{service}: {'deployed' if approved else 'not deployed'}")


async def ask_and_run(service: str, answer: Callable[[str], str]) -> tuple[list[str], str]:
    """Run once; ``answer(prompt)`` gives the human's reply. Returns (prompts seen, result)."""
    handler = HumanInTheLoop(timeout=60).run(service=service)
    prompts: list[str] = []
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            prompts.append(ev.prefix)
            reply = await asyncio.to_thread(answer, ev.prefix)  # input() must not block the loop
            handler.send_event(HumanResponseEvent(response=reply))
    result: str = await handler
    return prompts, result


def auto_answer(prompt: str) -> str:
    print(f"{prompt}yes  (answered automatically; pass --interactive to type it)")
    return "yes"


def main() -> None:
    parser = argparse.ArgumentParser(description="Approve a deployment.")
    parser.add_argument("--interactive", action="store_true", help="read the answer from stdin")
    args = parser.parse_args()
    answer = input if args.interactive else auto_answer
    _, result = asyncio.run(ask_and_run("billing-api", answer))
    print(result)


if __name__ == "__main__":
    main()
