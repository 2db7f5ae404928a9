"""Run ids are unique: per process, and across processes forked from one another."""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection

from stepgraph.runtime.run import new_run_id


def _send_ids(conn: Connection) -> None:
    conn.send([new_run_id() for _ in range(3)])
    conn.close()


def test_run_ids_made_in_one_process_differ() -> None:
    ids = [new_run_id() for _ in range(1000)]
    assert len(set(ids)) == 1000


def test_a_forked_child_makes_other_run_ids_than_its_parent_and_its_siblings() -> None:
    context = multiprocessing.get_context("fork")  # the child starts as a copy of this one
    new_run_id()  # the parent has made ids before it forks
    made: list[str] = []
    for _ in range(2):
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_send_ids, args=(send,))
        child.start()
        send.close()
        made += receive.recv()
        child.join()
        assert child.exitcode == 0
    made += [new_run_id() for _ in range(3)]
    assert len(set(made)) == 9, made
