"""The dashboard's read models on the real store (SQLite and PostgreSQL), with the clock in the test's
hands: the overview's per-stage throughput, error rate and stuck counts; the runs in flight with their
leases; failures grouped by fingerprint; and what the video page shows beyond the item itself. Seeded
the way production fills the store: events through ``ingest_now``, guarded runs through ``begin`` and
``complete``, operators through the control services."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, event, inspect

from stagewatch.domain.pipeline import Pipeline, PipelineRegistry, StagePolicy, instagram_preset
from stagewatch.errors import InputError
from stagewatch.service import dashboard, query
from stagewatch.service.control.begin import BeginRequest, begin
from stagewatch.service.control.completion import complete
from stagewatch.service.control.heartbeats import BeatReport, heartbeat
from stagewatch.service.control.operate import Actor, cancel_items
from stagewatch.service.control.watchdog import sweep
from stagewatch.service.ingest import ingest_now
from stagewatch.service.validation import validate_batch
from stagewatch.store import dashboard as store
from stagewatch.store.engine import Database

NOW = 1_800_000_000.0
_ids = itertools.count()


def _send(db: Database, registry: PipelineRegistry, *events: dict[str, Any]) -> None:
    raw = [{"id": f"e{next(_ids)}", **event} for event in events]
    batch = validate_batch(raw, registry, NOW)
    assert not batch.rejections, batch.rejections
    ingest_now(db, registry, batch.events)


def _run(
    db: Database,
    registry: PipelineRegistry,
    item: str,
    stage: str,
    outcome: str,
    ended: float,
    *,
    attempt: int = 1,
    error: dict[str, Any] | None = None,
) -> None:
    """One attempt of ``stage`` that ran 10 s and ended ``outcome`` at ``ended``."""
    common = {"item_id": item, "stage": stage, "attempt": attempt}
    extra = {"error": error} if error else {}
    _send(
        db, registry,
        {"type": "item.created", "item_id": item, "account": "acct-1", "time": ended - 20},
        {"type": "run.started", **common, "time": ended - 10},
        {"type": f"run.{outcome}", **common, "time": ended, **extra},
    )  # fmt: skip


def _stage(overview: dict[str, Any], stage: str) -> dict[str, Any]:
    (pipeline,) = overview["pipelines"]
    return next(row for row in pipeline["stages"] if row["stage"] == stage)


# --- the overview ---------------------------------------------------------------------------------------

TIMEOUT = {"type": "TimeoutError", "message": "read timed out after 60s", "retryable": True}


def test_the_overview_counts_the_last_hours_runs_per_stage_in_five_minute_buckets(
    db: Database, registry: PipelineRegistry
) -> None:
    for i in range(3):
        _run(db, registry, f"ok-{i}", "download", "succeeded", NOW - 100)
    _run(db, registry, "bad-1", "download", "failed", NOW - 100, error=TIMEOUT)
    _run(db, registry, "bad-2", "download", "timed_out", NOW - 1000)
    _run(db, registry, "gone", "download", "cancelled", NOW)  # ends exactly now: still counted
    _run(db, registry, "old", "download", "succeeded", NOW - 4000)  # before the window
    row = _stage(dashboard.stage_overview(db, registry, NOW), "download")
    assert row["finished_last_hour"] == 6 and row["failed_last_hour"] == 2
    assert row["error_rate"] == pytest.approx(2 / 6)
    assert len(row["throughput"]) == 12 and len(row["failures"]) == 12
    # 1000 s before the end of a 3600 s window is bucket 8 (2600 s in); the last 5 minutes are bucket 11.
    assert row["throughput"][8] == 1 and row["failures"][8] == 1
    assert row["throughput"][11] == 5 and row["failures"][11] == 1
    assert sum(row["throughput"]) == 6


def test_the_overview_keeps_the_summary_counts_and_a_quiet_stage_has_no_error_rate(
    db: Database, registry: PipelineRegistry
) -> None:
    _run(db, registry, "v1", "download", "failed", NOW - 60, error=TIMEOUT)
    overview = dashboard.stage_overview(db, registry, NOW)
    assert overview["window"]["buckets"] == 12 and overview["window"]["bucket_seconds"] == 300
    download, publish = _stage(overview, "download"), _stage(overview, "publish")
    assert download["failed"] == 1  # the summary's count of items failed at the stage
    assert [row["stage"] for row in overview["pipelines"][0]["stages"]] == list(
        registry.require("instagram").stage_names
    )
    assert publish["finished_last_hour"] == 0 and publish["error_rate"] is None
    assert publish["throughput"] == [0] * 12


def test_the_overview_counts_the_items_the_watchdog_marked_stuck_at_each_stage(
    db: Database, registry: PipelineRegistry
) -> None:
    begin(db, registry, BeginRequest("publish", "silent", account="a1"), now=NOW - 70)
    begin(db, registry, BeginRequest("publish", "busy", account="a1"), now=NOW - 10)
    assert sweep(db, registry, now=NOW).stuck_runs == 1  # publish: heartbeat timeout 120 s
    overview = dashboard.stage_overview(db, registry, NOW)
    assert _stage(overview, "publish")["stuck"] == 1
    assert _stage(overview, "publish")["running"] == 2
    assert _stage(overview, "download")["stuck"] == 0


def test_two_pipelines_with_a_stage_of_the_same_name_each_count_their_own_runs(db: Database) -> None:
    tiktok = Pipeline("tiktok", stages=(StagePolicy("download"), StagePolicy("publish")))
    both = PipelineRegistry.of([instagram_preset(), tiktok], "instagram")
    _run(db, both, "insta-1", "download", "succeeded", NOW - 60)
    for i in range(2):
        _send(
            db, both,
            {"type": "run.started", "item_id": f"tt-{i}", "pipeline": "tiktok", "stage": "download",
             "time": NOW - 70},
            {"type": "run.failed", "item_id": f"tt-{i}", "pipeline": "tiktok", "stage": "download",
             "time": NOW - 60, "error": TIMEOUT},
        )  # fmt: skip
    pipelines = {p["pipeline"]: p for p in dashboard.stage_overview(db, both, NOW)["pipelines"]}
    insta = next(row for row in pipelines["instagram"]["stages"] if row["stage"] == "download")
    tt = next(row for row in pipelines["tiktok"]["stages"] if row["stage"] == "download")
    assert (insta["finished_last_hour"], insta["failed_last_hour"]) == (1, 0)
    assert (tt["finished_last_hour"], tt["failed_last_hour"]) == (2, 2)


# --- in flight ------------------------------------------------------------------------------------------


def _in_flight_seed(db: Database, registry: PipelineRegistry) -> None:
    begin(db, registry, BeginRequest("download", "healthy", worker="w-1", revision="r-7"), now=NOW - 10)
    begin(db, registry, BeginRequest("publish", "stuck", account="a1"), now=NOW - 70)
    runaway = begin(db, registry, BeginRequest("webhook", "runaway"), now=NOW - 40)  # 30 s timeout
    assert runaway.run_id is not None
    heartbeat(db, registry, [BeatReport(runaway.run_id)], now=NOW - 5)
    sweep(db, registry, now=NOW)
    # Runs only reported through events (no lease): one reporting, one silent for 200 s.
    _send(
        db, registry,
        {"type": "run.started", "item_id": "events", "stage": "download", "time": NOW - 50, "worker": "w-2"},
        {"type": "run.heartbeat", "item_id": "events", "stage": "download", "time": NOW - 20,
         "progress": 0.5, "note": "half way", "resources": {"cpu_percent": 87.5, "rss_bytes": 5.0e8}},
        {"type": "run.started", "item_id": "silent", "stage": "process", "time": NOW - 200},
    )  # fmt: skip


def test_in_flight_lists_running_runs_flagged_first_with_progress_resources_and_leases(
    db: Database, registry: PipelineRegistry
) -> None:
    _in_flight_seed(db, registry)
    page = dashboard.in_flight(db, registry, NOW)
    runs = {run["item_id"]: run for run in page["runs"]}
    assert page["total"] == 5 and set(runs) == {"healthy", "stuck", "runaway", "events", "silent"}
    flagged = [run["item_id"] for run in page["runs"][:3]]
    assert set(flagged) == {"stuck", "runaway", "silent"}
    assert [run["item_id"] for run in page["runs"][3:]] == ["events", "healthy"]  # longest running first

    healthy = runs["healthy"]
    assert healthy["guarded"] and not healthy["stuck"] and not healthy["runaway"]
    assert healthy["worker"] == "w-1" and healthy["revision"] == "r-7" and healthy["attempt"] == 1
    assert healthy["elapsed_seconds"] == pytest.approx(10) and healthy[
        "heartbeat_age_seconds"
    ] == pytest.approx(10)

    events = runs["events"]
    assert not events["guarded"] and events["progress"] == 0.5 and events["progress_note"] == "half way"
    assert events["cpu_percent"] == 87.5 and events["rss_bytes"] == 5.0e8
    assert events["heartbeat_age_seconds"] == pytest.approx(20) and not events["stuck"]


def test_in_flight_says_why_a_run_is_stuck_or_a_runaway(db: Database, registry: PipelineRegistry) -> None:
    _in_flight_seed(db, registry)
    runs = {run["item_id"]: run for run in dashboard.in_flight(db, registry, NOW)["runs"]}
    assert runs["stuck"]["stuck"] and "no heartbeat for 70s" in runs["stuck"]["stuck_reason"]
    assert runs["silent"]["stuck"] and runs["silent"]["stuck_reason"] == "no heartbeat for 200s (timeout 60s)"
    runaway = runs["runaway"]
    assert runaway["runaway"] and not runaway["stuck"]
    assert runaway["runaway_reason"].startswith("runaway: running") and runaway["stop_reason"]


def test_in_flight_shows_flagged_runs_even_when_older_runs_fill_the_page(
    db: Database, registry: PipelineRegistry
) -> None:
    for i in range(3):  # long-running, healthy, reporting through events
        _send(
            db, registry,
            {"type": "run.started", "item_id": f"old-{i}", "stage": "process", "time": NOW - 600 + i},
            {"type": "run.heartbeat", "item_id": f"old-{i}", "stage": "process", "time": NOW - 1},
        )  # fmt: skip
    begin(db, registry, BeginRequest("publish", "stuck", account="a1"), now=NOW - 70)
    sweep(db, registry, now=NOW)
    page = dashboard.in_flight(db, registry, NOW, limit=2)
    assert page["total"] == 4
    assert [run["item_id"] for run in page["runs"]] == ["stuck", "old-0"]


def test_in_flight_refuses_a_limit_out_of_range(db: Database, registry: PipelineRegistry) -> None:
    with pytest.raises(InputError):
        dashboard.in_flight(db, registry, NOW, limit=0)


# --- error groups ---------------------------------------------------------------------------------------


def _failures(db: Database, registry: PipelineRegistry) -> None:
    for item, attempt, seconds, ended in (
        ("v1", 1, 60, NOW - 7200),
        ("v2", 1, 30, NOW - 3600),
        ("v2", 2, 45, NOW - 60),
    ):
        error = {"type": "TimeoutError", "message": f"read timed out after {seconds}s", "stack": "Traceback…"}
        _run(db, registry, item, "download", "failed", ended, attempt=attempt, error=error)
    _run(
        db,
        registry,
        "v3",
        "publish",
        "failed",
        NOW - 300,
        error={"type": "GraphAPIError", "message": "(#4) limit"},
    )
    _run(db, registry, "v4", "download", "failed", NOW - 90_000, error=TIMEOUT)  # before the day asked for


def test_failures_group_by_fingerprint_with_normalised_message_counts_and_videos(
    db: Database, registry: PipelineRegistry
) -> None:
    _failures(db, registry)
    page = dashboard.error_groups(db, NOW - 86_400, now=NOW)
    timeouts, graph = page["groups"]
    assert timeouts["stage"] == "download" and timeouts["error_type"] == "TimeoutError"
    assert timeouts["message"] == "read timed out after <n>s"
    assert (
        timeouts["latest_message"] == "read timed out after 45s" and timeouts["latest_stack"] == "Traceback…"
    )
    assert timeouts["count"] == 3 and timeouts["videos"] == 2
    assert (
        timeouts["first_seen"] == "2027-01-15T06:00:00.000Z"
        and timeouts["last_seen"] == "2027-01-15T07:59:00.000Z"
    )
    assert graph["stage"] == "publish" and graph["count"] == 1 and graph["message"] == "(#<n>) limit"


def test_an_error_groups_counts_are_bucketed_over_the_window_for_a_sparkline(
    db: Database, registry: PipelineRegistry
) -> None:
    _failures(db, registry)
    page = dashboard.error_groups(db, NOW - 86_400, now=NOW)
    counts = page["groups"][0]["counts"]
    assert len(counts) == 24 and page["bucket_seconds"] == 3600
    # Buckets are [start, start + 1 h): two hours before now opens bucket 22, one hour before now opens
    # the last one, which also holds the failure a minute ago.
    assert counts[22] == 1 and counts[23] == 2 and sum(counts) == 3


def test_the_videos_of_an_error_group_most_recent_first_with_where_they_are_now(
    db: Database, registry: PipelineRegistry
) -> None:
    _failures(db, registry)
    fingerprint = dashboard.error_groups(db, NOW - 86_400, now=NOW)["groups"][0]["fingerprint"]
    videos = dashboard.videos_of_group(db, fingerprint)["videos"]
    assert [v["item_id"] for v in videos] == ["v2", "v1", "v4"]
    assert videos[0]["failures"] == 2 and videos[0]["status"] == "failed" and videos[0]["stage"] == "download"
    assert videos[0]["last_failed_at"] == "2027-01-15T07:59:00.000Z" and videos[0]["account"] == "acct-1"
    assert [v["item_id"] for v in dashboard.videos_of_group(db, fingerprint, limit=1)["videos"]] == ["v2"]


def test_error_groups_of_one_stage(db: Database, registry: PipelineRegistry) -> None:
    _failures(db, registry)
    (group,) = dashboard.error_groups(db, NOW - 86_400, stage="publish", now=NOW)["groups"]
    assert group["error_type"] == "GraphAPIError" and group["counts"][-1] == 1


def test_no_failures_no_groups(db: Database, registry: PipelineRegistry) -> None:
    _run(db, registry, "v1", "download", "succeeded", NOW - 60)
    assert dashboard.error_groups(db, NOW - 3600, now=NOW)["groups"] == []


# --- the video page -------------------------------------------------------------------------------------

ALICE = Actor("alice", "127.0.0.1")
PERMANENT = {"type": "ValueError", "message": "unsupported codec", "retryable": False}


def test_item_control_shows_work_dead_letters_leases_cancellation_and_audit(
    db: Database, registry: PipelineRegistry
) -> None:
    first = begin(db, registry, BeginRequest("process", "v1", payload={"video": "v1.mp4"}), now=NOW - 30)
    assert first.run_id is not None
    complete(db, registry, first.run_id, "failed", PERMANENT, now=NOW - 20)
    begin(db, registry, BeginRequest("process", "v1"), now=NOW - 10)  # a redelivery: dead-lettered, counted
    begin(db, registry, BeginRequest("publish", "v1", key="post-1"), now=NOW - 5)
    cancel_items(db, registry, ["v1"], "customer withdrew", ALICE, now=NOW - 1)

    page = dashboard.item_control(db, "v1", NOW)
    process = next(w for w in page["work"] if w["stage"] == "process")
    assert (
        process["state"] == "dead"
        and process["attempts"] == 1
        and process["last_error"]["message"] == ("unsupported codec")
    )
    (letter,) = page["dead_letters"]
    assert (
        letter["status"] == "open"
        and letter["payload"] == {"video": "v1.mp4"}
        and letter["stage"] == "process"
    )
    (lease,) = page["leases"]
    assert lease["stage"] == "publish" and lease["heartbeat_age_seconds"] == pytest.approx(5)
    assert page["cancellation"] == {
        "reason": "customer withdrew",
        "actor": "alice",
        "at": "2027-01-15T07:59:59.000Z",
    }
    assert [(a["action"], a["actor"], a["reason"]) for a in page["audit"]] == [
        ("item.cancel", "alice", "customer withdrew")
    ]


def test_item_control_of_a_video_the_control_plane_never_saw_is_empty(
    db: Database, registry: PipelineRegistry
) -> None:
    _run(db, registry, "v1", "download", "succeeded", NOW - 60)
    page = dashboard.item_control(db, "v1", NOW)
    assert page["work"] == page["leases"] == page["dead_letters"] == page["audit"] == []
    assert page["cancellation"] is None


def test_the_timeline_has_one_bar_per_run_with_its_times(db: Database, registry: PipelineRegistry) -> None:
    _run(db, registry, "v1", "download", "failed", NOW - 100, error=TIMEOUT)
    _send(
        db, registry,
        {"type": "run.enqueued", "item_id": "v1", "stage": "download", "attempt": 2, "time": NOW - 50},
        {"type": "run.started", "item_id": "v1", "stage": "download", "attempt": 2, "time": NOW - 40},
    )  # fmt: skip
    bars = dashboard.timeline(query.get_item(db, "v1")["runs"])
    assert [(b.lane, b.status) for b in bars] == [("download #1", "failed"), ("download #2", "running")]
    assert bars[0].started_at == NOW - 110 and bars[0].ended_at == NOW - 100
    assert bars[0].error == "TimeoutError: read timed out after 60s"
    assert bars[1].queued_at == NOW - 50 and bars[1].started_at == NOW - 40 and bars[1].ended_at is None


# --- the indexes ----------------------------------------------------------------------------------------


def test_the_dashboard_indexes_exist_after_migrating(db: Database) -> None:
    with db.reader.connect() as conn:
        names = {ix["name"] for table in ("runs", "items") for ix in inspect(conn).get_indexes(table)}
    assert {"ix_runs_ended", "ix_runs_failed_ended", "ix_items_stuck"} <= names


def _plans(db: Database, read: Callable[[Connection], object]) -> str:
    """SQLite's plans for the queries ``read`` runs, with the parameters they ran with."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    with db.reader.connect() as conn:
        event.listen(conn, "before_cursor_execute", capture)
        read(conn)
        event.remove(conn, "before_cursor_execute", capture)
        return str(
            [conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall() for sql, params in seen]
        )


@pytest.mark.parametrize(
    ("read", "index"),
    [
        (lambda conn: store.finished_by_bucket(conn, NOW - 3600, NOW, 300), "COVERING INDEX ix_runs_ended"),
        (store.stuck_counts, "INDEX ix_items_stuck"),
        (
            lambda conn: store.error_group_rows(conn, NOW - 3600, NOW, 10),
            "COVERING INDEX ix_runs_failed_ended",
        ),
        (
            lambda conn: store.error_group_rows(conn, NOW - 3600, NOW, 10, stage="publish"),
            "COVERING INDEX ix_runs_failed_ended",
        ),
        (lambda conn: store.latest_failures(conn, ["f1"]), "INDEX ix_runs_failed_fingerprint"),
        (
            lambda conn: store.error_buckets(conn, ["f1", "f2"], NOW - 3600, NOW, 300),
            "COVERING INDEX ix_runs_failed_fingerprint",
        ),
        (
            lambda conn: store.videos_of_fingerprint(conn, "f1", 10),
            "COVERING INDEX ix_runs_failed_fingerprint",
        ),
        (lambda conn: store.running_runs(conn, 10), "INDEX ix_runs_running"),
    ],
    ids=[
        "throughput",
        "stuck",
        "error-groups",
        "error-groups-of-a-stage",
        "latest-failure",
        "sparklines",
        "videos",
        "in-flight",
    ],
)
def test_sqlite_answers_the_heavy_queries_from_the_dashboard_indexes(
    db: Database, read: Callable[[Connection], object], index: str
) -> None:
    """SQLite uses a partial index only when the query's condition matches the index's own, and without
    statistics it may prefer another index and sort: either would silently turn a page slow."""
    if db.is_postgres:
        pytest.skip("the plan checked is SQLite's")
    assert index in _plans(db, read)


def test_a_since_after_now_is_refused(db: Database) -> None:
    with pytest.raises(InputError):
        dashboard.error_groups(db, NOW + 1, now=NOW)
