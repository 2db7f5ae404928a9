"""Crash and resume: a durable order pipeline killed with SIGKILL, then resumed.

    reserve -> charge -> ship -> StopEvent

The workflow keeps its runs in a SQLite file (``SqliteStore``): a checkpoint at every
superstep barrier. This script starts a child process that runs one order and kills it
(``kill -9``) while ``ship`` is running, then resumes the run from its store in this
process. The steps that completed before the kill do not run again; ``ship``, interrupted,
runs again from its start (at least once). ``charge`` calls a payment service with
``ctx.idempotency_key``, the key a service uses to do a request once however often it is
sent: the card is charged once.

Stored events name their classes by module, so both processes take the workflow from the
module ``resume_after_crash``, not from ``__main__`` (whose name differs from process to
process): keep durable workflows in modules.

Run it with ``python examples/resume_after_crash.py`` (``make demo`` runs it too).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from stepgraph import Context, Event, StartEvent, StopEvent, Workflow, step
from stepgraph.stores import SqliteStore


class Order(StartEvent):
    order_id: str
    amount: int
    ledger: str  # the payment service's records (a JSON file standing in for it)


class Reserved(Event):
    order: Order


class Charged(Event):
    order: Order
    payment: str


def charge_card(ledger: Path, key: str, amount: int) -> str:
    """The payment service: one charge per idempotency key, however often it is asked."""
    charges = json.loads(ledger.read_text()) if ledger.exists() else {}
    if key not in charges:
        charges[key] = {"payment": f"pay-{len(charges) + 1}", "amount": amount}
        ledger.write_text(json.dumps(charges))
    return str(charges[key]["payment"])


class OrderPipeline(Workflow):
    @step
    async def reserve(self, ctx: Context, ev: Order) -> Reserved:
        print(f"reserve: {ev.order_id}", flush=True)
        return Reserved(order=ev)

    @step
    async def charge(self, ctx: Context, ev: Reserved) -> Charged:
        payment = charge_card(Path(ev.order.ledger), ctx.idempotency_key, ev.order.amount)
        print(f"charge:  {ev.order.amount} EUR as {payment}", flush=True)
        return Charged(order=ev.order, payment=payment)

    @step
    async def ship(self, ctx: Context, ev: Charged) -> StopEvent:
        print(f"ship:    {ev.order.order_id}", flush=True)
        if "--child" in sys.argv:  # the child waits here, to be killed in the middle of it
            await asyncio.to_thread(sys.stdin.readline)
        return StopEvent(result=f"{ev.order.order_id} shipped, paid by {ev.payment}")


def this_module() -> ModuleType:
    """This file as the module ``resume_after_crash`` (run as a script, it is ``__main__``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    return importlib.import_module("resume_after_crash")


def child(db: str, ledger: str) -> None:
    """The process that gets killed: it runs order A-17 until ``ship`` blocks."""
    module = this_module()
    order = module.Order(order_id="A-17", amount=42, ledger=ledger)
    module.OrderPipeline(store=SqliteStore(db)).run_sync(order, run_id="order-A-17")


async def resume(db: str) -> str:
    store = SqliteStore(db)
    record = await store.get_run("order-A-17")
    assert record is not None
    checkpoints = await store.list_checkpoints("order-A-17")
    print(f"stored:  run {record.run_id} is {record.status}, {len(checkpoints)} checkpoints")
    result: str = await this_module().OrderPipeline(store=store).resume("order-A-17")
    record = await store.get_run("order-A-17")
    assert record is not None
    print(f"resumed: {result} ({record.status})")
    return result


def main(directory: str | None = None) -> str:
    """Start the child, kill it while it ships, resume the run here; return its result.

    (With ``--child DB LEDGER``: be that child.)
    """
    if "--child" in sys.argv:
        child(*sys.argv[sys.argv.index("--child") + 1 :])
        return ""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(directory or scratch)
        db, ledger = str(folder / "runs.db"), folder / "ledger.json"
        script = Path(__file__).resolve()
        process = subprocess.Popen(
            [sys.executable, str(script), "--child", db, str(ledger)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            print(f"  [child] {line.rstrip()}", flush=True)
            if line.startswith("ship:"):
                break
        process.send_signal(signal.SIGKILL)  # kill -9, in the middle of `ship`
        process.wait()
        print(f"killed:  the child (exit status {process.returncode})")
        result = asyncio.run(resume(db))
        charges = json.loads(ledger.read_text())
        print(f"charged: {len(charges)} time(s)")
        assert len(charges) == 1
        return result


if __name__ == "__main__":
    main()
