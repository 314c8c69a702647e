"""Turning a raw batch into valid events and per-index rejections, so one bad event never costs the
rest of its batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from stagewatch.domain.events import CONTROL_EVENT_TYPES, Event, validate_events_fast
from stagewatch.domain.pipeline import PipelineRegistry


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the event at ``index`` of a batch was refused; ``field`` names the offending field."""

    index: int
    event_id: str | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.event_id, "field": self.field, "error": self.message}


@dataclass(slots=True)
class ValidatedBatch:
    events: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def validate_batch(
    raw_events: list[Any], registry: PipelineRegistry, now: float, *, may_hold_nul: bool = True
) -> ValidatedBatch:
    """Check each event on its own; stamp a missing client time with ``now``. ``may_hold_nul=False``
    (the caller saw no ``\\u0000`` in the raw JSON) skips the search for NUL characters.

    The whole batch is validated in one call first (``validate_events_fast``); an event that call or
    the checks after it do not pass is validated again on its own by ``_validate_one``, which makes the
    rejection (with its message and field) or accepts it. Either way, the outcome is ``_validate_one``'s."""
    if not isinstance(raw_events, list):
        raw_events = list(raw_events)
    look_for_nul = may_hold_nul and _may_hold_nul(raw_events)
    batch = ValidatedBatch()
    known: dict[tuple[str | None, str | None], bool] = {}  # (pipeline, stage): no pipeline problem
    for index, (raw, event) in enumerate(zip(raw_events, validate_events_fast(raw_events), strict=True)):
        if event is not None and _passes_checks(raw, event, registry, known, look_for_nul):
            batch.events.append(event if event.time is not None else event.model_copy(update={"time": now}))
            continue
        outcome = _validate_one(index, raw, registry, now, look_for_nul)
        if isinstance(outcome, Rejection):
            batch.rejections.append(outcome)
        else:
            batch.events.append(outcome)
    return batch


def _passes_checks(
    raw: dict[str, Any],
    event: Event,
    registry: PipelineRegistry,
    known: dict[tuple[str | None, str | None], bool],
    look_for_nul: bool,
) -> bool:
    """Whether a valid event passes the checks ``_validate_one`` makes after validation (it finds no
    problem); the pipeline check's answers are remembered per batch in ``known``."""
    if event.type in CONTROL_EVENT_TYPES:
        return False
    key = (event.pipeline, event.stage)
    fits = known.get(key)
    if fits is None:
        fits = known[key] = _pipeline_problem(event, registry) is None
    if not fits:
        return False
    run_id = event.run_id
    if run_id is not None and len(run_id) > _MAX_RUN_ID:
        return False
    return not (look_for_nul and _nul_at(raw) is not None)


def _may_hold_nul(raw_events: list[Any]) -> bool:
    """False when no key or string in the batch can hold U+0000: its JSON (where orjson writes that
    character as ``\\u0000``) does not show one. True when that is unclear (orjson cannot serialise
    the batch); a false alarm only costs the search for NUL characters event by event."""
    try:
        return b"\\u0000" in orjson.dumps(raw_events)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return True


def _validate_one(
    index: int, raw: Any, registry: PipelineRegistry, now: float, may_hold_nul: bool = True
) -> Event | Rejection:
    event_id = raw.get("id") if isinstance(raw, dict) else None
    event_id = event_id if isinstance(event_id, str) else None
    if not isinstance(raw, dict):
        return Rejection(index, None, "", f"must be a JSON object, not {type(raw).__name__}")
    try:
        event = Event.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        cause = first.get("ctx", {}).get("error")
        where = getattr(cause, "field", None) or ".".join(str(part) for part in first["loc"])
        return Rejection(index, event_id, where, str(cause) if cause else first["msg"])
    problem = (
        _control_problem(event)
        or _pipeline_problem(event, registry)
        or _storage_problem(raw, event, may_hold_nul)
    )
    if problem is not None:
        return Rejection(index, event_id, *problem)
    return event if event.time is not None else event.model_copy(update={"time": now})


def _control_problem(event: Event) -> tuple[str, str] | None:
    if event.type.is_control_event:
        return "type", (
            f"{event.type.value} events are written by the control plane only; use the control API "
            "(POST /v1/runs/begin, /v1/items/{id}/cancel, /v1/dlq/replay)"
        )
    return None


def _pipeline_problem(event: Event, registry: PipelineRegistry) -> tuple[str, str] | None:
    pipeline = registry.get(event.pipeline)
    if pipeline is None:
        return "pipeline", f"unknown pipeline {event.pipeline!r}; configured: {', '.join(registry.names())}"
    if event.stage is not None and not pipeline.has_stage(event.stage):
        stages = ", ".join(pipeline.stage_names)
        return "stage", f"stage {event.stage!r} is not in pipeline {pipeline.name!r} (stages: {stages})"
    return None


# The run id columns hold at most this many characters (``store.schema.Id``).
_MAX_RUN_ID = 256


def _storage_problem(raw: dict[str, Any], event: Event, may_hold_nul: bool) -> tuple[str, str] | None:
    """What a valid event may still hold that the database cannot store (PostgreSQL refuses both)."""
    where = _nul_at(raw) if may_hold_nul else None
    if where is not None:
        return where, "must not contain the NUL character (\\u0000)"
    if event.run_id is not None and len(event.run_id) > _MAX_RUN_ID:
        return "run_id", (
            f"the default run id ITEM/STAGE/ATTEMPT would be {len(event.run_id)} characters, over "
            f"{_MAX_RUN_ID}; send an explicit run_id or a shorter item_id"
        )
    return None


def _nul_at(value: Any, path: str = "") -> str | None:
    """The dotted path of the first key or string value that contains U+0000, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        pairs: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        pairs = list(enumerate(value))
    else:
        return None
    for key, item in pairs:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and "\x00" in key:
            return where
        found = _nul_at(item, where)
        if found is not None:
            return found
    return None
