"""Dependency health as a circuit breaker: the state of one dependency, and how a probe result or a
worker's health report moves it. Pure: the prober and the store call it.

The circuit of one dependency::

    unknown, up ── failure_threshold consecutive failures ──→ down (open)
    down ──────── recovery passed since the last failure ──→ half_open (a probe is allowed)
    half_open ─── success ──→ up          half_open ── failure ──→ down
    any state ─── success ──→ up

- ``unknown`` (never observed) and ``up`` let work through; ``down`` and ``half_open`` make it wait.
- ``since`` is when the dependency entered its state; ``next_probe_at`` is when the prober looks next
  (while down: when the half-open probe is due, ``recovery`` after the last failure).
- A success always closes the circuit, even while it is open: a worker saying "it works" is evidence.
- ``event`` dependencies (reported by workers, never probed) cannot be half-open, since nothing would ever
  probe them: when ``recovery`` has passed since the last failure report, the circuit closes *on trial*
  (``up`` with ``failure_threshold - 1`` failures), so work resumes and the next failure reopens it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

UP, DOWN, HALF_OPEN, UNKNOWN = "up", "down", "half_open", "unknown"

POSTGRES, HTTP, TCP, EVENT = "postgres", "http", "tcp", "event"
DEPENDENCY_KINDS = (POSTGRES, HTTP, TCP, EVENT)


@dataclass(frozen=True, slots=True)
class DependencyState:
    """What the control plane knows of one dependency. ``since``: when it entered ``state``."""

    name: str
    state: str = UNKNOWN
    failures: int = 0
    since: float = 0.0
    checked_at: float | None = None
    next_probe_at: float | None = None
    message: str | None = None

    @property
    def is_down(self) -> bool:
        """Work that needs it must wait: the circuit is open, or half-open while a probe decides."""
        return self.state in (DOWN, HALF_OPEN)


@dataclass(frozen=True, slots=True)
class DependencySpec:
    """One declared dependency. ``target`` is what the probe reaches: a PostgreSQL DSN (``postgres``), a
    URL answering 2xx when healthy (``http``), ``host:port`` (``tcp``), or empty (``event``: workers
    report it). Times are seconds: probe every ``interval`` with a ``timeout``; the circuit opens after
    ``failure_threshold`` consecutive failures and tries again ``recovery`` after the last one."""

    name: str
    kind: str = EVENT
    target: str = ""
    interval: float = 10.0
    timeout: float = 2.0
    failure_threshold: int = 3
    recovery: float = 30.0

    @property
    def is_probed(self) -> bool:
        return self.kind != EVENT


@dataclass(frozen=True, slots=True)
class Observation:
    """One probe result or worker report: did the dependency work, what was seen, and when."""

    ok: bool
    at: float
    message: str | None = None


class Step(StrEnum):
    """What the prober should do for one dependency now."""

    IDLE = "idle"
    PROBE = "probe"
    HALF_OPEN = "half_open"  # move to half_open, then probe
    TRIAL = "trial"  # an event dependency's recovery passed: close on trial


def implicit_specs(declared: Iterable[DependencySpec], needed: Iterable[str]) -> dict[str, DependencySpec]:
    """The declared specs by name, plus an ``event`` spec with default settings for every needed name that
    is not declared: such a dependency is up until workers report it down."""
    specs = {spec.name: spec for spec in declared}
    for name in needed:
        specs.setdefault(name, DependencySpec(name))
    return specs


# --------------------------------------------------------------------------------------------- moves


def observe(state: DependencyState, spec: DependencySpec, seen: Observation) -> DependencyState:
    """The state after a probe result or a worker report."""
    return _succeeded(state, spec, seen) if seen.ok else _failed(state, spec, seen)


def _succeeded(state: DependencyState, spec: DependencySpec, seen: Observation) -> DependencyState:
    since = state.since if state.state == UP else seen.at
    return replace(
        state,
        state=UP,
        failures=0,
        since=since,
        checked_at=seen.at,
        next_probe_at=_next_probe(spec, seen.at),
        message=seen.message,
    )


def _failed(state: DependencyState, spec: DependencySpec, seen: Observation) -> DependencyState:
    failures = state.failures + 1
    if not state.is_down and failures < spec.failure_threshold:
        next_probe = _next_probe(spec, seen.at)
        return replace(
            state, failures=failures, checked_at=seen.at, next_probe_at=next_probe, message=seen.message
        )
    # Open, or stay open: the half-open probe (or trial) comes `recovery` after the latest failure.
    since = state.since if state.state == DOWN else seen.at
    return replace(
        state,
        state=DOWN,
        failures=failures,
        since=since,
        checked_at=seen.at,
        next_probe_at=seen.at + spec.recovery,
        message=seen.message,
    )


def _next_probe(spec: DependencySpec, at: float) -> float | None:
    return at + spec.interval if spec.is_probed else None


def recover(state: DependencyState, spec: DependencySpec, now: float) -> DependencyState:
    """Once ``recovery`` has passed while down: ``half_open`` for a probed dependency (a probe decides,
    within ``timeout``), or closed on trial for an ``event`` one. Unchanged when not due."""
    if not recovery_due(state, now):
        return state
    if spec.is_probed:
        return replace(state, state=HALF_OPEN, since=now, next_probe_at=now + spec.timeout)
    note = f"no failure reported for {spec.recovery:g}s: on trial, the next failure reopens the circuit"
    trial = max(0, spec.failure_threshold - 1)
    return replace(state, state=UP, failures=trial, since=now, next_probe_at=None, message=note)


def recovery_due(state: DependencyState, now: float) -> bool:
    """The circuit is open and its ``recovery`` has passed."""
    return state.state == DOWN and (state.next_probe_at is None or state.next_probe_at <= now)


def plan(state: DependencyState, spec: DependencySpec, now: float) -> Step:
    """What the prober does for this dependency now."""
    if state.state == DOWN:
        if not recovery_due(state, now):
            return Step.IDLE
        return Step.HALF_OPEN if spec.is_probed else Step.TRIAL
    if not spec.is_probed:
        return Step.IDLE
    # Up, unknown, or half-open (a probe that was cut short, e.g. by a crash, is retried when it is late).
    due = state.next_probe_at is None or state.next_probe_at <= now
    return Step.PROBE if due else Step.IDLE
