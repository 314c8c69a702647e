"""Retention: deleting old log lines, and (only when configured) the events of long-finished videos.

Logs are diagnostics: lines older than ``log_retention`` (default 14 days) are deleted.

Events are the history a video's record is built from, so they are kept forever unless
``event_retention`` is set. Even then, only the events of items whose status is final (published, failed,
dead_lettered, cancelled) and that have not been updated for ``event_retention`` are deleted: a video
still in flight never loses its story. The item and its runs (the projection: status, stage, attempts,
errors, durations) stay, so ``stagewatch status`` still says what became of the video; only its
event-by-event history is gone. An event arriving later for such an item is applied to the kept
projection as usual.

Work is done in bounded chunks, each its own short transaction, with a short pause between chunks so
ingest (which needs the same write lock on SQLite) is never held up for long. On PostgreSQL the loop runs
on the leader replica only (``service.leader``), and an advisory lock held for each pass keeps a manual
pass from overlapping it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from stagewatch.domain.statuses import FINAL_ITEM_STATUSES
from stagewatch.service.leader import Leadership, PeriodicTask
from stagewatch.settings import Settings
from stagewatch.store.engine import Database
from stagewatch.store.logs import delete_logs_before
from stagewatch.store.retention import delete_events_of, finished_items, leader_lock

log = logging.getLogger("stagewatch.retention")

FINAL_STATUSES = tuple(sorted(status.value for status in FINAL_ITEM_STATUSES))
LOG_CHUNK = 2000
# Items per event-deleting transaction; an item has tens of events, so a few thousand rows at most.
ITEM_CHUNK = 200
# Between chunks in the background loop: lets waiting writers take SQLite's lock.
PAUSE = 0.02


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass did. ``skipped``: another replica holds the lock and does the work."""

    logs_deleted: int = 0
    events_deleted: int = 0
    skipped: bool = False


def run_retention_once(
    db: Database,
    settings: Settings,
    now: float | None = None,
    *,
    log_chunk: int = LOG_CHUNK,
    item_chunk: int = ITEM_CHUNK,
    pause: float = 0.0,
    stop: threading.Event | None = None,
) -> RetentionReport:
    """One pass: delete what is older than the configured retention, as of ``now``. Setting ``stop``
    ends the pass after the current chunk (the rest waits for the next pass)."""
    now = time.time() if now is None else now
    pacing = _Pacing(pause, stop or threading.Event())
    with leader_lock(db) as leading:
        if not leading:
            return RetentionReport(skipped=True)
        logs = (
            _purge_logs(db, now - settings.log_retention, log_chunk, pacing) if settings.log_retention else 0
        )
        events = (
            _purge_events(db, now - settings.event_retention, item_chunk, pacing)
            if settings.event_retention
            else 0
        )
    return RetentionReport(logs, events)


@dataclass(frozen=True, slots=True)
class _Pacing:
    pause: float
    stop: threading.Event

    def go_on(self) -> bool:
        """Wait between chunks; False when the pass must end now."""
        return not self.stop.wait(self.pause)


def _purge_logs(db: Database, cutoff: float, chunk: int, pacing: _Pacing) -> int:
    total = 0
    while True:
        with db.writer.begin() as conn:
            deleted = delete_logs_before(conn, cutoff, chunk)
        total += deleted
        if deleted < chunk or not pacing.go_on():
            return total


def _purge_events(db: Database, cutoff: float, chunk: int, pacing: _Pacing) -> int:
    return sum(_purge_events_in(db, status, cutoff, chunk, pacing) for status in FINAL_STATUSES)


def _purge_events_in(db: Database, status: str, cutoff: float, chunk: int, pacing: _Pacing) -> int:
    total, after = 0, None
    while True:
        with db.reader.connect() as conn:
            found = finished_items(conn, status, cutoff, after, chunk)
        if not found:
            return total
        with db.writer.begin() as conn:
            total += delete_events_of(conn, [item_id for _, item_id in found], FINAL_STATUSES, cutoff)
        after = found[-1]
        if not pacing.go_on():
            return total


class RetentionTask:
    """Runs ``run_retention_once`` in the background every ``retention_interval`` seconds (the first
    pass soon after start, so servers that restart often still clean up), on the leader only
    (``leadership``; None: always). Replicas should share their retention settings: only the leader's
    apply. A failing pass is logged (``retention.failed``), never raised: the next one tries again."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        leadership: Leadership | None = None,
        *,
        first_delay: float = 60.0,
    ) -> None:
        self._db = db
        self._settings = settings
        interval = settings.retention_interval
        self._task = PeriodicTask(
            "retention", self._pass, interval, leadership, first_delay=min(first_delay, interval)
        )

    def start(self) -> None:
        if not (self._settings.log_retention or self._settings.event_retention):
            return
        self._task.start()

    async def stop(self) -> None:
        # A pass running on its thread sees `stopping` and ends after its current chunk.
        await self._task.stop()

    def _pass(self) -> None:
        started = time.monotonic()
        report = run_retention_once(self._db, self._settings, pause=PAUSE, stop=self._task.stopping)
        # Quiet when there was nothing to do: the loop may run often.
        level = logging.INFO if report.logs_deleted or report.events_deleted else logging.DEBUG
        log.log(
            level,
            "retention.done logs_deleted=%d events_deleted=%d skipped=%s seconds=%.2f",
            report.logs_deleted, report.events_deleted, report.skipped, time.monotonic() - started,
        )  # fmt: skip
