"""Guard: an operator paused the stage (``wait``, naming who and why), or capped how many of its runs may
go at once (``wait`` while the cap is reached). Both are run-time changes, stored and audited, that
every replica sees."""

from __future__ import annotations

from stagewatch.domain.guards.snapshot import Action, Decision, Snapshot

# How soon to ask again while a stage is paused: a pause is lifted by a person, at no predictable time.
PAUSED_RETRY = 30.0
CAPPED_RETRY = 5.0


def stage_override(snapshot: Snapshot) -> Decision | None:
    override = snapshot.override
    if override is None:
        return None
    stage = snapshot.policy.name
    if override.paused:
        blocker = f"stage {stage} paused"
        why = f" by {override.actor}: {override.reason}" if override.reason else f" by {override.actor}"
        return Decision(Action.WAIT, blocker + why, retry_after=PAUSED_RETRY, blocker=blocker)
    if override.max_running is not None and snapshot.stage_running >= override.max_running:
        blocker = f"stage {stage} capped"
        reason = (
            f"{blocker} at {override.max_running} running by {override.actor} ({snapshot.stage_running} now)"
        )
        return Decision(Action.WAIT, reason, retry_after=CAPPED_RETRY, blocker=blocker)
    return None
