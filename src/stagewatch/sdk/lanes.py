"""A lane: one stream of records to one endpoint (events to ``/v1/events``, logs to ``/v1/logs``), with
its in-memory queue, the batch at the head of the line while the server does not take it, and the
flush markers waiting on either."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import cast

from stagewatch.sdk.flushing import Marker, settle_all
from stagewatch.sdk.payloads import Record


class Lane:
    """Worker threads append to ``queue`` without a lock (``deque.append`` is atomic); the exporter's
    threads take from it under ``lock``, so a batch being sent and a batch being spooled never
    interleave."""

    def __init__(self, name: str, path: str, *, optional: bool) -> None:
        self.name = name
        self.path = path
        self.optional = optional  # an older server may not have the endpoint: then drop quietly
        self.queue: deque[Record | Marker] = deque()
        self.lock = threading.Lock()
        self.markers = 0  # flush markers in the queue; changed under ``lock``
        self.pending: list[Record] | None = None
        self.pending_markers: list[Marker] = []  # flushes waiting for the head batch
        self.spooled_markers: list[tuple[Path, Marker]] = []  # flushes waiting for a segment's replay
        self.failures = 0
        self.next_try = 0.0
        self.retry_after: float | None = None
        self.last_detail = ""
        self.disabled = False

    def put_marker(self, marker: Marker) -> None:
        with self.lock:
            self.markers += 1
            self.queue.append(marker)

    def take(self, count: int) -> tuple[list[Record], list[Marker]]:
        """Up to ``count`` records from the front of the queue, and the markers among them (the caller
        holds ``lock``)."""
        queue = self.queue
        if not self.markers:  # the common case: no flush waiting, no need to look at each record
            return cast(list[Record], [queue.popleft() for _ in range(min(count, len(queue)))]), []
        records: list[Record] = []
        markers: list[Marker] = []
        while queue and len(records) < count:
            item = queue.popleft()
            if isinstance(item, Marker):
                markers.append(item)
            else:
                records.append(item)
        self.markers -= len(markers)
        return records, markers

    def in_memory(self) -> int:
        return len(self.queue) + len(self.pending or ())

    def settle_replayed(self, gone: Path) -> None:
        """A spool segment was replayed and deleted: the flushes waiting behind it are delivered."""
        waiting = [(path, marker) for path, marker in self.spooled_markers if path == gone]
        for _, marker in waiting:
            marker.settle(True)
        self.spooled_markers = [(p, m) for p, m in self.spooled_markers if not m.settled]

    def settle_everything(self, delivered: bool) -> None:
        """Answer every flush waiting in this lane (the server is not answering, or the lane ends)."""
        with self.lock:
            queued = [item for item in self.queue if isinstance(item, Marker)] if self.markers else []
            for marker in queued:
                self.queue.remove(marker)
            self.markers = 0
        settle_all(queued, delivered)
        settle_all(self.pending_markers, delivered)
        settle_all([marker for _, marker in self.spooled_markers], delivered)
        self.spooled_markers.clear()

    def forget(self) -> None:
        """Let go of everything in memory (after a fork, or once the client is closed)."""
        self.lock = threading.Lock()
        self.queue.clear()
        self.markers = 0
        self.pending = None
        self.pending_markers.clear()
        self.spooled_markers.clear()
