"""Group commit: concurrent ingest requests share transactions, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from stagewatch.domain.events import Event
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service import query
from stagewatch.service.ingest import BatchOutcome, GroupCommitter, ingest_now
from stagewatch.store.driver import TRANSIENT_ATTEMPTS
from stagewatch.store.engine import Database
from tests.postgres_faults import events_insert_fails


def _batch(n: int, size: int) -> list[Event]:
    return [
        Event.model_validate(
            {"id": f"b{n}-e{i}", "type": "run.started", "item_id": f"v{n}-{i % 5}", "stage": "download",
             "time": 1_795_000_000 + i}
        )
        for i in range(size)
    ]  # fmt: skip


async def _submit_all(committer: GroupCommitter, batches: list[list[Event]]) -> list[tuple[int, int]]:
    committer.start()
    try:
        outcomes = await asyncio.gather(*(committer.submit(batch) for batch in batches))
    finally:
        await committer.stop()
    return [(o.accepted, o.duplicate) for o in outcomes]


def test_concurrent_batches_share_transactions(db: Database, registry: PipelineRegistry) -> None:
    committer = GroupCommitter(db, registry, max_events=5000)
    batches = [_batch(n, 50) for n in range(40)]
    outcomes = asyncio.run(_submit_all(committer, batches))
    assert outcomes == [(50, 0)] * 40
    assert committer.stats.batches == 40
    assert committer.stats.transactions < 40 / 4, "batches waiting together must share a commit"
    assert query.get_item(db, "v0-0")["status"] == "running"


def test_an_id_repeated_across_concurrent_batches_is_accepted_once(
    db: Database, registry: PipelineRegistry
) -> None:
    committer = GroupCommitter(db, registry)
    same = _batch(1, 10)
    outcomes = asyncio.run(_submit_all(committer, [same, same, same]))
    assert sorted(outcomes) == [(0, 10), (0, 10), (10, 0)]
    assert query.get_item(db, "v1-0")["event_count"] == 2


def test_a_group_larger_than_the_cap_is_split(db: Database, registry: PipelineRegistry) -> None:
    committer = GroupCommitter(db, registry, max_events=100)
    outcomes = asyncio.run(_submit_all(committer, [_batch(n, 60) for n in range(10)]))
    assert outcomes == [(60, 0)] * 10
    assert committer.stats.transactions >= 5, "no transaction may carry more than ~100 events"


def test_an_item_event_naming_its_run_is_stored_without_touching_runs(
    db: Database, registry: PipelineRegistry
) -> None:
    started = Event.model_validate(
        {
            "id": "r1",
            "type": "run.started",
            "item_id": "v9",
            "stage": "download",
            "run_id": "run-9",
            "time": 1_795_000_000,
        }
    )
    note = Event.model_validate(
        {"id": "n1", "type": "item.annotated", "item_id": "v9", "stage": "download", "run_id": "run-9",
         "note": "cost instagram_api_call=1", "time": 1_795_000_001}
    )  # fmt: skip
    assert ingest_now(db, registry, [started, note]) == BatchOutcome(2, 0)
    item = query.get_item(db, "v9", with_history=True)
    assert [r["status"] for r in item["runs"]] == ["running"]
    assert item["history"][-1]["run_id"] == "run-9"


# --- PostgreSQL aborting a transaction (deadlock, serialization failure) ---------------------------------


def _postgres_only(db: Database) -> None:
    if not db.is_postgres:
        pytest.skip("SQLite has one writer: no deadlock or serialization failure to retry")


def test_a_deadlocked_group_is_retried_and_every_batch_lands_once(
    db: Database, registry: PipelineRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    _postgres_only(db)
    committer = GroupCommitter(db, registry)
    with events_insert_fails(db, times=2):
        outcomes = asyncio.run(_submit_all(committer, [_batch(n, 10) for n in range(3)]))
    assert outcomes == [(10, 0)] * 3, "a deadlock is PostgreSQL's to resolve, not the client's"
    assert query.get_item(db, "v0-0")["event_count"] == 2
    assert "ingest.transient_retry attempt=2" in caplog.text


def test_a_group_that_keeps_failing_is_refused_and_nothing_of_it_is_stored(
    db: Database, registry: PipelineRegistry
) -> None:
    _postgres_only(db)
    committer = GroupCommitter(db, registry)
    with events_insert_fails(db, times=TRANSIENT_ATTEMPTS) as tried, pytest.raises(OperationalError):
        try:
            asyncio.run(_submit_all(committer, [_batch(1, 10)]))
        finally:
            assert tried() == TRANSIENT_ATTEMPTS
    with db.reader.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() == 0


def test_an_error_that_a_retry_cannot_mend_is_not_retried(db: Database, registry: PipelineRegistry) -> None:
    _postgres_only(db)
    committer = GroupCommitter(db, registry)
    check_violation = "23514"
    with events_insert_fails(db, times=1, sqlstate=check_violation) as tried, pytest.raises(IntegrityError):
        try:
            asyncio.run(_submit_all(committer, [_batch(1, 10)]))
        finally:
            assert tried() == 1
