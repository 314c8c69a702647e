"""In flight (``/inflight``): the runs running now, how long they have run, their last heartbeat,
progress, worker and resources; stuck and runaway runs first, highlighted, each with a stop button.
Live over ``/live/inflight``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import AppContext, Ctx
from stagewatch.service import dashboard
from stagewatch.web.access import Who, session_still_valid, web_state
from stagewatch.web.live import Fragments, event_stream
from stagewatch.web.responses import PageRoute, render

router = APIRouter(route_class=PageRoute)

LIMIT = 200


def _model(ctx: AppContext) -> dict[str, Any]:
    return dashboard.in_flight(ctx.db, ctx.registry, limit=LIMIT)


@router.get("/inflight", response_class=HTMLResponse)
async def inflight_page(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    flights = await run_in_threadpool(_model, ctx)
    return render(request, who, "inflight.html", flights=flights)


@router.get("/live/inflight")
async def inflight_live(request: Request, who: Who, ctx: Ctx) -> StreamingResponse:
    parts = web_state(request).templates.get_template("inflight_parts.html").module

    async def fragments() -> Fragments:
        flights = await run_in_threadpool(_model, ctx)
        return {"inflight-table": str(parts.table(flights, who))}  # type: ignore[attr-defined]

    return event_stream(request, fragments, lambda: session_still_valid(request))
