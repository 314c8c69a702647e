"""Guard 3: the retry budget. Attempts exhausted or a permanent error: ``dead_letter``; still backing off
after a failure: ``wait``. Also the pure rules a completion uses: is an error worth retrying, and how long
to back off."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stagewatch.domain.guards.snapshot import Action, Decision, Snapshot, WorkState
from stagewatch.domain.pipeline import StagePolicy


def retry_budget(snapshot: Snapshot) -> Decision | None:
    work = snapshot.work
    if work is None:
        return None
    if work.state is WorkState.DEAD:
        return Decision(Action.DEAD_LETTER, f"in the dead-letter queue: {describe(work.last_error)}")
    if work.state is not WorkState.FAILED:
        return None
    verdict = after_failure(snapshot.policy, work.attempts, work.last_error)
    if not verdict.retry:
        return Decision(Action.DEAD_LETTER, verdict.reason, enqueue_dead_letter=True)
    if work.next_attempt_at is not None and snapshot.now < work.next_attempt_at:
        blocker = f"retry backoff before attempt {work.attempts + 1}"
        wait = work.next_attempt_at - snapshot.now
        return Decision(Action.WAIT, f"{blocker} (in {wait:.0f}s)", retry_after=wait, blocker=blocker)
    return None


@dataclass(frozen=True, slots=True)
class FailureVerdict:
    retry: bool
    reason: str


def after_failure(policy: StagePolicy, attempts: int, error: Mapping[str, Any] | None) -> FailureVerdict:
    """Whether a work that failed ``attempts`` times, the last time with ``error``, may try again."""
    if not is_retryable(policy, error):
        return FailureVerdict(False, f"permanent error: {describe(error)}")
    if attempts >= policy.max_attempts:
        return FailureVerdict(
            False, f"attempts exhausted ({attempts} of {policy.max_attempts}): {describe(error)}"
        )
    return FailureVerdict(True, f"attempt {attempts} of {policy.max_attempts} failed: {describe(error)}")


def is_retryable(policy: StagePolicy, error: Mapping[str, Any] | None) -> bool:
    """The worker's own ``retryable`` flag wins; then the stage's lists of exception types: listed in
    ``permanent_errors`` never retries, and a non-empty ``retryable_errors`` retries only what it lists.
    Otherwise an error is retried (a transient cause is the common case, and attempts are capped)."""
    if error is None:
        return True
    flag = error.get("retryable")
    if isinstance(flag, bool):
        return flag
    kind = str(error.get("type") or "")
    if _listed(kind, policy.permanent_errors):
        return False
    return not policy.retryable_errors or _listed(kind, policy.retryable_errors)


def _listed(kind: str, names: tuple[str, ...]) -> bool:
    # "mylib.errors.BadInput" matches a list entry "BadInput" as well as the full dotted name.
    short = kind.rsplit(".", 1)[-1]
    return kind in names or short in names


def backoff(policy: StagePolicy, attempts: int, fraction: float) -> float:
    """Seconds to wait before attempt ``attempts + 1``: exponential from ``backoff_initial``, capped at
    ``backoff_max``, with "equal jitter" (half fixed, half random by ``fraction`` in [0, 1)), so retries of
    many items that failed together spread out but none retries at once."""
    exponent = min(max(attempts - 1, 0), 60)  # 2**60 seconds is already far past any cap
    cap = min(policy.backoff_max, policy.backoff_initial * math.pow(2, exponent))
    return cap / 2 + cap / 2 * min(max(fraction, 0.0), 1.0)


def describe(error: Mapping[str, Any] | None) -> str:
    if not error:
        return "no error recorded"
    message = str(error.get("message") or "")
    kind = str(error.get("type") or "Error")
    return f"{kind}: {message}" if message else kind
