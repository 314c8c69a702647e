"""The overview (``/``): the pipeline drawn as its stages in order, each with its counts, the age of its
oldest queued video and its last hour, and what needs attention now. Live over ``/live/overview``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from stagewatch.api.context import AppContext, Ctx
from stagewatch.service import dashboard
from stagewatch.web.access import Who, session_still_valid, web_state
from stagewatch.web.live import Fragments, event_stream
from stagewatch.web.responses import PageRoute, render

router = APIRouter(route_class=PageRoute)

# The counts each stage card shows, in reading order, with the words people use.
STAGE_COUNTS = (
    ("queued", "queued"), ("running", "running"), ("waiting", "waiting"), ("failed", "failed"),
    ("dead_lettered", "dead-lettered"), ("stuck", "stuck"), ("done", "done"),
)  # fmt: skip
# Counts that mean someone should look.
TROUBLE = frozenset({"failed", "dead_lettered", "stuck"})
# How long after the last sender was turned away the overview still says ingest is behind.
OVERLOAD_SHOWN_FOR = 60.0


def _model(ctx: AppContext) -> dict[str, Any]:
    overview = dashboard.stage_overview(ctx.db, ctx.registry)
    flights = dashboard.in_flight(ctx.db, ctx.registry, limit=50)
    flagged = [run for run in flights["runs"] if run["stuck"] or run["runaway"]]
    return {"overview": overview, "flagged": flagged, "running_total": flights["total"],
            "problems": ingest_problems(ctx) + problems(overview, flagged)}  # fmt: skip


def ingest_problems(ctx: AppContext) -> list[dict[str, Any]]:
    """This server turning senders away for being behind (in the last minute): first, since what is
    refused is not stored until the senders send it again."""
    found = []
    for committer in ctx.committers().values():
        if committer.refused_within(OVERLOAD_SHOWN_FOR):
            refused = f"{committer.stats.shed:,} request{'' if committer.stats.shed == 1 else 's'}"
            found.append({
                "kind": "overloaded", "badge": "ingest behind", "href": "/readyz",
                "text": f"This server is turning senders away: {committer.backlog:,} {committer.unit} "
                f"waiting to be written (limit {committer.max_backlog:,}); {refused} refused so far, "
                "which the senders send again",
            })  # fmt: skip
    return found


def problems(overview: dict[str, Any], flagged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What needs attention, most serious first: runaway and stuck runs, stuck videos, dead letters,
    failures, a busy error rate. Each problem links to the page that shows it."""
    found: list[dict[str, Any]] = [
        {"kind": "runaway" if run["runaway"] else "stuck", "text": _flagged_text(run), "href": "/inflight"}
        for run in flagged
    ]
    for pipeline in overview["pipelines"]:
        for row in pipeline["stages"]:
            found.extend(_stage_problems(row))
    return found


def _flagged_text(run: dict[str, Any]) -> str:
    why = run["runaway_reason"] if run["runaway"] else run["stuck_reason"]
    return f"{run['stage']} run of {run['item_id']}: {why}"


def _stage_problems(row: dict[str, Any]) -> list[dict[str, Any]]:
    stage, found = row["stage"], []
    where = urlencode({"stage": stage})
    if row.get("stuck"):
        found.append({"kind": "stuck", "text": f"{row['stuck']} stuck at {stage}",
                      "href": f"/videos?{where}&stuck=1"})  # fmt: skip
    if row.get("dead_lettered"):
        found.append({"kind": "dead_lettered", "text": f"{row['dead_lettered']} dead-lettered at {stage}",
                      "href": f"/dead-letters?{where}"})  # fmt: skip
    if row.get("failed"):
        found.append({"kind": "failed", "text": f"{row['failed']} failed at {stage}",
                      "href": f"/videos?{where}&status=failed"})  # fmt: skip
    rate = row.get("error_rate")
    if rate is not None and rate >= 0.2 and row.get("failed_last_hour", 0) >= 3:
        found.append({"kind": "failed", "href": f"/errors?{where}",
                      "text": f"{stage}: {rate:.0%} of runs failed in the last hour"})  # fmt: skip
    return found


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    model = await run_in_threadpool(_model, ctx)
    return render(request, who, "overview.html", counts=STAGE_COUNTS, trouble=TROUBLE, **model)


@router.get("/live/overview")
async def overview_live(request: Request, who: Who, ctx: Ctx) -> StreamingResponse:
    parts = web_state(request).templates.get_template("overview_parts.html").module

    async def fragments() -> Fragments:
        model = await web_state(request).overview.get(lambda: _model(ctx))
        return {
            "overview-stages": str(parts.stages(model["overview"], STAGE_COUNTS, TROUBLE)),  # type: ignore[attr-defined]
            "overview-problems": str(parts.problems(model["problems"])),  # type: ignore[attr-defined]
        }

    return event_stream(request, fragments, lambda: session_still_valid(request))
