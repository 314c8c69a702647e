"""The CLI's side of the HTTP API: one small client, and one exception for everything that went wrong.

Every failure (server down, timeout, 404, 5xx, a body that is not JSON) becomes a ``ClientError`` whose
message is one line a person can act on, and whose ``exit_code`` follows the CLI's convention: 1 when the
operation failed (unreachable, not found, server error), 2 when the server says the input was bad.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from stagewatch.sdk.backoff import parse_retry_after

Json = dict[str, Any]
Params = Mapping[str, str | int | Sequence[str] | None]

DEFAULT_TIMEOUT = 30.0
# Waits between attempts when a batch meets a connection error or a 5xx; ingest is idempotent on event id.
RETRY_DELAYS = (0.5, 1.0, 2.0)
# A server that is behind answers 503 with Retry-After: not a failure, so a batch is sent again after
# each wait it asks for (these count apart from RETRY_DELAYS), for up to this many seconds in all.
OVERLOAD_PATIENCE = 600.0
_BAD_INPUT_STATUSES = frozenset({400, 413, 422})


class ClientError(Exception):
    """A request to the server failed. ``status`` is the HTTP status when the server answered at all."""

    def __init__(
        self, message: str, *, exit_code: int = 1, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Worth sending again: the server was unreachable, overloaded or failed on its side."""
        return self.status is None or self.status == 429 or self.status >= 500


class StagewatchClient:
    """Talks to a running ``stagewatch serve``. Use as a context manager so the connection is closed."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> StagewatchClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    def get_item(self, item_id: str, *, history: bool = True) -> Json:
        """One item with its runs and (``history``) its ordered events. 404 becomes ``no item 'X'``."""
        path = f"/v1/items/{quote(item_id, safe='')}"
        return self._json(self._send("GET", path, params={"history": "1" if history else "0"}))

    def list_items(self, filters: Params, *, cursor: str | None = None, limit: int = 50) -> Json:
        """One page of items, newest-updated first: ``{"items": [...], "next_cursor": str | None}``."""
        params = {name: value for name, value in filters.items() if value not in (None, "", ())}
        params.update({"limit": limit, **({"cursor": cursor} if cursor else {})})
        return self._json(self._send("GET", "/v1/items", params=params))

    def summary(self) -> Json:
        """Per pipeline and stage: how many items are in each status, and the oldest queued age."""
        return self._json(self._send("GET", "/v1/summary"))

    def logs(self, params: Params) -> Json:
        """One page of log lines, newest first: ``{"logs": [...], "next_cursor": str | None}``."""
        wanted = {name: value for name, value in params.items() if value not in (None, "")}
        return self._json(self._send("GET", "/v1/logs", params=wanted))

    def audit(self, params: Params) -> Json:
        """One page of the audit trail, newest first: ``{"audit": [...], "next_cursor": str | None}``."""
        wanted = {name: value for name, value in params.items() if value not in (None, "")}
        return self._json(self._send("GET", "/v1/audit", params=wanted))

    def post_json(self, path: str, body: Json) -> Json:
        """POST a JSON body to a control endpoint (cancel, resume, replay, ...) and return the answer."""
        return self._json(self._send("POST", path, json=body))

    def put_json(self, path: str, body: Json) -> Json:
        return self._json(self._send("PUT", path, json=body))

    def get_json(self, path: str, params: Params | None = None) -> Json:
        wanted = {name: value for name, value in (params or {}).items() if value not in (None, "")}
        return self._json(self._send("GET", path, params=wanted))

    def post_events(self, body: bytes) -> Json:
        """Send one batch (a JSON array, already encoded). Answers accepted, duplicate, rejected, errors."""
        headers = {"Content-Type": "application/json"}
        response = self._send("POST", "/v1/events", content=body, headers=headers, outcome_on_422=True)
        return self._json(response)

    def post_events_retrying(
        self,
        body: bytes,
        *,
        delays: Sequence[float] = RETRY_DELAYS,
        patience: float = OVERLOAD_PATIENCE,
        notify: Callable[[str], None] = lambda note: None,
    ) -> Json:
        """``post_events``, sent again after each of ``delays`` while the failure is a connection error
        or a 5xx. An answer with ``Retry-After`` (the server is behind) is waited out as it says
        instead, up to ``patience`` seconds in all. ``notify`` hears about each retry."""
        failures = 0
        patient_for = 0.0
        while True:
            try:
                return self.post_events(body)
            except ClientError as exc:
                if not exc.retryable:
                    raise
                if exc.retry_after is not None and patient_for + exc.retry_after <= patience:
                    delay = max(exc.retry_after, RETRY_DELAYS[0])  # "Retry-After: 0" must not spin
                    patient_for += delay
                elif failures < len(delays):
                    delay = delays[failures]
                    failures += 1
                else:
                    raise
                notify(f"retrying in {delay:g}s: {exc}")
            time.sleep(delay)

    def _send(self, method: str, path: str, *, outcome_on_422: bool = False, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ClientError(f"the stagewatch server at {self.base_url} did not answer in time") from None
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise ClientError(_unreachable(self.base_url, exc)) from None
        if response.is_success or (outcome_on_422 and _is_batch_outcome(response)):
            return response
        raise _http_error(self.base_url, response)

    def _json(self, response: httpx.Response) -> Json:
        try:
            document = response.json()
        except ValueError:
            raise ClientError(f"{self.base_url} answered with something that is not JSON") from None
        if not isinstance(document, dict):
            raise ClientError(f"{self.base_url} answered with JSON of an unexpected shape")
        return document


def _unreachable(base_url: str, exc: Exception) -> str:
    reason = str(exc).strip() or type(exc).__name__
    return (
        f"cannot reach the stagewatch server at {base_url} ({reason}); is `stagewatch serve` running "
        "there? Set --url or STAGEWATCH_URL"
    )


def _is_batch_outcome(response: httpx.Response) -> bool:
    """A 422 to a batch where every event was rejected still carries the per-event reasons."""
    if response.status_code != 422:
        return False
    try:
        return "accepted" in response.json()
    except ValueError:
        return False


def _http_error(base_url: str, response: httpx.Response) -> ClientError:
    status = response.status_code
    message = _server_message(response)
    if status == 404 and message:
        return ClientError(message, status=status)
    exit_code = 2 if status in _BAD_INPUT_STATUSES else 1
    detail = message or response.reason_phrase or "no detail"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return ClientError(
        f"{base_url} answered {status}: {detail}", exit_code=exit_code, status=status, retry_after=retry_after
    )


def _server_message(response: httpx.Response) -> str:
    """The ``error`` of stagewatch's ``{"error": ..., "field": ...}`` body, or empty for other bodies."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return ""
