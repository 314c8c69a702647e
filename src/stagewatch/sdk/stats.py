"""What the exporter has done: counters kept by the sender thread, and the snapshot users read."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a client's delivery counters since it started, counting events and log records.

    ``queued``: in memory now, not yet sent. ``sent``: accepted by the server. ``duplicate``: the server
    already had them (a retried batch that had in fact arrived). ``rejected``: refused by the server as
    invalid, each logged once. ``retried``: records whose send failed and was tried again. ``spooled``:
    written to the disk spool during an outage. ``dropped``: lost on purpose to protect the worker: the
    queue was full without a spool, the spool was over its size cap, or the client was closed.
    ``spool_bytes``: the spool directory's size now.
    """

    queued: int = 0
    sent: int = 0
    duplicate: int = 0
    rejected: int = 0
    retried: int = 0
    spooled: int = 0
    dropped: int = 0
    spool_bytes: int = 0


class Counters:
    """Mutable totals behind ``Stats``. The sender thread adds per batch; worker threads only add drops,
    which is rare, so one small lock is enough."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = self.duplicate = self.rejected = self.retried = self.spooled = self.dropped = 0

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self, queued: int, spool_bytes: int, spool_dropped: int) -> Stats:
        with self.lock:
            return Stats(
                queued=queued,
                sent=self.sent,
                duplicate=self.duplicate,
                rejected=self.rejected,
                retried=self.retried,
                spooled=self.spooled,
                dropped=self.dropped + spool_dropped,
                spool_bytes=spool_bytes,
            )
