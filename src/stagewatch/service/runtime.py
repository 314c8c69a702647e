"""Process-wide settings for the server process (never the SDK's host process)."""

from __future__ import annotations

import gc

# Ingest allocates many short-lived containers (parsed JSON, events, rows); at CPython's default of a
# young collection every 700 allocations, the collector took 20-25% of ingest's time, mostly scanning
# the same long-lived objects again. Young collections every 10,000 allocations keep its share small
# while garbage cycles are still found within milliseconds (benchmarks/README.md, "Ingest").
_YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Move everything alive after start-up (modules, the app, settings) out of the collector's sight,
    and collect young objects less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, middle, old)
