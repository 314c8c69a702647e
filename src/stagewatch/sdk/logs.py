"""Correlated logs: every log line a worker writes inside ``client.stage(...)`` carries that run's video,
run, stage and trace ids, so the dashboard shows a video's logs next to its runs.

    stagewatch.sdk.logs.install(client)                     # stdlib logging: ship INFO and up
    structlog.configure(processors=[..., structlog_processor(client), structlog.dev.ConsoleRenderer()])
    handler.setFormatter(CloudLoggingFormatter())           # stdout JSON lines for Cloud Logging

The ids come from the current run (a context variable), so threads and concurrent asyncio tasks each
log with their own. Shipping only queues (``client.emit_log``): it never blocks and never raises. Use
either the handler or the processor for a given line, not both, or it is shipped twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Protocol

from stagewatch.sdk.context import RunContext, current_context
from stagewatch.sdk.diagnostics import in_sdk_io, throttled
from stagewatch.sdk.ids import event_id
from stagewatch.sdk.payloads import level_name

SDK_LOGGER = "stagewatch.sdk"
"""The SDK's own logger: never shipped, so a failing shipment cannot feed itself."""

SDK_THREAD_PREFIX = "stagewatch-"
"""The SDK's background threads (exporter, spiller, heartbeat). What is logged on them (httpx's line
for every batch sent, for one) is never shipped: each shipment would cause the next."""

ID_FIELDS = ("item_id", "run_id", "stage", "pipeline", "trace_id", "span_id")
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_NOT_EXTRAS = _STANDARD_ATTRS | set(ID_FIELDS) | {"stagewatch_shipped"}
_guard = threading.local()


class LogSink(Protocol):
    """What the log bridges ship to: ``stagewatch.Client`` or ``AsyncClient``."""

    def emit_log(self, record: Mapping[str, Any]) -> None: ...


# --- the ids of the current run --------------------------------------------------------------------


def context_ids(context: RunContext | None = None) -> dict[str, str]:
    """The current (or given) run's ``item_id``, ``run_id``, ``stage``, ``pipeline``, ``trace_id`` and
    ``span_id``; empty outside any run."""
    context = context or current_context()
    if context is None:
        return {}
    ids = {name: getattr(context, name) for name in ID_FIELDS}
    return {name: value for name, value in ids.items() if value is not None}


def record_ids(record: logging.LogRecord) -> dict[str, str]:
    """The ids a log record belongs to: those it carries itself (``extra={"item_id": ...}``, or what
    ``run.log`` adds), else the current run's."""
    own = {name: getattr(record, name, None) for name in ID_FIELDS}
    if own["item_id"] is None and own["run_id"] is None:
        return context_ids()
    return {name: str(value) for name, value in own.items() if value is not None}


def is_json_scalar(value: Any) -> bool:
    """A string, a finite number, a boolean or None: what a log record's ``attrs`` may hold."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of ``record`` (not the standard ``LogRecord`` attributes, not ids)."""
    return {name: value for name, value in record.__dict__.items() if name not in _NOT_EXTRAS}


def _own_record(logger_name: str | None) -> bool:
    """Whether a line comes from the SDK itself, from one of its threads or its network calls on a
    worker's thread (httpx's line for a run's begin), or from a shipment in progress on this thread:
    shipping it would be noise, or could loop."""
    if logger_name == SDK_LOGGER or (logger_name or "").startswith(SDK_LOGGER + "."):
        return True
    if threading.current_thread().name.startswith(SDK_THREAD_PREFIX) or in_sdk_io():
        return True
    return getattr(_guard, "busy", False)


def _ship(client: LogSink, build: Callable[[], Mapping[str, Any] | None]) -> None:
    """Build a record and hand it to ``client.emit_log``, with re-entry blocked; never raises."""
    _guard.busy = True
    try:
        record = build()
        if record is not None:
            client.emit_log(record)
    except Exception:
        if throttled("logs.ship"):
            logging.getLogger(SDK_LOGGER).exception("sdk.logs.ship_failed: the log line was not shipped")
    finally:
        _guard.busy = False


# --- stdlib logging --------------------------------------------------------------------------------


class StagewatchHandler(logging.Handler):
    """A ``logging`` handler that ships each record to the server's log search, tagged with the run it
    was written in. The wire record is ``{id, time, level, message, logger, item_id, run_id, stage,
    pipeline, trace_id, span_id, attrs, exception}`` (plus ``worker`` and ``revision`` when the client
    knows them): ``attrs`` holds the record's ``extra`` fields that are JSON scalars, ``exception`` the
    formatted traceback. Lines of the ``stagewatch.sdk`` logger, of the SDK's threads, and lines
    ``run.log`` already shipped are skipped. Never blocks (no handler lock; shipping only queues) and
    never raises."""

    def __init__(self, client: LogSink, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.client = client
        self._where = _client_where(client)

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter, then emit without taking the handler's lock: ``emit_log`` is thread-safe."""
        passed = self.filter(record)
        if isinstance(passed, logging.LogRecord):  # Python 3.12+: a filter may return a new record
            record = passed
        if passed:
            self.emit(record)
        return bool(passed)

    def emit(self, record: logging.LogRecord) -> None:
        if _own_record(record.name) or getattr(record, "stagewatch_shipped", False):
            return
        _ship(self.client, lambda: self.wire_record(record))

    def wire_record(self, record: logging.LogRecord) -> dict[str, Any]:
        """The ``/v1/logs`` record for ``record``."""
        attrs = {name: value for name, value in record_extras(record).items() if is_json_scalar(value)}
        return {
            "id": event_id(),
            "time": record.created,
            "level": level_name(record.levelno),
            "message": _message_of(record),
            "logger": record.name,
            **self._where,
            **record_ids(record),
            "attrs": attrs or None,
            "exception": _exception_of(record),
        }


def install(
    client: LogSink, level: int = logging.INFO, logger: logging.Logger | str | None = None
) -> StagewatchHandler:
    """Attach a ``StagewatchHandler`` for ``client`` to ``logger`` (a logger or its name; default the
    root logger) and return it. Calling it again for the same client and logger returns the handler
    already there. The logger's own level still filters first: the root logger's default is WARNING, so
    set it (``logging.basicConfig(level=logging.INFO)``) to ship INFO lines."""
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    for handler in target.handlers:
        if isinstance(handler, StagewatchHandler) and handler.client is client:
            handler.setLevel(level)
            return handler
    handler = StagewatchHandler(client, level)
    target.addHandler(handler)
    return handler


def _client_where(client: LogSink) -> dict[str, str]:
    options = getattr(client, "options", None)
    where = {"worker": getattr(options, "worker", None), "revision": getattr(options, "revision", None)}
    return {name: value for name, value in where.items() if isinstance(value, str)}


def _message_of(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # bad %-arguments: keep what there is rather than lose the line
        return f"{record.msg} {record.args!r}"


def _exception_of(record: logging.LogRecord) -> str | None:
    parts = []
    if record.exc_info and record.exc_info[0] is not None:
        parts.append("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts) or None


# --- structlog -------------------------------------------------------------------------------------

EventDict = MutableMapping[str, Any]
_STRUCTLOG_RESERVED = frozenset({"event", "level", "logger", "timestamp", "exception", "exc_info", "_record"})
_STRUCTLOG_LEVELS = {"exception": "error", "warn": "warning", "fatal": "critical", "msg": "info"}
STRUCTLOG_TAGS = ("item_id", "run_id", "stage", "trace_id", "span_id")


def structlog_processor(client: LogSink) -> Callable[[Any, str, EventDict], EventDict]:
    """A structlog processor that adds the current run's ``item_id``, ``run_id``, ``stage``,
    ``trace_id`` and ``span_id`` to the event dict (keys already set are kept) and ships the event via
    ``client.emit_log``. It returns the event dict, so put it before the renderer. ``exception`` is
    taken from a formatted ``exception`` key (``format_exc_info`` ran earlier) or from ``exc_info``.
    structlog is not imported: it only needs to call the processor."""

    def processor(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        logger_name = event_dict.get("logger") or getattr(logger, "name", None)
        if _own_record(logger_name if isinstance(logger_name, str) else None):
            return event_dict
        context = current_context()
        tag_event(event_dict, context)
        _ship(client, lambda: structlog_record(event_dict, method_name, logger_name, context))
        return event_dict

    return processor


def tag_event(event_dict: EventDict, context: RunContext | None) -> None:
    """Add the run's ids to a structlog event dict, keeping keys the caller already set."""
    ids = context_ids(context) if context is not None else {}
    for name in STRUCTLOG_TAGS:
        if name in ids:
            event_dict.setdefault(name, ids[name])


def structlog_record(
    event_dict: Mapping[str, Any], method_name: str, logger_name: Any, context: RunContext | None
) -> dict[str, Any]:
    """The ``/v1/logs`` record for one structlog event."""
    level = str(event_dict.get("level") or _STRUCTLOG_LEVELS.get(method_name, method_name))
    ids = {name: event_dict[name] for name in ID_FIELDS if isinstance(event_dict.get(name), str)}
    attrs = {
        name: value
        for name, value in event_dict.items()
        if name not in _STRUCTLOG_RESERVED and name not in ID_FIELDS and is_json_scalar(value)
    }
    return {
        "level": level,
        "message": str(event_dict.get("event", "")),
        "logger": logger_name if isinstance(logger_name, str) else None,
        **context_ids(context),
        **ids,
        "attrs": attrs or None,
        "exception": _structlog_exception(event_dict),
    }


def _structlog_exception(event_dict: Mapping[str, Any]) -> str | None:
    formatted = event_dict.get("exception")
    if isinstance(formatted, str):
        return formatted
    exc_info = event_dict.get("exc_info")
    if not exc_info:
        return None
    if isinstance(exc_info, BaseException):
        return "".join(traceback.format_exception(exc_info))
    info = exc_info if isinstance(exc_info, tuple) else sys.exc_info()
    return "".join(traceback.format_exception(*info)) if info[0] is not None else None


# --- Cloud Logging JSON lines ----------------------------------------------------------------------

TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
SOURCE_FIELD = "logging.googleapis.com/sourceLocation"


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per line, in the shape Cloud Logging's agent (Cloud Run, GKE) turns into a
    structured entry: ``severity`` (DEBUG, INFO, WARNING, ERROR, CRITICAL), ``message`` (with the
    traceback, where Error Reporting finds it), ``time`` (RFC 3339, UTC), and, inside a run,
    ``logging.googleapis.com/trace`` (``projects/<project>/traces/<trace_id>``, which links the line to
    the trace in Cloud Trace), ``logging.googleapis.com/spanId`` and
    ``logging.googleapis.com/trace_sampled``, plus ``item_id``, ``run_id``, ``stage``, ``pipeline``,
    the logger name, the source location and the record's ``extra`` fields.

    ``project`` defaults to ``$GOOGLE_CLOUD_PROJECT``, read when the formatter is made. Cloud Run does
    not set that variable: set it, or pass ``project``; without a project the trace link is left out
    (``trace_id`` is still written)."""

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or None

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {name: _jsonable(value) for name, value in record_extras(record).items()}
        entry.update(
            severity=level_name(record.levelno).upper(),
            message=self._message(record),
            time=rfc3339(record.created),
            logger=record.name,
        )
        entry[SOURCE_FIELD] = {"file": record.pathname, "line": record.lineno, "function": record.funcName}
        entry.update(self.trace_fields(record_ids(record)))
        return json.dumps(entry, ensure_ascii=False, default=str)

    def trace_fields(self, ids: Mapping[str, str]) -> dict[str, Any]:
        """The ids of a line and Cloud Logging's trace fields for them (runs are always sampled)."""
        fields: dict[str, Any] = {
            name: ids[name] for name in ("item_id", "run_id", "stage", "pipeline") if name in ids
        }
        trace, span = ids.get("trace_id"), ids.get("span_id")
        if trace:
            fields["trace_id"] = trace
            if self.project:
                fields[TRACE_FIELD] = f"projects/{self.project}/traces/{trace}"
            fields[SAMPLED_FIELD] = True
        if span:
            fields[SPAN_FIELD] = span
        return fields

    def _message(self, record: logging.LogRecord) -> str:
        message = _message_of(record)
        exception = _exception_of(record)
        return f"{message}\n{exception}" if exception else message


def rfc3339(epoch: float) -> str:
    """``epoch`` seconds as an RFC 3339 UTC time with microseconds: ``2026-11-28T13:00:00.250000Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    return value
