"""Log lines: what a worker may send, storing batches with group commit, and searching them.

Workers' SDK ships records tagged with the video's ids (item, run, stage, trace). Ingest is idempotent on
the record's client-made ``id``; one bad record never costs the rest of its batch. Search is newest first,
by words in the message and exception text (a real full-text index, see ``stagewatch.store.logs``),
by item, run, stage, minimum level and time.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stagewatch.domain.events import JsonScalar, ShortText, iso
from stagewatch.errors import InputError, InvalidShape
from stagewatch.service.cursors import decode_cursor, encode_cursor
from stagewatch.service.ingest import BatchCommitter, BatchOutcome, share_transaction
from stagewatch.service.time_bounds import time_bound
from stagewatch.service.validation import Rejection
from stagewatch.store import logs as log_store
from stagewatch.store.engine import Database
from stagewatch.store.logs import LogFilter

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
LEVEL_NAMES = {number: name for name, number in LEVELS.items()}
_LEVEL_ALIASES = {"warn": "warning"}
# Caps in characters (32 KiB and 100 KiB of ASCII), so a line the SDK clipped by characters always fits.
MAX_MESSAGE_CHARS = 32 * 1024
MAX_EXCEPTION_CHARS = 100 * 1024
MAX_PAGE = 1000
MAX_QUERY_CHARS = 1000
# Clients' clocks may be off; a time before 2000 or after 2200 is a unit mistake (ms, not s).
_MIN_TIME = 946_684_800.0
_MAX_TIME = 7_258_118_400.0

# --- what a worker sends ----------------------------------------------------------------------------


class LogRecord(BaseModel):
    """One log line as a worker sends it (``POST /v1/logs``). Only ``id`` and ``message`` are required;
    ``time`` defaults to the server's clock and ``level`` to info."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    time: float | None = None
    level: str = "info"
    message: str = Field(max_length=MAX_MESSAGE_CHARS)
    logger: ShortText | None = None
    item_id: str | None = Field(default=None, min_length=1, max_length=256)
    run_id: str | None = Field(default=None, min_length=1, max_length=256)
    stage: ShortText | None = None
    pipeline: ShortText | None = None
    trace_id: str | None = None
    span_id: str | None = None
    worker: ShortText | None = None
    revision: ShortText | None = None
    attrs: dict[str, Any] | None = None
    exception: str | None = Field(default=None, max_length=MAX_EXCEPTION_CHARS)

    @model_validator(mode="before")
    @classmethod
    def _without_nul(cls, raw: Any) -> Any:
        # PostgreSQL text and JSONB cannot hold NUL; a stray one must not cost the line.
        return _strip_nul(raw) if isinstance(raw, dict) else raw

    @field_validator("time", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        return None if value is None else parse_time(value)

    @field_validator("level", mode="before")
    @classmethod
    def _parse_level(cls, value: Any) -> Any:
        return level_name(value) if isinstance(value, str) else value

    @field_validator("attrs")
    @classmethod
    def _check_attrs(cls, value: dict[str, Any] | None) -> dict[str, JsonScalar] | None:
        for name, item in (value or {}).items():
            if item is not None and not isinstance(item, str | int | float | bool):
                kind = "an object" if isinstance(item, dict) else "a list"
                raise ValueError(f"values must be strings, numbers, booleans or null; {name!r} is {kind}")
        return value

    @field_validator("trace_id")
    @classmethod
    def _check_trace_id(cls, value: str | None) -> str | None:
        return None if value is None else _hex_id(value, 32, "W3C trace-id")

    @field_validator("span_id")
    @classmethod
    def _check_span_id(cls, value: str | None) -> str | None:
        return None if value is None else _hex_id(value, 16, "W3C parent-id")


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    return value


def _hex_id(value: str, digits: int, name: str) -> str:
    # Stored lower case, as events carry them, so a log line and its run correlate.
    lowered = value.lower()
    if len(lowered) != digits or lowered.strip("0123456789abcdef") or lowered == "0" * digits:
        raise ValueError(f"must be {digits} hex characters, not all zero ({name})")
    return lowered


def parse_time(value: Any) -> float:
    """Epoch seconds from a number, a numeric string or an ISO 8601 time (UTC when no zone is given)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be epoch seconds or an ISO 8601 time such as 2026-11-28T13:00:00Z")
    seconds = _seconds(value)
    if not math.isfinite(seconds) or not _MIN_TIME <= seconds <= _MAX_TIME:
        raise ValueError("must be epoch seconds between 2000 and 2200 (is it in milliseconds?)")
    return seconds


def _seconds(value: int | float | str) -> float:
    if not isinstance(value, str):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be epoch seconds or an ISO 8601 time such as 2026-11-28T13:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def level_name(text: str) -> str:
    """The canonical name of a level as people and libraries write it: ``WARN`` → ``warning``."""
    name = text.strip().lower()
    name = _LEVEL_ALIASES.get(name, name)
    if name not in LEVELS:
        raise ValueError(f"unknown level {text!r}; one of: {', '.join(LEVELS)} (or warn)")
    return name


# --- validating a batch -----------------------------------------------------------------------------


@dataclass(slots=True)
class LogBatch:
    records: list[LogRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def validate_logs(raw_records: list[Any], now: float) -> LogBatch:
    """Check each record on its own; stamp a missing time with ``now``."""
    batch = LogBatch()
    for index, raw in enumerate(raw_records):
        outcome = _validate_one(index, raw, now)
        if isinstance(outcome, Rejection):
            batch.rejections.append(outcome)
        else:
            batch.records.append(outcome)
    return batch


def _validate_one(index: int, raw: Any, now: float) -> LogRecord | Rejection:
    if not isinstance(raw, dict):
        return Rejection(index, None, "", f"must be a JSON object, not {type(raw).__name__}")
    record_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    try:
        record = LogRecord.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        cause = first.get("ctx", {}).get("error")
        where = ".".join(str(part) for part in first["loc"])
        return Rejection(index, record_id, where, str(cause) if cause else first["msg"])
    return record if record.time is not None else record.model_copy(update={"time": now})


# --- storing ----------------------------------------------------------------------------------------


def log_row(record: LogRecord, received_at: float) -> dict[str, Any]:
    row = record.model_dump(exclude={"level"})
    row["level"] = LEVELS[record.level]
    row["received_at"] = received_at
    return row


def store_logs(db: Database, batches: Sequence[Sequence[LogRecord]]) -> list[BatchOutcome]:
    """Store several batches in one transaction; duplicates (by id) are counted, not stored again."""

    def store(unique: list[LogRecord]) -> set[str]:
        received_at = time.time()
        # Log lines change no item or run: written through ``Database.write``, they leave the projection
        # cache in use, where a plain writer transaction would make ingest read back all it had cached.
        with db.write() as conn:
            return log_store.insert_logs(conn, [log_row(record, received_at) for record in unique])

    return share_transaction(batches, store)


def log_committer(db: Database, max_records: int = 5000, max_backlog: int = 0) -> BatchCommitter[LogRecord]:
    """The group committer for log lines: concurrent ``POST /v1/logs`` share transactions."""
    return BatchCommitter(
        functools.partial(store_logs, db), max_records, max_backlog=max_backlog, kind="logs",
        unit="log lines", name="stagewatch-group-commit-logs",
    )  # fmt: skip


# --- searching --------------------------------------------------------------------------------------


def log_filter(
    q: str | None = None,
    *,
    item_id: str | None = None,
    run_id: str | None = None,
    stage: str | None = None,
    level: str | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
) -> LogFilter:
    """A filter from what a person typed; each problem is an ``InvalidShape`` naming its field."""
    if q is not None and len(q) > MAX_QUERY_CHARS:
        raise InvalidShape(f"the query is over {MAX_QUERY_CHARS} characters", field="q")
    for name, value in (("item_id", item_id), ("run_id", run_id), ("stage", stage)):
        if value is not None and "\x00" in value:
            raise InvalidShape(f"{name} must not contain NUL characters", field=name)
    return LogFilter(
        text=log_store.text_query(q) if q else None,
        item_id=item_id or None,
        run_id=run_id or None,
        stage=stage or None,
        min_level=_min_level(level),
        since=time_bound(since, "since", parse_time),
        until=time_bound(until, "until", parse_time),
    )


def _min_level(level: str | None) -> int | None:
    if not level:
        return None
    try:
        return LEVELS[level_name(level)]
    except ValueError as exc:
        raise InvalidShape(str(exc), field="level") from None


def search_logs(
    db: Database, where: LogFilter, cursor: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """A page of matching log lines, newest first, and the cursor of the next page (None at the end)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    after = decode_cursor(cursor) if cursor else None
    with db.reader.connect() as conn:
        page = log_store.logs_page(conn, where, after, limit + 1)
    more, page = len(page) > limit, page[:limit]
    next_cursor = encode_cursor(page[-1]["time"], page[-1]["seq"]) if more else None
    return {"logs": [log_view(row) for row in page], "next_cursor": next_cursor}


def log_view(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A stored line as the API returns it: times in ISO 8601 UTC, the level by name."""
    return {
        "id": row["id"],
        "time": iso(row["time"]),
        "level": LEVEL_NAMES.get(row["level"], str(row["level"])),
        "message": row["message"],
        "exception": row["exception"],
        "item_id": row["item_id"],
        "run_id": row["run_id"],
        "stage": row["stage"],
        "pipeline": row["pipeline"],
        "logger": row["logger"],
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "worker": row["worker"],
        "revision": row["revision"],
        "attrs": row["attrs"],
        "received_at": iso(row["received_at"]),
    }
