"""Statuses of items (videos) and runs (one attempt of one stage)."""

from __future__ import annotations

from enum import StrEnum


class ItemStatus(StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    READY_TO_PUBLISH = "ready_to_publish"
    PUBLISHED = "published"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_RUN_STATUSES


TERMINAL_RUN_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT}
)

# Item statuses after which nothing more is expected unless an operator acts.
FINAL_ITEM_STATUSES = frozenset(
    {ItemStatus.PUBLISHED, ItemStatus.FAILED, ItemStatus.DEAD_LETTERED, ItemStatus.CANCELLED}
)

# The pseudo-status under which the per-stage "done" counter is kept (items that finished the stage).
DONE = "done"
