"""Batch validation speed: ``validate_batch`` over the ingest benchmark's events, in batches of 500.

    python benchmarks/validate.py [--events 20000] [--items EVENTS/10] [--batch 500] [--rounds 5]

Each batch is serialised once with orjson and parsed again before every timed call, as the server
parses each request body, so a round sees fresh dicts (validation must not rely on reusing them); the
parse is not timed. Prints microseconds per event for the best and the median round, with the garbage
collector on (as in the server) and off (less noise), for ``may_hold_nul`` true (the default: look for
NUL characters) and false (what the server passes when the body holds no ``\\u0000``).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import batches_of, load, make_events
from stagewatch.domain.pipeline import PipelineRegistry, instagram_preset
from stagewatch.service.validation import validate_batch

NOW = 1_764_400_000.0


def one_round(bodies: Sequence[bytes], registry: PipelineRegistry, may_hold_nul: bool) -> tuple[float, int]:
    """Seconds spent in validate_batch over all bodies, and the events accepted."""
    took = 0.0
    accepted = 0
    for body in bodies:
        raw = orjson.loads(body)
        t0 = time.perf_counter()
        batch = validate_batch(raw, registry, NOW, may_hold_nul=may_hold_nul)
        took += time.perf_counter() - t0
        assert not batch.rejections, batch.rejections[:3]
        accepted += len(batch.events)
    return took, accepted


def measure(
    bodies: Sequence[bytes], registry: PipelineRegistry, n_events: int, rounds: int, may_hold_nul: bool
) -> dict[str, float]:
    one_round(bodies[:4], registry, may_hold_nul)  # warm up: caches, first-call costs
    out: dict[str, float] = {}
    for label, collect in (("gc on", True), ("gc off", False)):
        per_event = []
        for _ in range(rounds):
            gc.collect()
            if not collect:
                gc.disable()
            try:
                took, accepted = one_round(bodies, registry, may_hold_nul)
            finally:
                gc.enable()
            assert accepted == n_events, f"accepted {accepted} of {n_events}"
            per_event.append(took / n_events * 1e6)
        out[f"{label} best"] = min(per_event)
        out[f"{label} median"] = statistics.median(per_event)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    items = args.items or max(1, args.events // 10)
    events = make_events(items, args.events, seed=args.seed)
    bodies = [orjson.dumps(list(chunk)) for chunk in batches_of(events, args.batch)]
    registry = PipelineRegistry.of([instagram_preset()], "instagram")
    print(f"# validate_batch: {len(events)} events, {items} videos, batches of {args.batch}")
    # Not _common.machine(): that asks git for the commit, and this benchmark runs in shared work trees.
    print(f"# {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load()}")
    for may_hold_nul in (True, False):
        figures = measure(bodies, registry, len(events), args.rounds, may_hold_nul)
        shown = "  ".join(f"{name} {value:6.2f}" for name, value in figures.items())
        print(f"may_hold_nul={may_hold_nul!s:5}  µs/event: {shown}")


if __name__ == "__main__":
    main()
