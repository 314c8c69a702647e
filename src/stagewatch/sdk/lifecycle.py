"""What every run does when it begins and ends, shared by ``Client`` and ``AsyncClient``: pick its trace,
ask the control plane whether it may run (a guarded run), send ``run.started`` (an unguarded one; the
server records a guarded run's start itself), keep it among the open runs for heartbeats, and on exit
report ``succeeded``, ``failed`` (with the error) or ``cancelled``, without ever swallowing the
exception."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import replace

from stagewatch.sdk import ids, otel, tracing
from stagewatch.sdk.context import RunContext, current_context
from stagewatch.sdk.control import ControlPlane
from stagewatch.sdk.decisions import Lease
from stagewatch.sdk.diagnostics import log, warn_throttled
from stagewatch.sdk.errors import RunInterrupted
from stagewatch.sdk.guarded import Guard
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
from stagewatch.sdk.run import Run, RunSink
from stagewatch.sdk.spec import StageSpec


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
    and ``current_run()`` finds them, but nothing is sent, no thread is started and nothing is asked of
    the control plane. ``control=None`` leaves every run unguarded."""

    def __init__(
        self,
        sink: RunSink | None,
        *,
        pipeline: str | None,
        worker: str | None,
        revision: str | None,
        heartbeat_interval: float,
        control: ControlPlane | None = None,
        kill_grace: float = 5.0,
    ) -> None:
        self.sink = sink
        self.pipeline = pipeline
        self.where = compact({"worker": worker, "revision": revision})
        self.traces = TraceMemory()
        self.open_runs = OpenRuns()
        self.guard = Guard(control, self.where) if control is not None and sink is not None else None
        self.kill_grace = kill_grace
        self._interval = heartbeat_interval
        self._last_event_beat = time.monotonic()
        self.heartbeat = Heartbeater(self._beat_interval, self._beat) if sink is not None else None

    # --- beginning: prepare (cheap), admit (may block on the network), open (cheap) --------------------

    def start(self, spec: StageSpec) -> Run:
        """All three steps at once, for a synchronous ``with``."""
        context = self.prepare(spec)
        return self.open(spec, context, self.admit(spec, context))

    def prepare(self, spec: StageSpec) -> RunContext | None:
        """The run's ids and trace; None (the run goes unreported) if they cannot be made."""
        try:
            return self._context_of(spec)
        except Exception:
            log.exception(
                "sdk.run.start_failed stage=%s item_id=%s: the run is not reported", spec.name, spec.item_id
            )
            return None

    def asks_control(self, spec: StageSpec, context: RunContext | None) -> bool:
        """Whether ``admit`` goes to the network for this run."""
        return spec.guarded and self.guard is not None and context is not None

    def admit(self, spec: StageSpec, context: RunContext | None) -> Lease | None:
        """Ask the control plane (a guarded run): its lease, or None to run unguarded. Raises ``Skip``,
        ``Wait``, ``DeadLettered`` or ``Aborted`` when the run must not begin."""
        if not self.asks_control(spec, context):
            return None
        assert self.guard is not None and context is not None
        return self.guard.admit(spec, context)

    def open(self, spec: StageSpec, context: RunContext | None, lease: Lease | None) -> Run:
        """The ``Run`` the worker's code gets, now counted among the open runs."""
        if context is None:
            return _detached(spec)
        if lease is not None:  # the server counts attempts and names the run
            context = replace(context, run_id=lease.run_id, attempt=lease.attempt)
        base, grace = _base_fields(context), self.kill_grace
        run = Run(context, self.sink, base, self.where, lease=lease, kill_grace=grace)
        # Outside the sink check: a disabled client still gives OpenTelemetry its spans.
        run.otel_span = otel.start_run_span(
            run.context,
            attributes={"stagewatch.account": spec.account, "stagewatch.scenario": spec.scenario},
            parent=spec.traceparent,
        )
        if self.sink is not None and self.heartbeat is not None:
            self.open_runs.add(run)
            self.heartbeat.ensure_started()
            self._announce(run, spec)
        return run

    def _announce(self, run: Run, spec: StageSpec) -> None:
        assert self.heartbeat is not None
        if run.lease is None:
            fields = {"account": spec.account, "scenario": spec.scenario, "attrs": scalar_attrs(spec.attrs)}
            run._emit("run.started", run._base, **self.where, **fields)
            return
        # The server recorded run.started at begin; what begin does not carry goes as an annotation.
        if spec.attrs:
            run._emit("item.annotated", run._base, attrs=scalar_attrs(spec.attrs))
        if (run.lease.heartbeat_interval or self._interval) < self._interval:
            self.heartbeat.nudge()

    def give_back(self, lease: Lease) -> None:
        """Complete a run that was admitted but never began (the asyncio task waiting for the decision
        was cancelled): its lease is freed now, instead of timing out as a failed attempt."""
        if self.guard is not None:
            self.guard.give_back(lease)

    # --- the end -------------------------------------------------------------------------------------

    def finishes_remotely(self, run: Run) -> bool:
        """Whether ``finish`` goes to the network (a guarded run's complete)."""
        return run.lease is not None and self.guard is not None

    def finish(self, run: Run, exc: BaseException | None) -> None:
        run._stopper.close(exc)
        otel.end_run_span(run.otel_span, exc)
        if self.sink is None:
            return
        self.open_runs.discard(run)
        try:
            event_type, fields = outcome(run, exc)
        except Exception:
            log.exception("sdk.run.outcome_failed run_id=%s", run.run_id)
            event_type, fields = "run.failed", {"error": {"type": "Unknown", "message": repr(exc)}}
        if not self._completed(run, event_type, fields):
            run._emit(event_type, run._base, **self.where, **fields)

    def _completed(self, run: Run, event_type: str, fields: Record) -> bool:
        """Report a guarded run's end to the control plane; False when it is not guarded or the server
        did not take it (the terminal event is then queued like an unguarded run's, so it is not lost)."""
        if run.lease is None or self.guard is None:
            return False
        try:
            return self.guard.complete(run, event_type.removeprefix("run."), fields)
        except Exception:
            log.exception("sdk.run.complete_crashed run_id=%s", run.run_id)
            return False

    def trace_hint(self, item_id: str) -> str | None:
        """The trace an event about ``item_id`` belongs to, if one is known here."""
        enclosing = current_context()
        if enclosing is not None:
            return enclosing.trace_id
        return self.traces.recall(item_id)

    def _context_of(self, spec: StageSpec) -> RunContext:
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
        return context

    def _trace_of(self, spec: StageSpec, item_id: str) -> str:
        """Continue ``traceparent`` if given, else the enclosing run's trace, else the item's trace seen
        in this process, else start a new trace."""
        parent = tracing.parse_traceparent(spec.traceparent)
        if spec.traceparent and parent is None:
            warn_throttled("run.traceparent", "sdk.run.bad_traceparent value=%r: ignored", spec.traceparent)
        if parent is not None:
            return parent.trace_id
        return self.trace_hint(item_id) or ids.trace_id()

    # --- heartbeats ----------------------------------------------------------------------------------

    def _beat_interval(self) -> float:
        """The client's interval, or less when an open guarded run's lease asks for more frequent beats."""
        leases = [run.lease.heartbeat_interval for run in self.open_runs.snapshot() if run.lease is not None]
        return min([self._interval, *(seconds for seconds in leases if seconds)])

    def _beat(self, resources: dict[str, float]) -> None:
        """Unguarded runs' heartbeats go as events; guarded runs' in one request to the control plane,
        whose answer may stop them."""
        runs = self.open_runs.snapshot()
        self._beat_events([run for run in runs if run.lease is None], resources)
        guarded = [run for run in runs if run.lease is not None]
        if guarded and self.guard is not None:
            self.guard.beat(guarded, dict(resources))

    def _beat_events(self, runs: list[Run], resources: dict[str, float]) -> None:
        # At the client's own pace, even while a lease makes the thread beat faster.
        now = time.monotonic()
        if not runs or now - self._last_event_beat < self._interval * 0.9:
            return
        self._last_event_beat = now
        for run in runs:
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
