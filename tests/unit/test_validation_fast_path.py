"""The batch fast path of validation: ``validate_batch`` validates a whole batch in one call to
pydantic-core, with a schema derived from Event's (``validate_events_fast``), and validates again one by
one, the old way (``_validate_one``), only what that call or the checks after it do not pass.

It must change nothing but the speed: these tests compare it, on valid, invalid and odd inputs, with the
per-event path it replaced, down to the types of the values and the fields set on each event."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from stagewatch.domain import events as events_module
from stagewatch.domain.events import ErrorInfo, Event, EventType, validate_events_fast
from stagewatch.domain.pipeline import Pipeline, PipelineRegistry, StagePolicy, instagram_preset
from stagewatch.service import validation
from stagewatch.service.validation import ValidatedBatch, validate_batch
from tests.strategies import event_sets

REGISTRY = PipelineRegistry.of(
    [instagram_preset(), Pipeline("shorts", (StagePolicy("fetch"), StagePolicy("cut")))], "instagram"
)
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOV_28 = 1_795_870_800.0  # 2026-11-28T13:00:00Z
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def per_event(
    raw_events: list[Any], registry: PipelineRegistry, now: float, may_hold_nul: bool
) -> ValidatedBatch:
    """``validate_batch`` as it was before the fast path: ``_validate_one`` for every event."""
    batch = ValidatedBatch()
    for index, raw in enumerate(raw_events):
        outcome = validation._validate_one(index, raw, registry, now, may_hold_nul)
        if isinstance(outcome, validation.Rejection):
            batch.rejections.append(outcome)
        else:
            batch.events.append(outcome)
    return batch


def shape(value: Any) -> Any:
    """``value`` spelled out with the type of every part (``1 == 1.0 == True`` in Python) and, for a
    model, the fields set; NaN compares equal to itself here."""
    if isinstance(value, BaseModel):
        fields = tuple((name, shape(item)) for name, item in value.__dict__.items())
        return (type(value), fields, tuple(sorted(value.model_fields_set)))
    if isinstance(value, Mapping):
        return (type(value), tuple((shape(k), shape(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value), tuple(shape(item) for item in value))
    if isinstance(value, validation.Rejection):
        return (type(value), value.as_dict())
    return (type(value), repr(value))


def outcome(batch: ValidatedBatch) -> Any:
    return ([shape(e) for e in batch.events], [shape(r) for r in batch.rejections])


# --- odd values, valid and not ----------------------------------------------------------------------


class Text(str):
    pass


class Number(float):
    pass


class Count(int):
    pass


class Colour(enum.IntEnum):
    RED = 1


class Kind(enum.StrEnum):
    X = "x"


class Loose(dict[str, Any]):
    pass


TEMPLATES: list[dict[str, Any]] = [
    {
        "id": "e-1", "type": "item.created", "item_id": "v-1", "time": NOV_28, "account": "acct-1",
        "scenario": "reels", "trace_id": TRACE, "source": "webhook", "actor": "user-1",
        "params": {"caption_len": 12, "share_to_feed": True}, "attrs": {"duration_s": 9.5, "lang": "en"},
    },
    {
        "id": "e-2", "type": "run.started", "item_id": "v-1", "time": NOV_28 + 1, "stage": "download",
        "attempt": 1, "trace_id": TRACE, "span_id": SPAN, "worker": "w-1", "revision": "rev-1",
    },
    {
        "id": "e-3", "type": "run.succeeded", "item_id": "v-1", "time": NOV_28 + 2.5, "stage": "process",
        "attempt": 2, "resources": {"cpu_s": 1.5}, "span_id": SPAN,
    },
    {
        "id": "e-4", "type": "run.failed", "item_id": "v-2", "time": NOV_28 + 3, "stage": "publish",
        "error": {"type": "GraphAPIError", "message": "limit", "stack": "tb", "retryable": True},
    },
    {
        "id": "e-5", "type": "run.progress", "item_id": "v-2", "stage": "download", "progress": 0.5,
        "note": "n",
    },
    {
        "id": "e-6", "type": "run.heartbeat", "item_id": "v-3", "time": 1_795_870_900, "stage": "process",
        "run_id": "r-9",
    },
    {
        "id": "e-7", "type": "run.started", "item_id": "v-4", "pipeline": "shorts", "stage": "cut",
        "time": NOV_28,
    },
]  # fmt: skip

ODD_VALUES: dict[str, list[Any]] = {
    "id": ["e-9", "", 7, "x" * 129, Text("e-t"), None],
    "type": [
        *(t.value for t in EventType), "item.exploded", 7, None, EventType.RUN_STARTED, Text("run.started"),
    ],
    "item_id": ["v-9", "v" * 256, "v" * 257, "v\x00", "", 7, Text("v-t")],
    "time": [
        1_795_870_800, NOV_28 + 0.25, "2026-11-28T13:00:00Z", "1795870800.5", "yesterday", "", "nan",
        1_795_870_800_000, 0, -1.0, float("nan"), float("inf"), True, False, None,
        datetime(2026, 11, 28, 13, tzinfo=UTC), datetime(2026, 11, 28, 13), Decimal("1795870800"),
        Number(NOV_28), Count(1_795_870_800), 2**70, 946_684_800, 946_684_799.999, 7_258_118_400,
        7_258_118_400.001, b"1795870800", [NOV_28],
    ],
    "trace_id": [
        TRACE, "0" * 32, "0" * 31 + "1", TRACE.upper(), TRACE[:-1], TRACE + "0", TRACE + "\n", TRACE.encode(),
        Text(TRACE), None, 7, "",
    ],
    "span_id": [
        SPAN, "0" * 16, "0" * 15 + "a", SPAN.upper(), SPAN + "\n", SPAN.encode(), Text(SPAN), TRACE, None,
    ],
    "attrs": [
        {"a": 1, "b": True, "c": 1.5, "d": None, "e": "x"}, {"a": 2.0}, {"a": [1]}, {"a": {"b": 1}},
        {"a": Decimal("1")}, {"a": Count(3)}, {"a": Number(1.5)}, {"a": Text("s")}, {"a": b"x"},
        {"a": Colour.RED}, {"a": Kind.X}, {1: "x"}, [("a", 1)], "x", None, {}, {"a\x00": 1},
        MappingProxyType({"a": Decimal("1")}),
    ],
    "stage": ["download", "cut", "dowload", None, "", "x" * 257, 5],
    "pipeline": [None, "instagram", "shorts", "tiktok", ""],
    "run_id": [None, "r-1", "", "x" * 256, "x" * 257],
    "attempt": [None, 1, 3, 0, 10_001, True, "2", 2.0, 2.5],
    "error": [
        None, {"type": "E"}, {"type": ""}, {"type": "E", "code": 7}, {"message": "m"},
        {"type": "E", "message": "\x00"}, "E", ErrorInfo(type="E"),
    ],
    "progress": [None, 0.5, 1.5, "0.5", True, 1, -0.0],
    "note": ["n", "a\x00b", "a literal \\u0000, not a NUL", None, "x" * 10_001],
    "params": [
        {"k": [1, {"a": "b"}]}, {"k": "\x00"}, {"k\x00": 1}, {"k": ("t\x00",)}, {"k": {1: 2}}, {"k": 2**80},
        {"k": "\ud800"}, None, [1],
    ],
    "resources": [{"cpu": 1.5}, {"cpu": 1}, {"cpu": True}, {"cpu": "1.5"}, {"cpu": "big"}, {}],
    "worker": ["w", "", "w" * 257, None],
    "stauts": ["x"],  # not a field
}  # fmt: skip

# Not a JSON object; an Event made without validation (no default run id) must be left as it is.
NOT_OBJECTS: list[Any] = [
    ["not", "an", "event"], "e", None, 7,
    Event.model_construct(id="e-8", type=EventType.RUN_STARTED, item_id="v-8", stage="download", time=NOV_28),
]  # fmt: skip


@st.composite
def odd_events(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(NOT_OBJECTS))
    raw = dict(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(ODD_VALUES)))
        if draw(st.integers(0, 5)) == 0:
            raw.pop(name, None)
        else:
            raw[name] = draw(st.sampled_from(ODD_VALUES[name]))
    wrap = draw(st.integers(0, 29))
    if wrap == 0:
        return Loose(raw)
    if wrap == 1:
        return MappingProxyType(raw)
    return raw


# --- the comparisons ---------------------------------------------------------------------------------


def test_the_fast_path_is_in_use() -> None:
    """The fast schema is derived from Event's; if Event gains a Python validator the derivation does
    not know, it refuses, and ingest silently falls back to the slow path: this test says so."""
    assert events_module._FAST_PATH_UNAVAILABLE == ""
    assert events_module._EVENT_LIST is not None


@settings(max_examples=400, deadline=None)
@given(raw=st.lists(odd_events(), min_size=1, max_size=6), may_hold_nul=st.booleans())
def test_the_fast_path_decides_as_the_per_event_path(raw: list[Any], may_hold_nul: bool) -> None:
    before = shape(raw)
    expected = outcome(per_event(raw, REGISTRY, NOW, may_hold_nul))
    assert outcome(validate_batch(raw, REGISTRY, NOW, may_hold_nul=may_hold_nul)) == expected
    assert shape(raw) == before, "validation changed the caller's events"


@settings(max_examples=400, deadline=None)
@given(raw=st.lists(odd_events(), min_size=1, max_size=6))
def test_a_fast_event_is_the_event_model_validate_makes(raw: list[Any]) -> None:
    for item, fast in zip(raw, validate_events_fast(raw), strict=True):
        if fast is not None:
            assert shape(fast) == shape(Event.model_validate(item))


@pytest.mark.parametrize("name", sorted(ODD_VALUES))
def test_each_odd_value_alone_is_decided_as_before(name: str) -> None:
    """Every odd value in every template, once each (the properties above sample them)."""
    raw = []
    for template in TEMPLATES:
        raw.extend({**template, name: value} for value in ODD_VALUES[name])
        raw.append({k: v for k, v in template.items() if k != name})
    raw.extend(NOT_OBJECTS)
    raw.extend([Loose(TEMPLATES[0]), MappingProxyType(TEMPLATES[1]), Event.model_validate(TEMPLATES[2])])
    for may_hold_nul in (True, False):
        expected = outcome(per_event(raw, REGISTRY, NOW, may_hold_nul))
        assert outcome(validate_batch(raw, REGISTRY, NOW, may_hold_nul=may_hold_nul)) == expected


@settings(max_examples=30, deadline=None)
@given(raw=event_sets(max_items=3))
def test_realistic_events_all_take_the_fast_path(raw: list[dict[str, Any]]) -> None:
    """What workers send is validated in the one call: nothing is left for the slow path."""
    assert None not in validate_events_fast(raw)
    assert outcome(validate_batch(raw, REGISTRY, NOW)) == outcome(per_event(raw, REGISTRY, NOW, True))


def test_a_batch_that_is_not_a_list_is_still_validated() -> None:
    raw = (TEMPLATES[0], "junk", TEMPLATES[1])
    batch = validate_batch(raw, REGISTRY, NOW)  # type: ignore[arg-type]
    assert [e.id for e in batch.events] == ["e-1", "e-2"]
    assert [(r.index, r.message) for r in batch.rejections] == [(1, "must be a JSON object, not str")]


def test_an_empty_batch() -> None:
    batch = validate_batch([], REGISTRY, NOW)
    assert (batch.events, batch.rejections) == ([], [])


# --- the NUL pre-check ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        [{"note": "a\x00b"}],
        [{"k\x00": 1}],
        [{"params": {"deep": ["ok", {"x": "\x00"}]}}],
        [{"params": {"k": 2**80}}],  # orjson cannot write it: unclear, so search
        [{"k": "\ud800"}],  # nor a lone surrogate
        [{"note": "a literal \\u0000 is text, but looks the same in JSON"}],  # a false alarm is fine
    ],
)
def test_the_batch_may_hold_nul_when_its_json_shows_one_or_cannot_be_written(raw: list[Any]) -> None:
    assert validation._may_hold_nul(raw)


def test_a_batch_without_nul_needs_no_search() -> None:
    assert not validation._may_hold_nul([dict(t) for t in TEMPLATES])
    assert not validation._may_hold_nul(["junk", None, 7, [1, "two"]])
