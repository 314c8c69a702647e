"""Turning a raw batch into valid events and per-index rejections, so one bad event never costs the
rest of its batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from stagewatch.domain.events import Event
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


def validate_batch(raw_events: list[Any], registry: PipelineRegistry, now: float) -> ValidatedBatch:
    """Check each event on its own; stamp a missing client time with ``now``."""
    batch = ValidatedBatch()
    for index, raw in enumerate(raw_events):
        outcome = _validate_one(index, raw, registry, now)
        if isinstance(outcome, Rejection):
            batch.rejections.append(outcome)
        else:
            batch.events.append(outcome)
    return batch


def _validate_one(index: int, raw: Any, registry: PipelineRegistry, now: float) -> Event | Rejection:
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
    problem = _pipeline_problem(event, registry)
    if problem is not None:
        return Rejection(index, event_id, *problem)
    return event if event.time is not None else event.model_copy(update={"time": now})


def _pipeline_problem(event: Event, registry: PipelineRegistry) -> tuple[str, str] | None:
    pipeline = registry.get(event.pipeline)
    if pipeline is None:
        return "pipeline", f"unknown pipeline {event.pipeline!r}; configured: {', '.join(registry.names())}"
    if event.stage is not None and not pipeline.has_stage(event.stage):
        stages = ", ".join(pipeline.stage_names)
        return "stage", f"stage {event.stage!r} is not in pipeline {pipeline.name!r} (stages: {stages})"
    return None
