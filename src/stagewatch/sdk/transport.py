"""How a batch reaches the server: one POST over a keep-alive httpx connection, and what the answer
means for the batch. The exporter decides what to do next; this module only sends and classifies.

The httpx transport is swappable (``httpx.MockTransport`` in a test, ``httpx.ASGITransport``-style
in-process servers through a sync wrapper), exactly as httpx's own clients allow.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from stagewatch import __version__
from stagewatch.sdk.backoff import parse_retry_after
from stagewatch.sdk.payloads import Record


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # the server decided on every record (2xx, or 422 "all rejected")
    REFUSED = "refused"  # another 4xx: the same batch would fail again, so it is dropped
    RETRY = "retry"  # 408, 429, 5xx or a network error: try again later
    TOO_LARGE = "too_large"  # 413: the batch is over the server's caps; send it in halves
    MISSING = "missing"  # 404: no such endpoint (an older server)


@dataclass(frozen=True, slots=True)
class Answer:
    """The server's answer to one batch, as the exporter needs it."""

    verdict: Verdict
    status: int | None = None
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    errors: tuple[dict[str, Any], ...] = ()
    retry_after: float | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Reply:
    """The server's answer to one control-plane call: ``status`` None means no answer at all (network
    error, timeout); ``body`` is the parsed JSON, None when it was not JSON."""

    status: int | None
    body: Any = None
    detail: str = ""


_RETRY_STATUSES = frozenset({408, 429})


class HttpSender:
    """POSTs JSON bodies to ``{url}{path}`` with a bearer token, and classifies each answer."""

    def __init__(
        self, url: str, token: str | None, transport: httpx.BaseTransport | None, timeout: float
    ) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._transport = transport
        self._timeout = timeout
        self._http = self._new_client()

    def _new_client(self) -> httpx.Client:
        headers = {"content-type": "application/json", "user-agent": f"stagewatch-sdk/{__version__}"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        return httpx.Client(headers=headers, transport=self._transport, timeout=self._timeout)

    def post(self, path: str, body: bytes) -> Answer:
        """Send one batch; network failures become a ``RETRY`` answer, never an exception."""
        try:
            response = self._http.post(self._url + path, content=body)
        except httpx.HTTPError as exc:
            return Answer(Verdict.RETRY, detail=f"{type(exc).__name__}: {exc}")
        return classify(response)

    def call(self, path: str, body: bytes, timeout: float) -> Reply:
        """One control-plane request (begin, heartbeat, complete) on the same pooled connections as the
        batches, with its own, shorter ``timeout``. Never raises: no answer is ``Reply(None)``."""
        try:
            response = self._http.post(self._url + path, content=body, timeout=timeout)
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: the client was closed meanwhile
            return Reply(None, detail=f"{type(exc).__name__}: {exc}")
        parsed = _json_or_none(response)
        return Reply(response.status_code, parsed, _detail(response, parsed))

    def after_fork(self) -> None:
        """A forked child must not share the parent's pooled sockets: start a fresh connection pool."""
        self._http = self._new_client()

    def close(self) -> None:
        self._http.close()


def classify(response: httpx.Response) -> Answer:
    """What an HTTP answer means for the batch that was sent."""
    status = response.status_code
    body = _json_or_none(response)
    if 200 <= status < 300 or (status == 422 and isinstance(body, dict) and "accepted" in body):
        return _delivered(status, body if isinstance(body, dict) else {})
    if status in _RETRY_STATUSES or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return Answer(Verdict.RETRY, status, retry_after=retry_after, detail=_detail(response, body))
    verdict = {413: Verdict.TOO_LARGE, 404: Verdict.MISSING}.get(status, Verdict.REFUSED)
    return Answer(verdict, status, detail=_detail(response, body))


def _delivered(status: int, body: dict[str, Any]) -> Answer:
    errors = body.get("errors")
    return Answer(
        Verdict.DELIVERED,
        status,
        accepted=_int(body.get("accepted")),
        duplicate=_int(body.get("duplicate")),
        rejected=_int(body.get("rejected")),
        errors=tuple(e for e in errors if isinstance(e, dict)) if isinstance(errors, list) else (),
    )


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _detail(response: httpx.Response, body: Any) -> str:
    if isinstance(body, dict) and "error" in body:
        return f"HTTP {response.status_code}: {body.get('error')} (field {body.get('field')})"
    return f"HTTP {response.status_code}: {response.text[:300]}"


def encode(records: Sequence[Record]) -> tuple[bytes, list[Record], list[Record]]:
    """The JSON body for ``records``; with the records it holds and those that cannot be JSON at all
    (a circular structure, a NaN in ``params``), which are left out rather than sinking the batch."""
    try:
        return dumps(records), list(records), []
    except (TypeError, ValueError):
        good: list[Record] = []
        bad: list[Record] = []
        for record in records:
            (good if _encodable(record) else bad).append(record)
        return dumps(good), good, bad


# One encoder for every batch: json.dumps with options would build a new one on every call.
_ENCODER = json.JSONEncoder(default=str, allow_nan=False, separators=(",", ":"))


def dumps(value: Any) -> bytes:
    """Compact JSON bytes, with ``str()`` for what JSON has no type for; NaN raises ``ValueError``."""
    return _ENCODER.encode(value).encode()


def _encodable(record: Record) -> bool:
    try:
        dumps(record)
    except (TypeError, ValueError):
        return False
    return True
