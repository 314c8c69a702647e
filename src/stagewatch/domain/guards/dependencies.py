"""Guard 4: a dependency the stage needs is down: ``wait`` until its circuit closes."""

from __future__ import annotations

from datetime import UTC, datetime

from stagewatch.domain.guards.snapshot import Action, Decision, Snapshot

# How soon to ask again when the prober has not said when it will look next.
DEFAULT_RETRY = 10.0


def dependency_health(snapshot: Snapshot) -> Decision | None:
    for name in snapshot.policy.depends_on:
        state = snapshot.dependencies.get(name)
        if state is None or not state.is_down:
            continue
        since = datetime.fromtimestamp(state.since, UTC).strftime("%H:%M:%S")
        blocker = f"dependency {name} down"
        retry = DEFAULT_RETRY
        if state.next_probe_at is not None and state.next_probe_at > snapshot.now:
            retry = max(1.0, state.next_probe_at - snapshot.now)
        detail = f": {state.message}" if state.message else ""
        return Decision(
            Action.WAIT, f"{blocker} since {since} UTC{detail}", retry_after=retry, blocker=blocker
        )
    return None
