"""Completing a guarded run: free its lease, record its outcome, and apply the retry policy to a failure.
Completing twice, or after the watchdog timed the run out, is harmless. ``settle`` is the same inside a
transaction that may hold other decisions (see ``committer``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from stagewatch.domain.events import Event, EventType
from stagewatch.domain.guards import WorkState
from stagewatch.domain.pipeline import PipelineRegistry, StagePolicy
from stagewatch.domain.statuses import TERMINAL_RUN_STATUSES
from stagewatch.errors import NotFound
from stagewatch.service.control.committer import Job
from stagewatch.service.control.facts import Facts, decision_transaction, fact
from stagewatch.service.control.retries import settle_failure, timed_out_error
from stagewatch.store import control
from stagewatch.store.engine import Database

SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
OUTCOMES = (SUCCEEDED, FAILED, CANCELLED)
_EVENT_OF = {
    SUCCEEDED: EventType.RUN_SUCCEEDED,
    FAILED: EventType.RUN_FAILED,
    CANCELLED: EventType.RUN_CANCELLED,
}


_TERMINAL = frozenset(s.value for s in TERMINAL_RUN_STATUSES)


@dataclass(frozen=True, slots=True)
class Completion:
    run_id: str
    outcome: str
    next: str  # done, retry or dead_letter
    retry_after: float | None = None


def complete(
    db: Database,
    registry: PipelineRegistry,
    run_id: str,
    outcome: str,
    error: Mapping[str, Any] | None = None,
    note: str | None = None,
    now: float | None = None,
) -> Completion:
    """Record how a run ended, in a transaction of its own."""
    with decision_transaction(db, registry) as facts:
        return settle(facts, registry, run_id, outcome, error, note, now)


def settle(
    facts: Facts,
    registry: PipelineRegistry,
    run_id: str,
    outcome: str,
    error: Mapping[str, Any] | None = None,
    note: str | None = None,
    now: float | None = None,
) -> Completion:
    """``complete`` in an open transaction; the events go to ``facts``."""
    now = time.time() if now is None else now
    conn = facts.conn
    run = control.run_identity(conn, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} does not exist")
    lease = control.release(conn, run_id)
    work_row = control.work_of_run(conn, run["item_id"], run_id)
    events: list[Event] = []
    # Once only; but a success reported after a time-out still counts (the work did get done).
    if run["status"] not in _TERMINAL or (outcome == SUCCEEDED and run["status"] != SUCCEEDED):
        events.append(_terminal_event(run, run_id, outcome, error, note, now))
    policy = registry.require(run["pipeline"]).stage(run["stage"])
    result = _settle(conn, work_row, policy, lease, run_id, outcome, error, now, events)
    facts.add(events, now)
    return result


def as_job(
    registry: PipelineRegistry,
    run_id: str,
    outcome: str,
    error: Mapping[str, Any] | None = None,
    note: str | None = None,
) -> Job[Completion]:
    """``complete`` for the ``DecisionCommitter``."""
    return Job(
        lambda facts: settle(facts, registry, run_id, outcome, error, note),
        lambda facts: _reads_pending(facts, run_id),
    )


def _reads_pending(facts: Facts, run_id: str) -> bool:
    """Whether completing ``run_id`` may read the projection of events still pending in ``facts``: it
    reads the run's projected status and its item's pipeline."""
    if not facts.pending:
        return False
    if facts.concern(run_id=run_id):
        return True
    item_id = control.run_item(facts.conn, run_id)
    return item_id is not None and facts.concern(item_id=item_id)


def _terminal_event(
    run: Mapping[str, Any],
    run_id: str,
    outcome: str,
    error: Mapping[str, Any] | None,
    note: str | None,
    now: float,
) -> Event:
    return fact(
        _EVENT_OF[outcome], run["item_id"], now, pipeline=run["pipeline"], stage=run["stage"],
        run_id=run_id, attempt=run["attempt"], error=dict(error) if outcome == FAILED and error else None,
        note=note,
    )  # fmt: skip


def _settle(
    conn: Connection,
    work_row: Mapping[str, Any] | None,
    policy: StagePolicy,
    lease: Mapping[str, Any] | None,
    run_id: str,
    outcome: str,
    error: Mapping[str, Any] | None,
    now: float,
    events: list[Event],
) -> Completion:
    if work_row is None:  # not a guarded run, or superseded by a later attempt: nothing to settle
        return Completion(run_id, outcome, "done")
    work_id = (work_row["pipeline"], work_row["stage"], work_row["work_key"])
    if outcome == SUCCEEDED:
        # Also after a time-out: the work did get done, so a scheduled retry must find it succeeded.
        if work_row["state"] != WorkState.DEAD.value:
            control.update_work(conn, work_id, state=WorkState.SUCCEEDED.value, last_error=None,
                                next_attempt_at=None, updated_at=now)  # fmt: skip
        return Completion(run_id, outcome, "done")
    if work_row["state"] != WorkState.RUNNING.value:  # already settled (timed out, or completed before)
        return _as_settled(run_id, outcome, work_row, now)
    failure = _failure_of(outcome, error, lease)
    if failure is None:  # cancelled by an operator: the cancel guard holds it; a resume re-arms it
        control.update_work(conn, work_id, state=WorkState.IDLE.value, updated_at=now)
        return Completion(run_id, outcome, "done")
    verdict, delay, more = settle_failure(conn, work_row, policy, failure, now)
    events.extend(more)
    return Completion(run_id, outcome, verdict, delay)


def _failure_of(
    outcome: str, error: Mapping[str, Any] | None, lease: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """The error a non-successful outcome counts as; None for an operator's cancel (not a failure)."""
    if outcome == FAILED:
        return error or {"type": "Error", "message": "failed without an error report", "retryable": None}
    stop = str(lease["stop_reason"]) if lease is not None and lease["stop_reason"] else ""
    if stop.startswith("runaway"):
        return timed_out_error(stop)
    return None


def _as_settled(run_id: str, outcome: str, work_row: Mapping[str, Any], now: float) -> Completion:
    state = work_row["state"]
    if state == WorkState.DEAD.value:
        return Completion(run_id, outcome, "dead_letter")
    if state == WorkState.FAILED.value and work_row["next_attempt_at"] is not None:
        return Completion(run_id, outcome, "retry", max(0.0, work_row["next_attempt_at"] - now))
    return Completion(run_id, outcome, "done")
