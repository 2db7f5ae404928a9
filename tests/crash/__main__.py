"""``python -m tests.crash [N]``: kill -9 N durable runs (default 1000), resume, tabulate.

Seeds 0 to N-1 (``--first`` moves the range), on SQLite and, when a server answers at
``tests.pg.PG_DSN`` (``$STEPGRAPH_TEST_PG``), PostgreSQL; both modes; the flows of
:mod:`tests.crash.flows` (``--store``, ``--mode``, ``--flow`` narrow them; ``--jobs``
seeds run at a time, 2 by default). Prints the counts by store and mode, how the kills landed and
the time taken, then each seed that did not resume with the same result. Exits 1 when
any seed did not resume with the same result, or lost checkpoints, or found corruption.
"""

from __future__ import annotations

import argparse
import sys

from .flows import FLOWS
from .harness import FLOW_WEIGHTS, MODES, STORES, Outcome, crash_stores, run_seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.crash",
        description="Kill durable runs with SIGKILL at random points, resume them, compare.",
    )
    parser.add_argument("seeds", nargs="?", type=int, default=1000, help="how many (1000)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (0)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds at a time (2)")
    parser.add_argument("--store", choices=STORES, action="append", help="only this store")
    parser.add_argument("--mode", choices=MODES, action="append", help="only this mode")
    parser.add_argument(
        "--flow",
        choices=sorted(FLOWS),
        action="append",
        help=f"only this flow (default: all of {', '.join(FLOW_WEIGHTS)})",
    )
    args = parser.parse_args(argv)
    stores = args.store or list(STORES)
    modes = args.mode or list(MODES)
    flow_names = args.flow or list(FLOW_WEIGHTS)
    seeds = range(args.first, args.first + args.seeds)

    with crash_stores(stores) as (where, skipped):
        for kind, reason in skipped.items():
            print(f"PostgreSQL is skipped: {reason}" if kind == "postgres" else reason)
        usable = [kind for kind in stores if kind not in skipped]
        if not usable:
            print("no store to test", file=sys.stderr)
            return 1
        done = 0

        def progress(outcome: Outcome) -> None:
            nonlocal done
            done += 1
            if not outcome.ok:
                print(f"FAILED {outcome.plan.describe()}: {outcome.detail}", flush=True)
            elif done % 100 == 0:
                print(f"{done} seeds done", flush=True)

        tally = run_seeds(
            seeds,
            where,
            stores=usable,
            modes=modes,
            flow_names=flow_names,
            jobs=args.jobs,
            progress=progress,
        )
        tally.skipped = skipped
    print()
    print(tally.table())
    if not tally.ok:
        print(f"\n{len(tally.failures)} seed(s) did not resume with the same result:")
        for outcome in tally.failures:
            print(f"  {outcome.plan.describe()}: {outcome.detail}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
