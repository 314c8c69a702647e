"""What every batch-ingest endpoint shares: reading a capped body, parsing JSON, finding the array of
records, and the per-record answer ``{accepted, duplicate, rejected, errors}``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse

from stagewatch.errors import InputError, InvalidShape, PayloadTooLarge
from stagewatch.service.ingest import BatchOutcome
from stagewatch.service.validation import Rejection


async def read_capped(request: Request, cap: int) -> bytes:
    """The request body; ``PayloadTooLarge`` as soon as it is known to be over ``cap`` bytes."""
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


def parse_json(body: bytes, noun: str = "events") -> Any:
    if not body.strip():
        raise InputError(f"the body is empty; send a JSON array of {noun}", field="body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc}", field="body") from None


def records_of(document: Any, key: str, max_records: int) -> list[Any]:
    """The array of records: the document itself, or its ``key`` member (``{"events": [...]}``)."""
    records = document.get(key) if isinstance(document, dict) else document
    if not isinstance(records, list):
        article = "an" if key[:1] in "aeiou" else "a"
        raise InvalidShape(
            f"the body must be a JSON array of {key} or an object with {article} '{key}' array", field=key
        )
    if len(records) > max_records:
        raise PayloadTooLarge(f"batch of {len(records)} {key} is over the limit of {max_records}", field=key)
    return records


def batch_response(outcome: BatchOutcome | None, rejections: Sequence[Rejection], total: int) -> JSONResponse:
    """200 with the counts and each rejected index's reason; 422 when every record was rejected."""
    answer = {
        "accepted": outcome.accepted if outcome else 0,
        "duplicate": outcome.duplicate if outcome else 0,
        "rejected": len(rejections),
        "errors": [r.as_dict() for r in rejections],
    }
    all_rejected = total > 0 and len(rejections) == total
    return JSONResponse(answer, status_code=422 if all_rejected else 200)
