"""A loop and a flaky step that succeeds thanks to its retry policy.

``paginate`` is a loop: it handles one page and sends itself ``NextPage`` until
the last page. For each page it asks ``fetch`` for the content. ``fetch`` talks
to a flaky service that fails the first two attempts for every page (tracked
in ``ctx.store``, so the flakiness is deterministic);
``RetryPolicy(max_attempts=3, backoff=0.01)`` retries it, and the third attempt
succeeds. ``report`` collects one ``Fetched`` per page and ends the run.

Run it with ``python examples/loop_with_retries.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stepgraph import Context, Event, RetryPolicy, StartEvent, StopEvent, Workflow, step

FAILURES_PER_PAGE = 2


class Crawl(StartEvent):
    """The run's arguments: how many pages to crawl."""

    pages: int


class NextPage(Event):
    """The loop's own event: the page to handle next."""

    page: int


class Fetch(Event):
    """Ask the flaky service for one page."""

    page: int


class Fetched(Event):
    """One page's content, and how many attempts it took."""

    page: int
    content: str
    attempts: int


class LoopWithRetries(Workflow):
    """paginate (loops on itself) -> fetch (retried) -> report (collects)."""

    @step
    async def paginate(self, ctx: Context, ev: Crawl | NextPage) -> NextPage | None:
        if isinstance(ev, Crawl):
            await ctx.store.set("pages", ev.pages)
            page = 1
        else:
            page = ev.page
        await ctx.store.update("loop_iterations", lambda n: (n or 0) + 1)
        ctx.send_event(Fetch(page=page))
        if page < await ctx.store.get("pages"):
            return NextPage(page=page + 1)  # around the loop once more
        return None  # the loop's condition: the last page is handled

    @step(num_workers=4, retry_policy=RetryPolicy(max_attempts=3, backoff=0.01))
    async def fetch(self, ctx: Context, ev: Fetch) -> Fetched:
        attempts = await ctx.store.update(f"attempts/{ev.page}", lambda n: (n or 0) + 1)
        if attempts <= FAILURES_PER_PAGE:
            raise ConnectionError(f"page {ev.page}: service unavailable (attempt {attempts})")
        return Fetched(page=ev.page, content=f"content of page {ev.page}", attempts=attempts)

    @step
    async def report(self, ctx: Context, ev: Fetched) -> StopEvent | None:
        pages = await ctx.store.get("pages")
        fetched = ctx.collect_events(ev, [Fetched] * pages)
        if fetched is None:
            return None
        fetched.sort(key=lambda f: f.page)
        return StopEvent(
            result={
                "contents": [f.content for f in fetched],
                "attempts": {f.page: f.attempts for f in fetched},
                "retries": sum(f.attempts - 1 for f in fetched),
                "loop_iterations": await ctx.store.get("loop_iterations"),
            }
        )


async def crawl(pages: int = 3) -> dict[str, Any]:
    """Crawl ``pages`` pages; return their contents, attempts per page and retry count."""
    result: dict[str, Any] = await LoopWithRetries(timeout=10).run(pages=pages)
    return result


def main() -> None:
    result = asyncio.run(crawl(3))
    print(f"loop iterations: {result['loop_iterations']}")
    for page, attempts in result["attempts"].items():
        print(f"page {page}: succeeded on attempt {attempts} of 3")
    print(f"retries in total: {result['retries']}")
    print(f"contents: {result['contents']}")


if __name__ == "__main__":
    main()
