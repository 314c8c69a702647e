"""Mapping between projection states and table rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stagewatch.domain.projection import ItemState, Key, RunState
from stagewatch.domain.statuses import ItemStatus, RunStatus

_RUN_COLUMNS = (
    "run_id", "item_id", "stage", "attempt", "enqueued_at", "started_at", "ended_at", "heartbeat_at",
    "progress", "progress_note", "worker", "revision", "error", "error_fingerprint", "trace_id",
    "span_id", "resources",
)  # fmt: skip
_ITEM_COLUMNS = (
    "item_id", "pipeline", "stage", "status_since", "account", "scenario", "trace_id", "source", "actor",
    "params", "attrs", "attempts", "last_error", "stages_done", "stuck", "stuck_reason", "control",
    "created_at", "updated_at", "event_count",
)  # fmt: skip


def _keys_from_json(raw: Mapping[Any, Any]) -> dict[str, Key]:
    # JSON has no tuples: ordering keys come back as lists and must be tuples again to compare.
    return {name: tuple(value) for name, value in raw.items()}


def run_from_row(row: Mapping[Any, Any]) -> RunState:
    values = {name: row[name] for name in _RUN_COLUMNS}
    values["resources"] = dict(values["resources"] or {})
    return RunState(status=RunStatus(row["status"]), registers=_keys_from_json(row["registers"]), **values)


def item_from_row(row: Mapping[Any, Any]) -> ItemState:
    values = {name: row[name] for name in _ITEM_COLUMNS}
    values["attrs"] = dict(values["attrs"] or {})
    values["stages_done"] = list(values["stages_done"] or [])
    return ItemState(status=ItemStatus(row["status"]), registers=_keys_from_json(row["registers"]), **values)


def placeholder_item_row(item_id: str, pipeline: str, at: float) -> dict[str, Any]:
    """An empty item row that exists only so it can be locked; ``event_count`` 0 marks it as new."""
    return {
        "item_id": item_id, "pipeline": pipeline, "status": ItemStatus.RECEIVED.value, "attrs": {},
        "attempts": 0, "stages_done": [], "stuck": False, "created_at": at, "updated_at": at,
        "event_count": 0, "registers": {},
    }  # fmt: skip
