"""Heartbeats of guarded runs: each one extends the run's lease, and the answer says whether to go on.

``stop`` is answered when an operator cancelled the item or stopped the run, when the run is past its
deadline (a runaway), or when it has no lease any more (it timed out, or never began)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stagewatch.domain.events import Event, EventType
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service.control.committer import Job
from stagewatch.service.control.facts import Facts, decision_transaction, fact
from stagewatch.store import control
from stagewatch.store.engine import Database

CONTINUE, STOP = "continue", "stop"


@dataclass(frozen=True, slots=True)
class BeatReport:
    run_id: str
    progress: float | None = None
    note: str | None = None
    resources: Mapping[str, float] | None = None


@dataclass(frozen=True, slots=True)
class BeatAnswer:
    run_id: str
    action: str
    reason: str | None = None


@dataclass(slots=True)
class BeatOutcome:
    answers: list[BeatAnswer] = field(default_factory=list)
    # run.heartbeat events for the projection (heartbeat age, progress, resources), which the caller
    # hands to group commit: they need not hold up the answer.
    events: list[Event] = field(default_factory=list)


def heartbeat(
    db: Database, registry: PipelineRegistry, reports: Sequence[BeatReport], now: float | None = None
) -> BeatOutcome:
    """Extend the leases of the reported runs and answer each, in a transaction of its own."""
    with decision_transaction(db, registry) as facts:
        return beat(facts, registry, reports, now)


def beat(
    facts: Facts, registry: PipelineRegistry, reports: Sequence[BeatReport], now: float | None = None
) -> BeatOutcome:
    """``heartbeat`` in an open transaction. It reads no projection, and its events are the caller's."""
    now = time.time() if now is None else now
    conn, outcome = facts.conn, BeatOutcome()
    found = control.leases_of(conn, [r.run_id for r in reports])
    cancelled = control.cancelled_among(conn, sorted({lease["item_id"] for lease in found.values()}))
    for report in reports:
        lease = found.get(report.run_id)
        if lease is None:
            outcome.answers.append(BeatAnswer(report.run_id, STOP, "no lease: the run ended or timed out"))
            continue
        policy = registry.require(lease["pipeline"]).stage(lease["stage"])
        control.beat(conn, report.run_id, now, policy.heartbeat_timeout)
        reason = _stop_reason(lease, cancelled, now)
        if reason is not None and lease["stop_reason"] is None:
            control.request_stop(conn, report.run_id, reason)
        outcome.answers.append(BeatAnswer(report.run_id, STOP if reason else CONTINUE, reason))
        outcome.events.append(_beat_event(lease, report, now))
    return outcome


def as_job(registry: PipelineRegistry, reports: Sequence[BeatReport]) -> Job[BeatOutcome]:
    """``heartbeat`` for the ``DecisionCommitter``."""
    return Job(lambda facts: beat(facts, registry, reports))


def _stop_reason(lease: Mapping[str, Any], cancelled: Mapping[str, Any], now: float) -> str | None:
    if lease["stop_reason"]:
        return str(lease["stop_reason"])
    cancel = cancelled.get(lease["item_id"])
    if cancel is not None:
        return f"cancelled by {cancel.actor}: {cancel.reason}"
    if now > lease["deadline"]:
        return runaway_reason(lease, now)
    return None


def runaway_reason(lease: Mapping[str, Any], now: float) -> str:
    limit = lease["deadline"] - lease["started_at"]
    return f"runaway: running {_span(now - lease['started_at'])}, past its {_span(limit)} timeout"


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def _beat_event(lease: Mapping[str, Any], report: BeatReport, now: float) -> Event:
    return fact(
        EventType.RUN_HEARTBEAT, lease["item_id"], now, pipeline=lease["pipeline"], stage=lease["stage"],
        run_id=lease["run_id"], attempt=lease["attempt"], progress=report.progress, note=report.note,
        resources=dict(report.resources) if report.resources else None,
    )  # fmt: skip
