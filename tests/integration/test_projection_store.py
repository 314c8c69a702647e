"""The order-independence property through the real store, on SQLite and PostgreSQL: a shuffled,
duplicated event set ingested in random batches gives the same items, runs, stage counts and summary as
one in-order ingest into an empty database, and as the pure fold. The stage counters never drift from
what counting the items gives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.domain.projection import ItemState
from stagewatch.domain.statuses import DONE
from stagewatch.service import query
from stagewatch.service.ingest import BatchOutcome, ingest_now
from stagewatch.service.validation import validate_batch
from stagewatch.store import reads, schema
from stagewatch.store.engine import Database
from stagewatch.store.reads import ItemFilter
from tests.strategies import BASE_TIME, batches_of, event_sets, fold_all, parse, shuffled_with_duplicates

NOW = BASE_TIME + 3600.0
STORE_PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Counts = dict[tuple[str, str, str], int]


def _empty(db: Database) -> None:
    """Every table emptied, so each hypothesis example starts from a fresh database."""
    # DELETE rather than TRUNCATE: on tables this small it is much faster on PostgreSQL.
    with db.writer.begin() as conn:
        for table in reversed(schema.metadata.sorted_tables):
            conn.execute(table.delete())


def _ingest(
    db: Database, registry: PipelineRegistry, batches: Sequence[Sequence[dict[str, Any]]]
) -> list[BatchOutcome]:
    outcomes = []
    for raw in batches:
        batch = validate_batch(list(raw), registry, NOW)
        assert batch.rejections == []
        outcomes.append(ingest_now(db, registry, batch.events))
    return outcomes


def _snapshot(db: Database, registry: PipelineRegistry) -> dict[str, Any]:
    """Everything a reader can see: items, runs, the stage counters and the summary."""
    with db.reader.connect() as conn:
        items = {item.item_id: item for item in reads.items_page(conn, ItemFilter(), None, 10_000)}
        runs = {run.run_id: run for item_id in items for run in reads.runs_of(conn, item_id)}
        stored_runs = conn.execute(select(func.count()).select_from(schema.runs)).scalar_one()
        stored_events = conn.execute(select(func.count()).select_from(schema.events)).scalar_one()
        counts = {(p, s, st): n for p, s, st, n in reads.stage_counts(conn)}
        c = schema.items.c
        by_status = conn.execute(
            select(c.pipeline, c.stage, c.status, func.count()).group_by(c.pipeline, c.stage, c.status)
        ).all()
    assert stored_runs == len(runs), "every run is filed under an item that exists"
    return {
        "items": items,
        "runs": runs,
        "events": stored_events,
        "counts": counts,
        "counted": {(p, s, st): n for p, s, st, n in by_status},
        "summary": query.summary(db, registry, now=NOW),
    }


def _expected_counts(items: dict[str, ItemState]) -> Counts:
    counts: Counter[tuple[str, str, str]] = Counter()
    for item in items.values():
        assert item.stage is not None
        counts[(item.pipeline, item.stage, item.status.value)] += 1
        for stage in item.stages_done:
            counts[(item.pipeline, stage, DONE)] += 1
    return dict(counts)


def _assert_counters_match_items(snapshot: dict[str, Any]) -> None:
    counts: Counts = snapshot["counts"]
    assert {k: n for k, n in counts.items() if k[2] != DONE} == snapshot["counted"]
    done = Counter(
        (item.pipeline, stage, DONE) for item in snapshot["items"].values() for stage in item.stages_done
    )
    assert {k: n for k, n in counts.items() if k[2] == DONE} == dict(done)
    assert all(n > 0 for n in counts.values()), counts


@STORE_PROPERTY
@given(data=st.data())
def test_store_agrees_with_itself_and_the_pure_fold_for_any_delivery(
    db: Database, registry: PipelineRegistry, data: st.DataObject
) -> None:
    raw = data.draw(event_sets(max_items=3), label="events")
    delivered = data.draw(shuffled_with_duplicates(raw), label="delivered")
    batches = data.draw(batches_of(delivered), label="batches")
    unique_ids = {event["id"] for event in raw}

    _empty(db)
    outcomes = _ingest(db, registry, batches)
    assert sum(o.accepted for o in outcomes) == len(unique_ids)
    assert sum(o.duplicate for o in outcomes) == len(delivered) - len(unique_ids)
    shuffled = _snapshot(db, registry)

    _empty(db)
    (in_order,) = _ingest(db, registry, [raw])
    assert (in_order.accepted, in_order.duplicate) == (len(unique_ids), 0)
    ordered = _snapshot(db, registry)

    assert shuffled["events"] == ordered["events"] == len(unique_ids)
    assert shuffled["items"] == ordered["items"]
    assert shuffled["runs"] == ordered["runs"]
    assert shuffled["counts"] == ordered["counts"]
    assert shuffled["summary"] == ordered["summary"]

    items, runs = fold_all(parse(raw))
    assert ordered["items"] == items
    assert ordered["runs"] == runs
    assert ordered["counts"] == _expected_counts(items)
    _assert_counters_match_items(shuffled)
    _assert_counters_match_items(ordered)


def _created(item_id: str, event_id: str, at: float = 0.0, **fields: Any) -> dict[str, Any]:
    return {"id": event_id, "type": "item.created", "item_id": item_id, "time": BASE_TIME + at, **fields}


def _run(kind: str, item_id: str, event_id: str, stage: str, at: float, **fields: Any) -> dict[str, Any]:
    event = {"id": event_id, "type": kind, "item_id": item_id, "stage": stage, "time": BASE_TIME + at}
    return {**event, **fields}


def test_redelivering_stored_events_changes_nothing(db: Database, registry: PipelineRegistry) -> None:
    story = [
        _created("v-1", "a1", account="acct-1"),
        _run("run.started", "v-1", "a2", "download", 1),
        _run("run.failed", "v-1", "a3", "download", 4, error={"type": "HTTPError", "message": "404"}),
        _run("run.started", "v-1", "a4", "download", 30, attempt=2),
    ]
    (first,) = _ingest(db, registry, [[*story, story[1]]])
    assert (first.accepted, first.duplicate) == (4, 1)
    before = _snapshot(db, registry)
    (again,) = _ingest(db, registry, [list(reversed(story))])
    assert (again.accepted, again.duplicate) == (0, 4)
    after = _snapshot(db, registry)
    assert after == before
    item = after["items"]["v-1"]
    assert (item.status.value, item.stage, item.attempts, item.event_count) == ("running", "download", 2, 4)


def test_a_late_event_moves_the_counters_with_the_item(db: Database, registry: PipelineRegistry) -> None:
    """The counters follow an item as later batches (and late, earlier-dated events) move it."""
    _ingest(db, registry, [[_created("v-1", "c1"), _created("v-2", "c2")]])
    assert _snapshot(db, registry)["counts"] == {("instagram", "webhook", "received"): 2}
    _ingest(db, registry, [[_run("run.succeeded", "v-1", "c3", "process", 50)]])
    snap = _snapshot(db, registry)
    assert snap["counts"] == {
        ("instagram", "webhook", "received"): 1,
        ("instagram", "process", "ready_to_publish"): 1,
        ("instagram", "process", DONE): 1,
    }
    # A publish run that began earlier than process ended does not become the current run...
    _ingest(db, registry, [[_run("run.enqueued", "v-1", "c4", "publish", 40)]])
    assert _snapshot(db, registry)["counts"] == snap["counts"]
    # ...but one that starts later does, and the item moves from one cell to the other.
    _ingest(db, registry, [[_run("run.started", "v-1", "c5", "publish", 60, attempt=2)]])
    snap = _snapshot(db, registry)
    assert snap["counts"] == {
        ("instagram", "webhook", "received"): 1,
        ("instagram", "publish", "running"): 1,
        ("instagram", "process", DONE): 1,
    }
    _assert_counters_match_items(snap)
    summary = {s["stage"]: s for s in snap["summary"]["pipelines"][0]["stages"]}
    assert (summary["publish"]["running"], summary["process"]["done"]) == (1, 1)
    assert snap["summary"]["pipelines"][0]["items"] == 2


@pytest.mark.parametrize("first", ["v-a", "v-b"])
def test_a_run_id_reused_across_items_is_filed_under_one_item(
    db: Database, registry: PipelineRegistry, first: str
) -> None:
    """A worker that names runs "download-1" for every video: the earliest report decides which item the
    run belongs to, and the other item must not keep counting it (whatever the arrival order)."""
    story = {
        "v-a": [_created("v-a", "x1", at=0), _run("run.started", "v-a", "x2", "download", 1, run_id="dl-1")],
        "v-b": [_created("v-b", "x3", at=0), _run("run.failed", "v-b", "x4", "download", 5, run_id="dl-1",
                                                    error={"type": "E", "message": "m"})],
    }  # fmt: skip
    second = "v-b" if first == "v-a" else "v-a"
    _ingest(db, registry, [story[first], story[second]])
    snap = _snapshot(db, registry)
    items, runs = fold_all(parse([*story["v-a"], *story["v-b"]]))
    assert snap["runs"] == runs
    assert snap["items"] == items
    _assert_counters_match_items(snap)
