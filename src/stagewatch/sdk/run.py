"""``Run``: one attempt of one stage for one video, as worker code sees it inside ``client.stage(...)``,
and ``current_run()`` to reach it from anywhere in that code."""

from __future__ import annotations

import logging
import math
import sys
import traceback
from collections.abc import Mapping, MutableMapping, Sequence
from contextvars import ContextVar, Token
from datetime import datetime
from subprocess import Popen
from typing import Any, Protocol

from stagewatch.sdk.context import RunContext
from stagewatch.sdk.decisions import Lease
from stagewatch.sdk.diagnostics import log, throttled
from stagewatch.sdk.otel import RunSpan
from stagewatch.sdk.payloads import (
    MAX_NOTE,
    Record,
    clip,
    cost_event,
    level_name,
    log_record,
    new_event,
    scalar_attrs,
)
from stagewatch.sdk.stopping import Stopper

RUN_LOGGER = "stagewatch.run"


class RunSink(Protocol):
    """Where a run's events and log records go: the client's exporter."""

    def submit_event(self, record: Record) -> None: ...

    def submit_log(self, record: Record) -> None: ...


class Run:
    """One attempt of one stage for one item. Report progress, costs and notes through it; set
    ``retryable`` to say whether a failure is worth retrying; log through ``run.log``; start child
    processes with ``run.subprocess(...)``. Every method is cheap (it only queues) and never raises
    because of telemetry; ``check()``, ``progress()`` and ``subprocess()`` raise ``Cancelled`` once the
    control plane said stop."""

    def __init__(
        self,
        context: RunContext,
        sink: RunSink | None,
        base: Record,
        where: Record | None = None,
        *,
        lease: Lease | None = None,
        kill_grace: float = 5.0,
    ) -> None:
        self.context = context
        self.retryable: bool | None = None
        """Set it to decide how a failure of this run is classed; None leaves it to the exception."""
        self.last_progress: float | None = None
        self.last_note: str | None = None
        self.otel_span: RunSpan | None = None  # the OpenTelemetry span mirroring this run, when OTel is on
        self.lease = lease  # the control plane's grant for a guarded run; None for an unguarded one
        self._stopper = Stopper(kill_grace)  # how a stop reaches this run (check, its task, its children)
        self._sink = sink
        self._base = base  # the fields every event of this run carries: item, stage, run and trace ids
        self._log_tags = {**_ids_of(context), **(where or {})}  # what every shipped log record carries
        self.log = RunLogger(self)

    @property
    def run_id(self) -> str:
        return self.context.run_id

    @property
    def item_id(self) -> str:
        return self.context.item_id

    @property
    def stage(self) -> str:
        return self.context.stage

    @property
    def attempt(self) -> int:
        return self.context.attempt

    @property
    def pipeline(self) -> str | None:
        return self.context.pipeline

    @property
    def trace_id(self) -> str:
        return self.context.trace_id

    @property
    def span_id(self) -> str:
        return self.context.span_id

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` naming this run as the parent: pass it on (e.g. as a Pub/Sub
        attribute) so the next stage continues the same trace."""
        return self.context.traceparent

    @property
    def reporting(self) -> bool:
        """False for a run of a disabled client: it works, but reports nothing."""
        return self._sink is not None

    @property
    def guarded(self) -> bool:
        """True when the control plane admitted this run (``begin`` answered ``run``): it holds a lease,
        its heartbeats may tell it to stop, and its end is reported to the control plane."""
        return self.lease is not None

    @property
    def deadline(self) -> datetime | None:
        """When the control plane stops this run as a runaway (UTC); None if it did not say."""
        return self.lease.deadline if self.lease is not None else None

    @property
    def stopped(self) -> bool:
        """True once the control plane said stop (an operator's cancel, the deadline, a lost lease)."""
        return self._stopper.stopped

    @property
    def stop_reason(self) -> str | None:
        """Why the control plane stopped this run, e.g. ``"cancelled by alice: customer withdrew"``."""
        return self._stopper.reason

    def progress(self, fraction: float, note: str | None = None) -> None:
        """Report how far along the run is, from 0 to 1 (clamped); heartbeats repeat the last value.
        Raises ``Cancelled`` when the run was told to stop."""
        self._stopper.check()
        try:
            value = float(fraction)
            if math.isnan(value):
                raise ValueError("NaN")
        except (TypeError, ValueError):
            log.warning("sdk.run.bad_progress run_id=%s value=%r: ignored", self.run_id, fraction)
            return
        self.last_progress, self.last_note = min(1.0, max(0.0, value)), _note(note)
        self._emit("run.progress", self._base, progress=self.last_progress, note=self.last_note)

    def add_cost(self, unit: str, quantity: float) -> None:
        """Count a cost on this run: ``add_cost("instagram_api_call", 1)``, ``add_cost("gpu_s", 42.5)``."""
        if not _is_number(quantity) or not unit:
            log.warning(
                "sdk.run.bad_cost run_id=%s unit=%r quantity=%r: ignored", self.run_id, unit, quantity
            )
            return
        event_type, fields = cost_event(str(unit), quantity)
        self._emit(event_type, self._base, **fields)

    def annotate(self, note: str, **attrs: Any) -> None:
        """Add a note to the item's history, with attributes if any: ``annotate("cropped", ratio=0.8)``."""
        self._emit("item.annotated", self._base, note=_note(note), attrs=scalar_attrs(attrs))

    def set_attrs(self, **attrs: Any) -> None:
        """Set searchable attributes on the item (``set_attrs(duration_s=31, codec="h264")``)."""
        if attrs:
            self._emit("item.annotated", self._base, attrs=scalar_attrs(attrs))

    def check(self) -> None:
        """Call it between steps of long work: raises ``Cancelled`` once the control plane said stop
        (at a heartbeat, so within one heartbeat interval of an operator's cancel)."""
        self._stopper.check()

    def subprocess(self, args: str | Sequence[str], **popen_kwargs: Any) -> Popen[Any]:
        """``subprocess.Popen(args, **popen_kwargs)``, started in its own session so that a stop reaches
        it and everything it forks: SIGTERM to the process group, then SIGKILL after the client's
        ``kill_grace`` seconds. The same happens when the stage ends with an exception. Raises
        ``Cancelled`` instead of starting anything when the run was already told to stop."""
        return self._stopper.subprocess(args, popen_kwargs)

    def _emit(self, event_type: str, base: Record, **fields: Any) -> None:
        sink = self._sink
        if sink is None:
            return
        try:
            sink.submit_event(new_event(event_type, base, **fields))
        except Exception:
            if throttled("run.emit"):
                log.exception("sdk.run.emit_failed run_id=%s type=%s", self.run_id, event_type)

    def _ship_log(self, record: Record) -> None:
        sink = self._sink
        if sink is None:
            return
        try:
            sink.submit_log(log_record(record))
        except Exception:
            if throttled("run.log"):
                log.exception("sdk.run.log_failed run_id=%s", self.run_id)

    def __repr__(self) -> str:
        return f"<Run {self.stage} item={self.item_id!r} attempt={self.attempt} run_id={self.run_id}>"


def _note(note: str | None) -> str | None:
    return None if note is None else clip(str(note), MAX_NOTE)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class RunLogger(logging.LoggerAdapter[logging.Logger]):
    """``run.log``: a logger for one run. Its records go to the ``stagewatch.run`` logger as usual (with
    ``item_id``, ``run_id``, ``stage``, ``trace_id`` and ``span_id`` as extra fields), and records at
    INFO and above are also shipped to the server's log search, tagged with the run's ids. Records it
    shipped carry ``stagewatch_shipped=True``, so a shipping handler can skip them."""

    def __init__(self, run: Run) -> None:
        super().__init__(logging.getLogger(RUN_LOGGER), {})
        self._run = run

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra: dict[str, Any] = dict(_ids_of(self._run.context))
        extra.update(kwargs.get("extra") or {})
        extra["stagewatch_shipped"] = self._run.reporting
        kwargs["extra"] = extra
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if level >= logging.INFO or self.isEnabledFor(level):
            self._ship(level, msg, args, kwargs)
        super().log(level, msg, *args, **kwargs)

    def _ship(self, level: int, msg: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        if not self._run.reporting:
            return
        try:
            record: Record = {
                "level": level_name(level),
                "message": _format(msg, args),
                "logger": self.logger.name,
                "attrs": kwargs.get("extra"),
                "exception": _exception_text(kwargs.get("exc_info")),
                **self._run._log_tags,
            }
        except Exception:
            log.exception("sdk.run.log_format_failed run_id=%s", self._run.run_id)
            return
        self._run._ship_log(record)


def _ids_of(context: RunContext) -> dict[str, str | None]:
    return {
        "pipeline": context.pipeline,
        "item_id": context.item_id,
        "run_id": context.run_id,
        "stage": context.stage,
        "trace_id": context.trace_id,
        "span_id": context.span_id,
    }


def _format(msg: Any, args: tuple[Any, ...]) -> str:
    try:
        return str(msg) % args if args else str(msg)
    except (TypeError, ValueError):
        return f"{msg} {args!r}"


def _exception_text(exc_info: Any) -> str | None:
    if not exc_info:
        return None
    if isinstance(exc_info, BaseException):
        return "".join(traceback.format_exception(exc_info))
    if not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    return "".join(traceback.format_exception(*exc_info)) if exc_info[0] is not None else None


# --- the current run ----------------------------------------------------------------------------------

_current: ContextVar[Run | None] = ContextVar("stagewatch_current_run", default=None)


def current_run() -> Run | None:
    """The ``Run`` the calling code executes in (inside ``client.stage(...)`` or a ``@client.task``),
    or None. Each thread and each asyncio task sees its own."""
    return _current.get()


def activate(run: Run) -> Token[Run | None]:
    return _current.set(run)


def deactivate(token: Token[Run | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:  # left in another context than it was entered in: do the best possible
        _current.set(None)
