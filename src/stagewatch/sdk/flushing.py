"""How ``flush()`` knows when it is done: it puts a marker at the end of each lane's queue, and the
marker travels with the records. It settles True once every record before it reached the server (sent
directly, or spooled and then replayed), and False as soon as the server does not answer (the records
are then safe in the spool, if there is one). Records enqueued after the call never delay it."""

from __future__ import annotations

import threading
import time


class FlushRequest:
    """One ``flush()`` call, waiting for its markers until ``deadline`` (``time.monotonic()``)."""

    def __init__(self, markers: int, deadline: float) -> None:
        self.deadline = deadline
        self._left = markers
        self._lock = threading.Lock()
        self.delivered = True
        self.done = threading.Event()
        if markers == 0:
            self.done.set()

    @property
    def waiting(self) -> bool:
        """Still worth working for: not answered, and its caller still waits."""
        return not self.done.is_set() and time.monotonic() < self.deadline

    def _settle(self, delivered: bool) -> None:
        with self._lock:
            self.delivered = self.delivered and delivered
            self._left -= 1
            if self._left <= 0:
                self.done.set()


class Marker:
    """Where one flush stands in one lane. Settles once; later calls are ignored."""

    __slots__ = ("request", "settled")

    def __init__(self, request: FlushRequest) -> None:
        self.request = request
        self.settled = False

    def settle(self, delivered: bool) -> None:
        if not self.settled:
            self.settled = True
            self.request._settle(delivered)


def settle_all(markers: list[Marker], delivered: bool) -> None:
    for marker in markers:
        marker.settle(delivered)
    markers.clear()
