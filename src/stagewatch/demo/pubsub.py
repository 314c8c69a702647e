"""A Pub/Sub topic with one push subscription, in process: messages with attributes, push envelopes
shaped like Google's, delivery attempts counted, redelivery after a nack, and a dead-letter list once
the attempts are spent.

The worker side sees exactly what a Cloud Run push endpoint sees, the JSON envelope
``{"message": {"data": base64, "attributes": {...}, "messageId": ...}, "subscription": ...,
"deliveryAttempt": n}``, and reads it with the SDK's ``stagewatch.sdk.pubsub``.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SUBSCRIPTION = "projects/demo-project/subscriptions/video-worker-push"


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """One push of one message: the request body the endpoint receives, and which attempt it is."""

    message: Message
    attempt: int

    def envelope(self) -> dict[str, Any]:
        published = datetime.fromtimestamp(self.message.publish_time, UTC).isoformat().replace("+00:00", "Z")
        body = {
            "data": base64.b64encode(self.message.data).decode(),
            "attributes": dict(self.message.attributes),
            "messageId": self.message.message_id,
            "publishTime": published,
        }
        return {"message": body, "subscription": SUBSCRIPTION, "deliveryAttempt": self.attempt}


class Subscription:
    """A push subscription with a retry policy: ``pull`` waits for the next due delivery; ``nack``
    schedules the next attempt after a delay, or dead-letters the message once ``max_delivery_attempts``
    is reached."""

    def __init__(self, max_delivery_attempts: int) -> None:
        self.max_delivery_attempts = max_delivery_attempts
        self.dead_letters: list[Message] = []
        self._due: list[tuple[float, int, Delivery]] = []
        self._order = itertools.count()
        self._ids = itertools.count(7_310_000_000_000_001)
        self._ready = threading.Condition()

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        message = Message(str(next(self._ids)), data, dict(attributes), time.time())
        self._schedule(Delivery(message, 1), 0.0)
        return message.message_id

    def pull(self, timeout: float = 0.2) -> Delivery | None:
        """The next delivery that is due, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    return heapq.heappop(self._due)[2]
                if now >= deadline:
                    return None
                next_due = self._due[0][0] if self._due else deadline
                self._ready.wait(min(deadline, next_due) - now)

    def nack(self, delivery: Delivery, delay: float) -> bool:
        """Redeliver after ``delay`` real seconds; False (dead-lettered) if that was the last attempt."""
        if delivery.attempt >= self.max_delivery_attempts:
            with self._ready:
                self.dead_letters.append(delivery.message)
            return False
        self._schedule(Delivery(delivery.message, delivery.attempt + 1), delay)
        return True

    def backlog(self) -> int:
        with self._ready:
            return len(self._due)

    def _schedule(self, delivery: Delivery, delay: float) -> None:
        with self._ready:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), delivery))
            self._ready.notify()
