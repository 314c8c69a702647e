"""Dependency health as a circuit breaker: the state of one dependency, and how a probe result or a
worker's health report moves it. Pure: the prober and the store call it."""

from __future__ import annotations

from dataclasses import dataclass

UP, DOWN, HALF_OPEN, UNKNOWN = "up", "down", "half_open", "unknown"


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
