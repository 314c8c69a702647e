"""What every run does when it begins and ends, shared by ``Client`` and ``AsyncClient``: pick its trace,
send ``run.started``, keep it among the open runs for heartbeats, and on exit send ``run.succeeded``,
``run.failed`` (with the error) or ``run.cancelled``, without ever swallowing the exception."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from stagewatch.sdk import ids, otel, tracing
from stagewatch.sdk.context import RunContext, bound, current_context
from stagewatch.sdk.diagnostics import log, warn_throttled
from stagewatch.sdk.errors import RunInterrupted
from stagewatch.sdk.heartbeat import Heartbeater
from stagewatch.sdk.payloads import (
    MAX_NOTE,
    Record,
    clip,
    compact,
    error_info,
    error_type_name,
    retryable_of,
    scalar_attrs,
)
from stagewatch.sdk.run import Run, RunSink, activate, deactivate


@dataclass(frozen=True, slots=True)
class StageSpec:
    """The arguments of one ``client.stage(...)`` call."""

    name: str
    item_id: str
    account: str | None = None
    scenario: str | None = None
    attrs: Mapping[str, Any] | None = None
    attempt: int | None = None
    run_id: str | None = None
    pipeline: str | None = None
    traceparent: str | None = None


class TraceMemory:
    """The trace id of recently seen items (a bounded LRU), so that later stages of an item handled in
    this process continue its trace."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._traces: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, item_id: str, trace_id: str) -> None:
        with self._lock:
            self._traces[item_id] = trace_id
            self._traces.move_to_end(item_id)
            if len(self._traces) > self._size:
                self._traces.popitem(last=False)

    def recall(self, item_id: str) -> str | None:
        with self._lock:
            return self._traces.get(item_id)


class OpenRuns:
    """The runs in flight, which the heartbeat thread reports."""

    def __init__(self) -> None:
        self._runs: dict[int, Run] = {}
        self._lock = threading.Lock()

    def add(self, run: Run) -> None:
        with self._lock:
            self._runs[id(run)] = run

    def discard(self, run: Run) -> None:
        with self._lock:
            self._runs.pop(id(run), None)

    def snapshot(self) -> list[Run]:
        with self._lock:
            return list(self._runs.values())


class RunLifecycle:
    """Starts and finishes runs for one client. With ``sink=None`` (a disabled client), runs still work
    and ``current_run()`` finds them, but nothing is sent and no thread is started."""

    def __init__(
        self,
        sink: RunSink | None,
        *,
        pipeline: str | None,
        worker: str | None,
        revision: str | None,
        heartbeat_interval: float,
    ) -> None:
        self.sink = sink
        self.pipeline = pipeline
        self.where = compact({"worker": worker, "revision": revision})
        self.traces = TraceMemory()
        self.open_runs = OpenRuns()
        self.heartbeat = Heartbeater(heartbeat_interval, self._beat) if sink is not None else None

    def start(self, spec: StageSpec) -> Run:
        try:
            run = self._new_run(spec)
        except Exception:
            log.exception(
                "sdk.run.start_failed stage=%s item_id=%s: the run is not reported", spec.name, spec.item_id
            )
            return _detached(spec)
        # Outside the sink check: a disabled client still gives OpenTelemetry its spans.
        run.otel_span = otel.start_run_span(
            run.context,
            attributes={"stagewatch.account": spec.account, "stagewatch.scenario": spec.scenario},
            parent=spec.traceparent,
        )
        if self.sink is not None and self.heartbeat is not None:
            self.open_runs.add(run)
            self.heartbeat.ensure_started()
            fields = {"account": spec.account, "scenario": spec.scenario, "attrs": scalar_attrs(spec.attrs)}
            run._emit("run.started", run._base, **self.where, **fields)
        return run

    def finish(self, run: Run, exc: BaseException | None) -> None:
        otel.end_run_span(run.otel_span, exc)
        if self.sink is None:
            return
        self.open_runs.discard(run)
        try:
            event_type, fields = outcome(run, exc)
        except Exception:
            log.exception("sdk.run.outcome_failed run_id=%s", run.run_id)
            event_type, fields = "run.failed", {"error": {"type": "Unknown", "message": repr(exc)}}
        run._emit(event_type, run._base, **self.where, **fields)

    def trace_hint(self, item_id: str) -> str | None:
        """The trace an event about ``item_id`` belongs to, if one is known here."""
        enclosing = current_context()
        if enclosing is not None:
            return enclosing.trace_id
        return self.traces.recall(item_id)

    def _new_run(self, spec: StageSpec) -> Run:
        item_id = str(spec.item_id)
        trace = self._trace_of(spec, item_id)
        context = RunContext(
            item_id=item_id,
            run_id=spec.run_id or ids.run_id(),
            stage=spec.name,
            trace_id=trace,
            span_id=ids.span_id(),
            attempt=spec.attempt or 1,
            pipeline=spec.pipeline or self.pipeline,
        )
        self.traces.remember(item_id, trace)
        return Run(context, self.sink, _base_fields(context), self.where)

    def _trace_of(self, spec: StageSpec, item_id: str) -> str:
        """Continue ``traceparent`` if given, else the enclosing run's trace, else the item's trace seen
        in this process, else start a new trace."""
        parent = tracing.parse_traceparent(spec.traceparent)
        if spec.traceparent and parent is None:
            warn_throttled("run.traceparent", "sdk.run.bad_traceparent value=%r: ignored", spec.traceparent)
        if parent is not None:
            return parent.trace_id
        return self.trace_hint(item_id) or ids.trace_id()

    def _beat(self, resources: dict[str, float]) -> None:
        for run in self.open_runs.snapshot():
            run._emit("run.heartbeat", run._base, resources=resources or None, progress=run.last_progress)


def _base_fields(context: RunContext) -> Record:
    return compact(
        {
            "item_id": context.item_id,
            "pipeline": context.pipeline,
            "stage": context.stage,
            "attempt": context.attempt,
            "run_id": context.run_id,
            "trace_id": context.trace_id,
            "span_id": context.span_id,
        }
    )


def _detached(spec: StageSpec) -> Run:
    context = RunContext(str(spec.item_id), ids.run_id(), str(spec.name), ids.trace_id(), ids.span_id())
    return Run(context, None, {})


def outcome(run: Run, exc: BaseException | None) -> tuple[str, Record]:
    """The terminal event of a run that ended with ``exc`` (None: it succeeded)."""
    if exc is None:
        return "run.succeeded", {}
    if isinstance(exc, RunInterrupted) or not isinstance(exc, Exception):
        # Stopped on purpose (a control-plane signal, a task cancel, Ctrl-C, SystemExit): not a failure.
        note = f"{error_type_name(exc)}: {exc}" if str(exc) else error_type_name(exc)
        return "run.cancelled", {"note": clip(note, MAX_NOTE)}
    return "run.failed", {"error": error_info(exc, retryable_of(exc, run.retryable))}


class StageScope:
    """What ``client.stage(...)`` returns: enter it with ``with`` or ``async with`` to get the ``Run``.
    Inside, ``current_run()`` is that run. An exception leaving the block is reported and re-raised."""

    def __init__(self, lifecycle: RunLifecycle, spec: StageSpec) -> None:
        self._lifecycle = lifecycle
        self._spec = spec
        self._entered: list[tuple[Run, AbstractContextManager[RunContext], Any]] = []

    def __enter__(self) -> Run:
        run = self._lifecycle.start(self._spec)
        binding = bound(run.context)
        binding.__enter__()
        self._entered.append((run, binding, activate(run)))
        return run

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run, binding, token = self._entered.pop()
        try:
            self._lifecycle.finish(run, exc)
        finally:
            deactivate(token)
            _unbind(binding)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _unbind(binding: AbstractContextManager[RunContext]) -> None:
    try:
        binding.__exit__(None, None, None)
    except ValueError:  # left in another context than it was entered in
        log.warning("sdk.run.context_mismatch: a stage was exited in another context than it was entered in")
