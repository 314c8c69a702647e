"""Worker pools: each stage has its own few threads taking work from its queue, the way each service
of the pipeline scales on its own. A pool stops when the clock is halted; a thread stuck in a runaway
run never returns, which is the point of it."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stagewatch.sdk import RunInterrupted

T = TypeVar("T")
log = logging.getLogger("stagewatch.demo")

# Mean simulated seconds a video spends in each stage's work, to size the pools (Little's law).
MEAN_SECONDS = {"webhook": 0.3, "download": 1.9, "enqueue": 0.15, "process": 4.7, "publish": 4.2}
# The process pool has two spare workers: the runaway run and the dying instance each hold one.
SPARE = {"process": 2}
MIN_WORKERS, MAX_WORKERS = 2, 16


def pool_size(stage: str, rate: float, speed: float) -> int:
    """Enough workers for ``rate`` videos per second with some slack, between 2 and 16."""
    needed = math.ceil(rate * MEAN_SECONDS[stage] / speed * 1.5)
    return min(MAX_WORKERS, max(MIN_WORKERS, needed)) + SPARE.get(stage, 0)


@dataclass
class StagePool(Generic[T]):
    """``size`` daemon threads calling ``handle(work)`` for each ``take()`` until ``halted`` is set."""

    stage: str
    size: int
    take: Callable[[], T | None]
    handle: Callable[[T], None]
    halted: threading.Event
    busy: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(self.size):
            thread = threading.Thread(target=self._loop, name=f"demo-{self.stage}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> None:
        """Wait for the threads to stop, at most ``timeout`` seconds in all (a runaway never does)."""
        each = timeout / max(1, len(self._threads))
        for thread in self._threads:
            thread.join(each)

    def _loop(self) -> None:
        while not self.halted.is_set():
            work = self.take()
            if work is not None:
                self._run(work)

    def _run(self, work: T) -> None:
        self._count(+1)
        try:
            self.handle(work)
        except RunInterrupted:
            pass  # the demo is stopping: the run was reported as cancelled
        except Exception:
            log.exception("demo.%s: a worker failed outside any run", self.stage)
        finally:
            self._count(-1)

    def _count(self, delta: int) -> None:
        with self._lock:
            self.busy += delta
