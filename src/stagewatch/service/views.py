"""The JSON shapes the API returns (and the CLI prints with --json). Times are ISO 8601 UTC strings."""

from __future__ import annotations

from typing import Any

from stagewatch.domain.events import iso
from stagewatch.domain.projection import ItemState, RunState


def run_view(run: RunState) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "stage": run.stage,
        "attempt": run.attempt,
        "status": run.status.value,
        "enqueued_at": iso(run.enqueued_at),
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "heartbeat_at": iso(run.heartbeat_at),
        "queued_seconds": _gap(run.enqueued_at, run.started_at),
        "duration_seconds": run.duration,
        "progress": run.progress,
        "progress_note": run.progress_note,
        "worker": run.worker,
        "revision": run.revision,
        "error": run.error,
        "error_fingerprint": run.error_fingerprint,
        "trace_id": run.trace_id,
        "span_id": run.span_id,
        "resources": run.resources,
    }


def item_view(item: ItemState) -> dict[str, Any]:
    last_error = dict(item.last_error) if item.last_error else None
    if last_error is not None:
        last_error["at"] = iso(last_error.get("at"))
    return {
        "item_id": item.item_id,
        "pipeline": item.pipeline,
        "status": item.status.value,
        "stage": item.stage,
        "status_since": iso(item.status_since),
        "stuck": item.stuck,
        "stuck_reason": item.stuck_reason,
        "status_reason": status_reason(item),
        "account": item.account,
        "scenario": item.scenario,
        "trace_id": item.trace_id,
        "source": item.source,
        "actor": item.actor,
        "params": item.params,
        "attrs": item.attrs,
        "attempts": item.attempts,
        "last_error": last_error,
        "stages_done": item.stages_done,
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "event_count": item.event_count,
    }


def status_reason(item: ItemState) -> str | None:
    """Why the item is in its status, when the control plane put it there: the blocker it waits on, the
    cancel's reason, the dead letter's last error."""
    control = item.control
    if control is None or item.status_since != control.get("at"):
        return None
    reason = control.get("reason")
    return str(reason) if reason else None


def history_view(row: dict[str, Any]) -> dict[str, Any]:
    entry = dict(row["body"])
    entry["time"] = iso(row["time"])
    entry["received_at"] = iso(row["received_at"])
    entry.setdefault("run_id", row["run_id"])
    return entry


def _gap(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(0.0, end - start)
