"""Liveness and readiness, for Cloud Run, Kubernetes and load balancers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import Ctx

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database answers; 503 otherwise")
async def readyz(ctx: Ctx) -> JSONResponse:
    try:
        await run_in_threadpool(ctx.db.ping)
    except Exception as exc:
        detail = {"database": {"ok": False, "error": type(exc).__name__}}
        return JSONResponse({"status": "unavailable", "checks": detail}, status_code=503)
    return JSONResponse({"status": "ok", "checks": {"database": {"ok": True, "dialect": ctx.db.dialect}}})
