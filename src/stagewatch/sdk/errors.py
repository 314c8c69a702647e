"""Signals from the control plane to a run, raised inside worker code.

    RunInterrupted        the control plane decided this run must not go on (base class)
    ├── Cancelled         an operator or a guard (deadline, runaway) asked to stop the run now
    ├── Skip              a duplicate: the same work already succeeded or is running elsewhere
    ├── Wait              not now: try again after ``retry_after`` seconds; ``reason`` names the blocker
    ├── DeadLettered      attempts are exhausted and the payload is kept for replay: do not retry
    └── Aborted           the item was cancelled before this run could begin

They are control flow, not telemetry failures: the SDK never raises because of its own problems (those
are logged to the ``stagewatch.sdk`` logger). ``Skip``, ``Wait``, ``DeadLettered`` and ``Aborted`` come
from the control plane's decision when a guarded stage is entered, before its body runs (no run
begins). ``Cancelled`` comes from ``Run.check()`` / ``Run.progress()`` after a stop, or leaves an
``async with`` stage whose task the stop cancelled. A run that ends with one of them is reported as
cancelled, and the exception still reaches the caller. ``stagewatch.sdk.pubsub.status_for`` maps each to
the status a Pub/Sub push endpoint answers.
"""

from __future__ import annotations


class RunInterrupted(Exception):
    """Base of every signal that stops a run on the control plane's word."""


class Cancelled(RunInterrupted):
    """The run must stop now: raised by ``Run.check()`` and ``Run.progress()`` once the server said stop
    (the message is its reason)."""


class Skip(RunInterrupted):
    """The work is a duplicate (already done, or running elsewhere): acknowledge and do nothing."""


class Wait(RunInterrupted):
    """Not now: retry after ``retry_after`` seconds. ``reason`` names the blocker, e.g.
    ``"concurrency account:42 3/3"``."""

    def __init__(self, retry_after: float, reason: str = "") -> None:
        self.retry_after = retry_after
        self.reason = reason
        super().__init__(f"wait {retry_after:g}s: {reason}" if reason else f"wait {retry_after:g}s")


class DeadLettered(RunInterrupted):
    """The retry budget is spent; the payload was kept for replay. Acknowledge the message."""


class Aborted(RunInterrupted):
    """The item was cancelled before this run began."""
