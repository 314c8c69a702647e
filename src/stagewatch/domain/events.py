"""The event: the append-only truth that items and runs are projected from.

Events arrive from workers in batches, late, twice and out of order. Each carries a client-made ``id``
(ingest is idempotent on it) and the client's ``time``. The wire format is flat JSON; see
``docs/events.md``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import SchemaValidator, core_schema

JsonScalar = str | int | float | bool | None

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
# Clients' clocks may be off; a time before 2000 or after 2200 is a unit mistake (ms, not s).
_MIN_TIME = 946_684_800.0
_MAX_TIME = 7_258_118_400.0

ShortText = Annotated[str, Field(min_length=1, max_length=256)]


class EventType(StrEnum):
    ITEM_CREATED = "item.created"
    ITEM_ANNOTATED = "item.annotated"
    RUN_ENQUEUED = "run.enqueued"
    RUN_STARTED = "run.started"
    RUN_HEARTBEAT = "run.heartbeat"
    RUN_PROGRESS = "run.progress"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_TIMED_OUT = "run.timed_out"
    # Written by the control plane only (``begin``, cancel, the dead-letter queue, replay, resume): the
    # ingest API refuses them, so an item's status can only be changed this way by a guarded decision.
    ITEM_WAITING = "item.waiting"
    ITEM_DUPLICATE = "item.duplicate"
    ITEM_DEAD_LETTERED = "item.dead_lettered"
    ITEM_CANCELLED = "item.cancelled"
    ITEM_RESUMED = "item.resumed"

    @property
    def is_run_event(self) -> bool:
        return self in _RUN_EVENT_TYPES

    @property
    def is_control_event(self) -> bool:
        return self in CONTROL_EVENT_TYPES


# Asked for every event on the ingest path: a set lookup, not a string test.
_RUN_EVENT_TYPES = frozenset(t for t in EventType if t.value.startswith("run."))
CONTROL_EVENT_TYPES = frozenset(
    {
        EventType.ITEM_WAITING,
        EventType.ITEM_DUPLICATE,
        EventType.ITEM_DEAD_LETTERED,
        EventType.ITEM_CANCELLED,
        EventType.ITEM_RESUMED,
    }
)


class ErrorInfo(BaseModel):
    """Why a run failed. ``retryable`` is the worker's own judgement, when it has one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(min_length=1, max_length=256)
    message: str = Field(default="", max_length=10_000)
    stack: str | None = Field(default=None, max_length=100_000)
    retryable: bool | None = None


class Event(BaseModel):
    """One fact about one item, and usually about one run of one stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    type: EventType
    item_id: str = Field(min_length=1, max_length=256)
    time: float | None = Field(default=None, description="client time: epoch seconds or ISO 8601")
    pipeline: ShortText | None = None
    stage: ShortText | None = None
    run_id: str | None = Field(default=None, min_length=1, max_length=256)
    attempt: int | None = Field(default=None, ge=1, le=10_000)
    account: ShortText | None = None
    scenario: ShortText | None = None
    trace_id: str | None = None
    span_id: str | None = None
    worker: ShortText | None = None
    revision: ShortText | None = None
    error: ErrorInfo | None = None
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    note: str | None = Field(default=None, max_length=10_000)
    source: ShortText | None = None
    actor: ShortText | None = None
    params: dict[str, Any] | None = None
    attrs: dict[str, JsonScalar] | None = None
    resources: dict[str, float] | None = None

    @field_validator("time", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_time_text(value)
        if isinstance(value, datetime):
            return _as_utc(value).timestamp()
        return value

    @field_validator("time")
    @classmethod
    def _check_time_range(cls, value: float | None) -> float | None:
        if value is not None and not _MIN_TIME <= value <= _MAX_TIME:
            raise ValueError("must be epoch seconds between 2000 and 2200 (is it in milliseconds?)")
        return value

    @field_validator("attrs", mode="before")
    @classmethod
    def _check_attrs(cls, value: Any) -> Any:
        # Checked here so the error names the attribute, not a member of the JsonScalar union.
        if isinstance(value, dict):
            for name, item in value.items():
                if not isinstance(item, str | int | float | bool | None):
                    kind = type(item).__name__
                    raise ValueError(f"{name!r} must be a string, number, boolean or null, not {kind}")
        return value

    @field_validator("trace_id")
    @classmethod
    def _check_trace_id(cls, value: str | None) -> str | None:
        if value is not None and (not _HEX32.match(value) or value == "0" * 32):
            raise ValueError("must be 32 lowercase hex characters, not all zero (W3C trace-id)")
        return value

    @field_validator("span_id")
    @classmethod
    def _check_span_id(cls, value: str | None) -> str | None:
        if value is not None and (not _HEX16.match(value) or value == "0" * 16):
            raise ValueError("must be 16 lowercase hex characters, not all zero (W3C parent-id)")
        return value

    @model_validator(mode="after")
    def _check_type_requirements(self) -> Event:
        # Also run by the batch fast path (below), once per event: set lookups, no property calls.
        kind = self.type
        if kind not in _RUN_EVENT_TYPES:
            return self
        if self.stage is None:
            raise MissingField("stage", kind)
        if kind is EventType.RUN_FAILED and self.error is None:
            raise MissingField("error", kind)
        if kind is EventType.RUN_PROGRESS and self.progress is None:
            raise MissingField("progress", kind)
        if self.run_id is None:
            # A run without an explicit id is named by its item, stage and attempt, so JSONL written by
            # hand and the SDK agree on one run per attempt.
            object.__setattr__(self, "run_id", default_run_id(self.item_id, self.stage, self.attempt))
        return self

    @property
    def at(self) -> float:
        """The event's time; ingest fills a missing client time with the server's."""
        assert self.time is not None, "ingest stamps every event with a time"
        return self.time


class MissingField(ValueError):
    """A field that this event's type requires is absent. Carries the field's name for error reports."""

    def __init__(self, field: str, event_type: EventType) -> None:
        self.field = field
        super().__init__(f"{field} is required for {event_type.value} events")


def default_run_id(item_id: str, stage: str | None, attempt: int | None) -> str:
    return f"{item_id}/{stage}/{attempt or 1}"


def parse_time_text(text: str) -> float:
    """A time given as text: epoch seconds (``"1795870800.5"``) or ISO 8601 (``Z`` or an offset)."""
    try:
        seconds = float(text)
    except ValueError:
        return _parse_iso_time(text)
    if not math.isfinite(seconds):
        raise ValueError("must be a finite number of epoch seconds or an ISO 8601 time")
    return seconds


def _parse_iso_time(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be epoch seconds or an ISO 8601 time such as 2026-11-28T13:00:00Z") from None
    return _as_utc(parsed).timestamp()


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC with milliseconds, as the API and CLI show it."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- validating a whole batch at once -----------------------------------------------------------------
#
# ``Event.model_validate`` once per event spends more time in the Python field validators above (and in
# crossing from Rust to Python for them) than in pydantic-core. Ingest validates a whole batch in one
# call instead, with a schema derived from Event's own: the same fields, types, limits, ``extra`` rule
# and model validator, building Event instances, but with the four Python field validators replaced by
# native constraints that accept only part of what they accept, giving the same values:
#
# - ``time``: a number (not text, a bool or a datetime) within the 2000-2200 range;
# - ``attrs``: values that are instances of str, int, float or bool (as ``_check_attrs`` checks), or null;
# - ``trace_id``/``span_id``: 32/16 lowercase hex characters, not all zero (strict: a ``str`` only).
#
# Whatever the fast schema refuses (an invalid event, or a valid but unusual one such as an ISO time) is
# handed back as it was, for ``Event.model_validate`` to accept or refuse with its usual message. So the
# fast schema must never accept what Event refuses, nor make a different event from the same input;
# ``tests/unit/test_validation_fast_path.py`` compares the two. Keep the constraints here in step with
# the validators above.

# Lowercase hex, not all zero; with an exact length, the W3C trace and parent ids.
_NONZERO_HEX = r"^0*[1-9a-f][0-9a-f]*$"


def _unwrap(schema: Any, *kinds: str) -> Any:
    """The schema inside the wrappers ``kinds`` (outermost first); a layout other than expected raises."""
    for kind in kinds:
        if schema.get("type") != kind:
            raise TypeError(f"unexpected core schema: {schema.get('type')!r}, not {kind!r}")
        schema = schema["schema"]
    return schema


def _calls_python(schema: Any) -> bool:
    """Whether a core schema holds a validator written in Python (``function-*`` and ``model`` schemas
    with a custom ``__init__`` or ``model_post_init``; metadata is not looked at)."""
    if isinstance(schema, dict):
        kind = schema.get("type")
        if isinstance(kind, str) and kind.startswith("function-"):
            return True
        if kind == "model" and (schema.get("custom_init") or schema.get("post_init")):
            return True
        return any(_calls_python(value) for key, value in schema.items() if key != "metadata")
    if isinstance(schema, list | tuple):
        return any(_calls_python(value) for value in schema)
    return False


def _optional_field(schema: core_schema.CoreSchema) -> core_schema.ModelField:
    return core_schema.model_field(
        core_schema.with_default_schema(core_schema.nullable_schema(schema), default=None)
    )


def _event_list_validator() -> SchemaValidator:
    """Validates a list: each item an Event as ``Event.model_validate`` would make it, or, when the fast
    schema refuses it, the item itself (the same object)."""
    after: Any = Event.__pydantic_core_schema__
    validator = after.get("function", {})
    if (
        after.get("type") != "function-after"
        or validator.get("type") != "no-info"
        or getattr(validator.get("function"), "__name__", None) != "_check_type_requirements"
    ):
        raise TypeError("unexpected core schema for Event: the model validator is not outermost")
    model = dict(after["schema"])
    if model.get("type") != "model" or model.get("cls") is not Event:
        raise TypeError("unexpected core schema for Event: no model schema inside the validator")
    if model.get("custom_init") or model.get("post_init"):
        raise TypeError("Event has a custom __init__ or model_post_init that the fast schema would skip")
    fields_schema = dict(model["schema"])
    fields = dict(fields_schema["fields"])
    if set(fields) != set(Event.model_fields):
        raise TypeError("unexpected core schema for Event: its fields differ from the model's")

    fields["time"] = _optional_field(core_schema.float_schema(strict=True, ge=_MIN_TIME, le=_MAX_TIME))
    attrs = _unwrap(fields["attrs"], "model-field", "default", "function-before", "nullable")
    values = _unwrap(attrs["values_schema"], "nullable")
    if attrs.get("type") != "dict" or values.get("type") != "union":
        raise TypeError("unexpected core schema for Event.attrs")
    # ``_check_attrs``'s isinstance test, done natively before the same union of scalars.
    scalar = core_schema.chain_schema([core_schema.is_instance_schema((str, int, float, bool)), values])
    fields["attrs"] = _optional_field(
        core_schema.dict_schema(attrs["keys_schema"], core_schema.nullable_schema(scalar))
    )
    for name, length in (("trace_id", 32), ("span_id", 16)):
        _unwrap(fields[name], "model-field", "default", "function-after")  # the validator being replaced
        hex_id = core_schema.str_schema(
            strict=True, pattern=_NONZERO_HEX, min_length=length, max_length=length
        )
        fields[name] = _optional_field(hex_id)
    for name, field in fields.items():
        if _calls_python(field):
            raise TypeError(f"Event.{name} has a Python validator that the fast schema does not replace")

    fields_schema["fields"] = fields
    model["schema"] = fields_schema
    model.pop("ref", None)
    # The model validator stays: the very function Event's schema calls.
    fast_event = core_schema.no_info_after_validator_function(validator["function"], model)
    # Only a dict is validated (an Event given in a batch would otherwise pass through the model
    # validator as it is); anything else is handed back untouched.
    from_dict = core_schema.chain_schema([core_schema.is_instance_schema(dict), fast_event])
    item = core_schema.union_schema([from_dict, core_schema.any_schema()], mode="left_to_right")
    return SchemaValidator(core_schema.list_schema(item))


try:
    _EVENT_LIST: SchemaValidator | None = _event_list_validator()
except (TypeError, KeyError) as exc:  # a pydantic whose schemas are laid out otherwise: no fast path
    _EVENT_LIST = None
    _FAST_PATH_UNAVAILABLE = f"{type(exc).__name__}: {exc}"
else:
    _FAST_PATH_UNAVAILABLE = ""


def validate_events_fast(raw_events: list[Any]) -> list[Event | None]:
    """``raw_events`` validated in one call: at each index, the Event that ``Event.model_validate`` would
    make of that item, or None where the fast schema cannot tell (validate that one on its own). An item
    that is not exactly a ``dict`` (a subclass, another mapping, an Event) is always None."""
    if _EVENT_LIST is None:
        return [None] * len(raw_events)
    made = _EVENT_LIST.validate_python(raw_events)
    return [
        event if event.__class__ is Event and raw.__class__ is dict else None
        for raw, event in zip(raw_events, made, strict=True)
    ]
