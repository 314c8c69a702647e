"""Validating events: times, ids, required fields per type, unknown fields, default run ids, and the
per-index rejections a batch answers with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings

from stagewatch.domain.events import Event, EventType, default_run_id, iso
from stagewatch.domain.pipeline import Pipeline, PipelineRegistry, StagePolicy, instagram_preset
from stagewatch.service.validation import Rejection, validate_batch
from tests.strategies import event_sets

REGISTRY = PipelineRegistry.of([instagram_preset()])
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOV_28 = 1_795_870_800.0  # 2026-11-28T13:00:00Z


def base(**fields: Any) -> dict[str, Any]:
    return {"id": "e-1", "type": "item.created", "item_id": "v-1", **fields}


def run_event(kind: str = "run.started", **fields: Any) -> dict[str, Any]:
    return {"id": "e-1", "type": kind, "item_id": "v-1", "stage": "download", **fields}


def rejection(raw: Any, registry: PipelineRegistry = REGISTRY) -> Rejection:
    batch = validate_batch([raw], registry, NOW)
    assert batch.events == [], f"expected {raw!r} to be rejected"
    (rejected,) = batch.rejections
    return rejected


def accepted(raw: dict[str, Any]) -> Event:
    batch = validate_batch([raw], REGISTRY, NOW)
    assert batch.rejections == [], batch.rejections
    (event,) = batch.events
    return event


# --- times ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_time", "epoch"),
    [
        ("2026-11-28T13:00:00Z", NOV_28),
        ("2026-11-28T13:00:00.250Z", NOV_28 + 0.25),
        ("2026-11-28T15:00:00+02:00", NOV_28),
        ("2026-11-28T13:00:00", NOV_28),  # no offset: UTC
        ("2026-11-28 13:00:00+00:00", NOV_28),
        (1_795_870_800, NOV_28),
        (NOV_28 + 0.5, NOV_28 + 0.5),
    ],
)
def test_time_is_epoch_seconds_or_iso_8601(given_time: Any, epoch: float) -> None:
    event = accepted(base(time=given_time))
    assert event.time == epoch
    assert isinstance(event.time, float)


def test_iso_renders_milliseconds_in_utc() -> None:
    assert datetime(2026, 11, 28, 13, tzinfo=UTC).timestamp() == NOV_28
    assert iso(NOV_28 + 0.25) == "2026-11-28T13:00:00.250Z"
    assert iso(None) is None


@pytest.mark.parametrize("millis", [1_795_870_800_000, 1_795_870_800_000.5])
def test_a_millisecond_epoch_is_refused_with_a_hint(millis: float) -> None:
    rejected = rejection(base(time=millis))
    assert rejected.field == "time"
    assert "epoch seconds" in rejected.message
    assert "milliseconds" in rejected.message


@pytest.mark.parametrize("too_early", [0, 86_400.0, "1970-01-02T00:00:00Z", "1999-12-31T23:59:59Z"])
def test_a_time_before_2000_is_refused(too_early: Any) -> None:
    assert rejection(base(time=too_early)).field == "time"


@pytest.mark.parametrize("garbage", ["yesterday", "28/11/2026", "", "2026-13-01T00:00:00Z"])
def test_an_unreadable_time_names_the_accepted_forms(garbage: str) -> None:
    rejected = rejection(base(time=garbage))
    assert rejected.field == "time"
    assert "ISO 8601" in rejected.message
    assert "2026-11-28T13:00:00Z" in rejected.message


def test_a_missing_time_is_stamped_with_the_receive_time() -> None:
    assert accepted(base()).time == NOW
    assert accepted(base(time=NOW - 60)).time == NOW - 60


# --- trace and span ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trace_id",
    [
        "4BF92F3577B34DA6A3CE929D0E0E4736",  # upper case
        "4bf92f3577b34da6a3ce929d0e0e473",  # 31 characters
        "4bf92f3577b34da6a3ce929d0e0e47360",  # 33 characters
        "4bf92f3577b34da6a3ce929d0e0e473g",  # not hex
        "0" * 32,  # all zero is invalid in W3C trace context
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a whole traceparent
    ],
)
def test_a_bad_trace_id_is_refused(trace_id: str) -> None:
    rejected = rejection(base(trace_id=trace_id))
    assert rejected.field == "trace_id"
    assert "32 lowercase hex" in rejected.message


@pytest.mark.parametrize("span_id", ["00F067AA0BA902B7", "00f067aa0ba902b", "0" * 16])
def test_a_bad_span_id_is_refused(span_id: str) -> None:
    rejected = rejection(run_event(span_id=span_id))
    assert rejected.field == "span_id"
    assert "16 lowercase hex" in rejected.message


def test_good_trace_and_span_ids_are_kept() -> None:
    event = accepted(run_event(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="00f067aa0ba902b7"))
    assert (event.trace_id, event.span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


# --- required and unknown fields -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [t.value for t in EventType if t.is_run_event])
def test_every_run_event_needs_a_stage(kind: str) -> None:
    raw = {"id": "e-1", "type": kind, "item_id": "v-1", "error": {"type": "E"}, "progress": 0.5}
    rejected = rejection(raw)
    assert (rejected.field, rejected.event_id) == ("stage", "e-1")
    assert rejected.message == f"stage is required for {kind} events"


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (run_event("run.failed"), "error", "error is required for run.failed events"),
        (run_event("run.progress"), "progress", "progress is required for run.progress events"),
        (run_event("run.failed", error={"message": "boom"}), "error.type", "required"),
        (run_event("run.failed", error={"type": ""}), "error.type", "at least 1"),
        (run_event("run.failed", error={"type": "E", "code": 7}), "error.code", "not permitted"),
        ({"type": "item.created", "item_id": "v-1"}, "id", "required"),
        ({"id": "e-1", "item_id": "v-1"}, "type", "required"),
        ({"id": "e-1", "type": "item.created"}, "item_id", "required"),
        (base(type="item.exploded"), "type", "run.started"),
        (base(id=""), "id", "at least 1"),
        (base(id=7), "id", "string"),
        (base(item_id="x" * 257), "item_id", "at most 256"),
        (run_event("run.progress", progress=1.5), "progress", "less than or equal to 1"),
        (run_event(attempt=0), "attempt", "greater than or equal to 1"),
        (base(account=""), "account", "at least 1"),
        (base(attrs={"tags": ["a", "b"]}), "attrs", "'tags' must be a string, number, boolean or null"),
        (base(resources={"rss": "big"}), "resources.rss", "number"),
    ],
)
def test_a_bad_or_missing_field_is_named(raw: dict[str, Any], field: str, words: str) -> None:
    rejected = rejection(raw)
    assert rejected.field == field
    assert words in rejected.message


@pytest.mark.parametrize("unknown", ["stauts", "runId", "timestamp", "item"])
def test_an_unknown_field_is_refused_by_name(unknown: str) -> None:
    rejected = rejection(base(**{unknown: "x"}))
    assert rejected.field == unknown
    assert "not permitted" in rejected.message


def test_an_event_that_is_not_an_object_is_refused() -> None:
    batch = validate_batch([["not", "an", "event"], "e-2", None], REGISTRY, NOW)
    assert [(r.index, r.event_id) for r in batch.rejections] == [(0, None), (1, None), (2, None)]
    assert [r.message for r in batch.rejections] == [
        "must be a JSON object, not list",
        "must be a JSON object, not str",
        "must be a JSON object, not NoneType",
    ]


# --- pipelines and stages ------------------------------------------------------------------------------


def test_an_unknown_stage_is_refused_listing_the_pipelines_stages() -> None:
    rejected = rejection(run_event(stage="dowload"))
    assert rejected.field == "stage"
    assert "'dowload'" in rejected.message
    assert "webhook, download, enqueue, process, publish" in rejected.message


def test_an_unknown_pipeline_is_refused_listing_the_configured_ones() -> None:
    rejected = rejection(base(pipeline="tiktok"))
    assert rejected.field == "pipeline"
    assert "'tiktok'" in rejected.message and "instagram" in rejected.message


def test_a_stage_is_checked_against_the_events_own_pipeline() -> None:
    shorts = Pipeline("shorts", (StagePolicy("fetch"), StagePolicy("cut")))
    registry = PipelineRegistry.of([instagram_preset(), shorts])
    assert validate_batch([run_event(pipeline="shorts", stage="cut")], registry, NOW).rejections == []
    assert rejection(run_event(pipeline="shorts", stage="download"), registry).field == "stage"
    assert rejection(run_event(stage="cut"), registry).field == "stage"  # default pipeline: instagram


# --- run ids -------------------------------------------------------------------------------------------


def test_the_default_run_id_is_item_stage_attempt() -> None:
    assert accepted(run_event(attempt=3)).run_id == "v-1/download/3"
    assert accepted(run_event()).run_id == "v-1/download/1"
    assert accepted(run_event(attempt=1)).run_id == accepted(run_event()).run_id
    assert default_run_id("a/b", "process", None) == "a/b/process/1"


def test_an_explicit_run_id_is_kept_and_item_events_have_none() -> None:
    assert accepted(run_event(run_id="exec-42", attempt=2)).run_id == "exec-42"
    assert accepted(base()).run_id is None
    assert accepted(base(type="item.annotated", note="n")).run_id is None


def test_a_default_run_id_too_long_to_store_is_refused() -> None:
    """A 256-character item id is valid, but ITEM/STAGE/ATTEMPT would not fit the 256-character run id
    column: PostgreSQL would fail the whole batch's transaction."""
    long_id = "v" * 256
    assert accepted(base(item_id=long_id)).item_id == long_id
    assert accepted(run_event(item_id=long_id, run_id="r-1")).run_id == "r-1"
    rejected = rejection(run_event(item_id=long_id))
    assert rejected.field == "run_id"
    assert "run_id" in rejected.message and "256" in rejected.message


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (base(note="a\x00b"), "note"),
        (base(item_id="v\x00"), "item_id"),
        (base(params={"caption": ["ok", "bad\x00"]}), "params.caption.1"),
        (base(attrs={"k\x00": 1}), "attrs.k\x00"),
        (run_event("run.failed", error={"type": "E", "message": "\x00"}), "error.message"),
    ],
)
def test_a_nul_character_is_refused_because_postgresql_cannot_store_it(
    raw: dict[str, Any], field: str
) -> None:
    rejected = rejection(raw)
    assert rejected.field == field
    assert "NUL" in rejected.message


# --- batches -------------------------------------------------------------------------------------------


def test_a_batch_keeps_valid_events_and_reports_each_rejected_index() -> None:
    raw = [
        base(id="ok-1"),
        run_event(id="bad-1", stage="nope"),
        run_event(id="ok-2"),
        "junk",
        run_event("run.failed", id="bad-2"),
        base(id="ok-3", time="2026-11-28T13:00:00Z"),
    ]
    batch = validate_batch(raw, REGISTRY, NOW)
    assert [e.id for e in batch.events] == ["ok-1", "ok-2", "ok-3"]
    assert [r.as_dict() for r in batch.rejections] == [
        {
            "index": 1,
            "id": "bad-1",
            "field": "stage",
            "error": "stage 'nope' is not in pipeline 'instagram' "
            "(stages: webhook, download, enqueue, process, publish)",
        },
        {"index": 3, "id": None, "field": "", "error": "must be a JSON object, not str"},
        {"index": 4, "id": "bad-2", "field": "error", "error": "error is required for run.failed events"},
    ]


@settings(max_examples=40, deadline=None)
@given(raw=event_sets(max_items=2))
def test_every_generated_event_is_valid_and_keeps_its_fields(raw: list[dict[str, Any]]) -> None:
    """The generated events (used by the projection properties) are all accepted, unchanged."""
    batch = validate_batch(raw, REGISTRY, NOW)
    assert batch.rejections == []
    for given_event, event in zip(raw, batch.events, strict=True):
        dumped = event.model_dump(mode="json", exclude_none=True)
        assert {k: v for k, v in dumped.items() if k != "run_id"} == {
            k: v for k, v in given_event.items() if k != "run_id"
        }
        default = f"{event.item_id}/{event.stage}/{event.attempt or 1}" if event.stage else None
        assert event.run_id == given_event.get("run_id", default)
