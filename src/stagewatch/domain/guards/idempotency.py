"""Guard 1: the same work already succeeded, or a live run holds it: ``skip``."""

from __future__ import annotations

from stagewatch.domain.guards.snapshot import Action, Decision, Snapshot, WorkState


def idempotency(snapshot: Snapshot) -> Decision | None:
    work = snapshot.work
    if work is None:
        return None
    if work.state is WorkState.SUCCEEDED:
        return Decision(Action.SKIP, f"already succeeded (run {work.run_id})")
    if work.state is WorkState.RUNNING and work.lease_live:
        return Decision(Action.SKIP, f"already running (run {work.run_id})")
    return None
