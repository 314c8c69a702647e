"""Hypothesis strategies for realistic event sets, and the reference fold they are checked against.

An event set is what a pipeline's workers would report about 1-4 videos: an ``item.created``, then for
each stage in pipeline order 1-3 attempts, each with some of enqueued / started / heartbeat / progress
and a terminal report (sometimes two racing ones, sometimes none yet), with client times that jitter
(clocks are skewed, so time order is not report order), explicit run ids on some runs and default ones
on others, attributes and accounts. Every generated event is valid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from hypothesis import strategies as st

from stagewatch.domain.events import Event
from stagewatch.domain.pipeline import PipelineRegistry, instagram_preset
from stagewatch.domain.projection import (
    ItemState,
    RunState,
    apply_item_event,
    apply_run_event,
    derive_item,
)

PIPELINE = instagram_preset()
STAGES = PIPELINE.stage_names
REGISTRY = PipelineRegistry.of([PIPELINE])
BASE_TIME = 1_767_225_600.0  # 2026-01-01T00:00:00Z

ACCOUNTS = ("acct-a", "acct-b", "acct-c")
SCENARIOS = ("reels", "stories")
ATTR_KEYS = ("duration_s", "lang", "hd", "score")
ERROR_TYPES = ("HTTPError", "FFmpegError", "QuotaExceeded")
RESOURCES = (None, {"rss_bytes": 5.1e8}, {"rss_bytes": 7.5e8, "cpu": 0.25}, {"cpu": 1.5})
TERMINALS = ("run.succeeded", "run.failed", "run.cancelled", "run.timed_out")

# Times are on a half-second grid, so ties are common and tie-breaking by event id gets exercised.
# Clock skew between workers (in half seconds): usually none, sometimes a little, rarely a lot.
SKEWS = (0, 0, 0, 0, 0, -1, 1, -4, 6, -40, 40)
attr_values = st.one_of(
    st.integers(-5, 5), st.sampled_from(["en", "fr", "x"]), st.booleans(), st.sampled_from([0.5, 2.25])
)
attrs = st.dictionaries(st.sampled_from(ATTR_KEYS), attr_values, max_size=2)
hex32 = st.integers(1, 2**128 - 1).map(lambda n: f"{n:032x}")
hex16 = st.integers(1, 2**64 - 1).map(lambda n: f"{n:016x}")


def _error(draw: st.DrawFn) -> dict[str, Any]:
    error: dict[str, Any] = {
        "type": draw(st.sampled_from(ERROR_TYPES)),
        "message": f"failed after {draw(st.integers(1, 99))}s on video {draw(st.integers(100, 999))}",
    }
    if draw(st.booleans()):
        error["retryable"] = draw(st.booleans())
    return error


@st.composite
def item_events(draw: st.DrawFn, item_id: str) -> list[dict[str, Any]]:
    """The raw events (dicts, as a client sends them) of one video."""
    events: list[dict[str, Any]] = []
    counter = iter(range(10_000))
    clock = [draw(st.integers(0, 100))]

    def emit(kind: str, **fields: Any) -> dict[str, Any]:
        # One draw for the common knobs keeps generation fast; 0 is the plain event (shrinks to it).
        knobs = draw(st.integers(0, 2**10 - 1))
        clock[0] += knobs % 7
        event: dict[str, Any] = {
            "id": f"{item_id}:e{next(counter)}",
            "type": kind,
            "item_id": item_id,
            "time": BASE_TIME + (clock[0] + SKEWS[(knobs >> 3) % len(SKEWS)]) / 2,
        }
        if knobs >> 7 & 1:
            event["pipeline"] = "instagram"
        if knobs >> 8 & 1:
            event["attrs"] = draw(attrs)
        if knobs >> 9 & 1 and "account" not in fields:
            event["account"] = ACCOUNTS[knobs % len(ACCOUNTS)]
        event.update({k: v for k, v in fields.items() if v is not None})
        events.append(event)
        return event

    if draw(st.integers(0, 5)) > 0:
        emit(
            "item.created",
            account=draw(st.sampled_from((None, *ACCOUNTS))),
            scenario=draw(st.sampled_from((None, *SCENARIOS))),
            source=draw(st.sampled_from((None, "webhook:airtable"))),
            actor=draw(st.sampled_from((None, "ops@example.com"))),
            params=draw(st.sampled_from((None, {"caption": "hi", "n": 2}))),
            trace_id=draw(st.none() | hex32),
        )
    if draw(st.integers(0, 4)) == 0:
        emit("item.annotated", note="looked at it", attrs=draw(attrs))

    for stage in STAGES[: draw(st.integers(0, len(STAGES)))]:
        attempts = draw(st.integers(1, 3))
        for attempt in range(1, attempts + 1):
            explicit = draw(st.booleans())
            run: dict[str, Any] = {"stage": stage}
            if explicit:
                run["run_id"] = f"run-{item_id}-{stage}-{attempt}"
            if attempt > 1 or explicit or draw(st.booleans()):
                # attempt 1 may leave the number out: the default run id is the same either way
                run["attempt"] = attempt
            worker = draw(st.sampled_from((None, "worker-a", "worker-b")))
            if draw(st.booleans()):
                emit("run.enqueued", **run)
            if draw(st.integers(0, 3)) > 0:
                emit(
                    "run.started",
                    **run,
                    worker=worker,
                    revision=f"{worker}-0001" if worker else None,
                    trace_id=draw(st.none() | hex32),
                    span_id=draw(st.none() | hex16),
                )
            for _ in range(draw(st.integers(0, 2))):
                emit(
                    "run.heartbeat",
                    **run,
                    resources=draw(st.sampled_from(RESOURCES)),
                    worker=draw(st.sampled_from((None, worker))),
                )
            for _ in range(draw(st.integers(0, 2))):
                emit(
                    "run.progress",
                    **run,
                    progress=draw(st.integers(0, 8)) / 8,
                    note=draw(st.sampled_from((None, "encoding", "uploading"))),
                )
            last = attempt == attempts
            choices = TERMINALS if last else TERMINALS[1:]
            terminals = draw(st.lists(st.sampled_from(choices), max_size=2 if last else 1))
            if not last and not terminals:
                terminals = ["run.failed"]
            for kind in terminals:
                emit(
                    kind,
                    **run,
                    error=_error(draw) if kind == "run.failed" or draw(st.integers(0, 5)) == 0 else None,
                    note=draw(st.sampled_from((None, "deadline exceeded"))) if kind != "run.failed" else None,
                )
            if draw(st.integers(0, 5)) == 0:
                emit("run.heartbeat", **run)  # a late heartbeat, possibly after the end
    if not events:
        emit("item.created")
    return events


@st.composite
def event_sets(draw: st.DrawFn, max_items: int = 4) -> list[dict[str, Any]]:
    """Raw events for 1..max_items videos, each video's in the order its workers produced them."""
    count = draw(st.integers(1, max_items))
    prefix = draw(st.sampled_from(["vid", "v/2026/clip", "vidéo"]))
    events: list[dict[str, Any]] = []
    for n in range(count):
        events += draw(item_events(f"{prefix}-{n}"))
    return events


@st.composite
def shuffled_with_duplicates(draw: st.DrawFn, events: Sequence[Any]) -> list[Any]:
    """A permutation of ``events`` with some of them delivered again at random places."""
    extra = draw(st.lists(st.sampled_from(events), max_size=len(events))) if events else []
    return draw(st.permutations([*events, *extra]))


@st.composite
def batches_of(draw: st.DrawFn, events: Sequence[Any]) -> list[list[Any]]:
    """``events`` cut into consecutive batches of random sizes (at least one event each)."""
    batches: list[list[Any]] = []
    rest = list(events)
    while rest:
        size = draw(st.integers(1, max(1, len(rest))))
        batches.append(rest[:size])
        rest = rest[size:]
    return batches


def parse(raw_events: Iterable[dict[str, Any]]) -> list[Event]:
    return [Event.model_validate(raw) for raw in raw_events]


def fold(
    batches: Iterable[Iterable[Event]], registry: PipelineRegistry = REGISTRY
) -> tuple[dict[str, ItemState], dict[str, RunState]]:
    """The reference projection: apply each event id once, deriving items after every batch as the
    store does (one batch of a single list is the plain fold)."""
    seen: set[str] = set()
    items: dict[str, ItemState] = {}
    runs: dict[str, RunState] = {}
    for batch in batches:
        touched: set[str] = set()
        for event in batch:
            if event.id in seen:
                continue
            seen.add(event.id)
            pipeline = registry.require(event.pipeline).name
            items[event.item_id] = apply_item_event(items.get(event.item_id), event, pipeline)
            touched.add(event.item_id)
            if event.run_id is not None:
                runs[event.run_id] = apply_run_event(runs.get(event.run_id), event)
        by_item: defaultdict[str, list[RunState]] = defaultdict(list)
        for run in runs.values():
            by_item[run.item_id].append(run)
        for item_id in touched:
            item = items[item_id]
            derive_item(item, by_item[item_id], registry.require(item.pipeline))
    return items, runs


def fold_all(events: Iterable[Event]) -> tuple[dict[str, ItemState], dict[str, RunState]]:
    return fold([list(events)])
