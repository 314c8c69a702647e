"""What a guard sees: a snapshot of everything that bears on one ``begin``, read by the store in the same
transaction that will act on the decision, and the decision itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stagewatch.domain.circuit import DependencyState
from stagewatch.domain.pipeline import StagePolicy


class Action(StrEnum):
    RUN = "run"
    SKIP = "skip"
    WAIT = "wait"
    DEAD_LETTER = "dead_letter"
    ABORT = "abort"


class WorkState(StrEnum):
    """Where one unit of work (a stage of an item under an idempotency key) stands."""

    IDLE = "idle"  # never run, or re-armed by a replay, resume or cancel
    RUNNING = "running"  # a run holds (or held, if it expired) the lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the last attempt failed and another is allowed after ``next_attempt_at``
    DEAD = "dead"  # in the dead-letter queue


@dataclass(frozen=True, slots=True)
class Work:
    state: WorkState
    attempts: int = 0
    run_id: str | None = None
    lease_live: bool = False
    next_attempt_at: float | None = None
    last_error: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Cancellation:
    reason: str
    actor: str
    at: float


@dataclass(frozen=True, slots=True)
class SlotUse:
    """A concurrency slot key and how many unexpired leases hold it now."""

    slot: str
    limit: int
    used: int


@dataclass(frozen=True, slots=True)
class RateUse:
    """A rate-limit key: how many runs started in the rolling window, and when the oldest of them did."""

    slot: str
    limit: int
    window: float
    used: int
    oldest_at: float | None


@dataclass(frozen=True, slots=True)
class StageOverride:
    """An operator's run-time change to a stage: paused, and/or at most ``max_running`` runs at once."""

    paused: bool = False
    reason: str | None = None
    actor: str | None = None
    max_running: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: float
    policy: StagePolicy
    work: Work | None = None
    cancellation: Cancellation | None = None
    dependencies: Mapping[str, DependencyState] = field(default_factory=dict)
    concurrency: tuple[SlotUse, ...] = ()
    rates: tuple[RateUse, ...] = ()
    override: StageOverride | None = None
    stage_running: int = 0  # live leases of this stage, counted only when a cap is set

    @property
    def attempts(self) -> int:
        return self.work.attempts if self.work is not None else 0


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer to ``begin``. ``blocker`` is the stable name of what a ``wait`` waits on (the reason
    without its changing numbers), so repeated waits on the same thing are one fact in the history."""

    action: Action
    reason: str
    retry_after: float | None = None
    blocker: str | None = None
    attempt: int | None = None
    # A dead letter decided now, not one already in the queue: the store must enqueue it.
    enqueue_dead_letter: bool = False
