"""Errors (``/errors``): failures grouped by fingerprint (stage, exception type and the message with
numbers and ids normalised), each with its count, videos affected, first and last seen and a sparkline;
``/errors/{fingerprint}`` lists the videos of one group."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import AppContext, Ctx
from stagewatch.errors import InvalidShape
from stagewatch.service import dashboard
from stagewatch.web.access import Who
from stagewatch.web.responses import PageRoute, render

router = APIRouter(route_class=PageRoute)

WINDOWS = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
WINDOW_WORDS = {"1h": "last hour", "6h": "last 6 hours", "24h": "last 24 hours", "7d": "last 7 days"}
GROUPS = 200


def _window(request: Request) -> str:
    window = request.query_params.get("window") or "24h"
    if window not in WINDOWS:
        raise InvalidShape(f"window must be one of {', '.join(WINDOWS)}", field="window")
    return window


def _groups(ctx: AppContext, window: str, stage: str) -> dict[str, Any]:
    # The stage is filtered in the query: filtering after the limit could drop a stage's groups.
    return dashboard.error_groups(ctx.db, time.time() - WINDOWS[window], GROUPS, stage=stage or None)


@router.get("/errors", response_class=HTMLResponse)
async def errors_page(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    window, stage = _window(request), request.query_params.get("stage", "").strip()
    found = await run_in_threadpool(_groups, ctx, window, stage)
    stages = sorted({s for p in ctx.registry.pipelines.values() for s in p.stage_names})
    return render(
        request, who, "errors.html", found=found, window=window, stage=stage, windows=WINDOW_WORDS,
        stages=stages,
    )  # fmt: skip


@router.get("/errors/{fingerprint}", response_class=HTMLResponse)
async def error_group_page(request: Request, fingerprint: str, who: Who, ctx: Ctx) -> HTMLResponse:
    found = await run_in_threadpool(dashboard.videos_of_group, ctx.db, fingerprint, 200)
    return render(request, who, "error_group.html", found=found)
