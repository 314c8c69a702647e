"""``POST /v1/events``: a batch of events in, per-event outcome out."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from stagewatch.api.context import Ctx
from stagewatch.errors import InputError, InvalidShape, PayloadTooLarge
from stagewatch.service.validation import validate_batch

router = APIRouter(tags=["ingest"])


@router.post(
    "/v1/events",
    summary="Ingest a batch of events",
    description=(
        'Body: a JSON array of events, or `{"events": [...]}`. Valid events are kept even when others '
        "in the batch are rejected. Answers the counts accepted, duplicate (already stored) and rejected, "
        "with the reason for each rejected index. 413 for an over-size body or batch, 400 for malformed "
        "JSON, 422 when the body has the wrong shape or every event was rejected."
    ),
)
async def post_events(request: Request, ctx: Ctx) -> JSONResponse:
    body = await _read_capped(request, ctx.settings.max_body_bytes)
    raw_events = _events_of(_parse_json(body), ctx.settings.max_batch_events)
    batch = validate_batch(raw_events, ctx.registry, time.time())
    outcome = await ctx.committer.submit(batch.events) if batch.events else None
    answer = {
        "accepted": outcome.accepted if outcome else 0,
        "duplicate": outcome.duplicate if outcome else 0,
        "rejected": len(batch.rejections),
        "errors": [r.as_dict() for r in batch.rejections],
    }
    all_rejected = bool(raw_events) and not batch.events
    return JSONResponse(answer, status_code=422 if all_rejected else 200)


async def _read_capped(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {cap} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise PayloadTooLarge(f"request body is over the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise InputError("the body is empty; send a JSON array of events", field="body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc}", field="body") from None


def _events_of(document: Any, max_events: int) -> list[Any]:
    events = document.get("events") if isinstance(document, dict) else document
    if not isinstance(events, list):
        raise InvalidShape(
            "the body must be a JSON array of events or an object with an 'events' array", field="events"
        )
    if len(events) > max_events:
        raise PayloadTooLarge(
            f"batch of {len(events)} events is over the limit of {max_events}", field="events"
        )
    return events
