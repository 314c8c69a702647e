"""The projection: items and runs folded from events.

Every field is a *join* over the events seen so far — a minimum, a maximum, or the value of the event
with the greatest (or least) ordering key — so applying the same set of events in any order, any number
of times, gives the same runs and items. That is what lets ingest accept late, duplicated and
out-of-order batches and still agree with itself. The ordering keys are kept in ``registers`` so the fold
can continue incrementally from stored rows without re-reading the event log.

Rules (see also docs/events.md):
- A run's status is that of its greatest *status key* ``(phase, priority, time, event id)``: queued <
  running < terminal; among terminal reports ``succeeded > failed > timed_out > cancelled`` (a worker's
  own report of the outcome beats a watchdog's or a racing cancel), then the later one.
- The item's status and stage are derived from its runs, never written. The current run is in the
  stage whose run began last, and is that stage's highest attempt.
- A control-plane fact (waiting, cancelled, dead-lettered, resumed: the latest one, by time) overrides
  that status until a run *starts* after it. So a cancel shows at once even while the run still runs, and
  the next attempt's start ends a wait.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stagewatch.domain.events import Event, EventType
from stagewatch.domain.fingerprint import fingerprint
from stagewatch.domain.pipeline import Pipeline
from stagewatch.domain.statuses import TERMINAL_RUN_STATUSES, ItemStatus, RunStatus

Key = tuple[Any, ...]

_RUN_STATUS_OF = {
    EventType.RUN_ENQUEUED: RunStatus.QUEUED,
    EventType.RUN_STARTED: RunStatus.RUNNING,
    EventType.RUN_HEARTBEAT: RunStatus.RUNNING,
    EventType.RUN_PROGRESS: RunStatus.RUNNING,
    EventType.RUN_SUCCEEDED: RunStatus.SUCCEEDED,
    EventType.RUN_FAILED: RunStatus.FAILED,
    EventType.RUN_CANCELLED: RunStatus.CANCELLED,
    EventType.RUN_TIMED_OUT: RunStatus.TIMED_OUT,
}
_PHASE = {RunStatus.QUEUED: 0, RunStatus.RUNNING: 1}
_TERMINAL_PRIORITY = {
    RunStatus.SUCCEEDED: 3,
    RunStatus.FAILED: 2,
    RunStatus.TIMED_OUT: 1,
    RunStatus.CANCELLED: 0,
}
_ACTIVITY = (EventType.RUN_STARTED, EventType.RUN_HEARTBEAT, EventType.RUN_PROGRESS)
# The item status each control fact stands for while it is in force. A duplicate is history only.
_CONTROL_STATUS = {
    EventType.ITEM_WAITING.value: ItemStatus.WAITING,
    EventType.ITEM_CANCELLED.value: ItemStatus.CANCELLED,
    EventType.ITEM_DEAD_LETTERED.value: ItemStatus.DEAD_LETTERED,
    EventType.ITEM_RESUMED.value: ItemStatus.QUEUED,
}
_RUN_TO_ITEM_STATUS = {
    RunStatus.QUEUED: ItemStatus.QUEUED,
    RunStatus.RUNNING: ItemStatus.RUNNING,
    RunStatus.FAILED: ItemStatus.FAILED,
    RunStatus.TIMED_OUT: ItemStatus.FAILED,
    RunStatus.CANCELLED: ItemStatus.CANCELLED,
}


@dataclass(slots=True)
class RunState:
    """One attempt of one stage for one item."""

    run_id: str
    item_id: str
    stage: str
    attempt: int
    status: RunStatus
    enqueued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    heartbeat_at: float | None = None
    progress: float | None = None
    progress_note: str | None = None
    worker: str | None = None
    revision: str | None = None
    error: dict[str, Any] | None = None
    error_fingerprint: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    registers: dict[str, Key] = field(default_factory=dict)

    @property
    def began_at(self) -> float:
        """When the run first showed up, whichever report came first."""
        # Asked for every run of every changed item on each ingest: no list, no generator.
        first = self.enqueued_at
        started, ended = self.started_at, self.ended_at
        if started is not None and (first is None or started < first):
            first = started
        if ended is not None and (first is None or ended < first):
            first = ended
        return 0.0 if first is None else first

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or self.heartbeat_at or self.started_at) - self.started_at


@dataclass(slots=True)
class ItemState:
    """One video: facts reported about it, plus status and stage derived from its runs."""

    item_id: str
    pipeline: str
    created_at: float
    updated_at: float
    account: str | None = None
    scenario: str | None = None
    trace_id: str | None = None
    source: str | None = None
    actor: str | None = None
    params: dict[str, Any] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    event_count: int = 0
    status: ItemStatus = ItemStatus.RECEIVED
    stage: str | None = None
    status_since: float | None = None
    attempts: int = 0
    last_error: dict[str, Any] | None = None
    stages_done: list[str] = field(default_factory=list)
    stuck: bool = False
    stuck_reason: str | None = None
    control: dict[str, Any] | None = None
    registers: dict[str, Key] = field(default_factory=dict)


# --- registers -------------------------------------------------------------------------------------


def _keep_least(registers: dict[str, Key], name: str, key: Key) -> bool:
    """Record ``key`` for register ``name`` if it is less than the held one; say whether it was."""
    held = registers.get(name)
    if held is not None and key >= held:
        return False
    registers[name] = key
    return True


def _keep_greatest(registers: dict[str, Key], name: str, key: Key) -> bool:
    """Record ``key`` for register ``name`` if it is greater than the held one; say whether it was."""
    held = registers.get(name)
    if held is not None and key <= held:
        return False
    registers[name] = key
    return True


def _min(current: float | None, value: float) -> float:
    return value if current is None or value < current else current


def _max(current: float | None, value: float) -> float:
    return value if current is None or value > current else current


# --- runs ------------------------------------------------------------------------------------------


def new_run(event: Event) -> RunState:
    assert event.run_id is not None and event.stage is not None
    return RunState(
        run_id=event.run_id,
        item_id=event.item_id,
        stage=event.stage,
        attempt=event.attempt or 1,
        status=_RUN_STATUS_OF[event.type],
    )


def apply_run_event(run: RunState | None, event: Event) -> RunState:
    """Fold one run event into the run's state (creating it on first sight)."""
    run = run or new_run(event)
    t, eid = event.at, event.id
    _apply_identity(run, event, (t, eid))
    _apply_status(run, event, t, eid)
    if event.type is EventType.RUN_ENQUEUED:
        run.enqueued_at = _min(run.enqueued_at, t)
    if event.type in _ACTIVITY:
        run.started_at = _min(run.started_at, t)
        run.heartbeat_at = _max(run.heartbeat_at, t)
    if event.progress is not None and _keep_greatest(run.registers, "progress", (t, eid)):
        run.progress, run.progress_note = event.progress, event.note
    if (event.worker or event.revision) and _keep_greatest(run.registers, "worker", (t, eid)):
        run.worker, run.revision = event.worker, event.revision
    if event.trace_id and _keep_least(run.registers, "trace", (t, eid)):
        run.trace_id, run.span_id = event.trace_id, event.span_id
    for name, value in (event.resources or {}).items():
        run.resources[name] = _max(run.resources.get(name), value)
    # From the final stage and error, so a stage settled by a later-arriving earlier report counts too.
    run.error_fingerprint = (
        fingerprint(run.stage, run.error["type"], run.error["message"]) if run.error else None
    )
    return run


def _apply_identity(run: RunState, event: Event, key: Key) -> None:
    # The same run id should always name the same item, stage and attempt; if a client disagrees with
    # itself, the earliest report decides, so the result still does not depend on arrival order.
    if _keep_least(run.registers, "identity", key):
        assert event.stage is not None
        run.item_id, run.stage, run.attempt = event.item_id, event.stage, event.attempt or 1


def _apply_status(run: RunState, event: Event, t: float, eid: str) -> None:
    status = _RUN_STATUS_OF[event.type]
    if status in TERMINAL_RUN_STATUSES:
        key: Key = (2, _TERMINAL_PRIORITY[status], t, eid)
    else:
        key = (_PHASE[status], 0, t, eid)
    if not _keep_greatest(run.registers, "status", key):
        return
    run.status = status
    if status in TERMINAL_RUN_STATUSES:
        run.ended_at = t
        run.error = _error_of(event, status)


def _error_of(event: Event, status: RunStatus) -> dict[str, Any] | None:
    if event.error is not None and status is not RunStatus.SUCCEEDED:
        return event.error.model_dump()
    if status is RunStatus.TIMED_OUT:
        return {
            "type": "TimedOut",
            "message": event.note or "run timed out",
            "stack": None,
            "retryable": True,
        }
    return None


# --- items -----------------------------------------------------------------------------------------

_ITEM_FIELDS = ("account", "scenario", "trace_id", "source", "actor", "params")


def new_item(event: Event, pipeline: str) -> ItemState:
    return ItemState(item_id=event.item_id, pipeline=pipeline, created_at=event.at, updated_at=event.at)


def apply_item_event(item: ItemState | None, event: Event, pipeline: str) -> ItemState:
    """Fold the item-level facts one event carries: who submitted it, account, scenario, attributes."""
    item = item or new_item(event, pipeline)
    t, eid = event.at, event.id
    # The creation event is authoritative; otherwise the earliest report of a fact decides.
    rank = 0 if event.type is EventType.ITEM_CREATED else 1
    if t < item.created_at:
        item.created_at = t
    if t > item.updated_at:
        item.updated_at = t
    item.event_count += 1
    if _keep_least(item.registers, "pipeline", (rank, t, eid)):
        item.pipeline = pipeline
    for name in _ITEM_FIELDS:
        value = getattr(event, name)
        if value is not None and _keep_least(item.registers, name, (rank, t, eid)):
            setattr(item, name, value)
    for name, value in (event.attrs or {}).items():
        if _keep_greatest(item.registers, f"attr:{name}", (t, eid)):
            item.attrs[name] = value
    # EventType is a StrEnum: its members find the str keys of _CONTROL_STATUS directly.
    if event.type in _CONTROL_STATUS and _keep_greatest(item.registers, "control", (t, eid)):
        item.control = {"kind": event.type.value, "stage": event.stage, "at": t, "reason": event.note}
    return item


def current_run(runs: Iterable[RunState], pipeline: Pipeline) -> RunState | None:
    """Where the item is now: the stage whose run began last, and within that stage the highest attempt.

    Attempts are ordered by number, not by clock, so a retry reported by a worker whose clock runs
    behind still supersedes the attempt it retries.
    """
    runs = list(runs)
    latest = max(
        runs, key=lambda r: (r.began_at, pipeline.index_of(r.stage), r.attempt, r.run_id), default=None
    )
    if latest is None:
        return None
    same_stage = (r for r in runs if r.stage == latest.stage)
    return max(same_stage, key=lambda r: (r.attempt, r.began_at, r.run_id))


def derive_item(item: ItemState, runs: list[RunState], pipeline: Pipeline) -> ItemState:
    """Set the item's status, stage, attempts, last error and finished stages from its runs. A stuck
    mark (the watchdog's) is cleared once the item moves: a new status, stage or time in it."""
    where = (item.status, item.stage, item.status_since)
    _derive_position(item, runs, pipeline)
    if item.stuck and (item.status, item.stage, item.status_since) != where:
        item.stuck, item.stuck_reason = False, None
    return item


def _derive_position(item: ItemState, runs: list[RunState], pipeline: Pipeline) -> None:
    run = current_run(runs, pipeline)
    item.stages_done = sorted(
        {r.stage for r in runs if r.status is RunStatus.SUCCEEDED}, key=pipeline.index_of
    )
    item.last_error = _last_error(runs)
    if run is None:
        item.status, item.status_since, item.attempts = ItemStatus.RECEIVED, item.created_at, 0
        item.stage = pipeline.stage_names[0] if pipeline.stages else None
        _apply_control(item, None)
        return
    item.stage, item.status, item.status_since = _position(run, pipeline)
    # Queued at the next stage after a success: no attempt has been made there yet.
    item.attempts = run.attempt if item.stage == run.stage else 0
    _apply_control(item, run)


def _apply_control(item: ItemState, run: RunState | None) -> None:
    """Let the latest control fact decide the status, unless a run started after it."""
    control = item.control
    if control is None or (run is not None and run.started_at is not None and run.started_at > control["at"]):
        return
    item.status = _CONTROL_STATUS[control["kind"]]
    item.status_since = control["at"]
    if control.get("stage"):
        item.stage = control["stage"]


def _position(run: RunState, pipeline: Pipeline) -> tuple[str, ItemStatus, float | None]:
    """(stage, status, since) for an item whose current run is ``run``."""
    if run.status is RunStatus.SUCCEEDED:
        policy = pipeline.stage(run.stage) if pipeline.has_stage(run.stage) else None
        if policy is not None and policy.on_success is not None:
            return run.stage, policy.on_success, run.ended_at
        following = pipeline.next_stage(run.stage)
        if following is None:
            return run.stage, ItemStatus.PUBLISHED, run.ended_at
        # Between stages: done here, not yet picked up by the next one.
        return following, ItemStatus.QUEUED, run.ended_at
    since = run.enqueued_at if run.status is RunStatus.QUEUED else run.started_at
    if run.status.is_terminal:
        since = run.ended_at
    return run.stage, _RUN_TO_ITEM_STATUS[run.status], since if since is not None else run.began_at


def _last_error(runs: list[RunState]) -> dict[str, Any] | None:
    failed = [r for r in runs if r.error is not None and r.ended_at is not None]
    if not failed:
        return None
    worst = max(failed, key=lambda r: (r.ended_at, r.run_id))
    assert worst.error is not None
    return {
        **worst.error,
        "stage": worst.stage,
        "attempt": worst.attempt,
        "run_id": worst.run_id,
        "at": worst.ended_at,
        "fingerprint": worst.error_fingerprint,
    }
