"""The SQLite writer's projection cache is never trusted after a write it did not make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from stagewatch.domain.events import Event
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service import projector, query
from stagewatch.service.control.begin import BeginRequest, begin
from stagewatch.service.control.operate import cancel_items, resume_item, stop_run
from stagewatch.service.control.watchdog import sweep
from stagewatch.service.ingest import ingest_now
from stagewatch.service.logs import store_logs, validate_logs
from stagewatch.store.audit import Actor
from stagewatch.store.engine import Database, open_database
from stagewatch.store.migrate import upgrade

T0 = 1_795_000_000.0


def ev(event_id: str, kind: str, stage: str, at: float, **fields: Any) -> Event:
    raw = {"id": event_id, "type": kind, "item_id": "v1", "stage": stage, "time": T0 + at, **fields}
    return Event.model_validate(raw)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    db = open_database(f"sqlite:///{tmp_path / 'cache.db'}")
    upgrade(db)
    return db


def test_a_write_from_another_connection_is_seen(sqlite_db: Database, registry: PipelineRegistry) -> None:
    ingest_now(sqlite_db, registry, [ev("a", "run.started", "download", 1)])
    assert sqlite_db.projection_cache is not None and len(sqlite_db.projection_cache) == 1
    other = open_database(sqlite_db.url)  # e.g. a second server process on the same file
    ingest_now(other, registry, [ev("b", "run.succeeded", "download", 2)])
    ingest_now(sqlite_db, registry, [ev("c", "run.started", "enqueue", 3)])
    item = query.get_item(sqlite_db, "v1")
    assert (item["status"], item["stage"], item["stages_done"]) == ("running", "enqueue", ["download"])
    assert item["event_count"] == 3


def test_a_write_through_the_same_connection_outside_ingest_is_seen(
    sqlite_db: Database, registry: PipelineRegistry
) -> None:
    ingest_now(sqlite_db, registry, [ev("a", "run.started", "download", 1)])
    with sqlite_db.writer.begin() as conn:
        conn.execute(text("DELETE FROM runs"))
        conn.execute(text("DELETE FROM items"))
        conn.execute(text("DELETE FROM stage_counts"))
    ingest_now(sqlite_db, registry, [ev("b", "run.succeeded", "download", 2)])
    item = query.get_item(sqlite_db, "v1")
    assert item["event_count"] == 1, "the deleted item must not come back from the cache"
    assert [run["status"] for run in item["runs"]] == ["succeeded"]


def test_a_failed_transaction_leaves_nothing_uncommitted_in_the_cache(
    sqlite_db: Database, registry: PipelineRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_now(sqlite_db, registry, [ev("a", "run.started", "download", 1)])
    real_upsert = projector.writes.add_stage_counts

    def fail(*args: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(projector.writes, "add_stage_counts", fail)
    with pytest.raises(RuntimeError):
        ingest_now(sqlite_db, registry, [ev("b", "run.failed", "download", 2, error={"type": "E"})])
    monkeypatch.setattr(projector.writes, "add_stage_counts", real_upsert)
    ingest_now(sqlite_db, registry, [ev("c", "run.progress", "download", 3, progress=0.5)])
    item = query.get_item(sqlite_db, "v1")
    assert (item["status"], item["event_count"], item["last_error"]) == ("running", 2, None)


def test_log_lines_leave_the_cache_in_use(sqlite_db: Database, registry: PipelineRegistry) -> None:
    ingest_now(sqlite_db, registry, [ev("a", "run.started", "download", 1)])
    cache = sqlite_db.projection_cache
    assert cache is not None
    cached = cache.get(["v1"])[0]["v1"]
    batch = validate_logs([{"id": "log-1", "message": "downloading", "item_id": "v1"}], T0 + 1.5)
    store_logs(sqlite_db, [batch.records])
    ingest_now(sqlite_db, registry, [ev("b", "run.succeeded", "download", 2)])
    # The same object, folded further: the item was not dropped and read back from the database.
    assert cache.get(["v1"])[0]["v1"] is cached
    item = query.get_item(sqlite_db, "v1")
    assert (item["status"], item["event_count"]) == ("queued", 2)


def test_a_watchdog_sweep_drops_only_the_items_it_marks(
    sqlite_db: Database, registry: PipelineRegistry
) -> None:
    other = Event.model_validate(
        {"id": "o", "type": "run.started", "item_id": "v2", "stage": "download", "time": T0 + 10}
    )
    ingest_now(sqlite_db, registry, [ev("a", "run.succeeded", "process", 10), other])
    cache = sqlite_db.projection_cache
    assert cache is not None
    untouched = cache.get(["v2"])[0]["v2"]

    # v1 is ready to publish for 31 minutes, over publish's dwell SLO of 30: the sweep marks it stuck.
    assert sweep(sqlite_db, registry, now=T0 + 10 + 1860).stuck_items == 1
    assert cache.get(["v2"])[0]["v2"] is untouched, "a sweep must not drop what it did not change"

    # A fact that does not move v1 keeps the mark: a cached copy from before the sweep would undo it.
    note = ev("n", "item.annotated", "process", 1900, note="looked at it")
    ingest_now(sqlite_db, registry, [note])
    assert query.get_item(sqlite_db, "v1")["stuck"]
    ingest_now(sqlite_db, registry, [ev("b", "run.started", "publish", 1950)])
    item = query.get_item(sqlite_db, "v1")
    assert (item["status"], item["stuck"]) == ("running", False)


def test_operator_actions_keep_the_cache_and_project_through_it(
    sqlite_db: Database, registry: PipelineRegistry
) -> None:
    ingest_now(sqlite_db, registry, [ev("a", "run.started", "download", 1)])
    # v2's run holds a lease (a worker asked to begin it), so an operator can stop it.
    assert begin(sqlite_db, registry, BeginRequest("download", "v2"), now=T0 + 1).decision.action == "run"
    cache = sqlite_db.projection_cache
    assert cache is not None
    untouched = cache.get(["v2"])[0]["v2"]
    who = Actor("alice", "127.0.0.1")

    cancel_items(sqlite_db, registry, ["v1"], "customer withdrew", who, now=T0 + 2)
    stop_run(sqlite_db, "v2/download/1", "runaway", who, now=T0 + 2)
    assert cache.get(["v2"])[0]["v2"] is untouched, "an operator's action must not drop other videos"
    assert cache.get(["v1"])[0]["v1"].status.value == "cancelled", "the cancel is projected into the cache"

    # The worker's late report folds onto the cancelled state: the cancel stays in force.
    ingest_now(sqlite_db, registry, [ev("b", "run.progress", "download", 3, progress=0.5)])
    assert query.get_item(sqlite_db, "v1")["status"] == "cancelled"
    resume_item(sqlite_db, registry, "v1", "download", "a mistake", who, now=T0 + 4, deliver_payload=False)
    ingest_now(
        sqlite_db, registry, [ev("c", "run.started", "download", 5, attempt=2, run_id="v1/download/2")]
    )
    item = query.get_item(sqlite_db, "v1")
    assert (item["status"], item["attempts"], item["event_count"]) == ("running", 2, 5)
    assert cache.get(["v2"])[0]["v2"] is untouched
