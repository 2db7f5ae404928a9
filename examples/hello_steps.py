"""Three steps in a row: start -> middle -> StopEvent.

Each step receives the event its parameter is annotated with and returns the
next one; returning a StopEvent ends the run, and its ``result`` is what
awaiting the run gives.

Run it with ``python examples/hello_steps.py``.
"""

from __future__ import annotations

import asyncio

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step


class Greeting(StartEvent):
    """The run's arguments: ``run(name=...)``."""

    name: str


class Drafted(Event):
    """The greeting, before it is polished."""

    text: str


class HelloSteps(Workflow):
    """start (greet) -> middle (polish) -> StopEvent."""

    @step
    async def greet(self, ctx: Context, ev: Greeting) -> Drafted:
        return Drafted(text=f"hello, {ev.name}")

    @step
    async def polish(self, ev: Drafted) -> StopEvent:
        return StopEvent(result=ev.text.capitalize() + "!")


async def hello(name: str = "world") -> str:
    """Run the workflow once and return its result."""
    result: str = await HelloSteps(timeout=10).run(name=name)
    return result


def main() -> None:
    print(HelloSteps().steps)
    print(asyncio.run(hello("stepgraph")))


if __name__ == "__main__":
    main()
