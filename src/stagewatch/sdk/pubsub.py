"""Pub/Sub push endpoints: decode the message Pub/Sub POSTs, run the stage it asks for as one stagewatch
run that continues the publisher's trace, and answer with the status that acks or nacks it.

The run is guarded by default: before ``work`` runs, the control plane decides whether it may (see
``docs/guardrails.md``). Its refusals arrive as signals and become statuses (``status_for``): a duplicate
delivery (``Skip``), a dead-lettered or cancelled item (``DeadLettered``, ``Aborted``) and a run stopped
midway (``Cancelled``) are acked, since redelivering them would change nothing; ``Wait`` (a concurrency
or rate limit, a dependency down, a retry backoff) is nacked with 429, so the message comes back later.

    @app.post("/pubsub/process")
    def process(body: dict) -> Response:
        status, headers = handle_push(client, body, "process", lambda m: m.json()["video_id"], work)
        return Response(status_code=status, headers=headers)

The body Pub/Sub sends for a push subscription (wrapped delivery, the default) is

    {"message": {"data": "<base64>", "attributes": {...}, "messageId": "...", "message_id": "...",
                 "publishTime": "...", "publish_time": "...", "orderingKey": "..."},
     "subscription": "projects/P/subscriptions/S", "deliveryAttempt": 3}

``deliveryAttempt`` is only there when the subscription has a dead-letter policy. Pub/Sub treats 102,
200, 201, 202 and 204 as an ack; any other status is a nack and the message comes back later, after the
subscription's retry backoff (Pub/Sub does not read ``Retry-After``). The request must be answered
within the subscription's ack deadline (at most 600 s), which is also the push request's timeout.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stagewatch.sdk.core import BaseClient
from stagewatch.sdk.errors import RunInterrupted, Wait
from stagewatch.sdk.run import Run
from stagewatch.sdk.scope import StageScope
from stagewatch.sdk.tracing import extract

log = logging.getLogger("stagewatch.pubsub")
"""Where push handling reports what it did with a message (poison messages, nacks). Not the SDK's own
``stagewatch.sdk`` logger, so a ``StagewatchHandler`` ships these lines too."""

ACK_STATUSES = frozenset({102, 200, 201, 202, 204})
"""The statuses Pub/Sub takes as an acknowledgement; any other status is a nack (redelivery)."""

Headers = dict[str, str]


class InvalidPushEnvelope(ValueError):
    """The request body is not a Pub/Sub push envelope. ``field`` names what is missing or wrong
    (``message.data``, ``message.messageId``, ...)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid Pub/Sub push envelope: {field} {problem}")


@dataclass(frozen=True, slots=True)
class PushMessage:
    """One message as a push subscription delivers it. ``delivery_attempt`` is None when the
    subscription has no dead-letter policy; ``traceparent`` is the publisher's W3C trace, taken from the
    ``googclient_traceparent`` or ``traceparent`` attribute (None when absent or invalid)."""

    data: bytes
    message_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    publish_time: str | None = None
    delivery_attempt: int | None = None
    subscription: str | None = None
    ordering_key: str | None = None
    traceparent: str | None = None

    def json(self) -> Any:
        """The data parsed as JSON (UTF-8). Raises ``ValueError`` if it is not JSON."""
        return json.loads(self.data)

    def text(self) -> str:
        """The data as UTF-8 text. Raises ``UnicodeDecodeError`` if it is not UTF-8."""
        return self.data.decode("utf-8")


# --- decoding the envelope -------------------------------------------------------------------------


def decode_push(body: bytes | str | Mapping[str, Any]) -> PushMessage:
    """The message in a push request body (raw bytes, text, or already-parsed JSON). Accepts Pub/Sub's
    camelCase names and their snake_case twins (``messageId``/``message_id``, ``publishTime``/
    ``publish_time``, ``deliveryAttempt``/``delivery_attempt``, ``orderingKey``/``ordering_key``).
    Raises ``InvalidPushEnvelope`` naming the missing or malformed field."""
    envelope = _envelope_of(body)
    message = envelope.get("message")
    if not isinstance(message, Mapping):
        raise InvalidPushEnvelope("message", "is missing or not an object")
    attributes = _attributes(message)
    return PushMessage(
        data=_data(message),
        message_id=_required_text(message, "message.messageId", "messageId", "message_id"),
        attributes=attributes,
        publish_time=_optional_text(message, "message.publishTime", "publishTime", "publish_time"),
        delivery_attempt=_delivery_attempt(envelope),
        subscription=_optional_text(envelope, "subscription", "subscription"),
        ordering_key=_optional_text(message, "message.orderingKey", "orderingKey", "ordering_key"),
        traceparent=extract(attributes),
    )


def _envelope_of(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(body, bytes | bytearray | str):
        try:
            body = json.loads(body)
        except ValueError:
            raise InvalidPushEnvelope("body", "is not JSON") from None
    if not isinstance(body, Mapping):
        raise InvalidPushEnvelope("body", "is not a JSON object")
    return body


def _first(source: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if source.get(name) is not None:
            return source[name]
    return None


def _required_text(source: Mapping[str, Any], label: str, *names: str) -> str:
    value = _optional_text(source, label, *names)
    if not value:
        raise InvalidPushEnvelope(label, "is missing")
    return value


def _optional_text(source: Mapping[str, Any], label: str, *names: str) -> str | None:
    value = _first(source, *names)
    if value is not None and not isinstance(value, str):
        raise InvalidPushEnvelope(label, f"must be a string, not {type(value).__name__}")
    return value


def _data(message: Mapping[str, Any]) -> bytes:
    """The payload; absent means empty (a message may carry attributes only)."""
    encoded = message.get("data")
    if encoded is None:
        return b""
    if not isinstance(encoded, str):
        raise InvalidPushEnvelope("message.data", "must be a base64 string")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPushEnvelope("message.data", "is not valid base64") from None


def _attributes(message: Mapping[str, Any]) -> dict[str, str]:
    raw = message.get("attributes")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidPushEnvelope("message.attributes", "must be an object")
    for name, value in raw.items():
        if not isinstance(value, str):
            raise InvalidPushEnvelope(f"message.attributes.{name}", "must be a string")
    return dict(raw)


def _delivery_attempt(envelope: Mapping[str, Any]) -> int | None:
    value = _first(envelope, "deliveryAttempt", "delivery_attempt")
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # proto3 JSON may send integers as strings
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidPushEnvelope("deliveryAttempt", "must be a positive integer")
    return value


# --- answering Pub/Sub -----------------------------------------------------------------------------


def is_ack(status: int) -> bool:
    """Whether Pub/Sub takes ``status`` as an acknowledgement."""
    return status in ACK_STATUSES


def status_for(outcome: BaseException | None) -> int:
    """The HTTP status that tells Pub/Sub what to do after a run ended with ``outcome`` (raised by the
    control plane's decision on entry, by ``run.check()`` after a stop, or by the work itself):

    - None (success): 204, ack.
    - ``Skip`` (a duplicate: done, or running elsewhere), ``DeadLettered`` (attempts spent; the payload
      is kept for replay), ``Aborted`` (the item was cancelled), ``Cancelled`` (stopped midway by an
      operator or the deadline): 200, ack; a redelivery would change nothing.
    - ``Wait``: 429, nack, so the message comes back after the subscription's backoff.
    - anything else: 500, nack, so Pub/Sub retries (the run was reported as failed)."""
    if outcome is None:
        return 204
    if isinstance(outcome, Wait):
        return 429
    if isinstance(outcome, RunInterrupted):  # Skip, DeadLettered, Aborted, Cancelled: nothing more to do
        return 200
    return 500


def response_for(outcome: BaseException | None) -> tuple[int, Headers]:
    """``status_for(outcome)`` with its headers: ``Retry-After`` (whole seconds) for ``Wait``. Pub/Sub
    itself ignores the header and follows the subscription's retry policy; it is there for people and
    for other callers of the endpoint."""
    status = status_for(outcome)
    if isinstance(outcome, Wait):
        return status, {"Retry-After": str(max(0, math.ceil(outcome.retry_after)))}
    return status, {}


def status_for_invalid_envelope(error: InvalidPushEnvelope | None = None) -> int:
    """204 (ack) for a body that is not a valid push envelope, with the error logged.

    A web framework would map ``InvalidPushEnvelope`` to 400, but Pub/Sub nacks every status outside
    102/200/201/202/204 and redelivers: a malformed message never gets better, so it would loop until
    the retention period ends (or fill the dead-letter topic). Acking it and logging an ERROR drops it
    once, visibly. Configure a dead-letter policy if such messages must be kept."""
    log.error("pubsub.invalid_envelope: acked and dropped, it can never be processed: %s", error)
    return 204


# --- running a stage for a message -----------------------------------------------------------------


def push_stage(
    client: BaseClient, message: PushMessage, stage: str, item_id: str, **stage_kwargs: Any
) -> StageScope:
    """``client.stage(stage, item_id, ...)`` for a pushed message: it continues the publisher's trace
    (``message.traceparent``), gives the control plane the message's data as the ``payload`` to keep for
    replays (parsed JSON, else text), and counts ``message.delivery_attempt`` as the attempt of an
    unguarded run (1 when Pub/Sub does not say; a guarded run's attempt is the server's count).
    ``stage_kwargs`` (``guarded``, ``fail_open``, ``key``, ...) go to ``client.stage`` and win over all
    of these. Use with ``with`` or ``async with``."""
    options: dict[str, Any] = {
        "traceparent": message.traceparent,
        "attempt": message.delivery_attempt or 1,
        "payload": message_payload(message),
    }
    options.update(stage_kwargs)
    return client.stage(stage, item_id, **options)


def message_payload(message: PushMessage) -> Any:
    """The message's data as a payload for the dead-letter queue: JSON when it parses, else the text,
    else None (binary data is not kept). A replay re-delivers it as the data of a new message."""
    if not message.data:
        return None
    try:
        return message.json()
    except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
        pass
    try:
        return message.text()
    except UnicodeDecodeError:
        return None


def handle_push(
    client: BaseClient,
    body: bytes | str | Mapping[str, Any],
    stage: str,
    item_id_from: Callable[[PushMessage], str],
    work: Callable[[PushMessage, Run], None],
    **stage_kwargs: Any,
) -> tuple[int, Headers]:
    """Everything a synchronous push endpoint does: decode ``body``, find the item with
    ``item_id_from(message)``, run ``work(message, run)`` inside ``push_stage`` (a guarded run unless
    ``guarded=False`` is among ``stage_kwargs``), and return the ``(status, headers)`` to answer Pub/Sub
    with (see ``status_for``): a refusal of the control plane never calls ``work``. A body that is not an
    envelope, or a message ``item_id_from`` cannot read, is acked and logged (see
    ``status_for_invalid_envelope``): redelivering it would never help."""
    prepared = _prepare(body, item_id_from)
    if isinstance(prepared, int):
        return prepared, {}
    message, item_id = prepared
    try:
        with push_stage(client, message, stage, item_id, **stage_kwargs) as run:
            work(message, run)
    except Exception as exc:
        return _answer_failure(message, item_id, exc)
    return 204, {}


async def handle_push_async(
    client: BaseClient,
    body: bytes | str | Mapping[str, Any],
    stage: str,
    item_id_from: Callable[[PushMessage], str],
    work: Callable[[PushMessage, Run], Awaitable[None]],
    **stage_kwargs: Any,
) -> tuple[int, Headers]:
    """``handle_push`` for asyncio endpoints (with an ``AsyncClient``): ``work`` is a coroutine
    function, awaited inside the run."""
    prepared = _prepare(body, item_id_from)
    if isinstance(prepared, int):
        return prepared, {}
    message, item_id = prepared
    try:
        async with push_stage(client, message, stage, item_id, **stage_kwargs) as run:
            await work(message, run)
    except Exception as exc:
        return _answer_failure(message, item_id, exc)
    return 204, {}


def _prepare(
    body: bytes | str | Mapping[str, Any], item_id_from: Callable[[PushMessage], str]
) -> tuple[PushMessage, str] | int:
    """The message and its item id, or the status that acks a message that can never be processed."""
    try:
        message = decode_push(body)
    except InvalidPushEnvelope as exc:
        return status_for_invalid_envelope(exc)
    try:
        item_id = str(item_id_from(message))
    except Exception:
        log.exception("pubsub.unreadable_message message_id=%s: acked and dropped", message.message_id)
        return 204
    return message, item_id


def _answer_failure(message: PushMessage, item_id: str, exc: Exception) -> tuple[int, Headers]:
    status, headers = response_for(exc)
    where = {"item_id": item_id, "message_id": message.message_id}
    if status == 500:
        log.error("pubsub.nack message_id=%s item_id=%s: the run failed, Pub/Sub will retry",
                  message.message_id, item_id, exc_info=exc, extra=where)  # fmt: skip
    else:
        log.info("pubsub.%s message_id=%s item_id=%s: %s", "ack" if is_ack(status) else "nack",
                 message.message_id, item_id, exc, extra=where)  # fmt: skip
    return status, headers
