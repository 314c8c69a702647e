"""The one place where errors become HTTP responses. Every body is ``{"error": ..., "field": ...}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from stagewatch.errors import (
    ConfigError,
    Conflict,
    Forbidden,
    InputError,
    InvalidShape,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    StoreUnavailable,
    Unauthenticated,
)

log = logging.getLogger("stagewatch.api")

STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (PayloadTooLarge, 413),
    (InvalidShape, 422),
    (Conflict, 409),
    (InputError, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Overloaded, 503),
    (StoreUnavailable, 503),
    (OperationalError, 503),
    (ConfigError, 500),
)
# RFC 6750: a 401 names the scheme the client should use.
HEADERS_OF: dict[int, dict[str, str]] = {401: {"WWW-Authenticate": "Bearer"}}


def error_body(message: str, field: str | None = None) -> dict[str, str | None]:
    return {"error": message, "field": field}


def install_error_handlers(app: FastAPI) -> None:
    for exc_type, status in STATUS_OF:
        app.add_exception_handler(exc_type, _handler(status))
    app.add_exception_handler(RequestValidationError, _validation_handler)


def _handler(status: int):  # type: ignore[no-untyped-def]
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if status >= 500:
            log.warning("api.error path=%s status=%d error=%s", request.url.path, status, exc)
        message = "the database is unavailable" if isinstance(exc, OperationalError) else str(exc)
        body = error_body(message, getattr(exc, "field", None))
        return JSONResponse(body, status_code=status, headers=_headers(status, exc))

    return handle


def _headers(status: int, exc: Exception) -> dict[str, str] | None:
    if isinstance(exc, Overloaded):
        # RFC 9110: how long the sender should wait; the SDK and the CLI both honour it.
        return {"Retry-After": str(exc.retry_after)}
    return HEADERS_OF.get(status)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"] if part not in ("query", "body", "path"))
    return JSONResponse(error_body(f"{field}: {first['msg']}", field), status_code=422)
