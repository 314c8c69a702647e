"""Reading items: one video's story, a filtered list, and the per-stage summary."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from stagewatch.api.auth import Reader
from stagewatch.api.context import Ctx
from stagewatch.domain.statuses import ItemStatus
from stagewatch.errors import InvalidShape
from stagewatch.service import query
from stagewatch.service.time_bounds import time_bound
from stagewatch.store.reads import ItemFilter

router = APIRouter(tags=["items"])


# What GET /v1/items/{id} answers, for the OpenAPI document only: the handler sends JSON it made itself.
_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "field": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
}
_ITEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The item's fields, `runs` in the order they began and, with history=1, `history`: "
        "its events in the order they happened"
    },
    404: {
        "description": "No item has this id",
        "content": {"application/json": {"schema": _ERROR_SCHEMA, "example": {"error": "no item 'vid-1'"}}},
    },
}


@router.get(
    "/v1/items/{item_id:path}",
    summary="One item: status, stage, runs and (history=1) its story",
    response_model=dict[str, Any],
    responses=_ITEM_RESPONSES,
)
async def get_item(item_id: str, who: Reader, ctx: Ctx, history: bool = False) -> Response:
    # The answer is made as JSON bytes by query.get_item_json (orjson), the same bytes FastAPI would
    # make of the dict, without validating and serialising it through pydantic on the event loop.
    body = await run_in_threadpool(query.get_item_json, ctx.db, item_id, with_history=history)
    return Response(body, media_type="application/json")


@router.get("/v1/items", summary="Items, newest-updated first, with filters and a cursor")
async def list_items(
    who: Reader,
    ctx: Ctx,
    status: Annotated[list[str] | None, Query(description="repeat or comma-separate")] = None,
    stage: str | None = None,
    account: str | None = None,
    scenario: str | None = None,
    pipeline: str | None = None,
    updated_since: Annotated[str | None, Query(description="epoch seconds or ISO 8601")] = None,
    prefix: Annotated[str | None, Query(description="item id prefix")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=query.MAX_PAGE)] = 50,
) -> dict[str, Any]:
    where = ItemFilter(
        status=_parse_statuses(status),
        stage=stage,
        account=account,
        scenario=scenario,
        pipeline=pipeline,
        updated_since=time_bound(updated_since, "updated_since"),
        id_prefix=prefix,
    )
    return await run_in_threadpool(query.list_items, ctx.db, where, cursor, limit)


@router.get("/v1/summary", summary="Per stage: queued, running, waiting, failed, done, oldest queued age")
async def summary(who: Reader, ctx: Ctx) -> dict[str, Any]:
    return await run_in_threadpool(query.summary, ctx.db, ctx.registry)


def _parse_statuses(values: list[str] | None) -> list[str] | None:
    names = [name.strip() for value in values or [] for name in value.split(",") if name.strip()]
    known = {status.value for status in ItemStatus}
    unknown = [name for name in names if name not in known]
    if unknown:
        choices = ", ".join(status.value for status in ItemStatus)
        raise InvalidShape(f"unknown status {unknown[0]!r}; one of: {choices}", field="status")
    return names or None
