"""One video (``/videos/{id}``): where it is and why, a timeline of every run, its ordered history with
the control plane's decisions, its logs, errors, dead letters and audit records, and the operator's
buttons. The header and the timeline stay live over ``/live/videos/{id}``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import AppContext, Ctx
from stagewatch.service import dashboard, query
from stagewatch.service.logs import log_filter, search_logs
from stagewatch.web import charts
from stagewatch.web.access import Who, session_still_valid, web_state
from stagewatch.web.live import Fragments, event_stream
from stagewatch.web.responses import PageRoute, render

router = APIRouter(route_class=PageRoute)

LOG_LIMIT = 200
# Heartbeats say only "still alive": hidden from the history unless asked for.
QUIET_TYPES = frozenset({"run.heartbeat"})


def history_detail(entry: Mapping[str, Any]) -> str:
    """One history entry in words: the note, the error, the progress, or what was sent."""
    error = entry.get("error")
    if isinstance(error, Mapping):
        return f"{error.get('type')}: {error.get('message', '')}"
    parts = [str(entry[key]) for key in ("note", "reason") if entry.get(key)]
    if entry.get("progress") is not None:
        parts.append(f"progress {float(entry['progress']):.0%}")
    attrs = entry.get("attrs") or {}
    if attrs:
        parts.append(", ".join(f"{k}={v}" for k, v in attrs.items()))
    for key in ("source", "actor", "worker"):
        if entry.get(key) and entry.get("type") in ("item.created", "run.started"):
            parts.append(f"{key} {entry[key]}")
    return " · ".join(parts)


def _header(ctx: AppContext, item_id: str) -> dict[str, Any]:
    item = query.get_item(ctx.db, item_id, with_history=True)
    item["costs"] = dashboard.costs_of(item.pop("history"))
    return {"item": item, "timeline": _timeline(item)}


def _timeline(item: Mapping[str, Any]) -> Markup:
    bars = dashboard.timeline(item["runs"])
    return charts.gantt(bars, now=time.time(), label=f"Runs of {item['item_id']}")


def _model(ctx: AppContext, item_id: str, log_query: str, beats: bool) -> dict[str, Any]:
    item = query.get_item(ctx.db, item_id, with_history=True)
    history = item["history"]
    item["costs"] = dashboard.costs_of(history)
    shown = history if beats else [e for e in history if e.get("type") not in QUIET_TYPES]
    logs = search_logs(ctx.db, log_filter(log_query or None, item_id=item_id), None, LOG_LIMIT)
    pipeline = ctx.registry.get(item["pipeline"])
    return {
        "item": item, "timeline": _timeline(item), "history": shown, "hidden": len(history) - len(shown),
        "control": dashboard.item_control(ctx.db, item_id), "logs": logs,
        "errors": [run for run in item["runs"] if run.get("error")],
        "stages": list(pipeline.stage_names) if pipeline else [],
    }  # fmt: skip


@router.get("/videos/{item_id:path}", response_class=HTMLResponse)
async def video_page(request: Request, item_id: str, who: Who, ctx: Ctx) -> HTMLResponse:
    log_query = request.query_params.get("logq", "").strip()
    beats = request.query_params.get("beats") == "1"
    model = await run_in_threadpool(_model, ctx, item_id, log_query, beats)
    return render(request, who, "video.html", logq=log_query, beats=beats, detail=history_detail, **model)


@router.get("/live/videos/{item_id:path}")
async def video_live(request: Request, item_id: str, who: Who, ctx: Ctx) -> StreamingResponse:
    parts = web_state(request).templates.get_template("video_parts.html").module

    async def fragments() -> Fragments:
        model = await run_in_threadpool(_header, ctx, item_id)
        return {
            "video-head": str(parts.head(model["item"])),  # type: ignore[attr-defined]
            "video-timeline": str(model["timeline"]),
        }

    return event_stream(request, fragments, lambda: session_still_valid(request))
