"""The example at the top of the README (a test keeps the two identical).

Run it with ``python examples/readme_example.py``.
"""

from stepgraph import Context, Event, RetryPolicy, StartEvent, StopEvent, Workflow, step


class Ping(Event):
    n: int


class Echo(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Ping:
        return Ping(n=ev.n)

    @step(num_workers=4, retry_policy=RetryPolicy(max_attempts=3, backoff=0.01), timeout=2.0)
    async def finish(self, ev: Ping) -> StopEvent:
        return StopEvent(result=ev.n * 2)


async def double(n: int) -> int:
    return await Echo(timeout=30).run(n=n)  # in async code: await the run


def main() -> None:
    print(Echo().run_sync(n=21))  # in a script: run_sync makes the event loop; prints 42


if __name__ == "__main__":
    main()
