"""``begin``: read a snapshot of everything that bears on one run, ask the guard chain, and act on its
decision, all in one transaction (see store/control.py for how that stays atomic across replicas).
``decide`` is the same decision inside a transaction that may hold others (see ``committer``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection

from stagewatch.domain.events import Event, EventType, default_run_id
from stagewatch.domain.guards import Action, Decision, RateUse, SlotUse, Snapshot, StageOverride, WorkState
from stagewatch.domain.guards import decide as guard_chain
from stagewatch.domain.guards.limits import render_key
from stagewatch.domain.pipeline import Pipeline, PipelineRegistry, StagePolicy
from stagewatch.service.control.committer import Job
from stagewatch.service.control.facts import Facts, decision_transaction, fact
from stagewatch.service.control.retries import dead_letter, time_out
from stagewatch.store import control, overrides
from stagewatch.store.control import WorkId
from stagewatch.store.dependencies import read_states
from stagewatch.store.engine import Database


@dataclass(frozen=True, slots=True)
class BeginRequest:
    stage: str
    item_id: str
    pipeline: str | None = None
    key: str | None = None
    payload: Any = None
    run_id: str | None = None
    account: str | None = None
    scenario: str | None = None
    worker: str | None = None
    revision: str | None = None
    trace_id: str | None = None
    span_id: str | None = None


@dataclass(frozen=True, slots=True)
class BeginResult:
    decision: Decision
    run_id: str | None = None
    deadline: float | None = None
    heartbeat_timeout: float | None = None
    timeout: float | None = None  # seconds from the start to the deadline

    @property
    def heartbeat_interval(self) -> float | None:
        # Three beats per timeout: one lost request does not time a healthy run out.
        return self.heartbeat_timeout / 3 if self.heartbeat_timeout is not None else None


@dataclass(frozen=True, slots=True)
class _Limits:
    """The limit keys one begin touches: (display name, storage key, limit[, window])."""

    concurrency: tuple[tuple[str, str, int], ...]
    rates: tuple[tuple[str, str, int, float], ...]

    @property
    def keys(self) -> list[str]:
        return [key for _, key, _ in self.concurrency] + [key for _, key, _, _ in self.rates]


@dataclass(slots=True)
class _Attempt:
    """What one ``decide`` works with once it has locked the work: acting on the decision needs all of
    it, and the events it records are gathered here until the decision is done."""

    conn: Connection
    pipeline: Pipeline
    policy: StagePolicy
    request: BeginRequest
    limits: _Limits
    now: float
    events: list[Event]

    def record(self, event_type: EventType, **fields: Any) -> None:
        self.events.append(
            fact(event_type, self.request.item_id, self.now, pipeline=self.pipeline.name,
                 stage=self.policy.name, **fields)
        )  # fmt: skip


def begin(
    db: Database, registry: PipelineRegistry, request: BeginRequest, now: float | None = None
) -> BeginResult:
    """Decide whether the run may go ahead, and record the decision, in a transaction of its own."""
    with decision_transaction(db, registry) as facts:
        return decide(facts, registry, request, now)


def decide(
    facts: Facts, registry: PipelineRegistry, request: BeginRequest, now: float | None = None
) -> BeginResult:
    """``begin`` in an open transaction; the events go to ``facts``."""
    now = time.time() if now is None else now
    pipeline = registry.require(request.pipeline)
    policy = pipeline.stage(request.stage)
    work_id: WorkId = (pipeline.name, policy.name, request.key or request.item_id)
    limits = _limits_of(pipeline, policy, request)
    conn = facts.conn
    events: list[Event] = []
    row = control.lock_work(conn, work_id, request.item_id, now)
    row, live = _reap_expired(conn, row, policy, work_id, now, events)
    override = overrides.override_of(conn, pipeline.name, policy.name)
    control.lock_keys(conn, [*limits.keys, *_cap_keys(pipeline, policy, override)])
    snapshot = _snapshot(conn, policy, row, live, request.item_id, limits, now)
    if override is not None:
        snapshot = replace(
            snapshot, override=override, stage_running=_running(conn, override, pipeline, policy, now)
        )
    attempt = _Attempt(conn, pipeline, policy, request, limits, now, events)
    result = _act(attempt, guard_chain(snapshot), row)
    facts.add(events, now)
    return result


def _cap_keys(pipeline: Pipeline, policy: StagePolicy, override: StageOverride | None) -> list[str]:
    """An operator's cap on the stage is a limit key like any other: counted under its lock."""
    if override is None or override.max_running is None:
        return []
    return [f"{pipeline.name}|stage cap {policy.name}"]


def _running(
    conn: Connection, override: StageOverride, pipeline: Pipeline, policy: StagePolicy, now: float
) -> int:
    if override.max_running is None:
        return 0
    return overrides.stage_running(conn, pipeline.name, policy.name, now)


def as_job(registry: PipelineRegistry, request: BeginRequest) -> Job[BeginResult]:
    """``begin`` for the ``DecisionCommitter``. It reads the projection of the item (its last control
    fact) and of the runs it may name, so events pending about those must be projected first."""
    return Job(
        lambda facts: decide(facts, registry, request),
        lambda facts: facts.concern(item_id=request.item_id, run_id=request.run_id),
    )


def _limits_of(pipeline: Pipeline, policy: StagePolicy, request: BeginRequest) -> _Limits:
    fields = {
        "pipeline": pipeline.name, "stage": policy.name, "item": request.item_id,
        "account": request.account, "scenario": request.scenario,
    }  # fmt: skip
    concurrency: list[tuple[str, str, int]] = []
    for scope, limits in ((None, pipeline.concurrency), (policy.name, policy.concurrency)):
        for limit in limits:
            key = render_key(limit.key, fields)
            if key is not None:
                name = f"{scope} {key}" if scope else key
                concurrency.append((name, f"{pipeline.name}|{name}", limit.limit))
    rates = []
    for rate in policy.rate_limits:
        key = render_key(rate.key, fields)
        if key is not None:
            name = f"{policy.name} {key}"
            rates.append((name, f"{pipeline.name}|{name}", rate.limit, rate.per_seconds))
    return _Limits(tuple(concurrency), tuple(rates))


def _reap_expired(
    conn: Connection,
    row: dict[str, Any],
    policy: StagePolicy,
    work_id: WorkId,
    now: float,
    events: list[Event],
) -> tuple[dict[str, Any], bool]:
    """A run that holds the work but stopped heartbeating is timed out now rather than at the next
    watchdog sweep, so a redelivery after a crash does not wait for it. Returns (row, lease is live)."""
    if row["state"] != WorkState.RUNNING.value or row["run_id"] is None:
        return row, False
    lease = control.lease(conn, row["run_id"])
    if lease is not None and lease["expires_at"] > now:
        return row, True
    if lease is not None:
        events.extend(time_out(conn, lease, policy, _silence(lease, now), now))
    else:  # the lease vanished without a completion (a crash between statements cannot do it; be safe)
        control.update_work(conn, work_id, state=WorkState.FAILED.value, updated_at=now)
    return control.lock_work(conn, work_id, row["item_id"], now), False


def _silence(lease: Mapping[str, Any], now: float) -> str:
    return f"no heartbeat for {now - lease['heartbeat_at']:.0f}s (lease expired)"


def _snapshot(
    conn: Connection,
    policy: StagePolicy,
    row: Mapping[str, Any],
    live: bool,
    item_id: str,
    limits: _Limits,
    now: float,
) -> Snapshot:
    concurrency = tuple(
        SlotUse(name, limit, control.slot_use(conn, key, now)) for name, key, limit in limits.concurrency
    )
    rates = []
    for name, key, limit, window in limits.rates:
        used, oldest = control.rate_use(conn, key, now - window)
        rates.append(RateUse(name, limit, window, used, oldest))
    return Snapshot(
        now=now,
        policy=policy,
        work=control.work_snapshot(row, live),
        cancellation=control.active_cancellation(conn, item_id),
        dependencies=read_states(conn, policy.depends_on),
        concurrency=concurrency,
        rates=tuple(rates),
    )


def _act(attempt: _Attempt, decision: Decision, row: Mapping[str, Any]) -> BeginResult:
    conn, request = attempt.conn, attempt.request
    work_id: WorkId = (attempt.pipeline.name, attempt.policy.name, row["work_key"])
    if decision.action is Action.RUN:
        return _start(attempt, decision, row)
    if decision.action is Action.SKIP:
        control.update_work(conn, work_id, duplicates=row["duplicates"] + 1)
        attempt.record(EventType.ITEM_DUPLICATE, note=decision.reason)
    elif decision.action is Action.WAIT:
        if _blocker_changed(conn, request.item_id, decision):
            attempt.record(EventType.ITEM_WAITING, note=decision.reason)
    elif decision.action is Action.DEAD_LETTER and decision.enqueue_dead_letter:
        dead_letter(conn, row, row["last_error"], decision.reason, attempt.now)
        attempt.record(EventType.ITEM_DEAD_LETTERED, note=decision.reason)
    return BeginResult(decision)


def _blocker_changed(conn: Connection, item_id: str, decision: Decision) -> bool:
    """Whether this wait is news: a message redelivered every few seconds into the same wait must not
    flood the item's history with identical facts."""
    current = control.item_control(conn, item_id)
    if current is None or current.get("kind") != EventType.ITEM_WAITING.value:
        return True
    reason = str(current.get("reason") or "")
    return decision.blocker is None or not reason.startswith(decision.blocker)


def _start(attempt: _Attempt, decision: Decision, row: Mapping[str, Any]) -> BeginResult:
    conn, request, pipeline, policy, now = (
        attempt.conn, attempt.request, attempt.pipeline, attempt.policy, attempt.now
    )  # fmt: skip
    number = decision.attempt or 1
    run_id = _run_id(conn, request, row, number)
    deadline = now + policy.timeout
    lease = {
        "run_id": run_id, "pipeline": pipeline.name, "stage": policy.name, "work_key": row["work_key"],
        "item_id": request.item_id, "attempt": number, "worker": request.worker, "started_at": now,
        "heartbeat_at": now, "expires_at": now + policy.heartbeat_timeout, "deadline": deadline,
        "stop_reason": None, "stuck": False,
    }  # fmt: skip
    limits = attempt.limits
    control.take_lease(
        conn, lease, [key for _, key, _ in limits.concurrency], [k for _, k, _, _ in limits.rates]
    )
    payload = request.payload if request.payload is not None else row["payload"]
    control.update_work(
        conn, (pipeline.name, policy.name, row["work_key"]), state=WorkState.RUNNING.value,
        attempts=number, run_id=run_id, next_attempt_at=None, payload=payload, updated_at=now,
    )  # fmt: skip
    attempt.record(
        EventType.RUN_STARTED, run_id=run_id, attempt=number, account=request.account,
        scenario=request.scenario, worker=request.worker, revision=request.revision,
        trace_id=request.trace_id, span_id=request.span_id,
    )  # fmt: skip
    return BeginResult(decision, run_id, deadline, policy.heartbeat_timeout, policy.timeout)


def _run_id(conn: Connection, request: BeginRequest, row: Mapping[str, Any], attempt: int) -> str:
    """The first attempt may take the id the enqueuer chose (so its ``run.enqueued`` and this start are
    one run); later attempts are named by item, stage (and key, when it is not the item) and attempt.
    After a replay the attempts count again from 1, so a name already used gets a random suffix."""
    if row["work_key"] != request.item_id:
        name = f"{request.item_id}/{request.stage}/{row['work_key']}/{attempt}"
    else:
        name = default_run_id(request.item_id, request.stage, attempt)
    chosen = request.run_id if attempt == 1 and request.run_id else None
    # Both names in one query.
    statuses = control.run_statuses(conn, [name] if chosen is None else [chosen, name])
    if chosen is not None and statuses.get(chosen) in (None, "queued"):
        return chosen
    return name if name not in statuses else f"{name}~{uuid.uuid4().hex[:8]}"
