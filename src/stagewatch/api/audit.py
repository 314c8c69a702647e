"""``GET /v1/audit``: who did what, when, to what, why and from where; newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from stagewatch.api.auth import Reader
from stagewatch.api.context import Ctx
from stagewatch.service import audit

router = APIRouter(tags=["audit"])

_TIME_HELP = "epoch seconds or ISO 8601, inclusive"


@router.get("/v1/audit", summary="The audit trail, newest first, by actor, action, target and time")
async def list_audit(
    who: Reader,
    ctx: Ctx,
    actor: Annotated[str | None, Query(description="a token's name, or cli:<user>")] = None,
    action: Annotated[str | None, Query(description="e.g. item.create, token.create, item.cancel")] = None,
    target: Annotated[
        str | None, Query(description="what the action was on: an item id, a token name")
    ] = None,
    since: Annotated[str | None, Query(description=_TIME_HELP)] = None,
    until: Annotated[str | None, Query(description=_TIME_HELP)] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 100,
) -> dict[str, Any]:
    where = audit.audit_filter(actor=actor, action=action, target=target, since=since, until=until)
    return await run_in_threadpool(audit.audit_page, ctx.db, where, cursor, limit)
