"""Audit (``/audit``): who did what, when, to which video, why and with which parameters, newest first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import Ctx
from stagewatch.service.audit import audit_filter, audit_page
from stagewatch.web.access import Who
from stagewatch.web.responses import PageRoute, render

router = APIRouter(route_class=PageRoute)

PAGE_SIZE = 100
FIELDS = ("actor", "action", "target", "since", "until")
ACTIONS = ("item.cancel", "item.resume", "dlq.replay", "dlq.discard", "run.stop", "item.create",
           "token.create", "token.revoke", "stage.pause", "stage.unpause", "stage.limit")  # fmt: skip


@router.get("/audit", response_class=HTMLResponse)
async def audit_list(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    params = {name: request.query_params.get(name, "").strip() for name in FIELDS}
    params = {name: value for name, value in params.items() if value}
    cursor = request.query_params.get("cursor") or None
    where = audit_filter(**params)
    found = await run_in_threadpool(audit_page, ctx.db, where, cursor, PAGE_SIZE)
    return render(request, who, "audit.html", params=params, cursor=cursor, found=found, actions=ACTIONS)
