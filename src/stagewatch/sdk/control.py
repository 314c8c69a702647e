"""The SDK's side of the control plane (``docs/guardrails.md``): ``begin``, ``heartbeat`` and ``complete``
over the client's pooled connections, each answer checked, failures classified once here.

Unlike telemetry these calls are synchronous: a run cannot start before the server decided. So they
are short (a few seconds at most, a couple of quick retries for a 5xx or a network error), and after a
failure ``begin`` is not tried again for a while: a server that is down, or too old to have the
endpoint, must not add a timeout to every stage of every worker.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any
from urllib.parse import quote

from stagewatch.sdk.decisions import Action, Decision, parse_actions, parse_decision
from stagewatch.sdk.diagnostics import sdk_io
from stagewatch.sdk.payloads import Record
from stagewatch.sdk.transport import HttpSender, Reply, dumps

BEGIN = "/v1/runs/begin"
HEARTBEAT = "/v1/runs/heartbeat"

MAX_CALL_TIMEOUT = 5.0  # seconds per request: a decision the worker waits for must come quickly
RETRY_DELAYS = (0.05, 0.25)  # before the 2nd and 3rd try, jittered
DOWN_PAUSE = 5.0  # no answer (network, 5xx): begin is not tried again for this long
MISSING_PAUSE = 60.0  # an older server without the endpoint: recheck about once a minute


class ControlUnavailable(Exception):
    """No usable decision: ``detail`` says why. ``retry_after`` is when the server is worth asking again
    (0 for a refusal of this one request, such as an unknown stage)."""

    def __init__(self, detail: str, retry_after: float = 0.0) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class ControlPlane:
    """Talks to ``/v1/runs/*``. Thread-safe: stages call ``begin`` and ``complete`` from any thread, the
    heartbeat thread calls ``heartbeat``."""

    def __init__(self, sender: HttpSender, timeout: float) -> None:
        self._sender = sender
        self._timeout = min(timeout, MAX_CALL_TIMEOUT)
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._pause_detail = ""

    def begin(self, request: Record) -> Decision:
        """The server's decision for one run; ``ControlUnavailable`` when there is none."""
        self._raise_if_paused()
        reply = self._call(BEGIN, request, retries=RETRY_DELAYS)
        if reply.status is None or reply.status >= 500:
            raise self._pause(DOWN_PAUSE, reply.detail or f"HTTP {reply.status}")
        if reply.status == 404 and not _is_error_body(reply.body):
            raise self._pause(MISSING_PAUSE, f"the server has no {BEGIN} (an older version)")
        if reply.status != 200:
            raise ControlUnavailable(reply.detail)  # e.g. an unknown stage: this request only
        try:
            return parse_decision(reply.body)
        except ValueError as exc:
            raise self._pause(MISSING_PAUSE, f"not a decision ({exc}): {str(reply.body)[:200]}") from None

    def heartbeat(self, beats: list[Record]) -> dict[str, Action]:
        """One heartbeat for ``beats`` (one per run): the server's action for each run. Not retried
        (the next beat comes soon, and a lease outlives a few lost ones); ``ControlUnavailable`` when the
        answer is not usable."""
        reply = self._call(HEARTBEAT, {"runs": beats}, retries=())
        if reply.status != 200:
            raise ControlUnavailable(reply.detail or f"HTTP {reply.status}")
        try:
            return parse_actions(reply.body, [str(beat["run_id"]) for beat in beats])
        except ValueError as exc:
            raise ControlUnavailable(f"not a heartbeat answer ({exc})") from None

    def complete(self, run_id: str, body: Record) -> None:
        """Report how a guarded run ended; ``ControlUnavailable`` when the server did not take it."""
        reply = self._call(f"/v1/runs/{quote(run_id, safe='')}/complete", body, retries=RETRY_DELAYS)
        if reply.status is None or not 200 <= reply.status < 300:
            raise ControlUnavailable(reply.detail or f"HTTP {reply.status}")

    def _call(self, path: str, body: Record, retries: tuple[float, ...]) -> Reply:
        """POST ``body``, retrying a 5xx or no answer after each of ``retries`` (jittered) seconds."""
        try:
            encoded = dumps(body)
        except (TypeError, ValueError) as exc:  # a NaN or a cycle in the payload: unreadable to the server
            raise ControlUnavailable(f"the request is not JSON: {exc}") from None
        with sdk_io():
            reply = self._sender.call(path, encoded, self._timeout)
            for delay in retries:
                if reply.status is not None and reply.status < 500:
                    break
                time.sleep(random.uniform(delay / 2, delay))
                reply = self._sender.call(path, encoded, self._timeout)
        return reply

    def _raise_if_paused(self) -> None:
        with self._lock:
            left = self._paused_until - time.monotonic()
            detail = self._pause_detail
        if left > 0:
            raise ControlUnavailable(detail, retry_after=left)

    def _pause(self, seconds: float, detail: str) -> ControlUnavailable:
        with self._lock:
            self._paused_until, self._pause_detail = time.monotonic() + seconds, detail
        return ControlUnavailable(detail, retry_after=seconds)


def _is_error_body(body: Any) -> bool:
    """stagewatch's own error bodies (``{"error": ..., "field": ...}``), as for an unknown stage; a
    framework's plain 404 for a route it does not have looks different."""
    return isinstance(body, dict) and "error" in body
