"""Heartbeats: one daemon thread per client (not one per run) that tells the server every open run is
alive, with the process's memory and CPU and the run's last progress."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import psutil  # type: ignore[import-untyped]  # no stubs in the SDK's dependencies

from stagewatch.sdk.diagnostics import log, throttled


class ResourceSampler:
    """Cheap readings of this process: resident memory in bytes and CPU percent since the last call."""

    def __init__(self) -> None:
        self._pid = -1
        self._process: psutil.Process | None = None

    def sample(self) -> dict[str, float]:
        try:
            process = self._current()
            return {"rss_bytes": float(process.memory_info().rss), "cpu_percent": process.cpu_percent(None)}
        except (psutil.Error, OSError) as exc:
            if throttled("heartbeat.sample", 300):
                log.warning("sdk.heartbeat.sample_failed error=%s", exc)
            return {}

    def _current(self) -> psutil.Process:
        if self._process is None or self._pid != os.getpid():  # a forked child is another process
            self._pid = os.getpid()
            self._process = psutil.Process(self._pid)
            self._process.cpu_percent(None)  # the first reading only starts the interval
        return self._process


class Heartbeater:
    """Calls ``beat(resources)`` from one daemon thread, started lazily by the first open run, until
    ``stop()``. The pause between beats is ``interval()``, asked again after each beat and after each
    ``nudge()`` (a run whose lease wants more frequent heartbeats just began)."""

    def __init__(self, interval: Callable[[], float], beat: Callable[[dict[str, float]], None]) -> None:
        self.interval = interval
        self._beat = beat
        self._sampler = ResourceSampler()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def ensure_started(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # threads do not survive a fork
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="stagewatch-heartbeat", daemon=True)
                self._thread.start()

    def nudge(self) -> None:
        """Make the thread ask ``interval()`` now rather than after the current pause."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            left = last + self._pause() - time.monotonic()
            if left > 0:
                self._wake.wait(left)
                self._wake.clear()
                continue  # due now, or the interval changed: look again
            last = time.monotonic()
            try:
                self._beat(self._sampler.sample())
            except Exception:
                if throttled("heartbeat.loop"):
                    log.exception("sdk.heartbeat.failed: the heartbeat thread goes on")

    def _pause(self) -> float:
        try:
            return max(0.01, self.interval())
        except Exception:
            log.exception("sdk.heartbeat.interval_failed: using 10 s")
            return 10.0
