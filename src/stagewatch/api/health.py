"""Liveness and readiness, for Cloud Run, Kubernetes and load balancers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import AppContext, Ctx
from stagewatch.service.dependencies import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database answers; 503 otherwise. Also reports each dependency's circuit",
    description=(
        "200 while the database answers. Dependencies that are down are listed under `dependencies.down` "
        "but are not fatal: the server can still serve, and work that needs them waits at begin. `ingest` "
        "gives the events and log lines waiting to be written, and the limit past which ingest answers 503."
    ),
)
async def readyz(ctx: Ctx) -> JSONResponse:
    try:
        states = await run_in_threadpool(_check, ctx)
    except Exception as exc:
        detail = {"database": {"ok": False, "error": type(exc).__name__}}
        return JSONResponse({"status": "unavailable", "checks": detail}, status_code=503)
    database = {"ok": True, "dialect": ctx.db.dialect}
    body = {
        "status": "ok",
        "checks": {"database": database},
        "dependencies": states,
        "ingest": _backlogs(ctx),
    }
    return JSONResponse(body)


def _backlogs(ctx: AppContext) -> dict[str, dict[str, int]]:
    """Records waiting to be written, per committer, and the limit past which ingest answers 503."""
    return {name: {"backlog": c.backlog, "limit": c.max_backlog} for name, c in ctx.committers().items()}


def _check(ctx: AppContext) -> dict[str, Any]:
    ctx.db.ping()
    return readiness(ctx.db, ctx.registry.dependencies)
