"""The wire shapes the SDK sends: event and log-record dicts, built cheaply and made safe to send.

Events follow ``docs/events.md``; log records follow the ``POST /v1/logs`` contract. Everything here is
pure: no I/O, no clock except ``time.time()``.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Mapping
from typing import Any

from stagewatch.sdk.ids import event_id

Record = dict[str, Any]
"""One event or log record as it goes on the wire (a JSON object)."""

Scalar = str | int | float | bool | None

# The server's field caps (docs/events.md); longer values would get the whole event rejected.
MAX_TYPE = 256
MAX_MESSAGE = 10_000
MAX_STACK = 100_000
MAX_NOTE = 10_000
MAX_LOG_MESSAGE = 32 * 1024


def compact(fields: Mapping[str, Any]) -> Record:
    """``fields`` without the ``None`` values (they mean "not said" on the wire)."""
    return {name: value for name, value in fields.items() if value is not None}


def new_event(event_type: str, base: Mapping[str, Any], **fields: Any) -> Record:
    """An event of ``event_type`` carrying ``base`` (item, run, trace ids) and ``fields``, with a new id
    and the current time."""
    event = dict(base)
    event["id"] = event_id()
    event["type"] = event_type
    event["time"] = time.time()
    for name, value in fields.items():
        if value is not None:
            event[name] = value
    return event


def clip(text: str, limit: int, *, keep_tail: bool = False) -> str:
    """``text`` cut to ``limit`` characters; a stack keeps its tail, where the raising frame is."""
    if len(text) <= limit:
        return text
    marker = "…[truncated]…"
    room = limit - len(marker)
    return marker + text[-room:] if keep_tail else text[:room] + marker


def scalar_attrs(attrs: Mapping[str, Any] | None) -> dict[str, Scalar] | None:
    """Attributes the server accepts: scalar values; anything else (a Path, a Decimal, a list) becomes
    its ``str``, and a non-finite float becomes None, so one odd value never costs the whole event."""
    if not attrs:
        return None
    return {str(name): _scalar(value) for name, value in attrs.items()}


def _scalar(value: Any) -> Scalar:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def error_type_name(exc: BaseException) -> str:
    """The exception's qualified type name (``ValueError``, ``instagram.errors.GraphAPIError``)."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return clip(name, MAX_TYPE)


def error_info(exc: BaseException, retryable: bool | None) -> Record:
    """The ``error`` object of a ``run.failed`` event for ``exc``, with its formatted stack."""
    stack = "".join(traceback.format_exception(exc))
    return {
        "type": error_type_name(exc),
        "message": clip(str(exc), MAX_MESSAGE),
        "stack": clip(stack, MAX_STACK, keep_tail=True),
        "retryable": retryable,
    }


def retryable_of(exc: BaseException, decided: bool | None) -> bool | None:
    """Whether a failure is worth retrying: the run's own ``retryable`` when code set it, else the
    exception's ``retryable`` or ``is_transient`` flag (Instagram Graph API errors carry the latter),
    else unknown (None)."""
    if decided is not None:
        return decided
    for name in ("retryable", "is_transient"):
        value = getattr(exc, name, None)
        if isinstance(value, bool):
            return value
    return None


def cost_event(unit: str, quantity: float) -> tuple[str, Record]:
    """The event type and fields that report a cost on a run. The server has no cost event yet, so a
    cost travels as an ``item.annotated`` note with machine-readable attributes; when a cost event
    exists, only this function changes."""
    fields = {"note": f"cost {unit}={quantity}", "attrs": {"cost_unit": unit, "cost_quantity": quantity}}
    return "item.annotated", fields


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def level_name(levelno: int) -> str:
    """The ``/v1/logs`` level for a ``logging`` level number (custom levels round down)."""
    if levelno >= logging.CRITICAL:
        return "critical"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    return "info" if levelno >= logging.INFO else "debug"


def log_record(record: Mapping[str, Any]) -> Record:
    """A copy of ``record`` ready for ``/v1/logs``: an id and time when missing, a known level, a string
    message, and None values left out."""
    out = compact(record)
    out.setdefault("id", event_id())
    out.setdefault("time", time.time())
    level = str(out.get("level", "info")).lower()
    out["level"] = level if level in LOG_LEVELS else "info"
    out["message"] = clip(str(out.get("message", "")), MAX_LOG_MESSAGE)
    if "exception" in out:
        out["exception"] = clip(str(out["exception"]), MAX_STACK, keep_tail=True)
    if "attrs" in out:
        out["attrs"] = scalar_attrs(out["attrs"]) or {}
    return out
