"""Count words with map-reduce: fan-out to N mappers, fan-in to one reducer.

``split`` cuts the text into one chunk per mapper and sends the chunks along a
fan-out whose selector gives chunk ``i`` to mapper ``i``. Each mapper counts the
words of its chunk. A fan-in edge holds the mappers' counts until every mapper
has sent one, then hands ``reduce`` one list, in mapper order; ``reduce`` adds
them up and yields the most common words.

The mappers also add their word counts to the shared-state key ``"words"``,
which has the ``add`` reducer: concurrent writes are merged at the superstep
barrier, so none is lost, and ``reduce`` (a later superstep) reads the total.

Run it with ``python examples/graph_map_reduce.py``.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from stepgraph import Executor, GraphWorkflow, WorkflowBuilder, WorkflowContext, executor, handler
from stepgraph.state import add, append

TEXT = """
The tide comes in and the tide goes out. The moon pulls the sea, and the sea
pulls the shore. Tidal power turns the pull of the moon into power for the shore.
"""


@dataclass(frozen=True)
class Chunk:
    """The words for mapper number ``index``."""

    index: int
    words: tuple[str, ...]


@dataclass(frozen=True)
class WordCount:
    """The reducer's output.

    Attributes:
        top: the five most common words with their counts.
        counted: how many words the mappers' counts add up to.
        in_state: the ``"words"`` total read from the shared state.
        sources: the mappers in the order of the fan-in's list.
    """

    top: list[tuple[str, int]]
    counted: int
    in_state: int
    sources: list[str]


@dataclass(frozen=True)
class Counts:
    """One mapper's word counts."""

    mapper: str
    counts: Counter[str]


class Mapper(Executor):
    """Counts the words of the chunk it receives."""

    @handler
    async def count(self, chunk: Chunk, ctx: WorkflowContext[Counts]) -> None:
        await ctx.store.set("words", len(chunk.words))  # merged with `add` at the barrier
        await ctx.store.set("mappers", self.id)  # merged with `append`, in mapper order
        await ctx.send_message(Counts(self.id, Counter(chunk.words)))


def by_index(chunk: Chunk, target_ids: list[str]) -> list[str]:
    """The fan-out selector: chunk ``i`` goes to the ``i``-th mapper only."""
    return [target_ids[chunk.index]]


def build_word_count(mappers: int) -> GraphWorkflow:
    """split -> fan-out(by_index) -> mapper_0..mapper_{n-1} -> fan-in -> reduce."""

    @executor(id="split")
    async def split(text: str, ctx: WorkflowContext[Chunk]) -> None:
        words = re.findall(r"[a-z]+", text.lower())
        for index in range(mappers):
            await ctx.send_message(Chunk(index, tuple(words[index::mappers])))

    @executor(id="reduce")
    async def reduce(parts: list[Counts], ctx: WorkflowContext) -> None:
        total: Counter[str] = Counter()
        for part in parts:
            total.update(part.counts)
        # The mappers ran in the superstep before this one: their writes are merged by now.
        in_state = await ctx.store.get("words")
        top = sorted(total.items(), key=lambda item: (-item[1], item[0]))[:5]
        await ctx.yield_output(WordCount(top, total.total(), in_state, [p.mapper for p in parts]))

    workers = [Mapper(f"mapper_{i}") for i in range(mappers)]
    return (
        WorkflowBuilder(start=split, reducers={"words": add, "mappers": append}, name="word-count")
        .add_fan_out(split, workers, selector=by_index)
        .add_fan_in(workers, reduce)
        .build()
    )


async def word_count(text: str, mappers: int = 3) -> tuple[WordCount, dict[str, Any]]:
    """Count ``text``'s words with ``mappers`` mappers: the reducer's output and the final state."""
    result = await build_word_count(mappers).run(text)
    [output] = result.outputs
    return output, result.state


def main() -> None:
    output, state = asyncio.run(word_count(TEXT, mappers=3))
    print(f"fan-in order:  {', '.join(output.sources)}")
    print(f"state writers: {', '.join(state['mappers'])}")
    print(f"words: {output.counted} counted, {output.in_state} in shared state")
    for word, count in output.top:
        print(f"  {word:<6} {count}")


if __name__ == "__main__":
    main()
