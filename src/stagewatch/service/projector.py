"""Applying a set of new events to the stored projection, inside one transaction."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from sqlalchemy import Connection

from stagewatch.domain.events import Event
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.domain.projection import ItemState, RunState, apply_item_event, apply_run_event, derive_item
from stagewatch.domain.statuses import DONE
from stagewatch.store import writes
from stagewatch.store.projection_cache import ProjectionCache
from stagewatch.store.rows import placeholder_item_row

CountKey = tuple[str, str, str]


def event_values(
    event: Event, pipeline: str, received_at: float, body: str | None = None
) -> writes.EventValues:
    """The event's row, in ``writes.EVENT_COLUMNS`` order; the body is the event as JSON without nulls
    (``body_of``), unless the caller made it already."""
    return (
        event.id,
        event.type.value,
        event.item_id,
        event.run_id,
        pipeline,
        event.stage,
        event.at,
        received_at,
        event.trace_id,
        body if body is not None else body_of(event),
    )


def body_of(event: Event) -> str:
    """The event as stored in the log: its JSON without null fields."""
    return event.model_dump_json(exclude_none=True)


def store_events(
    conn: Connection,
    events: Sequence[Event],
    registry: PipelineRegistry,
    received_at: float,
    cache: ProjectionCache | None = None,
    bodies: Mapping[str, str] | None = None,
) -> set[str]:
    """Append ``events`` (unique ids) and fold the new ones into items and runs. Returns the new ids.
    ``cache``, when given, must have been validated on ``conn`` and be cleared if the transaction fails.
    ``bodies`` may hold events' stored JSON (``body_of``) by id, made before the transaction."""
    pipeline_of = {e.id: registry.require(e.pipeline).name for e in events}
    made = bodies or {}
    rows = [event_values(e, pipeline_of[e.id], received_at, made.get(e.id)) for e in events]
    new_ids = writes.insert_new_events(conn, rows)
    fresh = [e for e in events if e.id in new_ids]
    if fresh:
        _project(conn, fresh, registry, pipeline_of, cache)
    return new_ids


def _project(
    conn: Connection,
    events: list[Event],
    registry: PipelineRegistry,
    pipeline_of: dict[str, str],
    cache: ProjectionCache | None,
) -> None:
    """Fold new events into the locked items and their runs, then write rows and counter changes."""
    first_seen: dict[str, tuple[str, float]] = {}
    for e in events:
        if e.item_id not in first_seen:
            first_seen[e.item_id] = (pipeline_of[e.id], e.at)
    run_ids = {e.run_id for e in events if e.type.is_run_event and e.run_id}
    items, runs = _load(conn, first_seen, run_ids, registry.default, cache)
    before = {item_id: _count_keys(item) for item_id, item in items.items()}
    touched_runs = _fold(events, items, runs, pipeline_of)
    by_item = _runs_by_item(runs)
    deltas = _derive_items(items, by_item, registry, before)
    writes.upsert_runs(conn, touched_runs.values())
    writes.upsert_items(conn, items.values())
    writes.add_stage_counts(conn, deltas)
    if cache is not None:
        cache.put(items, by_item)


def _load(
    conn: Connection,
    first_seen: dict[str, tuple[str, float]],
    run_ids: set[str],
    default_pipeline: str,
    cache: ProjectionCache | None,
) -> tuple[dict[str, ItemState], dict[str, RunState]]:
    """The items about to change, locked, with all their runs: from the cache where it has them.
    ``first_seen`` has each item's pipeline and time as its first event here tells them: what the
    placeholder row that locks a new item holds (made only for items the cache does not have).

    A run id reused across items belongs to one item only; the item that owns (or loses) it must be
    locked and re-derived too, or it would keep counting a run that is no longer its own.
    """
    known = {run_id: cache.owner_of(run_id) for run_id in run_ids} if cache is not None else {}
    unknown = [run_id for run_id in run_ids if known.get(run_id) is None]
    owners = writes.run_owners(conn, unknown) if unknown else set()
    owners.update(owner for owner in known.values() if owner is not None)
    for owner in owners - first_seen.keys():
        first_seen[owner] = (default_pipeline, 0.0)
    items, runs = cache.get(first_seen) if cache is not None else ({}, {})
    missing = [
        placeholder_item_row(item_id, pipeline, at)
        for item_id, (pipeline, at) in first_seen.items()
        if item_id not in items
    ]
    if missing:
        items.update(writes.lock_items(conn, missing))
        runs.update(writes.load_runs(conn, [row["item_id"] for row in missing], unknown))
    return items, runs


def _fold(
    events: list[Event], items: dict[str, ItemState], runs: dict[str, RunState], pipeline_of: dict[str, str]
) -> dict[str, RunState]:
    """Apply each event to its item and run (in place); return the runs that changed."""
    touched: dict[str, RunState] = {}
    for e in events:
        items[e.item_id] = apply_item_event(items.get(e.item_id), e, pipeline_of[e.id])
        # Item events may name the run they concern (a note, a cost); only run events change runs.
        if e.type.is_run_event and e.run_id is not None:
            touched[e.run_id] = runs[e.run_id] = apply_run_event(runs.get(e.run_id), e)
    return touched


def _runs_by_item(runs: dict[str, RunState]) -> defaultdict[str, list[RunState]]:
    by_item: defaultdict[str, list[RunState]] = defaultdict(list)
    for run in runs.values():
        by_item[run.item_id].append(run)
    return by_item


def _derive_items(
    items: dict[str, ItemState],
    by_item: defaultdict[str, list[RunState]],
    registry: PipelineRegistry,
    before: dict[str, list[CountKey]],
) -> Counter[CountKey]:
    """Re-derive each changed item's status from its runs; return the stage_counts changes."""
    deltas: Counter[CountKey] = Counter()
    for item_id, item in items.items():
        derive_item(item, by_item[item_id], registry.require(item.pipeline))
        deltas.subtract(before.get(item_id, []))
        deltas.update(_count_keys(item))
    return deltas


def _count_keys(item: ItemState) -> list[CountKey]:
    """The stage_counts cells this item stands in: its current (stage, status) and each stage done."""
    keys = [(item.pipeline, stage, DONE) for stage in item.stages_done]
    if item.stage is not None:
        keys.append((item.pipeline, item.stage, item.status.value))
    return keys
