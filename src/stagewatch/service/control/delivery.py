"""Re-delivering a replayed or resumed payload to the stage's worker, through the stage's replay target:

- ``http``: a POST in the Pub/Sub push envelope format, exactly what a push subscription sends, so the
  worker's push endpoint needs no second code path (a 2xx is an ack, anything else a failure);
- ``pubsub``: publish to a topic (needs the optional ``google-cloud-pubsub`` package);
- ``callable``: ``package.module:function``, called with the dead letter as a dict.

Delivery happens after the replay's transaction commits: a failed delivery leaves the work re-armed and
queued, so the next redelivery (or another replay) runs it; nothing is lost either way.
"""

from __future__ import annotations

import base64
import importlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from stagewatch.domain.pipeline import ReplayTarget

DELIVERY_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Delivery:
    ok: bool
    detail: str


def deliver(target: ReplayTarget | None, letter: Mapping[str, Any]) -> Delivery:
    if target is None:
        return Delivery(False, "no replay target configured for this stage: re-armed, not delivered")
    try:
        return _DELIVER[target.kind](target.address, letter)
    except Exception as exc:  # a broken target must not fail the replay that was already recorded
        return Delivery(
            False, f"{target.kind} delivery to {target.address} failed: {type(exc).__name__}: {exc}"
        )


def attributes_of(letter: Mapping[str, Any]) -> dict[str, str]:
    return {
        "item_id": str(letter["item_id"]),
        "stage": str(letter["stage"]),
        "pipeline": str(letter["pipeline"]),
        "key": str(letter["work_key"]),
        "stagewatch_replay": "1",
    }


def data_of(payload: Any) -> bytes:
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":")).encode()


def push_envelope(letter: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a Pub/Sub push delivery (both spellings of each field, as Google sends them)."""
    message_id = f"stagewatch-replay-{uuid.uuid4().hex}"
    published = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "message": {
            "data": base64.b64encode(data_of(letter.get("payload"))).decode(),
            "attributes": attributes_of(letter),
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": published,
            "publish_time": published,
        },
        "subscription": "projects/-/subscriptions/stagewatch-replay",
    }


def _http(address: str, letter: Mapping[str, Any]) -> Delivery:
    response = httpx.post(address, json=push_envelope(letter), timeout=DELIVERY_TIMEOUT)
    if 200 <= response.status_code < 300:
        return Delivery(True, f"pushed to {address}: HTTP {response.status_code}")
    return Delivery(False, f"pushed to {address}: HTTP {response.status_code} {response.text[:200]}")


def _pubsub(address: str, letter: Mapping[str, Any]) -> Delivery:
    try:
        from google.cloud import pubsub_v1  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return Delivery(False, "the pubsub target needs `pip install google-cloud-pubsub`")
    publisher = pubsub_v1.PublisherClient()
    future = publisher.publish(address, data_of(letter.get("payload")), **attributes_of(letter))
    return Delivery(True, f"published to {address}: message {future.result(timeout=DELIVERY_TIMEOUT)}")


def _callable(address: str, letter: Mapping[str, Any]) -> Delivery:
    module_name, _, function_name = address.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    function(dict(letter))
    return Delivery(True, f"called {address}")


_DELIVER: dict[str, Callable[[str, Mapping[str, Any]], Delivery]] = {
    "http": _http,
    "pubsub": _pubsub,
    "callable": _callable,
}
