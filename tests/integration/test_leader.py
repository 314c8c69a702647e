"""Leader election on the real PostgreSQL (an advisory lock on a connection of its own) and on SQLite
(always the leader), and ``PeriodicTask`` running a job only on the leader."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stagewatch.service.leader import Leadership, PeriodicTask, lock_key
from stagewatch.store.engine import Database, open_database
from tests.conftest import PG_ADMIN


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Database]:
    database = open_database(postgres_url)
    yield database
    database.dispose()


def name_for(request: pytest.FixtureRequest) -> str:
    """A lock name of this test's own, so tests (and parallel sessions) never share a lock."""
    return f"{request.node.name}-{time.time_ns()}"


def holder_pids(key: int) -> list[int]:
    """The server processes holding the session advisory lock ``key`` (a bigint key is split into
    classid, the high 32 bits, and objid, the low 32 bits, with objsubid 1)."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    query = (
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND classid::bigint = %s AND objid::bigint = %s"
    )
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        rows = conn.execute(query, (unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchall()
    return [int(row[0]) for row in rows]


def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# --------------------------------------------------------------------------------------------- Leadership


@pytest.mark.postgres
def test_only_one_replica_leads_and_the_other_takes_over_when_it_closes(
    pg: Database, request: pytest.FixtureRequest
) -> None:
    name = name_for(request)
    first, second = Leadership(pg, name), Leadership(pg, name)
    try:
        assert first.is_leader() is True
        assert second.is_leader() is False
        assert first.is_leader() is True  # asking again keeps it, and does not stack the lock
        assert len(holder_pids(first.key)) == 1
        first.close()
        assert first.is_leader() is False
        assert second.is_leader() is True
        assert len(holder_pids(second.key)) == 1
    finally:
        first.close()
        second.close()
    assert holder_pids(first.key) == []


@pytest.mark.postgres
def test_different_names_are_different_locks(pg: Database, request: pytest.FixtureRequest) -> None:
    name = name_for(request)
    a, b = Leadership(pg, f"{name}-a"), Leadership(pg, f"{name}-b")
    try:
        assert a.key != b.key
        assert (a.is_leader(), b.is_leader()) == (True, True)
    finally:
        a.close()
        b.close()


@pytest.mark.postgres
def test_a_killed_session_loses_the_lead_and_the_lock_is_taken_again(
    pg: Database, request: pytest.FixtureRequest
) -> None:
    name = name_for(request)
    first, second = Leadership(pg, name), Leadership(pg, name)
    try:
        assert first.is_leader()
        (pid,) = holder_pids(first.key)
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: holder_pids(first.key) == [])
        assert second.is_leader() is True  # the dead session's lock is free
        assert first.is_leader() is False  # notices its connection died; the lock is taken
        second.close()
        assert first.is_leader() is True  # reconnects and takes it
    finally:
        first.close()
        second.close()


def test_sqlite_is_always_the_leader(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'one.db'}")
    try:
        first, second = Leadership(db, "x"), Leadership(db, "x")
        assert (first.is_leader(), second.is_leader()) == (True, True)
        first.close()
        assert first.is_leader() is False  # closed: it stays out
    finally:
        db.dispose()


def test_lock_keys_are_stable_signed_64_bit_numbers() -> None:
    assert lock_key("watchdog") == lock_key("watchdog")
    assert lock_key("watchdog") != lock_key("background")
    assert all(-(2**63) <= lock_key(name) < 2**63 for name in ("a", "b", "retention", "é"))


# --------------------------------------------------------------------------------------------- PeriodicTask


@pytest.mark.postgres
def test_a_periodic_task_runs_only_on_the_leader(pg: Database, request: pytest.FixtureRequest) -> None:
    name = name_for(request)
    runs = {"first": 0, "second": 0}
    first, second = Leadership(pg, name), Leadership(pg, name)

    async def scenario() -> None:
        assert await asyncio.to_thread(first.is_leader)  # `first` leads from the start
        tasks = [
            PeriodicTask("t1", lambda: runs.__setitem__("first", runs["first"] + 1), 0.02, first),
            PeriodicTask("t2", lambda: runs.__setitem__("second", runs["second"] + 1), 0.02, second),
        ]
        for task in tasks:
            task.start()
        await asyncio.sleep(0.3)
        assert runs["first"] >= 3 and runs["second"] == 0
        await asyncio.to_thread(first.close)  # the leader goes away: the other takes over
        before = runs["first"]
        await asyncio.sleep(0.3)
        assert runs["second"] >= 3 and runs["first"] <= before + 1
        for task in tasks:
            await task.stop()

    try:
        asyncio.run(scenario())
    finally:
        first.close()
        second.close()


def test_a_failing_job_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def job() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    async def scenario() -> None:
        task = PeriodicTask("flaky", job, 0.01)
        task.start()
        await asyncio.sleep(0.2)
        await task.stop()

    asyncio.run(scenario())
    assert len(calls) >= 3
    assert any(record.getMessage().startswith("flaky.failed") for record in caplog.records)


def test_stop_waits_for_the_job_in_progress_and_tells_it_to_hurry() -> None:
    finished = threading.Event()
    tasks: list[PeriodicTask] = []

    def job() -> None:
        tasks[0].stopping.wait(5.0)  # a long job that checks `stopping` between chunks
        finished.set()

    async def scenario() -> float:
        tasks.append(PeriodicTask("slow", job, 10.0))
        tasks[0].start()
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await tasks[0].stop()
        return time.monotonic() - started

    took = asyncio.run(scenario())
    assert finished.is_set()  # stop() returned only once the job had ended
    assert took < 2.0


def test_a_task_does_nothing_while_not_leading() -> None:
    class Never:
        def is_leader(self) -> bool:
            return False

    calls: list[int] = []

    async def scenario() -> bool:
        task = PeriodicTask("idle", lambda: calls.append(1), 0.01, Never())  # type: ignore[arg-type]
        ran = await task.run_once()
        await task.stop()
        return ran

    assert asyncio.run(scenario()) is False
    assert calls == []
