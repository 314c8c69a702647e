"""What happens to a unit of work after an attempt failed or timed out: back off and retry, or go to the
dead-letter queue. Shared by completions, the watchdog and ``begin`` (a lease found expired)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from stagewatch.domain.events import Event, EventType
from stagewatch.domain.guards import WorkState
from stagewatch.domain.guards.retry import after_failure, backoff
from stagewatch.domain.pipeline import StagePolicy
from stagewatch.service.control.facts import fact
from stagewatch.store import control
from stagewatch.store.control import WorkId


def settle_failure(
    conn: Connection,
    work_row: Mapping[str, Any],
    policy: StagePolicy,
    error: Mapping[str, Any],
    now: float,
    failed_at: float | None = None,
) -> tuple[str, float | None, list[Event]]:
    """Record a failed attempt on its work row: ``("retry", seconds from now)`` or ``("dead_letter",
    None)``, with the events to write. The backoff counts from ``failed_at`` (default ``now``): a run
    found dead long after its lease expired has already waited that long."""
    work_id: WorkId = (work_row["pipeline"], work_row["stage"], work_row["work_key"])
    attempts = int(work_row["attempts"])
    verdict = after_failure(policy, attempts, error)
    if verdict.retry:
        due = (now if failed_at is None else failed_at) + backoff(policy, attempts, random.random())
        delay = max(0.0, due - now)
        control.update_work(
            conn, work_id, state=WorkState.FAILED.value, last_error=dict(error),
            next_attempt_at=due, updated_at=now,
        )  # fmt: skip
        # The item waits for its retry from now on, and says so (a microsecond after the failure, so
        # its history reads in order).
        waiting = fact(
            EventType.ITEM_WAITING, work_row["item_id"], now + 1e-6, pipeline=work_row["pipeline"],
            stage=work_row["stage"], note=f"retry backoff before attempt {attempts + 1} ({_due(delay)})",
        )  # fmt: skip
        return "retry", delay, [waiting]
    dead_letter(conn, work_row, error, verdict.reason, now)
    # A microsecond after the failure that caused it, so the item's history reads in order.
    event = fact(
        EventType.ITEM_DEAD_LETTERED, work_row["item_id"], now + 1e-6,
        pipeline=work_row["pipeline"], stage=work_row["stage"], note=verdict.reason,
    )  # fmt: skip
    return "dead_letter", None, [event]


def _due(delay: float) -> str:
    return f"in {delay:.0f}s" if delay >= 1 else "due now: waiting for a redelivery"


def dead_letter(
    conn: Connection, work_row: Mapping[str, Any], error: Mapping[str, Any] | None, reason: str, now: float
) -> None:
    work_id: WorkId = (work_row["pipeline"], work_row["stage"], work_row["work_key"])
    control.update_work(
        conn, work_id, state=WorkState.DEAD.value, last_error=dict(error) if error else None,
        next_attempt_at=None, updated_at=now,
    )  # fmt: skip
    control.add_dead_letter(
        conn,
        {
            "pipeline": work_row["pipeline"], "stage": work_row["stage"], "work_key": work_row["work_key"],
            "item_id": work_row["item_id"], "payload": work_row["payload"],
            "error": dict(error) if error else None, "attempts": work_row["attempts"], "reason": reason,
            "created_at": now,
        },
    )  # fmt: skip


def timed_out_error(note: str) -> dict[str, Any]:
    return {"type": "TimedOut", "message": note, "stack": None, "retryable": True}


def time_out(
    conn: Connection, lease_row: Mapping[str, Any], policy: StagePolicy, note: str, now: float
) -> list[Event]:
    """End a run whose heartbeats stopped (or that ran away): free its slots, write ``run.timed_out``
    and apply the retry policy to its work. Returns the events to record."""
    control.drop_lease(conn, lease_row["run_id"])
    events = [
        fact(
            EventType.RUN_TIMED_OUT, lease_row["item_id"], now, pipeline=lease_row["pipeline"],
            stage=lease_row["stage"], run_id=lease_row["run_id"], attempt=lease_row["attempt"], note=note,
        )
    ]  # fmt: skip
    work_row = control.work_of_run(conn, lease_row["item_id"], lease_row["run_id"])
    if work_row is not None and work_row["state"] == WorkState.RUNNING.value:
        failed_at = min(now, lease_row["expires_at"])
        _, _, more = settle_failure(conn, work_row, policy, timed_out_error(note), now, failed_at)
        events.extend(more)
    return events
