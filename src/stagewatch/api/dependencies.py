"""Dependency health: ``GET /v1/dependencies`` (each circuit) and ``POST /v1/dependencies/{name}/health``
(a worker's report, for any kind of dependency, through the same circuit breaker as a probe)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from stagewatch.api.auth import Ingester, Reader
from stagewatch.api.context import Ctx
from stagewatch.domain.circuit import Observation
from stagewatch.service import dependencies

router = APIRouter(tags=["dependencies"])


class HealthReport(BaseModel):
    ok: bool = Field(strict=True, description="whether the dependency worked for this worker")
    message: str | None = Field(default=None, description="what was seen, e.g. the error")


@router.get(
    "/v1/dependencies",
    summary="Each dependency's circuit: state, since, failures, last message, last check",
    description=(
        "Every dependency declared under `[dependencies]` or named by a stage's `depends_on` (undeclared "
        "names are `event` dependencies, up until workers report them down). `state` is `up`, `down` "
        "(open: work that needs it waits), `half_open` (a probe decides) or `unknown` (never observed; "
        "not down)."
    ),
)
async def list_dependencies(ctx: Ctx, who: Reader) -> dict[str, Any]:
    return await run_in_threadpool(dependencies.list_dependencies, ctx.db, ctx.registry, time.time())


@router.post(
    "/v1/dependencies/{name}/health",
    summary="A worker reports whether a dependency works",
    description=(
        'Body: `{"ok": false, "message": "..."}`. Moves the circuit like a probe result: '
        "`failure_threshold` consecutive failures open it; a success closes it. 404 for a name that is "
        "neither declared nor needed by a stage. Answers the dependency's state after the report."
    ),
)
async def report_health(name: str, body: HealthReport, ctx: Ctx, who: Ingester) -> dict[str, Any]:
    seen = Observation(body.ok, time.time(), body.message)
    specs = ctx.registry.dependencies
    state = await run_in_threadpool(dependencies.report, ctx.db, specs, name, seen, who.name)
    return dependencies.dependency_view(
        specs[name], state, dependencies.needed_by(ctx.registry).get(name, [])
    )
