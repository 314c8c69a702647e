"""Logs (``/logs``): every worker's log lines, newest first, searched by words (the full-text index),
video, stage, level and time."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import AppContext, Ctx
from stagewatch.errors import InvalidShape
from stagewatch.service.logs import LEVELS, log_filter, search_logs
from stagewatch.web.access import Who
from stagewatch.web.responses import PageRoute, render

router = APIRouter(route_class=PageRoute)

PAGE_SIZE = 100
SINCE = {
    "": "any time",
    "15m": "last 15 minutes",
    "1h": "last hour",
    "24h": "last 24 hours",
    "7d": "last 7 days",
}
SINCE_SECONDS = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
FIELDS = ("q", "item_id", "stage", "level", "since")


def _params(request: Request) -> dict[str, str]:
    params = {name: request.query_params.get(name, "").strip() for name in FIELDS}
    if params["since"] and params["since"] not in SINCE_SECONDS:
        raise InvalidShape(f"time range must be one of {', '.join(SINCE_SECONDS)}", field="since")
    return {name: value for name, value in params.items() if value}


def _search(ctx: AppContext, params: dict[str, str], cursor: str | None) -> dict[str, Any]:
    since = time.time() - SINCE_SECONDS[params["since"]] if params.get("since") else None
    where = log_filter(
        params.get("q"), item_id=params.get("item_id"), stage=params.get("stage"), level=params.get("level"),
        since=since,
    )  # fmt: skip
    return search_logs(ctx.db, where, cursor, PAGE_SIZE)


@router.get("/logs", response_class=HTMLResponse)
async def logs_page(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    params, cursor = _params(request), request.query_params.get("cursor") or None
    found = await run_in_threadpool(_search, ctx, params, cursor)
    stages = sorted({s for p in ctx.registry.pipelines.values() for s in p.stage_names})
    return render(
        request, who, "logs.html", params=params, cursor=cursor, found=found, levels=list(LEVELS),
        since_words=SINCE, stages=stages,
    )  # fmt: skip
