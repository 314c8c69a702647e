"""The projection (pure domain): the same set of events gives the same items and runs whatever the order
and however often each event arrives; and the rules a user sees on an item's page."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewatch.domain.events import Event
from stagewatch.domain.fingerprint import fingerprint, normalise_message
from stagewatch.domain.projection import ItemState, RunState
from stagewatch.domain.statuses import ItemStatus, RunStatus
from tests.strategies import (
    BASE_TIME,
    STAGES,
    batches_of,
    event_sets,
    fold,
    fold_all,
    parse,
    shuffled_with_duplicates,
)

T0 = BASE_TIME
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- order and duplication do not matter --------------------------------------------------------------


@PROPERTY
@given(data=st.data())
def test_any_order_duplicates_and_batching_give_the_same_items_and_runs(data: st.DataObject) -> None:
    events = parse(data.draw(event_sets(), label="events"))
    delivered = data.draw(shuffled_with_duplicates(events), label="delivered")
    batches = data.draw(batches_of(delivered), label="batches")
    items, runs = fold_all(events)
    # Dataclass equality compares every field: status, stage, times, errors, attrs and the registers.
    assert fold_all(delivered) == (items, runs)
    # The store folds batch by batch, deriving items after each; that must not change the result.
    assert fold(batches) == (items, runs)
    _assert_reflects(events, items, runs)


def _assert_reflects(events: list[Event], items: dict[str, ItemState], runs: dict[str, RunState]) -> None:
    """Not just consistent, but right: counts, times, the terminal-wins rule and the derived stage."""
    assert set(items) == {e.item_id for e in events}
    per_item = Counter(e.item_id for e in events)
    assert {i: item.event_count for i, item in items.items()} == dict(per_item)
    assert set(runs) == {e.run_id for e in events if e.run_id is not None}
    for item in items.values():
        assert item.created_at == min(e.at for e in events if e.item_id == item.item_id)
        assert item.updated_at == max(e.at for e in events if e.item_id == item.item_id)
        assert item.stage in STAGES
        item_runs = [r for r in runs.values() if r.item_id == item.item_id]
        assert item.status is not ItemStatus.RECEIVED or not item_runs
        # Attempts count at the item's current stage; 0 when it is queued at a stage not yet tried.
        assert item.attempts in {r.attempt for r in item_runs if r.stage == item.stage} | {0}
    for run in runs.values():
        kinds = {e.type.value for e in events if e.run_id == run.run_id}
        for kind, status in (
            ("run.succeeded", RunStatus.SUCCEEDED),
            ("run.failed", RunStatus.FAILED),
            ("run.timed_out", RunStatus.TIMED_OUT),
            ("run.cancelled", RunStatus.CANCELLED),
        ):
            if kind in kinds:
                assert run.status is status, (run.run_id, kinds)
                break
        else:
            assert run.status is (RunStatus.RUNNING if kinds - {"run.enqueued"} else RunStatus.QUEUED)
        if run.status is RunStatus.FAILED:
            assert run.error is not None and run.error_fingerprint is not None


@st.composite
def _confused_event_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A client that disagrees with itself: one run id used for several stages, attempts, even items."""
    raw = draw(event_sets(max_items=2))
    shared = ("run-shared-1", "run-shared-2")
    out = []
    for event in raw:
        if event["type"].startswith("run.") and draw(st.integers(0, 2)) == 0:
            event = {**event, "run_id": draw(st.sampled_from(shared))}
        out.append(event)
    return out


@settings(PROPERTY, max_examples=60)
@given(data=st.data())
def test_a_client_that_disagrees_with_itself_still_gets_one_answer(data: st.DataObject) -> None:
    """projection.py: "if a client disagrees with itself, the earliest report decides, so the result
    still does not depend on arrival order" — including the error fingerprint, which names the stage."""
    events = parse(data.draw(_confused_event_sets()))
    delivered = data.draw(shuffled_with_duplicates(events))
    assert fold_all(delivered) == fold_all(events)


# --- rules a user notices ------------------------------------------------------------------------------

_ids = itertools.count()


def ev(kind: str, stage: str | None = None, at: float = 0.0, item: str = "v-1", **fields: Any) -> Event:
    raw: dict[str, Any] = {"id": f"ev-{next(_ids)}", "type": kind, "item_id": item, "time": T0 + at}
    if stage is not None:
        raw["stage"] = stage
    raw.update(fields)
    return Event.model_validate(raw)


def project(*events: Event) -> tuple[ItemState, dict[str, RunState]]:
    """Fold the events in every arrival order (a sample of them for long stories), check all agree, and
    return the item and its runs."""
    orders: list[tuple[Event, ...]]
    if len(events) <= 6:
        orders = list(itertools.permutations(events))
    else:
        rng = random.Random(len(events))
        orders = [tuple(rng.sample(events, len(events))) for _ in range(300)]
        orders.append(tuple(reversed(events)))
    expected = fold_all(events)
    for order in orders:
        assert fold_all(order) == expected, [e.id for e in order]
    items, runs = expected
    (item,) = items.values()
    return item, runs


def _through(stage: str, at: float) -> list[Event]:
    """Every stage before ``stage`` succeeded, one time unit apart, ending before ``at``."""
    index = STAGES.index(stage)
    return [ev("run.succeeded", s, at - index + i) for i, s in enumerate(STAGES[:index])]


def test_a_new_video_is_received_at_the_first_stage() -> None:
    item, runs = project(ev("item.created", at=0, account="acct-1", scenario="reels"))
    assert (item.status, item.stage, item.attempts) == (ItemStatus.RECEIVED, "webhook", 0)
    assert item.status_since == T0
    assert (item.account, item.scenario) == ("acct-1", "reels")
    assert runs == {}


def test_process_succeeded_means_ready_to_publish() -> None:
    item, _ = project(
        ev("item.created", at=0),
        *_through("process", at=10),
        ev("run.started", "process", at=11),
        ev("run.succeeded", "process", at=20),
    )
    assert (item.status, item.stage) == (ItemStatus.READY_TO_PUBLISH, "process")
    assert item.status_since == T0 + 20
    assert item.stages_done == ["webhook", "download", "enqueue", "process"]


def test_publish_succeeded_means_published() -> None:
    item, runs = project(
        *_through("publish", at=10),
        ev("run.started", "publish", at=11),
        ev("run.succeeded", "publish", at=15),
    )
    assert (item.status, item.stage) == (ItemStatus.PUBLISHED, "publish")
    assert item.stages_done == list(STAGES)
    assert runs["v-1/publish/1"].duration == 4.0


def test_between_stages_the_video_is_queued_at_the_next_one() -> None:
    item, runs = project(
        ev("item.created", at=0),
        ev("run.succeeded", "webhook", at=1),
        ev("run.started", "download", at=2),
        ev("run.succeeded", "download", at=7),
    )
    assert (item.status, item.stage) == (ItemStatus.QUEUED, "enqueue")
    assert item.status_since == T0 + 7
    assert item.stages_done == ["webhook", "download"]
    assert set(runs) == {"v-1/webhook/1", "v-1/download/1"}


def test_queued_then_running_then_a_retry_after_failure() -> None:
    item, runs = project(
        ev("run.enqueued", "download", at=1),
        ev("run.started", "download", at=3),
        ev(
            "run.failed",
            "download",
            at=4,
            error={"type": "HTTPError", "message": "404 Not Found", "retryable": True},
        ),
        ev("run.enqueued", "download", at=30, attempt=2),
        ev("run.started", "download", at=35, attempt=2, worker="dl", revision="dl-00042"),
    )
    assert (item.status, item.stage, item.attempts) == (ItemStatus.RUNNING, "download", 2)
    assert item.status_since == T0 + 35
    assert item.last_error is not None
    assert item.last_error["type"] == "HTTPError"
    assert item.last_error["message"] == "404 Not Found"
    assert (item.last_error["stage"], item.last_error["attempt"]) == ("download", 1)
    assert item.last_error["run_id"] == "v-1/download/1"
    assert item.last_error["at"] == T0 + 4
    assert item.last_error["fingerprint"] == fingerprint("download", "HTTPError", "404 Not Found")
    first, second = runs["v-1/download/1"], runs["v-1/download/2"]
    assert (first.status, first.attempt, first.ended_at) == (RunStatus.FAILED, 1, T0 + 4)
    assert (second.status, second.attempt, second.revision) == (RunStatus.RUNNING, 2, "dl-00042")
    assert second.enqueued_at == T0 + 30


def test_a_retry_from_a_worker_whose_clock_runs_behind_still_supersedes_the_failed_attempt() -> None:
    item, _ = project(
        ev("run.started", "download", at=100),
        ev("run.failed", "download", at=110, error={"type": "Timeout", "message": "read timed out"}),
        ev("run.enqueued", "download", at=95, attempt=2),
    )
    assert (item.status, item.stage, item.attempts) == (ItemStatus.QUEUED, "download", 2)


def test_a_video_queued_at_the_next_stage_has_made_no_attempt_there() -> None:
    item, _ = project(
        ev("run.failed", "download", at=1, error={"type": "E", "message": "m"}),
        ev("run.succeeded", "download", at=9, attempt=2),
    )
    assert (item.status, item.stage, item.attempts) == (ItemStatus.QUEUED, "enqueue", 0)


def test_a_video_waiting_in_a_queue_is_queued_since_it_was_enqueued() -> None:
    item, _ = project(ev("run.succeeded", "webhook", at=1), ev("run.enqueued", "download", at=2))
    assert (item.status, item.stage, item.status_since) == (ItemStatus.QUEUED, "download", T0 + 2)


def test_an_explicit_run_id_and_attempt_name_the_run() -> None:
    item, runs = project(
        ev("run.started", "process", at=1, run_id="cr-exec-7", attempt=3),
        ev("run.progress", "process", at=2, run_id="cr-exec-7", attempt=3, progress=0.5, note="encode"),
    )
    assert set(runs) == {"cr-exec-7"}
    run = runs["cr-exec-7"]
    assert (run.attempt, run.progress, run.progress_note) == (3, 0.5, "encode")
    assert (item.status, item.attempts) == (ItemStatus.RUNNING, 3)


@pytest.mark.parametrize("racer", ["run.cancelled", "run.timed_out", "run.failed"])
@pytest.mark.parametrize("racer_at", [3.0, 9.0], ids=["before", "after"])
def test_succeeded_beats_a_racing_cancel_timeout_or_failure(racer: str, racer_at: float) -> None:
    error = {"type": "Killed", "message": "SIGTERM"} if racer == "run.failed" else None
    item, runs = project(
        *_through("process", at=0),
        ev("run.started", "process", at=1),
        ev("run.succeeded", "process", at=5),
        ev(racer, "process", at=racer_at, **({"error": error} if error else {})),
    )
    run = runs["v-1/process/1"]
    assert run.status is RunStatus.SUCCEEDED
    assert run.ended_at == T0 + 5
    assert (run.error, run.error_fingerprint) == (None, None)
    assert item.status is ItemStatus.READY_TO_PUBLISH
    assert item.last_error is None


def test_among_failures_the_workers_report_beats_the_watchdog_which_beats_a_cancel() -> None:
    _, runs = project(
        ev("run.started", "publish", at=1),
        ev("run.cancelled", "publish", at=8),
        ev("run.timed_out", "publish", at=7),
        ev("run.failed", "publish", at=4, error={"type": "GraphAPIError", "message": "code 9007"}),
    )
    run = runs["v-1/publish/1"]
    assert (run.status, run.ended_at) == (RunStatus.FAILED, T0 + 4)
    assert run.error is not None and run.error["type"] == "GraphAPIError"
    _, runs = project(
        ev("run.started", "publish", at=1),
        ev("run.cancelled", "publish", at=8),
        ev("run.timed_out", "publish", 7),
    )
    assert runs["v-1/publish/1"].status is RunStatus.TIMED_OUT


def test_equal_terminal_reports_resolve_by_time() -> None:
    _, runs = project(
        ev("run.failed", "download", at=5, error={"type": "A", "message": "first"}),
        ev("run.failed", "download", at=6, error={"type": "B", "message": "second"}),
    )
    run = runs["v-1/download/1"]
    assert run.error is not None and run.error["type"] == "B"
    assert run.ended_at == T0 + 6


@pytest.mark.parametrize("outcome", ["run.succeeded", "run.failed", "run.cancelled"])
def test_a_late_heartbeat_does_not_revive_a_finished_run(outcome: str) -> None:
    extra = {"error": {"type": "OOM", "message": "killed"}} if outcome == "run.failed" else {}
    item, runs = project(
        ev("run.started", "download", at=1),
        ev(outcome, "download", at=5, **extra),
        ev("run.heartbeat", "download", at=20, progress=0.9),
        ev("run.started", "download", at=21),
    )
    run = runs["v-1/download/1"]
    assert run.status.value == outcome.removeprefix("run.")
    assert run.ended_at == T0 + 5
    assert item.status is not ItemStatus.RUNNING
    assert item.status_since == T0 + 5


def test_a_late_enqueued_does_not_send_a_running_run_back_to_the_queue() -> None:
    item, runs = project(ev("run.started", "process", at=5), ev("run.enqueued", "process", at=2))
    assert runs["v-1/process/1"].status is RunStatus.RUNNING
    assert (item.status, item.status_since) == (ItemStatus.RUNNING, T0 + 5)
    assert runs["v-1/process/1"].enqueued_at == T0 + 2


@pytest.mark.parametrize(
    ("note", "message"), [("no heartbeat for 60s", "no heartbeat for 60s"), (None, None)]
)
def test_a_timed_out_run_gets_a_timed_out_error(note: str | None, message: str | None) -> None:
    fields = {"note": note} if note else {}
    item, runs = project(ev("run.started", "process", at=1), ev("run.timed_out", "process", at=61, **fields))
    run = runs["v-1/process/1"]
    assert run.status is RunStatus.TIMED_OUT
    assert run.error is not None
    assert run.error["type"] == "TimedOut"
    assert run.error["retryable"] is True
    assert run.error["message"] == (message or "run timed out")
    assert run.error_fingerprint == fingerprint("process", "TimedOut", run.error["message"])
    assert (item.status, item.stage) == (ItemStatus.FAILED, "process")
    assert item.last_error is not None and item.last_error["type"] == "TimedOut"


def test_a_cancelled_run_makes_the_video_cancelled() -> None:
    item, _ = project(ev("run.enqueued", "publish", at=1), ev("run.cancelled", "publish", at=2))
    assert (item.status, item.stage) == (ItemStatus.CANCELLED, "publish")


def test_last_error_is_the_most_recent_failure_of_any_stage() -> None:
    item, _ = project(
        ev("run.failed", "download", at=1, error={"type": "Early", "message": "x"}),
        ev("run.succeeded", "download", at=5, attempt=2),
        ev("run.failed", "process", at=9, error={"type": "Late", "message": "y"}),
    )
    assert item.last_error is not None
    assert (item.last_error["type"], item.last_error["stage"]) == ("Late", "process")
    assert item.stages_done == ["download"]


def test_item_facts_come_from_item_created_and_attrs_from_the_latest_report() -> None:
    item, _ = project(
        ev("run.started", "download", at=1, account="acct-from-worker", attrs={"lang": "en", "hd": False}),
        ev("item.created", at=5, account="acct-real", source="webhook:airtable", params={"caption": "c"}),
        ev("item.annotated", at=9, attrs={"hd": True}, scenario="reels"),
    )
    assert item.account == "acct-real"
    assert (item.source, item.params, item.scenario) == ("webhook:airtable", {"caption": "c"}, "reels")
    assert item.attrs == {"lang": "en", "hd": True}
    assert (item.created_at, item.updated_at, item.event_count) == (T0 + 1, T0 + 9, 3)


def test_a_run_reported_under_two_stages_is_named_and_fingerprinted_by_the_earliest_report() -> None:
    _, runs = project(
        ev("run.started", "download", at=1, run_id="r"),
        ev("run.failed", "process", at=2, run_id="r", error={"type": "E", "message": "boom 1"}),
    )
    run = runs["r"]
    assert (run.stage, run.status) == ("download", RunStatus.FAILED)
    assert run.error_fingerprint == fingerprint("download", "E", "boom 1")


def test_a_run_keeps_resource_peaks_and_the_latest_progress() -> None:
    _, runs = project(
        ev("run.heartbeat", "process", at=1, resources={"rss_bytes": 5e8}, progress=0.2),
        ev("run.heartbeat", "process", at=3, resources={"rss_bytes": 3e8, "cpu": 0.9}, progress=0.7),
        ev("run.heartbeat", "process", at=2, resources={"rss_bytes": 9e8}, progress=0.4),
    )
    run = runs["v-1/process/1"]
    assert run.resources == {"rss_bytes": 9e8, "cpu": 0.9}
    assert (run.progress, run.started_at, run.heartbeat_at) == (0.7, T0 + 1, T0 + 3)


# --- fingerprints --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("timeout after 30s fetching video 123", "timeout after 45s fetching video 98765"),
        ("took 1.5 s", "took 22.25 s"),
        (
            "object 3fa85f64-5717-4562-b3fc-2c963f66afa6 missing",
            "object 0b6e2f7a-1c3d-4e5f-8a9b-0c1d2e3f4a5b missing",
        ),
        ("container 9f86d081884c7d65 failed", "container 0a1b2c3d4e5f6789 failed"),
        ("file 'a.mp4' not found", 'file "clips/b.mp4" not found'),
        ("GET https://graph.facebook.com/v19/123?x=1 failed", "GET https://cdn.example/v.mp4 failed"),
        ("a   b\n c", "a b c"),
    ],
)
def test_fingerprints_ignore_numbers_ids_and_quoted_values(one: str, other: str) -> None:
    assert normalise_message(one) == normalise_message(other)
    assert fingerprint("download", "HTTPError", one) == fingerprint("download", "HTTPError", other)


def test_fingerprints_separate_different_failures() -> None:
    base = fingerprint("download", "HTTPError", "404 Not Found")
    assert fingerprint("download", "HTTPError", "403 Forbidden") != base
    assert fingerprint("download", "TimeoutError", "404 Not Found") != base
    assert fingerprint("process", "HTTPError", "404 Not Found") != base
    assert len(base) == 16


def test_failures_that_differ_only_in_numbers_share_a_run_fingerprint() -> None:
    _, runs = project(
        ev("run.failed", "publish", at=1, error={"type": "GraphAPIError", "message": "rate limit 4 of 200"}),
        ev(
            "run.failed",
            "publish",
            at=9,
            attempt=2,
            error={"type": "GraphAPIError", "message": "rate limit 17 of 200"},
        ),
    )
    first, second = runs["v-1/publish/1"].error_fingerprint, runs["v-1/publish/2"].error_fingerprint
    assert first is not None and first == second
