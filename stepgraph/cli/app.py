"""The ``stepgraph`` command: argument parsing and the commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from ..authoring.graph_workflow import GraphWorkflow
from ..durability.checkpoints import Bounds, read_header
from ..durability.serializer import JSON, written_with
from ..errors import WorkflowValidationError
from ..runtime.handler import WorkflowHandler
from ..stores.base import Store
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    check_event_log,
    fail,
    parse_pairs,
    parse_value,
    say,
)
from .events import plot, tail
from .loading import Target, configure, instance, load_target
from .progress import make_progress
from .running import Outcome, follow, print_result
from .runs import cancel_run, list_runs, show_run
from .stores import STORE_URLS, close_store, open_store, probe_store, url_of
from .worker import serve

__all__ = ["build_parser", "main"]

STORE_ENV = "STEPGRAPH_STORE"

DESCRIPTION = """\
Run stepgraph workflows, look at and resume stored runs, draw graphs, read event logs.

MODULE:ATTR names a Workflow subclass or instance, or a built executor graph
(WorkflowBuilder(...).build()), importable from the current directory (MODULE may also
be a path to a .py file).

Store URLs: sqlite:///relative.db, sqlite:////absolute.db, or
postgresql://user:password@host:5432/dbname (a schema=NAME query parameter keeps the
tables in that schema). The runs commands take $STEPGRAPH_STORE when --store is not given.

exit codes: 0 done; 1 the run failed (its step and error are printed); 2 bad usage
(unknown module, attribute, run or checkpoint; malformed option; a store that cannot be
opened; a refused operation); 3 the run paused waiting for input (resumable);
130 interrupted.
"""

RUN_EPILOG = """\
--arg KEY=VALUE: VALUE is parsed as JSON when it parses (42, 1.5, true, null, [1, 2],
{"a": 1}, "quoted text"), else kept as the string itself (Ada, hello world). For a
Workflow the arguments are the start event's fields: run(KEY=VALUE, ...). For a built
graph, whose run takes one start message: a single --arg message=VALUE sends VALUE
itself; any other set of --arg is sent as one dict {KEY: VALUE, ...}; no --arg sends None.

The result goes to stdout as JSON (json.dumps) when it serializes, else as its repr; a
graph run's result is its outputs (the list of ctx.yield_output values). Progress goes to
stderr: a live display on a terminal (rich: pip install 'stepgraph[cli]'), plain lines
otherwise.

A run that asks for input (InputRequiredEvent, ctx.request_info) gets the --respond values
in order (parsed as --arg values are); with none left, a run with a store stops there,
paused (exit 3: answer it later with `stepgraph runs resume RUN_ID --respond VALUE`), and
one without a store is cancelled (exit 1).
"""

STORE_SHORT = "sqlite:///relative.db, sqlite:////absolute.db or postgresql://..."
STORE_HELP = f"the store: {STORE_SHORT} (default: ${STORE_ENV})"


def _store_arg(parser: argparse.ArgumentParser, required: bool) -> None:
    default = os.environ.get(STORE_ENV) or None
    help_text = STORE_HELP if required else f"keep the run in this store: {STORE_SHORT}"
    parser.add_argument(
        "--store", metavar="URL", default=default if required else None, help=help_text
    )


def _workflow_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workflow",
        metavar="MODULE:ATTR",
        help="the run's workflow (default: where the run's checkpoints say it is, as it was "
        "given to `stepgraph run`, or a Workflow class's module and name)",
    )


def _follow_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--event-log", metavar="PATH", help="append the run's events to this JSON-lines file"
    )
    parser.add_argument(
        "--respond",
        metavar="VALUE",
        action="append",
        default=[],
        help="answer the run's next input request with VALUE (JSON or a string; repeatable)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="show no progress (the error line stays)"
    )


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line (and exit code 2), as the command's own errors are."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split()[0]
        self.exit(EXIT_USAGE, f"{command}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``stepgraph`` argument parser."""
    parser = _Parser(
        prog="stepgraph",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run a workflow and print its result",
        description="Run a workflow and print its result on stdout.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("target", metavar="MODULE:ATTR", help="the workflow to run")
    run.add_argument(
        "--arg",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a start argument (VALUE: JSON when it parses, else a string; repeatable)",
    )
    _store_arg(run, required=False)
    run.add_argument(
        "--mode", choices=("superstep", "async"), help="the delivery mode (default: the workflow's)"
    )
    run.add_argument(
        "--run-id", metavar="ID", help="the run's id (with a store: an idempotency key)"
    )
    _follow_args(run)

    runs = commands.add_parser(
        "runs",
        help="list, show, resume, cancel or fork stored runs",
        description="Stored runs: list, show, resume, cancel, fork.",
    )
    actions = runs.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list the store's runs (full ids), oldest first")
    listing.add_argument(
        "--status",
        choices=("queued", "running", "paused", "completed", "failed", "cancelled"),
        help="only the runs with this status",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    _store_arg(listing, required=True)
    show = actions.add_parser("show", help="show a run's record, result and checkpoints")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    _store_arg(show, required=True)
    resume = actions.add_parser(
        "resume",
        help="go on with a stored run from its latest checkpoint",
        description="Go on with a stored run (crashed, paused, failed or cancelled) from its "
        "latest checkpoint, as the same run; a completed run prints its stored result.",
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    _workflow_arg(resume)
    resume.add_argument(
        "--no-strict",
        action="store_true",
        help="go on even if the workflow's steps changed (their messages are dropped)",
    )
    _store_arg(resume, required=True)
    _follow_args(resume)
    cancel = actions.add_parser(
        "cancel",
        help="store a paused or crashed run as cancelled",
        description="Store a run that no live process runs (paused, or crashed) as cancelled. "
        "A run live in another process holds its lease: that is refused (stop it there).",
    )
    cancel.add_argument("run_id", metavar="RUN_ID")
    _store_arg(cancel, required=True)
    fork = actions.add_parser(
        "fork",
        help="start a new run from a checkpoint of a stored run",
        description="Start a new run (a new id) from a checkpoint of a stored run; its record "
        "names the run and checkpoint it came from.",
    )
    fork.add_argument("run_id", metavar="RUN_ID")
    fork.add_argument(
        "--checkpoint",
        metavar="ID",
        required=True,
        help="the checkpoint (its id from `runs show`, or its number: 2 is RUN_ID:2)",
    )
    _workflow_arg(fork)
    fork.add_argument(
        "--no-strict",
        action="store_true",
        help="go on even if the workflow's steps changed (their messages are dropped)",
    )
    _store_arg(fork, required=True)
    _follow_args(fork)

    worker = commands.add_parser(
        "worker",
        help="take queued runs (wf.submit) from a store and run them",
        description="A long-running process that takes the queued runs of its workflows "
        "from the store, runs them, renews its leases, and resumes the runs of workers that "
        "died. SIGTERM or Ctrl-C stops it gracefully: no more runs are taken, the supersteps "
        "in flight commit, and its runs are left for other workers. MODULE:ATTR names a "
        "Workflow subclass or instance, a built graph, or a list or dict (name to workflow) "
        "of them.",
    )
    worker.add_argument("target", metavar="MODULE:ATTR")
    _store_arg(worker, required=True)
    worker.add_argument(
        "--queue",
        action="append",
        metavar="NAME",
        help="a queue to take runs from (repeat for several; default: default)",
    )
    worker.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="runs held at once (default 8)"
    )
    worker.add_argument(
        "--lease-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="how long a claim lasts unless renewed: a dead worker's runs are taken over "
        "after this (default 10)",
    )
    worker.add_argument(
        "--grace-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, how long runs get to reach a checkpoint or end (default 30)",
    )

    graph = commands.add_parser("graph", help="print a workflow's graph (Mermaid or DOT)")
    graph.add_argument("target", metavar="MODULE:ATTR")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")

    events = commands.add_parser("events", help="read an event log")
    event_actions = events.add_subparsers(dest="action", metavar="ACTION", required=True)
    tailing = event_actions.add_parser(
        "tail",
        help="print an event log's last records, one per line",
        description="Print the last records of an event log (JSON lines), one readable line "
        "each: time, kind, run or task, step or task name, details, error. Lines that are "
        "not whole JSON objects (a write cut by a crash) are skipped.",
    )
    tailing.add_argument("path", metavar="EVENTS.jsonl")
    tailing.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    tailing.add_argument(
        "-f", "--follow", action="store_true", help="then print records as they are appended"
    )
    plot_help = "draw an event log's timeline (pip install 'stepgraph[plot]')"
    for plotting in (  # `stepgraph plot` and `stepgraph events plot`: the same
        commands.add_parser("plot", help=plot_help),
        event_actions.add_parser("plot", help=plot_help),
    ):
        plotting.add_argument("path", metavar="EVENTS.jsonl")
        plotting.add_argument("-o", "--output", metavar="OUT.png", required=True)
    return parser


# -- the commands ----------------------------------------------------------------------------------


def _graph_message(args: dict[str, Any]) -> Any:
    """A built graph's start message from the --arg set (see RUN_EPILOG)."""
    if not args:
        return None
    if list(args) == ["message"]:
        return args["message"]
    return args


async def _with_store(
    url: str | None, create: bool, body: Callable[[Store], Awaitable[int]]
) -> int:
    if not url:
        fail(f"give the store with --store URL ({STORE_URLS}) or ${STORE_ENV}")
    store = open_store(url, create=create)
    try:
        await probe_store(store, url)
        return await body(store)
    finally:
        await close_store(store)


def _finish(outcome: Outcome) -> int:
    if outcome.code == EXIT_OK:
        print_result(outcome.result)
    return outcome.code


async def _run(args: argparse.Namespace) -> int:
    target = load_target(args.target)
    start_args = parse_pairs(args.arg, "--arg")
    for reserved in ("run_id", "start_event"):
        if reserved in start_args:
            fail(f"--arg {reserved}=... is not a start argument: use --run-id for the run's id")
    responses = [parse_value(value) for value in args.respond]
    check_event_log(args.event_log)
    store: Store | None = None
    if args.store is not None and not args.store.strip():
        fail(f"--store {args.store!r}: give a store URL ({STORE_URLS})")
    if args.store:
        store = open_store(args.store, create=True)
    try:
        if store is not None:
            await probe_store(store, args.store)
        progress = make_progress(not args.no_progress)
        workflow = configure(
            target,
            store=store,
            mode=args.mode,
            event_log=args.event_log,
            observers=(progress,),
            source=args.target,  # kept with its runs: `runs resume` finds it so
        )
        if isinstance(workflow, GraphWorkflow):
            message = _graph_message(start_args)

            def start() -> WorkflowHandler:
                return workflow.run(message, run_id=args.run_id)
        else:

            def start() -> WorkflowHandler:
                return workflow.run(run_id=args.run_id, **start_args)

        hint = None
        # a pause outlives this process in a store a URL opens again: --store's, or the
        # target's own (a file or a database: not one in this process's memory)
        url = args.store or url_of(workflow.options.store)
        if url is not None:

            def hint(run_id: str) -> str:
                return f"stepgraph runs resume {run_id} --store {shlex.quote(url)}"

        return _finish(
            await follow(start, workflow, progress, responses=responses, resume_hint=hint)
        )
    finally:
        if store is not None:
            await close_store(store)


def _json_written(frame: bytes) -> bool:
    try:
        return written_with(frame) is JSON
    except ValueError:  # damaged: read_header says how
        return True


async def _workflow_of(args: argparse.Namespace, store: Store) -> tuple[str, Target, Bounds | None]:
    """The run's workflow: ``--workflow``'s, else the one its latest checkpoint names;
    and the bounds the run went on under, where its checkpoint says."""
    source: str = args.workflow or ""
    bounds: Bounds | None = None
    stored = await store.load(args.run_id, None)
    if stored is not None and _json_written(stored.frame):  # (a pickle is not loaded)
        header = read_header(stored.frame, run_id=args.run_id, checkpoint_id=stored.info.id)
        source, bounds = source or header.source, header.bounds
    if not source:
        fail(
            f"runs {args.action}: run {args.run_id!r} does not say where its workflow is (a "
            f"class defined in __main__, a graph not run by `stepgraph run`, or a run "
            f"written with pickle, which is not loaded to find out): give "
            f"--workflow MODULE:ATTR (the workflow or built graph that made it)"
        )
    return source, load_target(source), bounds


async def _resume(args: argparse.Namespace, store: Store) -> int:
    run_id: str = args.run_id
    record = await store.get_run(run_id)
    if record is None:
        fail(f"there is no run {run_id!r} in the store")
    source, target, bounds = await _workflow_of(args, store)
    checkpoint: str | None = None
    if args.action == "fork":
        checkpoint = args.checkpoint
        if checkpoint is not None and checkpoint.isdigit():
            checkpoint = f"{run_id}:{int(checkpoint)}"
        known = [info.id for info in await store.list_checkpoints(run_id)]
        if checkpoint not in known:
            has = ", ".join(known) if len(known) <= 6 else f"{known[0]} to {known[-1]}"
            fail(f"run {run_id!r} has no checkpoint {args.checkpoint!r} (it has {has or 'none'})")
    check_event_log(args.event_log)
    progress = make_progress(not args.no_progress)
    workflow = configure(
        target,
        store=store,
        event_log=args.event_log,
        observers=(progress,),
        source=source,
        bounds=bounds,
    )
    strict = not args.no_strict
    url = args.store

    def start() -> WorkflowHandler:
        return workflow.resume(run_id, checkpoint, strict=strict)

    def hint(new_id: str) -> str:
        return f"stepgraph runs resume {new_id} --store {shlex.quote(url)}"

    def started(handler: WorkflowHandler) -> None:
        if checkpoint is not None:
            say(f"stepgraph: run {handler.run_id} is a fork of run {run_id} at {checkpoint}")

    responses = [parse_value(value) for value in args.respond]
    outcome = await follow(
        start, workflow, progress, responses=responses, resume_hint=hint, on_start=started
    )
    return _finish(outcome)


async def _runs(args: argparse.Namespace) -> int:
    action = args.action

    async def body(store: Store) -> int:
        if action == "list":
            return await list_runs(store, args.status, args.json)
        if action == "show":
            return await show_run(store, args.run_id, args.json)
        if action == "cancel":
            return await cancel_run(store, args.run_id)
        return await _resume(args, store)

    return await _with_store(args.store, False, body)


def _graph(args: argparse.Namespace) -> int:
    workflow = instance(load_target(args.target))
    text = workflow.to_mermaid() if args.format == "mermaid" else workflow.to_dot()
    print(text.rstrip("\n"))
    return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "run":
        return asyncio.run(_run(args))
    if command == "runs":
        return asyncio.run(_runs(args))
    if command == "graph":
        return _graph(args)
    if command == "worker":
        if not args.store:
            fail(f"give the store with --store URL ({STORE_URLS}) or ${STORE_ENV}")
        return asyncio.run(
            serve(
                args.target,
                args.store,
                queues=args.queue or ["default"],
                concurrency=args.concurrency,
                lease_seconds=args.lease_seconds,
                grace_seconds=args.grace_seconds,
            )
        )
    if command == "events" and args.action == "tail":
        return tail(args.path, args.n, args.follow)
    return plot(args.path, args.output)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stepgraph`` command with ``argv`` (default: ``sys.argv[1:]``); the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # bad options: usage and exit 2, as argparse does
    try:
        return _dispatch(args)
    except CommandError as exc:
        say(f"stepgraph: error: {exc}")
        return exc.code
    except KeyboardInterrupt:
        say("stepgraph: interrupted")
        return 130
    except WorkflowValidationError as exc:  # MODULE:ATTR names an invalid workflow
        say(f"stepgraph: error: {type(exc).__name__}: {' '.join(str(exc).split())}")
        return EXIT_USAGE
    except BrokenPipeError:  # `stepgraph runs list | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug, or the user's code failing outside a run: one line
        if os.environ.get("STEPGRAPH_DEBUG"):
            raise
        say(f"stepgraph: error: {type(exc).__name__}: {' '.join(str(exc).split())}")
        say("stepgraph: (set STEPGRAPH_DEBUG=1 for the traceback)")
        return EXIT_USAGE
