"""The store conformance kit against every store stepgraph ships, and PostgreSQL's leases.

The PostgreSQL tests need a server (``tests/pg.py``: ``.ci/run`` starts one); without one
they are skipped with the reason. Each gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stepgraph.errors import StoreError
from stepgraph.stores import MemoryStore, PostgresStore, SqliteStore, Store
from stepgraph.stores.base import Commit, StoredStatus
from stepgraph.testing.queue_conformance import QueueConformance
from stepgraph.testing.store_conformance import record
from tests.pg import PG_DSN, pg_schema, require_pg


class TestMemoryStore(QueueConformance):
    across_processes = False  # (its data is in one process's memory)

    def make_store(self) -> Store:
        return MemoryStore()

    def make_other_store(self, first: Store) -> Store:
        return first  # a MemoryStore shares its data with no other object


class TestSqliteStore(QueueConformance):
    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "runs.db"

    def make_store(self) -> Store:
        return SqliteStore(self.path)

    def make_other_store(self, first: Store) -> Store:
        return SqliteStore(self.path)


class TestPostgresStore(QueueConformance):
    @pytest.fixture(autouse=True)
    def _schema(self) -> Iterator[None]:
        require_pg()
        with pg_schema() as name:
            self.schema = name
            yield

    def make_store(self) -> PostgresStore:
        return PostgresStore(PG_DSN, schema=self.schema)

    def make_other_store(self, first: Store) -> Store:
        return self.make_store()

    def test_another_coordinator_is_refused_an_owned_run_without_waiting(self) -> None:
        async def scenario(owner: Store, other: Store) -> None:
            assert await owner.acquire("r", "owner")
            for _ in range(3):  # a try-lock each time: no waiting in a lock queue
                assert not await other.acquire("r", "other")
            await owner.release("r", "owner")
            assert await other.acquire("r", "other")
            assert not await owner.acquire("r", "owner")

        self.run_scenario(scenario, self.make_store(), self.make_store())

    def test_a_run_claimed_while_queued_gets_its_checkpoint_and_chunks_with_the_claim(
        self,
    ) -> None:
        from stepgraph.testing.queue_conformance import queued
        from stepgraph.testing.store_conformance import checkpoint

        async def scenario(store: Any) -> None:
            first = checkpoint(0, values={"s:k": b"v", "s:j": b"w"}, status=StoredStatus.QUEUED)
            await store.create_run(queued("q"), Commit("q", checkpoint=first))
            assert [r.run_id for r in await store.claim("w", ["default"], 5, 30.0, lease=True)] == [
                "q"
            ]
            loaded = store._here().loaded  # read by the claim: take reads nothing more
            assert set(loaded) == {"q"}, loaded
            taken = (await store.take("w", ["q"]))["q"]
            assert taken is not None and taken.info.seq == 0 and taken.frame == first.frame
            assert dict(taken.values) == {"s:k": b"v", "s:j": b"w"} and taken.journal == ()
            assert taken == await store.load("q")

        self.run_scenario(scenario, self.make_store())

    def test_commits_waiting_when_their_writer_is_cancelled_fail_and_aclose_waits(
        self,
    ) -> None:
        from stepgraph.testing.store_conformance import checkpoint, record

        async def scenario(store: Any) -> None:
            for run_id in ("a", "b", "c"):
                await store.create_run(record(run_id), Commit(run_id, checkpoint=checkpoint(0)))
            # a commit whose caller stopped waiting before it went out is not written
            gone = store.commit(Commit("a", checkpoint=checkpoint(1)))
            gone.cancel()
            kept = store.commit(Commit("b", checkpoint=checkpoint(1)))
            await kept
            assert [i.seq for i in await store.list_checkpoints("a")] == [0]
            # the writer cancelled with commits waiting: each fails, naming its run
            waiting = [store.commit(Commit(r, checkpoint=checkpoint(2))) for r in ("b", "c")]
            store._here().committer.cancel()
            for run_id, done in zip(("b", "c"), waiting, strict=True):
                with pytest.raises(StoreError, match=f"run '{run_id}'"):
                    await done
            # aclose waits for the commits made before it, and opens nothing after
            last = store.commit(Commit("c", checkpoint=checkpoint(1)))
            await store.aclose()
            await last
            assert asyncio.get_running_loop() not in store._loops
            assert [i.seq for i in await store.list_checkpoints("c")] == [0, 1]

        self.run_scenario(scenario, self.make_store())

    def test_the_run_lease_key_computed_in_sql_is_the_one_python_computes(self) -> None:
        """A claim takes run leases in SQL, acquire in Python: one key, or no exclusion."""
        import psycopg

        from stepgraph.stores.pg_common import RUN_KEY_SQL, run_key, run_key_prefix

        sql = "SELECT " + RUN_KEY_SQL.format(run_id="%(run_id)s::text")
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for schema, run_id in [(None, "r"), ("schéma", "rün-日本"), ("s", "")]:
                params = {"key_prefix": run_key_prefix(schema), "run_id": run_id}
                row = conn.execute(sql, params).fetchone()
                assert row is not None and row[0] == run_key(schema, run_id), (schema, run_id)

    def test_a_commit_to_a_queued_run_makes_it_running(self) -> None:
        """What lets a claim read a queued run's checkpoint before it holds the run's lease:
        a run still queued when its row is locked has had no commit since it was queued."""
        from stepgraph.testing.queue_conformance import queued
        from stepgraph.testing.store_conformance import checkpoint

        async def scenario(store: Any) -> None:
            await store.create_run(
                queued("q"), Commit("q", checkpoint=checkpoint(0, status=StoredStatus.QUEUED))
            )
            await store.commit(Commit("q", checkpoint=checkpoint(1)))
            record = await store.get_run("q")
            assert record is not None and record.status == StoredStatus.RUNNING, record
            # a running run nobody holds is taken over: its latest checkpoint, read by take
            assert [r.run_id for r in await store.claim("w", ["default"], 5, 30.0, lease=True)] == [
                "q"
            ]
            taken = await store.take("w", ["q"])
            assert taken["q"] is not None and taken["q"].info.seq == 1, taken

        self.run_scenario(scenario, self.make_store())

    def test_first_use_by_several_stores_at_once_creates_the_tables_once(self) -> None:
        stores = [self.make_store() for _ in range(4)]

        async def scenario(*stores: Store) -> None:
            created = await asyncio.gather(
                *(store.create_run(record(f"r{n}", at=n)) for n, store in enumerate(stores))
            )
            assert created == [None] * 4
            runs = await stores[0].list_runs()
            assert [run.run_id for run in runs] == ["r0", "r1", "r2", "r3"]

        self.run_scenario(scenario, *stores)

    def test_a_lease_dies_with_its_killed_process(self) -> None:
        child_code = (
            "import asyncio, sys\n"
            "from stepgraph.stores import PostgresStore\n"
            "async def main():\n"
            "    store = PostgresStore(sys.argv[1], schema=sys.argv[2])\n"
            "    assert await store.acquire('r', 'child')\n"
            "    print('acquired', flush=True)\n"
            "    await asyncio.Event().wait()\n"
            "asyncio.run(main())\n"
        )
        command = [sys.executable, "-c", child_code, PG_DSN, self.schema]
        store = self.make_store()
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as child:
            try:
                assert child.stdout is not None
                line = child.stdout.readline()
                if line != "acquired\n":
                    child.kill()
                    pytest.fail(f"the child took no lease: {line!r} {child.communicate()[1]}")

                async def refused(store: Store) -> None:
                    assert not await store.acquire("r", "parent")

                self.run_scenario(refused, store)
                child.send_signal(signal.SIGKILL)
                child.wait()

                async def freed(store: Store) -> None:
                    # the server notices the dead socket: poll until it has
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 30
                    while not await store.acquire("r", "parent"):
                        assert loop.time() < deadline, "the killed child's lease is still held"
                        await asyncio.sleep(0.02)
                    await store.release("r", "parent")

                self.run_scenario(freed, store)
            finally:
                if child.poll() is None:
                    child.kill()


def test_a_postgres_store_opens_nothing_until_used() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/nothing", schema="s")

    async def scenario() -> None:
        with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
            await store.get_run("r")
        await store.aclose()

    asyncio.run(scenario())


def test_a_postgres_store_without_psycopg_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` fails from here on
    store = PostgresStore(PG_DSN)

    async def scenario() -> None:
        with pytest.raises(StoreError, match=r"pip install 'stepgraph\[postgres\]'"):
            await store.get_run("r")
        with pytest.raises(StoreError, match=r"pip install 'stepgraph\[postgres\]'"):
            await store.acquire("r", "owner")

    asyncio.run(scenario())
