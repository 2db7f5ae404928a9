"""A conformance kit for run queues (``stepgraph.stores.queue.RunQueue``).

Subclass :class:`QueueConformance` instead of ``StoreConformance`` for a store that also
implements the run queue: it runs both kits' tests::

    class TestMyStore(QueueConformance):
        def make_store(self) -> Store:
            return MyStore(...)

The test names state the guarantees checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from ..errors import RunFinishedError, RunNotFoundError
from ..stores.base import Commit, RunRecord, Store, StoredStatus
from .store_conformance import StoreConformance, checkpoint, commit, record

__all__ = ["QueueConformance", "queued"]

QUEUED = StoredStatus.QUEUED


def queued(
    run_id: str, *, at: int = 0, queue: str = "default", workflow: str = "flow"
) -> RunRecord:
    """A queued run's record in ``queue``."""
    return replace(record(run_id, at=at, workflow=workflow, status=QUEUED), queue=queue)


async def _submit(
    store: Any, run_id: str, *, at: int = 0, queue: str = "default", workflow: str = "flow"
) -> None:
    made = await store.create_run(
        queued(run_id, at=at, queue=queue, workflow=workflow),
        Commit(run_id=run_id, checkpoint=checkpoint(0, status=QUEUED)),
    )
    assert made is None, f"create_run({run_id!r}) found a run already"


async def _idle_paused(store: Any, owner: str, run_ids: list[str]) -> None:
    """Pause ``owner``'s claimed ``run_ids`` and give them up as idle (they wait for an
    answer: claimable again once a message is posted to them)."""
    for run_id in run_ids:
        await commit(store, Commit(run_id=run_id, status=StoredStatus.PAUSED))
    await store.unclaim(owner, run_ids, idle=True)


def _ids(records: list[RunRecord]) -> list[str]:
    return [r.run_id for r in records]


class QueueConformance(StoreConformance):
    """The store guarantees and the run queue's, as tests (see the module docstring)."""

    def test_a_queued_run_is_listed_as_queued_with_its_queue(self) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "q1", queue="emails")
            runs = await store.list_runs(status="queued")
            assert _ids(runs) == ["q1"], runs
            assert runs[0].queue == "emails" and runs[0].worker is None, runs[0]
            assert await store.list_runs(status="running") == []

        self.run_scenario(scenario, self.make_store())

    def test_claim_takes_queued_runs_oldest_first_up_to_the_limit(self) -> None:
        async def scenario(store: Any) -> None:
            for at, run_id in enumerate(["a", "b", "c"]):
                await _submit(store, run_id, at=at)
            first = await store.claim("w1", ["default"], 2, 30.0)
            assert _ids(first) == ["a", "b"], first
            assert all(r.status == StoredStatus.RUNNING and r.worker == "w1" for r in first)
            rest = await store.claim("w2", ["default"], 5, 30.0)
            assert _ids(rest) == ["c"], rest
            assert await store.claim("w3", ["default"], 5, 30.0) == []
            got = await store.get_run("a")
            assert got is not None and got.status == StoredStatus.RUNNING

        self.run_scenario(scenario, self.make_store())

    def test_claim_takes_only_the_queues_asked_for(self) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "a", queue="fast")
            await _submit(store, "b", queue="slow", at=1)
            assert _ids(await store.claim("w", ["nobody-serves-this"], 5, 30.0)) == []
            assert _ids(await store.claim("w", ["slow"], 5, 30.0)) == ["b"]
            assert _ids(await store.list_runs(status="queued")) == ["a"]

        self.run_scenario(scenario, self.make_store())

    def test_claim_with_workflows_takes_only_the_runs_of_those_workflows(self) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "a", workflow="Mail")
            await _submit(store, "b", workflow="Report", at=1)
            await _submit(store, "c", workflow="Mail", at=2)
            assert await store.claim("w", ["default"], 5, 30.0, workflows=[]) == []
            got = await store.claim("w", ["default"], 5, 0.2, workflows=["Report"])
            assert _ids(got) == ["b"], got
            assert _ids(await store.list_runs(status="queued")) == ["a", "c"]
            again: list[RunRecord] = []
            for _ in range(200):  # a run of theirs to take over too, once its lease ends
                assert await store.claim("w2", ["default"], 5, 30.0, workflows=["Other"]) == []
                again = await store.claim("w2", ["default"], 5, 30.0, workflows=["Report"])
                if again:
                    break
                await asyncio.sleep(0.01)
            assert _ids(again) == ["b"], again
            assert _ids(await store.claim("w3", ["default"], 5, 30.0)) == ["a", "c"]

        self.run_scenario(scenario, self.make_store())

    def test_concurrent_claims_never_take_one_run_twice(self) -> None:
        async def scenario(store: Any, other: Any) -> None:
            for at in range(20):
                await _submit(store, f"r{at:02d}", at=at)
            got = await asyncio.gather(
                *(
                    (store if i % 2 else other).claim(f"w{i}", ["default"], 3, 30.0)
                    for i in range(10)
                )
            )
            taken = [r.run_id for batch in got for r in batch]
            assert sorted(taken) == [f"r{at:02d}" for at in range(20)], taken

        first = self.make_store()
        self.run_scenario(scenario, first, self.make_other_store(first))

    def test_concurrent_claims_never_take_over_one_run_twice(self) -> None:
        async def scenario(store: Any, other: Any) -> None:
            names = [f"r{at:02d}" for at in range(18)]
            for at, run_id in enumerate(names):
                await _submit(store, run_id, at=at)
            assert _ids(await store.claim("dead", ["default"], 18, 0.01)) == names
            await _idle_paused(store, "dead", names[6:12])  # ... and answered
            for run_id in names[6:12]:
                await store.post(run_id, b"the answer")
            await asyncio.sleep(0.02)  # the other leases ran out 0.01 s after the claim
            got = await asyncio.gather(
                *(
                    (store if i % 2 else other).claim(f"w{i}", ["default"], 2, 30.0)
                    for i in range(12)
                )
            )
            taken = [r.run_id for batch in got for r in batch]
            # a claim skips the runs another one has locked (and may not take): the rest
            # is taken afterwards, and no run is taken twice
            while more := await store.claim("late", ["default"], 18, 30.0):
                taken += _ids(more)
            assert sorted(taken) == names, taken

        first = self.make_store()
        self.run_scenario(scenario, first, self.make_other_store(first))

    def test_take_gets_the_leases_and_latest_checkpoints_of_runs_no_one_else_holds(self) -> None:
        async def scenario(store: Any, other: Any) -> None:
            for at, run_id in enumerate(("a", "b", "held")):
                await _submit(store, run_id, at=at)
            await commit(store, Commit(run_id="b", checkpoint=checkpoint(1, superstep=1)))
            assert await other.acquire("held", "elsewhere")
            taken = await store.take("w1", ["a", "b", "held"])
            assert sorted(taken) == ["a", "b"], taken  # "held": another coordinator's
            assert [taken[r].info.seq for r in ("a", "b")] == [0, 1], taken
            assert await store.acquire("a", "w1")  # held by w1 now ...
            assert not await other.acquire("a", "w2")  # ... and by no one else
            assert await store.take("w1", ["a"]) == {"a": taken["a"]}  # w1's already

        first = self.make_store()
        self.run_scenario(scenario, first, self.make_other_store(first))

    def test_a_lease_got_with_take_is_free_for_others_once_released_and_release_taken(
        self,
    ) -> None:
        async def scenario(store: Any, other: Any) -> None:
            await _submit(store, "r")
            assert "r" in await store.take("w1", ["r"])
            await store.release("r", "w1")
            assert "r" in await store.take("w1", ["r"])  # released: taken again at once
            await store.release("r", "w1")
            await store.release_taken()
            assert await other.acquire("r", "w2")
            await other.release("r", "w2")
            assert "r" in await store.take("w1", ["r"])
            await store.release("r", "w1")
            await _submit(store, "s", at=1)
            assert "s" in await store.take("w1", ["s"])  # a take unlocks the releases due
            assert await other.acquire("r", "w2")

        first = self.make_store()
        self.run_scenario(scenario, first, self.make_other_store(first))

    def test_a_claim_with_lease_leaves_the_runs_leases_to_their_claimer_alone(self) -> None:
        async def scenario(store: Any, other: Any) -> None:
            await _submit(store, "a")
            await _submit(store, "b", at=1)
            assert await other.acquire("b", "elsewhere")
            assert _ids(await store.claim("w1", ["default"], 5, 30.0, lease=True)) == ["a", "b"]
            taken = await store.take("w1", ["a", "b"])
            assert sorted(taken) == ["a"], taken  # "b": another coordinator's
            assert not await other.acquire("a", "w2")
            await store.release("a", "w1")
            await store.unclaim("w1", ["a"])  # gives its lease up first
            assert _ids(await other.claim("w2", ["default"], 5, 30.0)) == ["a"]
            assert await other.acquire("a", "w2")

        first = self.make_store()
        self.run_scenario(scenario, first, self.make_other_store(first))

    def test_a_run_given_up_and_claimed_again_with_lease_is_held_once(self) -> None:
        async def scenario(store: Any, other: Any) -> None:
            await _submit(store, "a")
            await store.claim("w1", ["default"], 5, 0.05, lease=True)
            assert "a" in await store.take("w1", ["a"])
            await store.release("a", "w1")  # its unlock may be due still ...
            again: list[RunRecord] = []
            for _ in range(200):  # its claim ends 0.05 s after it was made
                again = await store.claim("w1", ["default"], 5, 30.0, lease=True)
                if again:
                    break
                await asyncio.sleep(0.01)
            assert _ids(again) == ["a"], again
            assert "a" in await store.take("w1", ["a"])
            assert not await other.acquire("a", "w2")
            await store.release("a", "w1")  # ... one release gives it up
            await store.release_taken()
            assert await other.acquire("a", "w2")

        first = self.make_store()
        self.run_scenario(scenario, first, self.make_other_store(first))

    def test_a_run_whose_lease_expired_is_claimed_again_and_a_renewed_one_is_not(self) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "dies")
            await _submit(store, "lives", at=1)
            assert _ids(await store.claim("w1", ["default"], 5, 0.2)) == ["dies", "lives"]
            assert await store.claim("w2", ["default"], 5, 30.0) == []
            await store.renew("w1", ["lives"], 30.0)
            again: list[RunRecord] = []
            for _ in range(200):  # the lease of "dies" ends 0.2 s after the claim
                again = await store.claim("w2", ["default"], 5, 30.0)
                if again:
                    break
                await asyncio.sleep(0.01)
            assert _ids(again) == ["dies"], again
            assert again[0].status == StoredStatus.RUNNING and again[0].worker == "w2"

        self.run_scenario(scenario, self.make_store())

    def test_an_ended_run_is_never_claimed(self) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "done")
            await store.claim("w1", ["default"], 5, 0.01)
            await commit(store, Commit(run_id="done", status=StoredStatus.COMPLETED, result=b"1"))
            await asyncio.sleep(0.02)
            assert await store.claim("w2", ["default"], 5, 30.0) == []

        self.run_scenario(scenario, self.make_store())

    def test_a_submitted_run_going_on_after_its_end_is_claimed_once_its_lease_expired(
        self,
    ) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "again")
            await store.claim("w1", ["default"], 5, 0.01)
            await commit(store, Commit(run_id="again", status=StoredStatus.CANCELLED))
            assert await store.claim("w2", ["default"], 5, 30.0) == []
            await commit(store, Commit(run_id="again", status=StoredStatus.RUNNING))  # resumed
            await asyncio.sleep(0.02)  # the lease of w1 ends 0.01 s after its claim
            assert _ids(await store.claim("w2", ["default"], 5, 30.0)) == ["again"]

        self.run_scenario(scenario, self.make_store())

    def test_a_claim_without_take_over_takes_queued_runs_only(self) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "dies", at=0)
            await store.claim("w1", ["default"], 5, 0.01)
            await _submit(store, "new", at=1)
            await asyncio.sleep(0.02)  # the lease of "dies" ends 0.01 s after its claim
            got = await store.claim("w2", ["default"], 5, 30.0, take_over=False)
            assert _ids(got) == ["new"], got
            assert await store.claim("w2", ["default"], 5, 30.0, take_over=False) == []
            assert _ids(await store.claim("w2", ["default"], 5, 30.0)) == ["dies"]

        self.run_scenario(scenario, self.make_store())

    def test_unclaim_lets_another_worker_take_the_run_at_once(self) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "r")
            await store.claim("w1", ["default"], 5, 30.0)
            await store.unclaim("someone-else", ["r"])  # not theirs: nothing changes
            assert await store.claim("w2", ["default"], 5, 30.0) == []
            await store.unclaim("w1", ["r"])
            got = await store.claim("w2", ["default"], 5, 30.0)
            assert _ids(got) == ["r"] and got[0].worker == "w2", got

        self.run_scenario(scenario, self.make_store())

    def test_a_renewal_leaves_a_run_given_up_meanwhile_given_up(self) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "r")
            await store.claim("w1", ["default"], 5, 30.0)
            await store.unclaim("w1", ["r"], idle=True)
            await store.renew("w1", ["r"], 30.0)  # a renewal that was on its way
            got = await store.get_run("r")
            assert got is not None and got.worker is None, got

        self.run_scenario(scenario, self.make_store())

    def test_a_paused_run_given_up_as_idle_is_claimed_again_once_a_message_is_posted(
        self,
    ) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "asks")
            await store.claim("w1", ["default"], 5, 30.0)
            await _idle_paused(store, "w1", ["asks"])
            assert await store.claim("w2", ["default"], 5, 30.0) == []  # it only waits
            await store.post("asks", b"the answer")
            got = await store.claim("w2", ["default"], 5, 30.0)
            assert _ids(got) == ["asks"], got
            assert got[0].status == StoredStatus.PAUSED and got[0].worker == "w2", got[0]
            assert await store.claim("w3", ["default"], 5, 30.0) == []  # w2 holds it now

        self.run_scenario(scenario, self.make_store())

    def test_a_run_not_submitted_is_never_claimed(self) -> None:
        async def scenario(store: Any) -> None:
            await store.create_run(
                record("plain"), Commit(run_id="plain", checkpoint=checkpoint(0))
            )
            assert await store.claim("w", ["default"], 5, 30.0) == []

        self.run_scenario(scenario, self.make_store())

    def test_inbox_messages_come_in_the_order_posted_and_go_with_the_commit_that_consumes_them(
        self,
    ) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "r")
            await _submit(store, "other", at=1)
            await store.post("r", b"one")
            await store.post("other", b"elsewhere")
            await store.post("r", b"two")
            box = await store.inbox(["r"])
            assert [m.data for m in box] == [b"one", b"two"], box
            assert box[0].id < box[1].id
            assert [m.data for m in await store.inbox(["r", "other"])] == [
                b"one",
                b"elsewhere",
                b"two",
            ]
            await commit(
                store, Commit(run_id="r", journal=(b"e",), journal_after=0, consumed=(box[0].id,))
            )
            assert [m.data for m in await store.inbox(["r"])] == [b"two"]
            loaded = await store.load("r")
            assert loaded is not None and loaded.journal == (b"e",)

        self.run_scenario(scenario, self.make_store())

    def test_the_messages_left_for_a_run_that_completes_go_with_its_end_and_others_stay(
        self,
    ) -> None:
        async def scenario(store: Any) -> None:
            for run_id in ("done", "fails", "other"):
                await _submit(store, run_id)
                await store.post(run_id, b"late")
            await commit(store, Commit(run_id="done", status=StoredStatus.COMPLETED, result=b"1"))
            await commit(store, Commit(run_id="fails", status=StoredStatus.FAILED, result=b"e"))
            box = await store.inbox(["done", "fails", "other"])
            assert sorted(m.run_id for m in box) == ["fails", "other"], box  # may go on

        self.run_scenario(scenario, self.make_store())

    def test_a_post_to_a_run_the_store_does_not_have_is_refused_and_stores_nothing(
        self,
    ) -> None:
        async def scenario(store: Any) -> None:
            try:
                await store.post("nobody", b"lost")
            except RunNotFoundError as exc:
                assert "'nobody'" in str(exc), exc
            else:
                raise AssertionError("a post to an unknown run was accepted")
            assert await store.inbox(["nobody"]) == []

        self.run_scenario(scenario, self.make_store())

    def test_a_post_to_a_completed_run_is_refused_and_one_to_a_failed_run_kept(
        self,
    ) -> None:
        async def scenario(store: Any) -> None:
            for run_id in ("done", "fails", "cancelled"):
                await _submit(store, run_id)
            await commit(store, Commit(run_id="done", status=StoredStatus.COMPLETED, result=b"1"))
            await commit(store, Commit(run_id="fails", status=StoredStatus.FAILED, result=b"e"))
            await commit(store, Commit(run_id="cancelled", status=StoredStatus.CANCELLED))
            try:
                await store.post("done", b"late")
            except RunFinishedError as exc:
                assert "'done'" in str(exc), exc
            else:
                raise AssertionError("a post to a completed run was accepted")
            await store.post("fails", b"for its resume")  # failed, cancelled: resumable
            await store.post("cancelled", b"for its resume")
            box = await store.inbox(["done", "fails", "cancelled"])
            assert sorted(m.run_id for m in box) == ["cancelled", "fails"], box

        self.run_scenario(scenario, self.make_store())

    def test_stream_events_are_stored_in_commit_order_and_read_from_a_position(self) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "r")
            await _submit(store, "other", at=1)
            await commit(store, Commit(run_id="r", events=(b"a", b"b")))
            await commit(store, Commit(run_id="other", events=(b"x",)))
            await commit(store, Commit(run_id="r", checkpoint=checkpoint(1), events=(b"c",)))
            events = await store.read_events("r")
            assert [e.data for e in events] == [b"a", b"b", b"c"], events
            positions = [e.position for e in events]
            assert positions == sorted(positions) and len(set(positions)) == 3
            later = await store.read_events("r", positions[1])
            assert [e.data for e in later] == [b"c"]
            assert await store.read_events("nobody") == []

        self.run_scenario(scenario, self.make_store())

    def test_a_refused_commit_stores_none_of_its_events_nor_consumes_messages(self) -> None:
        async def scenario(store: Any) -> None:
            await _submit(store, "r")
            await store.post("r", b"m")
            (message,) = await store.inbox(["r"])
            refused = Commit(
                run_id="r", checkpoint=checkpoint(0), events=(b"e",), consumed=(message.id,)
            )
            try:
                await commit(store, refused)  # checkpoint 0 exists: refused
            except Exception:
                pass
            else:
                raise AssertionError("a taken checkpoint seq was not refused")
            assert await store.read_events("r") == []
            assert [m.id for m in await store.inbox(["r"])] == [message.id]

        self.run_scenario(scenario, self.make_store())

    def test_wait_for_work_returns_within_its_timeout(self) -> None:
        async def scenario(store: Store) -> None:
            await store.wait_for_work(["default"], 0.01)  # type: ignore[attr-defined]

        self.run_scenario(scenario, self.make_store())
