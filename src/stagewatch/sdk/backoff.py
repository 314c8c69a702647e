"""When to try a failed send again: exponential backoff with full jitter, honouring ``Retry-After``."""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

# A server asking for longer than this is more likely misconfigured than right; we try again sooner.
MAX_RETRY_AFTER = 300.0


class Backoff:
    """Delays for the n-th consecutive failure: uniform in ``[0, min(cap, base * 2**n)]`` ("full
    jitter"), so many workers recovering from one outage do not knock the server over together."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures; never less than ``retry_after``."""
        ceiling = min(self.cap, self.base * 2 ** min(failures, 30))
        jittered = self._rng.uniform(0, ceiling)
        return max(jittered, min(retry_after, MAX_RETRY_AFTER)) if retry_after else jittered


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) as seconds from now; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment - (time.time() if now is None else now))
