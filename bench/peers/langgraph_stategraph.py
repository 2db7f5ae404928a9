"""langgraph: a ``StateGraph`` whose nodes update a shared state, run in supersteps.

W1 is one node with a conditional edge back to itself (the recursion limit is raised to the
hop count); W2 fans out with ``Send`` (at most 8 at once, like ``num_workers=8``) and fans in
through an ``operator.add`` reducer; W3 is three nodes in a row. W1d is W1 with a checkpoint
per superstep in SQLite (``AsyncSqliteSaver``, from ``langgraph-checkpoint-sqlite``), each
run a new thread: ``durability="sync"`` (the checkpoint is written before the next step
starts, as stepgraph's), and ``"async"`` (LangGraph's default: written while it runs).
"""

from __future__ import annotations

import operator
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from bench.peers.common import Peer, PeerWorkload

WORKERS = 8


class ChainState(TypedDict):
    """W1 state: the hop counter and the chain's length."""

    n: int
    hops: int


class FanState(TypedDict):
    """W2 state: how many items, and the answers gathered by the reducer."""

    n: int
    results: Annotated[list[int], operator.add]


class ItemState(TypedDict):
    """W2: what one worker receives."""

    i: int


class ThreeState(TypedDict):
    """W3 state."""

    x: int


async def _hop(state: ChainState) -> dict[str, Any]:
    return {"n": state["n"] + 1}


def _hop_route(state: ChainState) -> str:
    return END if state["n"] >= state["hops"] else "hop"


async def _fan(state: FanState) -> dict[str, Any]:
    return {}


def _dispatch(state: FanState) -> list[Send]:
    return [Send("work", {"i": i}) for i in range(state["n"])]


async def _work(state: ItemState) -> dict[str, Any]:
    return {"results": [state["i"]]}


async def _collect(state: FanState) -> dict[str, Any]:
    return {}


async def _add_one(state: ThreeState) -> dict[str, Any]:
    return {"x": state["x"] + 1}


def _chain_graph() -> Any:
    chain = StateGraph(ChainState)
    chain.add_node("hop", _hop)
    chain.add_edge(START, "hop")
    chain.add_conditional_edges("hop", _hop_route, ["hop", END])
    return chain


def _build() -> tuple[Any, Any, Any]:
    chain = _chain_graph()

    fan = StateGraph(FanState)
    fan.add_node("fan", _fan)
    fan.add_node("work", _work)
    fan.add_node("collect", _collect)
    fan.add_edge(START, "fan")
    fan.add_conditional_edges("fan", _dispatch, ["work"])
    fan.add_edge("work", "collect")
    fan.add_edge("collect", END)

    three = StateGraph(ThreeState)
    for name in ("one", "two", "three"):
        three.add_node(name, _add_one)
    three.add_edge(START, "one")
    three.add_edge("one", "two")
    three.add_edge("two", "three")
    three.add_edge("three", END)
    return chain.compile(), fan.compile(), three.compile()


def load() -> Peer:
    """Compile the graphs once and return the peer with its runners."""
    chain_graph, fan_graph, three_graph = _build()

    async def chain(hops: int) -> None:
        config = {"recursion_limit": hops + 10}
        state = await chain_graph.ainvoke({"n": 0, "hops": hops}, config=config)
        assert state["n"] == hops, state

    async def fan_out(n: int) -> None:
        config = {"max_concurrency": WORKERS}
        state = await fan_graph.ainvoke({"n": n, "results": []}, config=config)
        assert len(state["results"]) == n, len(state["results"])

    async def startup(runs: int) -> None:
        for _ in range(runs):
            state = await three_graph.ainvoke({"x": 0})
            assert state["x"] == 3, state

    folder = Path(tempfile.mkdtemp(prefix="bench-langgraph-"))
    saved: dict[str, Any] = {}  # the saver and its graph, made in the event loop on first use

    async def durable_graph() -> Any:
        if not saved:
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            conn = await aiosqlite.connect(str(folder / "checkpoints.db"))
            saver = AsyncSqliteSaver(conn)
            await saver.setup()
            saved.update(conn=conn, graph=_chain_graph().compile(checkpointer=saver))
        return saved["graph"]

    def durable_chain(durability: str) -> Any:
        async def run(hops: int) -> None:
            graph = await durable_graph()
            config = {"recursion_limit": hops + 10, "configurable": {"thread_id": uuid.uuid4().hex}}
            state = await graph.ainvoke(
                {"n": 0, "hops": hops}, config=config, durability=durability
            )
            assert state["n"] == hops, state

        return run

    async def close() -> None:
        if saved:
            await saved["conn"].close()
        shutil.rmtree(folder, ignore_errors=True)

    return Peer(
        name="langgraph",
        dist="langgraph",
        workloads={
            "w1": PeerWorkload(chain),
            "w2": PeerWorkload(fan_out),
            "w3": PeerWorkload(startup),
            "w1d": PeerWorkload(
                durable_chain("sync"), note="AsyncSqliteSaver, durability=sync", reps=5
            ),
            "w1d-default": PeerWorkload(
                durable_chain("async"), note="AsyncSqliteSaver, durability=async (default)", reps=5
            ),
        },
        close=close,
    )
