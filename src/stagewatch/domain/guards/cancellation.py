"""Guard 2: the item was cancelled: ``abort``."""

from __future__ import annotations

from stagewatch.domain.guards.snapshot import Action, Decision, Snapshot


def cancellation(snapshot: Snapshot) -> Decision | None:
    cancel = snapshot.cancellation
    if cancel is None:
        return None
    return Decision(Action.ABORT, f"cancelled by {cancel.actor}: {cancel.reason}")
