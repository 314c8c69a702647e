"""The watchdog: one sweep finds runs whose heartbeats stopped, runs past their deadline and items that
overstay a stage, and acts. Run by one replica at a time (see service/leader.py).

- A lease silent for over half its heartbeat timeout is marked **stuck** (the item too, with why).
- A lease silent for its whole heartbeat timeout is **timed out**: ``run.timed_out``, slots freed, and
  the retry policy applies (backoff, or the dead-letter queue).
- A run past its deadline is told to **stop** at its next heartbeat; one still holding its lease a
  heartbeat timeout after that is timed out even if it keeps beating (it ignores stop).
- Items that stay queued, waiting or ready longer than the stage's ``dwell_slo`` are marked stuck.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stagewatch.domain.events import Event
from stagewatch.domain.pipeline import Pipeline, PipelineRegistry
from stagewatch.domain.statuses import ItemStatus
from stagewatch.service.control.facts import Facts, decision_transaction
from stagewatch.service.control.heartbeats import runaway_reason
from stagewatch.service.control.retries import time_out
from stagewatch.service.leader import Leadership, PeriodicTask
from stagewatch.store import control
from stagewatch.store.driver import retry_transient
from stagewatch.store.engine import Database


@dataclass(slots=True)
class SweepReport:
    timed_out: int = 0
    stopped: int = 0
    stuck_runs: int = 0
    stuck_items: int = 0
    rate_hits_pruned: int = 0


def sweep(db: Database, registry: PipelineRegistry, now: float | None = None) -> SweepReport:
    now = time.time() if now is None else now
    report = SweepReport()
    _time_out_silent(db, registry, now, report)
    # Decision transactions keep the SQLite writer's projection cache in step with what they write, so a
    # sweep does not make the next ingest read back every video it had cached.
    with decision_transaction(db, registry) as facts:
        facts.add(_watch_live(facts, registry, now, report), now)
        report.rate_hits_pruned = control.prune_rate_hits(facts.conn, now - _longest_window(registry))
    # After the time-outs above are committed (an item they moved on is not overstaying), and in a
    # transaction of its own: one that had projected events holds stage counter rows, and locking items
    # after those could deadlock with ingest on PostgreSQL, which locks items first.
    with decision_transaction(db, registry) as facts:
        for pipeline in registry.pipelines.values():
            report.stuck_items += _mark_overstaying(facts, pipeline, now)
    return report


def _mark_item_stuck(facts: Facts, item_id: str, reason: str) -> None:
    control.mark_item_stuck(facts.conn, item_id, reason)
    facts.changed_outside(item_id)


def _time_out_silent(db: Database, registry: PipelineRegistry, now: float, report: SweepReport) -> None:
    while True:
        with decision_transaction(db, registry) as facts:
            conn = facts.conn
            expired = control.expired_leases(conn, now)
            events: list[Event] = []
            for lease in expired:
                policy = registry.require(lease["pipeline"]).stage(lease["stage"])
                silent = now - lease["heartbeat_at"]
                events.extend(
                    time_out(
                        conn,
                        lease,
                        policy,
                        f"no heartbeat for {silent:.0f}s (timeout {policy.heartbeat_timeout:g}s)",
                        now,
                    )
                )
            facts.add(events, now)
        report.timed_out += len(expired)
        if len(expired) < 500:
            return


def _watch_live(facts: Facts, registry: PipelineRegistry, now: float, report: SweepReport) -> list[Event]:
    conn = facts.conn
    events: list[Event] = []
    for lease in control.all_leases(conn):
        policy = registry.require(lease["pipeline"]).stage(lease["stage"])
        silent = now - lease["heartbeat_at"]
        if now > lease["deadline"] + policy.heartbeat_timeout:
            events.extend(time_out(conn, lease, policy, _ignored_stop(lease, now), now))
            report.timed_out += 1
            continue
        if now > lease["deadline"] and lease["stop_reason"] is None:
            control.request_stop(conn, lease["run_id"], runaway_reason(lease, now))
            report.stopped += 1
        if silent > policy.heartbeat_timeout / 2 and not lease["stuck"]:
            control.mark_lease_stuck(conn, lease["run_id"])
            timeout = policy.heartbeat_timeout
            why = f"no heartbeat for {silent:.0f}s from run {lease['run_id']} (timeout {timeout:g}s)"
            _mark_item_stuck(facts, lease["item_id"], why)
            report.stuck_runs += 1
    return events


def _ignored_stop(lease: Mapping[str, Any], now: float) -> str:
    return f"{runaway_reason(lease, now)}; it did not stop when told to"


# Which stage's dwell SLO applies to an item in a status at a stage: queued and waiting items wait for
# that stage; an item ready to publish (at the stage that made it ready) waits for the next stage.
_WATCHED = (ItemStatus.QUEUED, ItemStatus.WAITING, ItemStatus.READY_TO_PUBLISH)


def _mark_overstaying(facts: Facts, pipeline: Pipeline, now: float) -> int:
    """Mark stuck the items that overstay their stage's dwell SLO; how many were marked."""
    overstaying: dict[str, str] = {}
    for stage in pipeline.stages:
        for status in _WATCHED:
            waits_for = (
                pipeline.next_stage(stage.name) if status is ItemStatus.READY_TO_PUBLISH else stage.name
            )
            if waits_for is None:
                continue
            slo = pipeline.stage(waits_for).dwell_slo
            if slo is None:
                continue
            for row in control.overstaying_items(
                facts.conn, pipeline.name, stage.name, status.value, now - slo
            ):
                stayed = now - row["status_since"]
                overstaying[row["item_id"]] = _overstay_reason(status, waits_for, stayed, slo)
    # In id order, as ingest locks items: on PostgreSQL, marking them in any other order while ingest
    # writes the same videos deadlocks (one of the two transactions is then aborted).
    for item_id in sorted(overstaying):
        _mark_item_stuck(facts, item_id, overstaying[item_id])
    return len(overstaying)


def _overstay_reason(status: ItemStatus, waits_for: str, stayed: float, slo: float) -> str:
    started = f", no {waits_for} started" if status is ItemStatus.READY_TO_PUBLISH else f" at {waits_for}"
    return f"{status.value} for {stayed / 60:.0f}m{started} (SLO {slo / 60:.0f}m)"


def _longest_window(registry: PipelineRegistry) -> float:
    windows = [
        rate.per_seconds for p in registry.pipelines.values() for s in p.stages for rate in s.rate_limits
    ]
    return max(windows, default=0.0)


def watchdog_task(
    db: Database, registry: PipelineRegistry, interval: float, leadership: Leadership | None
) -> PeriodicTask:
    """The sweep every ``interval`` seconds, only on the replica that leads the background loops. A sweep
    that PostgreSQL aborts for a deadlock with ingest is swept again at once: it reads what to do from
    the database each time, so a second pass does only what the first left undone."""

    def sweep_retrying() -> None:
        retry_transient(lambda: sweep(db, registry), "watchdog")

    return PeriodicTask("watchdog", sweep_retrying, interval, leadership)
