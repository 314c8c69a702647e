"""Run-time changes to stages: pause and unpause (scope ``operate``), cap runs at once (scope
``admin``, a policy change), and list what is in force (scope ``read``). Each change is audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from stagewatch.api.auth import Admin, Operator, Reader
from stagewatch.api.context import Ctx
from stagewatch.service.control import stages

router = APIRouter(tags=["stages"])


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=10_000)
    pipeline: str | None = None


class LimitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_running: int | None = Field(description="at most this many runs at once; null lifts the cap")
    reason: str = Field(default="", max_length=10_000)
    pipeline: str | None = None


@router.get("/v1/stages", summary="Pauses and caps in force, per stage")
async def list_stages(ctx: Ctx, who: Reader) -> dict[str, Any]:
    return {"overrides": await run_in_threadpool(stages.stage_overrides, ctx.db)}


@router.post("/v1/stages/{stage}/pause", summary="Pause a stage: every new run of it waits (reason required)")
async def pause(stage: str, body: PauseBody, ctx: Ctx, who: Operator) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: stages.pause_stage(
            ctx.db, ctx.registry, stage, body.reason, who.actor, pipeline=body.pipeline
        )
    )


@router.post("/v1/stages/{stage}/unpause", summary="Let new runs of a paused stage begin again")
async def unpause(stage: str, body: PauseBody, ctx: Ctx, who: Operator) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: stages.pause_stage(
            ctx.db, ctx.registry, stage, body.reason, who.actor, paused=False, pipeline=body.pipeline
        )
    )


@router.put("/v1/stages/{stage}/limit", summary="Cap a stage's runs at once (a policy change: scope admin)")
async def limit(stage: str, body: LimitBody, ctx: Ctx, who: Admin) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: stages.limit_stage(
            ctx.db, ctx.registry, stage, body.max_running, body.reason, who.actor, pipeline=body.pipeline
        )
    )
