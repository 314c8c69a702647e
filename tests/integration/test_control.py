"""The control plane on the real store (SQLite and PostgreSQL), with the clock in the test's hands:
begin's decisions and what they record, retries into the dead-letter queue and replay, heartbeats that
answer stop, cancel, and the watchdog's time-outs, runaway stops and dwell SLOs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from stagewatch.domain.events import Event
from stagewatch.domain.pipeline import (
    ConcurrencyLimit,
    Pipeline,
    PipelineRegistry,
    RateLimit,
    instagram_preset,
)
from stagewatch.service import query
from stagewatch.service.control.begin import BeginRequest, begin
from stagewatch.service.control.completion import complete
from stagewatch.service.control.heartbeats import BeatReport, heartbeat
from stagewatch.service.control.operate import (
    Actor,
    cancel_items,
    discard_dead_letters,
    replay_dead_letters,
    resume_item,
)
from stagewatch.service.control.watchdog import sweep, watchdog_task
from stagewatch.service.ingest import ingest_now
from stagewatch.store import control
from stagewatch.store.engine import Database
from stagewatch.store.migrate import upgrade
from tests.postgres_faults import events_insert_fails

T0 = 1_800_000_000.0
ALICE = Actor("alice", "127.0.0.1")
PERMANENT = {"type": "ValueError", "message": "unsupported codec", "retryable": False}
TRANSIENT = {"type": "TimeoutError", "message": "read timed out"}


def _pipeline() -> Pipeline:
    base = instagram_preset()
    stages = tuple(
        replace(
            s, concurrency=(ConcurrencyLimit("{account}", 2),), rate_limits=(RateLimit("{account}", 3, 3600),)
        )
        if s.name == "publish"
        else s
        for s in base.stages
    )
    return replace(base, stages=stages)


@pytest.fixture
def store(db: Database) -> Iterator[Database]:
    upgrade(db)
    yield db


@pytest.fixture
def reg() -> PipelineRegistry:
    return PipelineRegistry.of([_pipeline()])


def _begin(db: Database, reg: PipelineRegistry, stage: str, item: str, at: float, **kw: Any) -> Any:
    return begin(db, reg, BeginRequest(stage, item, **kw), now=at)


def _item(db: Database, item_id: str) -> dict[str, Any]:
    return query.get_item(db, item_id, with_history=True)


def _types(item: dict[str, Any]) -> list[str]:
    return [entry["type"] for entry in item["history"]]


def test_a_run_decision_takes_a_lease_and_records_the_start(store: Database, reg: PipelineRegistry) -> None:
    result = _begin(store, reg, "download", "v1", T0, account="a1", worker="w-1")
    assert result.decision.action == "run" and result.run_id == "v1/download/1"
    assert result.deadline == T0 + 900 and result.heartbeat_timeout == 60
    item = _item(store, "v1")
    assert item["status"] == "running" and item["stage"] == "download"
    assert item["runs"][0]["worker"] == "w-1"


def test_the_enqueuers_run_id_names_the_first_attempt(store: Database, reg: PipelineRegistry) -> None:
    assert _begin(store, reg, "process", "v1", T0, run_id="pubsub-msg-1").run_id == "pubsub-msg-1"


def test_a_duplicate_begin_is_skipped_counted_and_in_the_history(
    store: Database, reg: PipelineRegistry
) -> None:
    first = _begin(store, reg, "webhook", "v1", T0)
    again = _begin(store, reg, "webhook", "v1", T0 + 1)
    assert again.decision.action == "skip" and first.run_id in again.decision.reason
    complete(store, reg, first.run_id, "succeeded", now=T0 + 2)
    late = _begin(store, reg, "webhook", "v1", T0 + 3)
    assert late.decision.action == "skip" and "already succeeded" in late.decision.reason
    assert _types(_item(store, "v1")).count("item.duplicate") == 2
    with store.reader.connect() as conn:
        assert control.lock_work(conn, ("instagram", "webhook", "v1"), "v1", T0)["duplicates"] == 2


def test_a_different_idempotency_key_is_different_work(store: Database, reg: PipelineRegistry) -> None:
    assert _begin(store, reg, "publish", "v1", T0, key="post-1").decision.action == "run"
    assert _begin(store, reg, "publish", "v1", T0, key="post-2").decision.action == "run"


def test_a_failure_backs_off_then_retries_with_the_next_attempt(
    store: Database, reg: PipelineRegistry
) -> None:
    first = _begin(store, reg, "download", "v1", T0)
    done = complete(store, reg, first.run_id, "failed", TRANSIENT, now=T0 + 1)
    assert done.next == "retry" and done.retry_after is not None and 2.5 <= done.retry_after <= 5
    waiting = _begin(store, reg, "download", "v1", T0 + 1.1)
    assert waiting.decision.action == "wait" and waiting.decision.reason.startswith(
        "retry backoff before attempt 2"
    )
    item = _item(store, "v1")
    assert item["status"] == "waiting" and item["status_reason"].startswith("retry backoff")
    second = _begin(store, reg, "download", "v1", T0 + 10)
    assert second.decision.action == "run" and second.run_id == "v1/download/2"
    assert _item(store, "v1")["status"] == "running"


def test_repeated_waits_on_the_same_blocker_are_one_fact(store: Database, reg: PipelineRegistry) -> None:
    first = _begin(store, reg, "download", "v1", T0)
    complete(store, reg, first.run_id, "failed", TRANSIENT, now=T0 + 1)
    for i in range(5):
        assert _begin(store, reg, "download", "v1", T0 + 1.1 + i * 0.1).decision.action == "wait"
    assert _types(_item(store, "v1")).count("item.waiting") == 1


def test_a_message_delivered_five_times_with_a_permanent_error_is_dead_lettered_once_and_replayed_once(
    store: Database, reg: PipelineRegistry
) -> None:
    decisions = []
    for delivery in range(5):
        result = _begin(store, reg, "process", "v1", T0 + delivery, payload={"video": "v1.mp4"})
        decisions.append(result.decision.action.value)
        if result.decision.action == "run":
            complete(store, reg, result.run_id, "failed", PERMANENT, now=T0 + delivery + 0.5)
    assert decisions == ["run", "dead_letter", "dead_letter", "dead_letter", "dead_letter"]
    with store.reader.connect() as conn:
        letters = control.dead_letter_page(conn, item_id="v1")
    assert len(letters) == 1
    assert (
        letters[0]["payload"] == {"video": "v1.mp4"} and letters[0]["error"]["message"] == "unsupported codec"
    )
    item = _item(store, "v1")
    assert item["status"] == "dead_lettered" and "permanent error" in item["status_reason"]

    replayed = replay_dead_letters(store, reg, [letters[0]["id"]], "codec added", ALICE, now=T0 + 10)
    assert [r["item_id"] for r in replayed] == ["v1"]
    assert replay_dead_letters(store, reg, [letters[0]["id"]], "again", ALICE, now=T0 + 11) == []
    assert _item(store, "v1")["status"] == "queued"
    runs = [_begin(store, reg, "process", "v1", T0 + 12 + i).decision.action.value for i in range(3)]
    assert runs == ["run", "skip", "skip"]


def test_attempts_run_out_into_the_dead_letter_queue(store: Database, reg: PipelineRegistry) -> None:
    at = T0
    for _ in range(3):
        result = _begin(store, reg, "download", "v1", at)
        assert result.decision.action == "run"
        at += 1
        complete(store, reg, result.run_id, "failed", TRANSIENT, now=at)
        at += 1000
    assert _begin(store, reg, "download", "v1", at).decision.action == "dead_letter"
    assert "attempts exhausted (3 of 3)" in _item(store, "v1")["status_reason"]


def test_discarded_dead_letters_stay_dead(store: Database, reg: PipelineRegistry) -> None:
    result = _begin(store, reg, "process", "v1", T0)
    complete(store, reg, result.run_id, "failed", PERMANENT, now=T0 + 1)
    with store.reader.connect() as conn:
        (letter,) = control.dead_letter_page(conn)
    assert discard_dead_letters(store, reg, [letter["id"]], "not worth it", ALICE, now=T0 + 2) == [
        letter["id"]
    ]
    assert _begin(store, reg, "process", "v1", T0 + 3).decision.action == "dead_letter"
    with store.reader.connect() as conn:
        assert control.dead_letter_page(conn) == []


def test_concurrency_limits_wait_naming_the_key_and_free_when_runs_end(
    store: Database, reg: PipelineRegistry
) -> None:
    a = _begin(store, reg, "publish", "v1", T0, account="42")
    b = _begin(store, reg, "publish", "v2", T0, account="42")
    third = _begin(store, reg, "publish", "v3", T0, account="42")
    assert third.decision.action == "wait" and third.decision.reason == "concurrency publish account:42 2/2"
    assert _item(store, "v3")["status_reason"] == "concurrency publish account:42 2/2"
    assert _begin(store, reg, "publish", "v4", T0, account="7").decision.action == "run"
    complete(store, reg, a.run_id, "succeeded", now=T0 + 1)
    assert _begin(store, reg, "publish", "v3", T0 + 2, account="42").decision.action == "run"
    assert b.decision.action == "run"


def test_rate_limits_count_starts_in_a_rolling_window(store: Database, reg: PipelineRegistry) -> None:
    for i in range(3):
        result = _begin(store, reg, "publish", f"v{i}", T0 + i, account="42")
        complete(store, reg, result.run_id, "succeeded", now=T0 + i + 0.5)
    blocked = _begin(store, reg, "publish", "v9", T0 + 10, account="42")
    assert blocked.decision.action == "wait"
    assert blocked.decision.reason == "rate publish account:42 3/3 per 1h"
    assert blocked.decision.retry_after == pytest.approx(3600 - 10)
    assert _begin(store, reg, "publish", "v9", T0 + 3600.5, account="42").decision.action == "run"


def test_cancel_refuses_queued_work_and_stops_running_work(store: Database, reg: PipelineRegistry) -> None:
    running = _begin(store, reg, "process", "v1", T0)
    cancel_items(store, reg, ["v1", "v2-unknown"], "customer withdrew", ALICE, now=T0 + 1)
    item = _item(store, "v1")
    assert item["status"] == "cancelled" and item["status_reason"] == "cancelled by alice: customer withdrew"
    (answer,) = heartbeat(store, reg, [BeatReport(running.run_id)], now=T0 + 2).answers
    assert answer.action == "stop" and answer.reason == "cancelled by alice: customer withdrew"
    assert complete(store, reg, running.run_id, "cancelled", now=T0 + 3).next == "done"
    refused = _begin(store, reg, "publish", "v1", T0 + 4)
    assert refused.decision.action == "abort" and "customer withdrew" in refused.decision.reason
    assert _item(store, "v1")["status"] == "cancelled"


def test_resume_lifts_the_cancel_and_rearms_the_stage(store: Database, reg: PipelineRegistry) -> None:
    first = _begin(store, reg, "process", "v1", T0, payload={"p": 1})
    cancel_items(store, reg, ["v1"], "oops", ALICE, now=T0 + 1)
    complete(store, reg, first.run_id, "cancelled", now=T0 + 2)
    result = resume_item(store, reg, "v1", "process", "it was a mistake", ALICE, now=T0 + 3)
    assert result["stage"] == "process" and result["delivery"]["ok"] is False  # no target configured
    assert _item(store, "v1")["status"] == "queued"
    again = _begin(store, reg, "process", "v1", T0 + 4)
    assert again.decision.action == "run" and again.decision.attempt == 1 and again.run_id != first.run_id


def test_a_silent_run_is_marked_stuck_then_timed_out_and_its_slot_freed(
    store: Database, reg: PipelineRegistry
) -> None:
    a = _begin(store, reg, "publish", "v1", T0, account="42")
    _begin(store, reg, "publish", "v2", T0, account="42")
    assert sweep(store, reg, now=T0 + 70).stuck_runs == 2  # publish heartbeat timeout is 120 s
    item = _item(store, "v1")
    assert item["stuck"] and "no heartbeat for 70s" in item["stuck_reason"]
    heartbeat(store, reg, [BeatReport(a.run_id, progress=0.5)], now=T0 + 100)
    report = sweep(store, reg, now=T0 + 125)
    assert report.timed_out == 1
    item = _item(store, "v2")
    assert item["status"] == "waiting" and item["status_reason"].startswith("retry backoff")
    assert "run.timed_out" in _types(item)
    assert _begin(store, reg, "publish", "v3", T0 + 126, account="42").decision.action == "run"


def test_an_expired_lease_frees_its_slot_even_before_the_watchdog_runs(
    store: Database, reg: PipelineRegistry
) -> None:
    _begin(store, reg, "publish", "v1", T0, account="42")
    _begin(store, reg, "publish", "v2", T0, account="42")
    assert _begin(store, reg, "publish", "v3", T0 + 60, account="42").decision.action == "wait"
    assert _begin(store, reg, "publish", "v3", T0 + 121, account="42").decision.action == "run"


def test_a_redelivery_after_a_crash_times_the_dead_run_out_and_retries(
    store: Database, reg: PipelineRegistry
) -> None:
    _begin(store, reg, "download", "v1", T0)
    later = _begin(store, reg, "download", "v1", T0 + 61 + 600)
    assert later.decision.action == "run" and later.decision.attempt == 2
    assert "run.timed_out" in _types(_item(store, "v1"))


def test_a_runaway_is_told_to_stop_then_timed_out_if_it_does_not(
    store: Database, reg: PipelineRegistry
) -> None:
    run = _begin(store, reg, "webhook", "v1", T0)  # webhook: timeout 30 s, heartbeat timeout 30 s
    assert heartbeat(store, reg, [BeatReport(run.run_id)], now=T0 + 20).answers[0].action == "continue"
    (answer,) = heartbeat(store, reg, [BeatReport(run.run_id)], now=T0 + 31).answers
    assert answer.action == "stop" and answer.reason.startswith("runaway: running 31s, past its 30s timeout")
    heartbeat(store, reg, [BeatReport(run.run_id)], now=T0 + 50)
    assert sweep(store, reg, now=T0 + 61).timed_out == 1
    assert heartbeat(store, reg, [BeatReport(run.run_id)], now=T0 + 62).answers[0].action == "stop"


def test_a_runaway_that_stops_counts_as_a_timed_out_attempt(store: Database, reg: PipelineRegistry) -> None:
    run = _begin(store, reg, "download", "v1", T0)
    sweep(store, reg, now=T0 + 901)
    heartbeat(store, reg, [BeatReport(run.run_id)], now=T0 + 902)
    done = complete(store, reg, run.run_id, "cancelled", note="stopped", now=T0 + 903)
    assert done.next == "retry"


def test_items_overstaying_a_dwell_slo_are_marked_stuck_with_the_rule(
    store: Database, reg: PipelineRegistry
) -> None:
    run = _begin(store, reg, "process", "v1", T0)
    complete(store, reg, run.run_id, "succeeded", now=T0 + 10)
    assert _item(store, "v1")["status"] == "ready_to_publish"
    assert sweep(store, reg, now=T0 + 10 + 1700).stuck_items == 0
    assert sweep(store, reg, now=T0 + 10 + 1860).stuck_items == 1
    item = _item(store, "v1")
    assert item["stuck"] and item["stuck_reason"] == "ready_to_publish for 31m, no publish started (SLO 30m)"
    from stagewatch.store.reads import ItemFilter

    _begin(store, reg, "download", "v2", T0)
    stuck_only = query.list_items(store, ItemFilter(stuck=True), None, 10)["items"]
    assert [found["item_id"] for found in stuck_only] == ["v1"]


def test_completing_twice_or_an_unknown_run(store: Database, reg: PipelineRegistry) -> None:
    run = _begin(store, reg, "download", "v1", T0)
    assert complete(store, reg, run.run_id, "succeeded", now=T0 + 1).next == "done"
    assert complete(store, reg, run.run_id, "succeeded", now=T0 + 2).next == "done"
    assert _types(_item(store, "v1")).count("run.succeeded") == 1
    from stagewatch.errors import NotFound

    with pytest.raises(NotFound):
        complete(store, reg, "no-such-run", "succeeded")


def test_a_success_reported_after_a_time_out_wins(store: Database, reg: PipelineRegistry) -> None:
    run = _begin(store, reg, "download", "v1", T0)
    sweep(store, reg, now=T0 + 61)
    complete(store, reg, run.run_id, "succeeded", now=T0 + 62)
    assert _begin(store, reg, "download", "v1", T0 + 2000).decision.action == "skip"
    assert _item(store, "v1")["runs"][0]["status"] == "succeeded"


def test_every_operator_action_is_audited(store: Database, reg: PipelineRegistry) -> None:
    from sqlalchemy import select

    from stagewatch.store.schema import audit

    run = _begin(store, reg, "process", "v1", T0)
    complete(store, reg, run.run_id, "failed", PERMANENT, now=T0 + 1)
    cancel_items(store, reg, ["v1"], "why not", ALICE, now=T0 + 2)
    resume_item(store, reg, "v1", "process", "go", ALICE, now=T0 + 3)
    with store.reader.connect() as conn:
        rows = conn.execute(select(audit).order_by(audit.c.seq)).mappings().all()
    assert [(r["action"], r["actor"], r["target"], r["source"]) for r in rows] == [
        ("item.cancel", "alice", "v1", "127.0.0.1"),
        ("item.resume", "alice", "v1", "127.0.0.1"),
    ]
    assert rows[1]["params"] == {"from_stage": "process", "cancel_lifted": True}


def test_a_paused_stage_waits_and_a_cap_holds_both_audited(store: Database, reg: PipelineRegistry) -> None:
    from sqlalchemy import select

    from stagewatch.service.control.stages import limit_stage, pause_stage
    from stagewatch.store.schema import audit

    pause_stage(store, reg, "publish", "Instagram incident", ALICE)
    paused = _begin(store, reg, "publish", "v1", T0)
    assert paused.decision.action == "wait"
    assert paused.decision.reason == "stage publish paused by alice: Instagram incident"
    assert _item(store, "v1")["status_reason"] == "stage publish paused by alice: Instagram incident"
    assert _begin(store, reg, "download", "v1", T0).decision.action == "run", "other stages go on"
    pause_stage(store, reg, "publish", "", ALICE, paused=False)
    limit_stage(store, reg, "publish", 1, "slow down", ALICE)
    assert _begin(store, reg, "publish", "v1", T0 + 1, account="a").decision.action == "run"
    capped = _begin(store, reg, "publish", "v2", T0 + 1, account="b")
    assert capped.decision.reason == "stage publish capped at 1 running by alice (1 now)"
    limit_stage(store, reg, "publish", None, "back to normal", ALICE)
    assert _begin(store, reg, "publish", "v2", T0 + 2, account="b").decision.action == "run"
    with store.reader.connect() as conn:
        actions = [r["action"] for r in conn.execute(select(audit).order_by(audit.c.seq)).mappings()]
    assert actions == ["stage.pause", "stage.unpause", "stage.limit", "stage.limit"]


def test_many_dead_letters_on_one_connection(store: Database, reg: PipelineRegistry) -> None:
    """PostgreSQL prepares a statement after five runs on a connection; the dead-letter insert must still
    match its partial unique index then (it once failed at the eleventh)."""
    for i in range(15):
        run = _begin(store, reg, "process", f"dl-{i}", T0 + i)
        assert complete(store, reg, run.run_id, "failed", PERMANENT, now=T0 + i + 0.5).next == "dead_letter"
    with store.reader.connect() as conn:
        assert len(control.dead_letter_page(conn, limit=100)) == 15


def test_the_watchdog_marks_overstaying_items_in_id_order(
    store: Database, reg: PipelineRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest locks items in id order; on PostgreSQL a sweep marking them in another order deadlocks with
    it. Found stage by stage, v9 (download) would come before v1 (publish)."""
    for item_id, stage in (("v9", "download"), ("v5", "enqueue"), ("v1", "publish")):
        event = {"id": f"q-{item_id}", "type": "run.enqueued", "item_id": item_id, "stage": stage, "time": T0}
        ingest_now(store, reg, [Event.model_validate(event)])
    marked: list[str] = []
    real = control.mark_item_stuck

    def record(conn: Any, item_id: str, reason: str) -> None:
        marked.append(item_id)
        real(conn, item_id, reason)

    monkeypatch.setattr(control, "mark_item_stuck", record)
    assert sweep(store, reg, now=T0 + 7200).stuck_items == 3
    assert marked == ["v1", "v5", "v9"]
    assert _item(store, "v9")["stuck_reason"] == "queued for 120m at download (SLO 30m)"


def test_a_sweep_postgresql_aborts_for_a_deadlock_is_swept_again(
    store: Database, reg: PipelineRegistry
) -> None:
    if not store.is_postgres:
        pytest.skip("SQLite has one writer: no deadlock to retry")
    started = time.time() - 1000  # its heartbeat timeout (60 s) is long past
    run = _begin(store, reg, "download", "v1", started)
    task = watchdog_task(store, reg, interval=3600, leadership=None)
    with events_insert_fails(store, times=1) as tried:
        assert asyncio.run(task.run_once())
        assert tried() == 2
    assert "run.timed_out" in _types(_item(store, "v1"))
    with store.reader.connect() as conn:
        assert control.lease(conn, run.run_id) is None
