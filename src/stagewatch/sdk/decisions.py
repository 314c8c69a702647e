"""The control plane's answers as values: the decision of ``POST /v1/runs/begin`` (with the lease of a
``run``), the signal each refusal raises in worker code, and the per-run actions of a heartbeat answer.

Pure: parsing and mapping only, no I/O. A malformed answer raises ``ValueError``, which the caller treats
like no answer at all (see ``docs/guardrails.md`` for the shapes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from stagewatch.sdk.errors import Aborted, DeadLettered, RunInterrupted, Skip, Wait

RUN = "run"
REFUSALS = ("skip", "wait", "dead_letter", "abort")
DEFAULT_WAIT = 5.0  # seconds, when a ``wait`` forgets to say how long


@dataclass(frozen=True, slots=True)
class Lease:
    """What a ``run`` decision grants: the run's id and attempt as the server counts them, until when
    it may run, and how often it must say it is alive."""

    run_id: str
    attempt: int
    deadline: datetime | None = None
    heartbeat_interval: float | None = None
    heartbeat_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer of ``begin``: ``kind`` is ``run``, ``skip``, ``wait``, ``dead_letter`` or ``abort``."""

    kind: str
    reason: str = ""
    lease: Lease | None = None
    retry_after: float | None = None


def parse_decision(body: Any, now: datetime | None = None) -> Decision:
    """The decision in a ``begin`` answer; ``ValueError`` when it is not one."""
    if not isinstance(body, Mapping):
        raise ValueError("the answer is not a JSON object")
    kind, reason = body.get("decision"), str(body.get("reason") or "")
    if kind == RUN:
        return Decision(RUN, reason, lease=_lease(body, now or datetime.now(UTC)))
    if kind not in REFUSALS:
        raise ValueError(f"unknown decision {kind!r}")
    if kind == "wait":
        return Decision("wait", reason, retry_after=_seconds(body.get("retry_after")) or DEFAULT_WAIT)
    return Decision(str(kind), reason)


def refusal(decision: Decision) -> RunInterrupted | None:
    """The signal worker code gets for a decision that refuses the run; None for ``run``."""
    reason = decision.reason or decision.kind
    if decision.kind == "skip":
        return Skip(reason)
    if decision.kind == "wait":
        return Wait(DEFAULT_WAIT if decision.retry_after is None else decision.retry_after, decision.reason)
    if decision.kind == "dead_letter":
        return DeadLettered(reason)
    if decision.kind == "abort":
        return Aborted(reason)
    return None


def _lease(body: Mapping[str, Any], now: datetime) -> Lease:
    run_id, attempt = body.get("run_id"), body.get("attempt")
    if not isinstance(run_id, str) or not run_id:
        raise ValueError("a run decision without run_id")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"a run decision with attempt {attempt!r}")
    return Lease(
        run_id=run_id,
        attempt=attempt,
        deadline=_deadline(body, now),
        heartbeat_interval=_seconds(body.get("heartbeat_interval")),
        heartbeat_timeout=_seconds(body.get("heartbeat_timeout")),
    )


def _deadline(body: Mapping[str, Any], now: datetime) -> datetime | None:
    """The absolute ``deadline``; else ``deadline_in`` seconds from ``now`` (a worker's clock may be off,
    so the absolute time wins when both are there)."""
    text = body.get("deadline")
    if isinstance(text, str):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    seconds = _seconds(body.get("deadline_in"))
    return now + timedelta(seconds=seconds) if seconds is not None else None


def _seconds(value: Any) -> float | None:
    """A non-negative finite number of seconds, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if value >= 0 else None


# --- heartbeat answers --------------------------------------------------------------------------------

CONTINUE = "continue"


@dataclass(frozen=True, slots=True)
class Action:
    """What the server wants from one run after a heartbeat: ``continue`` or ``stop`` (with why)."""

    action: str
    reason: str = ""

    @property
    def stop(self) -> bool:
        return self.action != CONTINUE


UNKNOWN_RUN = Action("stop", "the server does not know this run (its lease is gone)")


def parse_actions(body: Any, run_ids: list[str]) -> dict[str, Action]:
    """The action for each of ``run_ids`` in a heartbeat answer. A run the answer leaves out, or answers
    with anything but ``continue``, is unknown to the server or told to stop: it gets a stop action.
    ``ValueError`` when the answer is not a heartbeat answer at all."""
    runs = body.get("runs") if isinstance(body, Mapping) else None
    if not isinstance(runs, list):
        raise ValueError("the answer has no runs list")
    answered = {str(entry.get("run_id")): _action(entry) for entry in runs if isinstance(entry, Mapping)}
    return {run_id: answered.get(run_id, UNKNOWN_RUN) for run_id in run_ids}


def _action(entry: Mapping[str, Any]) -> Action:
    action = str(entry.get("action") or "")
    if action == CONTINUE:
        return Action(CONTINUE)
    fallback = "the server says stop" if action == "stop" else UNKNOWN_RUN.reason
    return Action("stop", str(entry.get("reason") or "") or fallback)
