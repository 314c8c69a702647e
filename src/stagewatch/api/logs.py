"""``POST /v1/logs`` (workers ship log lines) and ``GET /v1/logs`` (search them)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from stagewatch.api.auth import Ingester, Reader
from stagewatch.api.batch import batch_response, parse_json, read_capped, records_of
from stagewatch.api.context import Ctx
from stagewatch.service import logs

router = APIRouter(tags=["logs"])


@router.post(
    "/v1/logs",
    summary="Ingest a batch of log lines",
    description=(
        'Body: a JSON array of log records, or `{"logs": [...]}`, up to 1,000. Each needs a client-made '
        "`id` (re-sending it is harmless) and a `message`; `time` defaults to the server's clock and "
        "`level` to info. Answers like `POST /v1/events`: the counts accepted, duplicate and rejected, with "
        "the reason for each rejected index. 413 for an over-size body or batch, 400 for malformed JSON, "
        "422 when the body has the wrong shape or every record was rejected, 503 with `Retry-After` when "
        "too many log lines are waiting to be written."
    ),
)
async def post_logs(request: Request, ctx: Ctx, who: Ingester) -> JSONResponse:
    ctx.log_committer.check_room()
    body = await read_capped(request, ctx.settings.max_body_bytes)
    raw_records = records_of(parse_json(body, "log records"), "logs", ctx.settings.max_batch_logs)
    batch = logs.validate_logs(raw_records, time.time())
    outcome = await ctx.log_committer.submit(batch.records) if batch.records else None
    return batch_response(outcome, batch.rejections, len(raw_records))


@router.get("/v1/logs", summary="Search log lines, newest first, by words, video, run, stage, level, time")
async def search_logs(
    who: Reader,
    ctx: Ctx,
    q: Annotated[
        str | None,
        Query(
            description="words that must all be in the message or exception text; punctuation separates "
            "words (vid-42 is the words vid and 42, next to each other); the last word may be the start of "
            "a longer one. A query with no letter or digit matches every line."
        ),
    ] = None,
    item_id: str | None = None,
    run_id: str | None = None,
    stage: str | None = None,
    level: Annotated[str | None, Query(description="minimum level: warning gives warning and up")] = None,
    since: Annotated[str | None, Query(description="epoch seconds or ISO 8601, inclusive")] = None,
    until: Annotated[str | None, Query(description="epoch seconds or ISO 8601, inclusive")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=logs.MAX_PAGE)] = 100,
) -> dict[str, Any]:
    where = logs.log_filter(
        q, item_id=item_id, run_id=run_id, stage=stage, level=level, since=since, until=until
    )
    return await run_in_threadpool(logs.search_logs, ctx.db, where, cursor, limit)
