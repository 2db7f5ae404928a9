"""``python -m bench.peers``: stepgraph, plain asyncio and each peer on W1 to W4, one process.

Examples::

    python -m bench.peers                 # install/refresh nothing if already set up, run all
    python -m bench.peers --upgrade       # reinstall the latest peers first
    python -m bench.peers --quick --only w1
    python -m bench.peers --only w4       # task DAGs: radical.asyncflow and dask
    python -m bench.peers --only w1d      # durable W1: langgraph, agent-framework, dbos
    python -m bench.peers --here          # run in this interpreter (peers installed here)

W4 (task DAGs, :mod:`bench.tasks`) times stepgraph's TaskFlow on InlineBackend and on
ThreadBackend and the plain-asyncio DAG, then each peer that has a W4. W1d (W1, 200 hops,
a durable write per hop on SQLite files) times stepgraph on SqliteStore in both modes,
then each peer's own durable checkpointing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report, tasks
from bench.durability import durable_chain
from bench.peers import venv
from bench.peers.common import Peer, PeerWorkload
from bench.suite import WORKLOADS, Workload
from bench.timing import Runner, measure, median
from bench.workloads import MODES
from stepgraph.backends import InlineBackend, ThreadBackend
from stepgraph.stores import SqliteStore

PEER_MODULES = {
    "agent_framework_core": "agent-framework-core",
    "llama_index_workflows": "llama-index-workflows",
    "langgraph_stategraph": "langgraph",
    "radical_asyncflow": "radical.asyncflow",
    "dask_distributed": "distributed",
    "dbos_transact": "dbos",
}
"""Module of ``bench.peers`` → the distribution it benchmarks."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers", description=(__doc__ or "").partition("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="2 repetitions, 1 warm-up")
    parser.add_argument("--reps", type=int, help="timed repetitions (default 5)")
    parser.add_argument("--only", help="comma-separated subset of w1,w2,w3,w1d,w4 (default: all)")
    parser.add_argument("--upgrade", action="store_true", help="reinstall the latest peers")
    parser.add_argument("--here", action="store_true", help="use this interpreter, no venv")
    parser.add_argument(
        "--output",
        type=Path,
        default=report.RESULTS_DIR / "peers.json",
        help="where to write the JSON results (default: bench/results/peers.json)",
    )
    args = parser.parse_args(argv)
    args.reps = args.reps or (2 if args.quick else 5)
    args.warmup = 1
    keys = [*(w.key for w in WORKLOADS), "w1d", "w4"]
    args.only = [k.strip() for k in args.only.split(",")] if args.only else keys
    if unknown := set(args.only) - set(keys):
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}")
    return args


def load_peers() -> tuple[list[Peer], list[dict[str, str]]]:
    """Every peer whose module imports and builds; the others with the reason."""
    peers: list[Peer] = []
    skipped: list[dict[str, str]] = []
    for name, dist in PEER_MODULES.items():
        try:
            module = importlib.import_module(f"bench.peers.{name}")
        except ImportError as exc:
            skipped.append({"peer": dist, "reason": f"not importable ({exc})"})
            continue
        try:
            peers.append(module.load())
        except Exception as exc:  # an API change in the peer skips that peer only
            skipped.append({"peer": dist, "reason": f"{type(exc).__name__}: {exc}"})
    for skip in skipped:
        print(f"skipping {skip['peer']}: {skip['reason']}", file=sys.stderr)
    return peers, skipped


async def time_workload(
    workload: Workload, peers: list[Peer], reps: int, warmup: int
) -> list[dict[str, Any]]:
    """stepgraph (both modes) and the baseline interleaved, then each peer in turn."""
    runners: dict[str, Runner] = {mode: workload.stepgraph_runner(mode) for mode in MODES}
    runners[workload.baseline] = workload.baseline_runner
    samples = await measure(runners, workload.size, reps=reps, warmup=warmup)
    ours = {mode: median(samples[mode]) for mode in MODES}
    base = {"workload": workload.key, "unit": workload.unit, "size": workload.size}
    entries: list[dict[str, Any]] = [
        {**base, "contender": "stepgraph", "mode": mode, "us_per_unit": round(us, 3)}
        for mode, us in ours.items()
    ]
    entries.append(
        {
            **base,
            "contender": workload.baseline,
            "us_per_unit": round(median(samples[workload.baseline]), 3),
        }
    )
    for peer in peers:
        # w1g/w2g (stepgraph's executor graphs) do the logical work of w1/w2: compare them
        # with the peers' w1/w2, which are graphs already for agent-framework and langgraph.
        spec = peer.workloads.get(workload.key) or peer.workloads.get(workload.key.rstrip("g"))
        if spec is not None:
            entries.append(await time_peer(peer, spec, base, ours, reps, warmup))
    return entries


async def time_peer(
    peer: Peer,
    spec: PeerWorkload,
    base: dict[str, Any],
    ours: dict[str, float],
    reps: int,
    warmup: int,
) -> dict[str, Any]:
    """One peer on one workload; ``ours``: stepgraph's figure per contender, to compare."""
    size = spec.size or base["size"]
    if spec.reps is not None:
        reps, warmup = min(reps, spec.reps), 0
    started = time.perf_counter()
    peer_samples = await measure({peer.name: spec.runner}, size, reps=reps, warmup=warmup)
    us = median(peer_samples[peer.name])
    print(
        f"  {base['workload']} {peer.name}: {us:.1f} µs/{base['unit']} "
        f"({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    return {
        **base,
        "size": size,
        "contender": peer.name,
        "version": report.package_version(peer.dist),
        "us_per_unit": round(us, 3),
        "stepgraph_speedup": {name: round(us / o, 2) for name, o in ours.items()},
        "note": spec.note,
    }


W1D_HOPS = 200


async def time_w1d(peers: list[Peer], reps: int, warmup: int) -> list[dict[str, Any]]:
    """W1d: W1 with a durable write per hop, on SQLite files: stepgraph's SqliteStore in
    both modes (interleaved), then each peer's own SQLite or file checkpointing."""
    with tempfile.TemporaryDirectory() as name:
        stores = {mode: SqliteStore(Path(name) / f"{mode}.db") for mode in MODES}
        runners: dict[str, Runner] = {m: durable_chain(s, m) for m, s in stores.items()}
        try:
            samples = await measure(runners, W1D_HOPS, reps=reps, warmup=warmup)
        finally:
            for store in stores.values():
                store.close()
    ours = {mode: median(samples[mode]) for mode in MODES}
    base = {"workload": "w1d", "unit": "hop", "size": W1D_HOPS}
    entries: list[dict[str, Any]] = [
        {
            **base,
            "contender": "stepgraph",
            "mode": mode,
            "us_per_unit": round(us, 3),
            "note": "SqliteStore, synchronous=normal",
        }
        for mode, us in ours.items()
    ]
    for peer in peers:
        for key in ("w1d", "w1d-default"):
            spec = peer.workloads.get(key)
            if spec is not None:
                entries.append(await time_peer(peer, spec, base, ours, reps, warmup))
    return entries


W4_CONTENDERS = ("inline", "thread")
"""stepgraph's W4 contenders: TaskFlow on InlineBackend and on ThreadBackend."""


async def time_w4(peers: list[Peer], reps: int, warmup: int) -> list[dict[str, Any]]:
    """W4: TaskFlow on both backends and the asyncio DAG interleaved, then each peer."""
    size = tasks.LAYERS * tasks.WIDTH
    runners: dict[str, Runner] = {
        "inline": tasks.taskflow_runner(InlineBackend),
        "thread": tasks.taskflow_runner(ThreadBackend),
        "asyncio_task_dag": tasks.asyncio_task_dag(),
    }
    samples = await measure(runners, size, reps=reps, warmup=warmup)
    ours = {name: median(samples[name]) for name in W4_CONTENDERS}
    base = {"workload": "w4", "unit": "task", "size": size}
    entries: list[dict[str, Any]] = [
        {**base, "contender": "stepgraph", "mode": name, "us_per_unit": round(us, 3)}
        for name, us in ours.items()
    ]
    entries.append(
        {
            **base,
            "contender": "asyncio_task_dag",
            "us_per_unit": round(median(samples["asyncio_task_dag"]), 3),
        }
    )
    for peer in peers:
        spec = peer.workloads.get("w4")
        if spec is not None:
            entries.append(await time_peer(peer, spec, base, ours, reps, warmup))
    return entries


def table_rows(entries: list[dict[str, Any]], columns: tuple[str, ...] = MODES) -> list[list[str]]:
    """One row per contender: its figure and how many times faster stepgraph is, per
    stepgraph contender in ``columns`` (the modes; for W4 the backends)."""
    rows = []
    for e in entries:
        name = e["contender"] + (f" ({e['mode']})" if "mode" in e else "")
        if e.get("version"):
            name += f" {e['version']}"
        speedup = e.get("stepgraph_speedup", {})
        rows.append(
            [
                f"{e['workload']} {name}",
                f"{e['size']}",
                f"{e['us_per_unit']:.2f} µs/{e['unit']}",
                *(f"{speedup[column]:.1f}x" if speedup else "" for column in columns),
                e.get("note", ""),
            ]
        )
    return rows


HEADERS = ("workload / contender", "size", "figure", "sg superstep", "sg async", "note")
W4_HEADERS = ("workload / contender", "size", "figure", "sg inline", "sg thread", "note")


async def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Load the peers, then time every selected workload."""
    peers, skipped = load_peers()
    entries: list[dict[str, Any]] = []
    try:
        for workload in WORKLOADS:
            if workload.key in args.only:
                entries += await time_workload(workload, peers, args.reps, args.warmup)
        if "w1d" in args.only:
            entries += await time_w1d(peers, args.reps, args.warmup)
        if "w4" in args.only:
            entries += await time_w4(peers, args.reps, args.warmup)
    finally:
        for peer in peers:
            if peer.close is not None:
                await peer.close()
    return entries, skipped


def main(argv: list[str] | None = None) -> int:
    """Set up the environment (or re-execute inside it), run, print, write JSON."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.here and not venv.inside():
        venv.ensure(args.upgrade)
        venv.reexec([a for a in argv if a != "--upgrade"])
    started = time.perf_counter()
    entries, skipped = asyncio.run(run(args))
    print()
    flows = [e for e in entries if e["workload"] != "w4"]
    dags = [e for e in entries if e["workload"] == "w4"]
    if flows:
        print(report.format_table(HEADERS, table_rows(flows)))
    if dags:
        print("\n" if flows else "", end="")
        print(report.format_table(W4_HEADERS, table_rows(dags, W4_CONTENDERS)))
    print(
        f"\nMedians of {args.reps} repetitions after {args.warmup} warm-up; 'sg superstep', "
        "'sg async' (w1-w3, w1d), 'sg inline' and 'sg thread' (w4) say how many times faster "
        "stepgraph is than that contender (per unit).\n"
        f"Took {time.perf_counter() - started:.1f} s."
    )
    for skip in skipped:
        print(f"skipped {skip['peer']}: {skip['reason']}")
    peer_versions = {dist: report.package_version(dist) for dist in venv.PEER_DISTS}
    document = {
        **report.run_metadata(reps=args.reps, warmup=args.warmup, peers=peer_versions),
        "results": entries,
        "skipped": skipped,
    }
    report.write_json(args.output, document)
    print(f"wrote {report.display_path(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
