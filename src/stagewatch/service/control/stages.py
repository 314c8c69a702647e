"""Run-time changes to a stage, for the 3 a.m. moment when Instagram is down or a stage burns money:
pause it (every ``begin`` of the stage answers wait, naming who paused it and why; running work goes on)
and cap its runs at once. Every change is audited (``stage.pause``, ``stage.unpause``, ``stage.limit``)."""

from __future__ import annotations

import time
from typing import Any

from stagewatch.domain.events import iso
from stagewatch.domain.pipeline import Pipeline, PipelineRegistry
from stagewatch.errors import InvalidShape
from stagewatch.store import audit, overrides
from stagewatch.store.audit import Actor
from stagewatch.store.engine import Database


def _stage_of(registry: PipelineRegistry, pipeline_name: str | None, stage: str) -> Pipeline:
    pipeline = registry.get(pipeline_name)
    if pipeline is None:
        raise InvalidShape(
            f"unknown pipeline {pipeline_name!r}; configured: {', '.join(registry.names())}", field="pipeline"
        )
    if not pipeline.has_stage(stage):
        stages = ", ".join(pipeline.stage_names)
        raise InvalidShape(
            f"stage {stage!r} is not in pipeline {pipeline.name!r} (stages: {stages})", field="stage"
        )
    return pipeline


def pause_stage(
    db: Database, registry: PipelineRegistry, stage: str, reason: str, who: Actor,
    *, paused: bool = True, pipeline: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Pause (or, with ``paused=False``, resume) every new run of ``stage``."""
    target = _stage_of(registry, pipeline, stage)
    if paused and not reason.strip():
        raise InvalidShape("a reason is required to pause a stage", field="reason")
    now = time.time()
    with db.writer.begin() as conn:
        overrides.set_override(
            conn,
            target.name,
            stage,
            paused=paused,
            reason=reason.strip() or None,
            actor=who.name,
            updated_at=now,
        )
        audit.record(
            conn, at=now, actor=who.name, action="stage.pause" if paused else "stage.unpause",
            target=f"{target.name}/{stage}", reason=reason or None, source=who.source,
        )  # fmt: skip
    return {"pipeline": target.name, "stage": stage, "paused": paused}


def limit_stage(
    db: Database, registry: PipelineRegistry, stage: str, max_running: int | None, reason: str, who: Actor,
    *, pipeline: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Cap ``stage`` at ``max_running`` runs at once (None lifts the cap)."""
    target = _stage_of(registry, pipeline, stage)
    if max_running is not None and max_running < 0:
        raise InvalidShape(
            "max_running must be 0 or more (0 stops new runs, like a pause)", field="max_running"
        )
    now = time.time()
    with db.writer.begin() as conn:
        overrides.set_override(
            conn, target.name, stage, max_running=max_running, actor=who.name, updated_at=now
        )
        audit.record(
            conn, at=now, actor=who.name, action="stage.limit", target=f"{target.name}/{stage}",
            params={"max_running": max_running}, reason=reason or None, source=who.source,
        )  # fmt: skip
    return {"pipeline": target.name, "stage": stage, "max_running": max_running}


def stage_overrides(db: Database) -> list[dict[str, Any]]:
    with db.reader.connect() as conn:
        rows = overrides.all_overrides(conn)
    return [{**row, "updated_at": iso(row["updated_at"])} for row in rows]
