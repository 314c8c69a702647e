"""The guard chain: each guard is a pure function of the snapshot; the first that objects decides, and
if none does the run may go ahead."""

from __future__ import annotations

from collections.abc import Callable

from stagewatch.domain.guards.cancellation import cancellation
from stagewatch.domain.guards.dependencies import dependency_health
from stagewatch.domain.guards.idempotency import idempotency
from stagewatch.domain.guards.limits import concurrency, rate
from stagewatch.domain.guards.overrides import stage_override
from stagewatch.domain.guards.retry import retry_budget
from stagewatch.domain.guards.snapshot import Action, Decision, Snapshot

Guard = Callable[[Snapshot], Decision | None]

# The order matters: a duplicate is skipped even if the item was cancelled since; a cancel beats a retry;
# nothing waits for a dependency or a slot that it would not be allowed to use anyway; a paused stage
# says so before any limit does.
GUARDS: tuple[Guard, ...] = (
    idempotency, cancellation, retry_budget, stage_override, dependency_health, concurrency, rate,
)  # fmt: skip


def decide(snapshot: Snapshot, guards: tuple[Guard, ...] = GUARDS) -> Decision:
    for guard in guards:
        decision = guard(snapshot)
        if decision is not None:
            return decision
    attempt = snapshot.attempts + 1
    return Decision(Action.RUN, f"attempt {attempt} of {snapshot.policy.max_attempts}", attempt=attempt)
