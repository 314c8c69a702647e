"""The SDK's own log: one logger, ``stagewatch.sdk``, with a stable event name first on every line
(``sdk.spool.torn_line path=...``), and a throttle so an outage cannot flood the worker's logs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("stagewatch.sdk")

_last: dict[str, float] = {}
_lock = threading.Lock()


def throttled(key: str, every: float = 60.0) -> bool:
    """True at most once per ``every`` seconds for ``key``: say it now, stay quiet after."""
    now = time.monotonic()
    with _lock:
        if now - _last.get(key, -every) < every:
            return False
        _last[key] = now
        return True


def warn_throttled(key: str, message: str, *args: Any, every: float = 60.0) -> None:
    """Log a WARNING for ``key`` unless one was logged in the last ``every`` seconds."""
    if throttled(key, every):
        log.warning(message, *args)


_io = threading.local()


@contextmanager
def sdk_io() -> Iterator[None]:
    """Mark the SDK's own network calls on a worker's thread (a run's begin and complete): what is
    logged meanwhile (httpx's request line) is the SDK's, and log shipping leaves it out."""
    outer = getattr(_io, "active", False)
    _io.active = True
    try:
        yield
    finally:
        _io.active = outer


def in_sdk_io() -> bool:
    """True inside ``sdk_io()`` on this thread."""
    return getattr(_io, "active", False)
