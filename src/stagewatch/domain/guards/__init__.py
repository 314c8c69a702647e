"""The guards that decide, at the start of every run, whether it may go ahead. See docs/guardrails.md."""

from stagewatch.domain.guards.chain import GUARDS, decide
from stagewatch.domain.guards.snapshot import (
    Action,
    Cancellation,
    Decision,
    RateUse,
    SlotUse,
    Snapshot,
    StageOverride,
    Work,
    WorkState,
)

__all__ = [
    "GUARDS",
    "Action",
    "Cancellation",
    "Decision",
    "RateUse",
    "SlotUse",
    "Snapshot",
    "StageOverride",
    "Work",
    "WorkState",
    "decide",
]
