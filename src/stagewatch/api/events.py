"""``POST /v1/events``: a batch of events in, per-event outcome out."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from stagewatch.api.auth import Ingester
from stagewatch.api.batch import batch_response, parse_json, read_capped, records_of
from stagewatch.api.context import Ctx
from stagewatch.service.validation import validate_batch

router = APIRouter(tags=["ingest"])


@router.post(
    "/v1/events",
    summary="Ingest a batch of events",
    description=(
        'Body: a JSON array of events, or `{"events": [...]}`. Valid events are kept even when others '
        "in the batch are rejected. Answers the counts accepted, duplicate (already stored) and rejected, "
        "with the reason for each rejected index. 413 for an over-size body or batch, 400 for malformed "
        "JSON, 422 when the body has the wrong shape or every event was rejected, 503 with `Retry-After` "
        "when the server is behind (too many events waiting to be written; nothing of the batch was "
        "stored, send it again). Scope `ingest`; each item created is audited (`item.create`) with the "
        "token's name and the client's address."
    ),
)
async def post_events(request: Request, ctx: Ctx, who: Ingester) -> JSONResponse:
    ctx.committer.check_room()
    body = await read_capped(request, ctx.settings.max_body_bytes)
    raw_events = records_of(parse_json(body, "events"), "events", ctx.settings.max_batch_events)
    # JSON can only carry a NUL escaped, so a body without "\u0000" needs no per-event search for one.
    batch = validate_batch(raw_events, ctx.registry, time.time(), may_hold_nul=b"\\u0000" in body)
    outcome = await ctx.committer.submit(batch.events, who.actor) if batch.events else None
    return batch_response(outcome, batch.rejections, len(raw_events))
