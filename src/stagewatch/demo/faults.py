"""The fault plan: which simulated videos go wrong, and how.

The plan is a pure function of the number of videos and the seed, so the same ``--seed`` always breaks
the same videos the same way (tests rely on it). Every video has at most one fault, so its story reads
clearly. In a run of 30 videos or more, every kind of fault happens at least once.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Fault(StrEnum):
    """One kind of trouble a real video pipeline meets, as the demo injects it."""

    DOWNLOAD_404 = "download_404"
    DOWNLOAD_TIMEOUT = "download_timeout"
    FFMPEG_CRASH = "ffmpeg_crash"
    MEMORY_HOG = "memory_hog"
    RUNAWAY = "runaway"
    WORKER_KILLED = "worker_killed"
    RATE_LIMIT = "rate_limit"
    CONTAINER_ERROR = "container_error"
    CONTAINER_EXPIRED = "container_expired"
    DUPLICATE_WEBHOOK = "duplicate_webhook"
    PUBLISH_QUOTA = "publish_quota"


DESCRIPTIONS: Mapping[Fault, str] = {
    Fault.DOWNLOAD_404: "download 404 (permanent)",
    Fault.DOWNLOAD_TIMEOUT: "download timeout (retried)",
    Fault.FFMPEG_CRASH: "ffmpeg crash in process",
    Fault.MEMORY_HOG: "memory-hungry transcode",
    Fault.RUNAWAY: "runaway process run",
    Fault.WORKER_KILLED: "worker killed mid-run",
    Fault.RATE_LIMIT: "Instagram rate limit (retried)",
    Fault.CONTAINER_ERROR: "container status ERROR",
    Fault.CONTAINER_EXPIRED: "container EXPIRED (new container)",
    Fault.DUPLICATE_WEBHOOK: "duplicate webhook delivery",
    Fault.PUBLISH_QUOTA: "account's daily publish quota spent",
}

# One of these per 200 videos at most: they never finish, so a few tell the story.
_RARE = (Fault.RUNAWAY, Fault.WORKER_KILLED)
# Faults whose runs stay open: placed in the first half of the stream, so the story has time to show.
_EARLY = frozenset(_RARE)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Which video (by its position in the stream, from 0) gets which fault."""

    videos: int
    seed: int
    faults: Mapping[int, Fault]

    def fault_of(self, index: int) -> Fault | None:
        return self.faults.get(index)

    def videos_with(self, fault: Fault) -> list[int]:
        return sorted(index for index, kind in self.faults.items() if kind is fault)

    def kinds(self) -> set[Fault]:
        return set(self.faults.values())


def fault_counts(videos: int) -> dict[Fault, int]:
    """How many videos get each fault: one per 30 videos (one per 200 for those that never end), and
    at least one of each while there are videos to spare."""
    counts = {fault: max(1, videos // (200 if fault in _RARE else 30)) for fault in Fault}
    budget = videos
    for fault in (*_RARE, *(f for f in Fault if f not in _RARE)):
        counts[fault] = min(counts[fault], budget)
        budget -= counts[fault]
    return counts


def plan_faults(videos: int, seed: int) -> FaultPlan:
    """The fault plan for a stream of ``videos`` videos and ``seed``: deterministic."""
    rng = random.Random(f"faults:{seed}")
    free = list(range(videos))
    rng.shuffle(free)
    faults: dict[int, Fault] = {}
    for fault, count in fault_counts(videos).items():
        for _ in range(count):
            faults[_take(free, fault in _EARLY, videos)] = fault
    return FaultPlan(videos, seed, faults)


def _take(free: list[int], early: bool, videos: int) -> int:
    """Remove and return the next free position, from the first half of the stream when ``early``."""
    for position, index in enumerate(free):
        if not early or index < max(1, videos // 2):
            return free.pop(position)
    return free.pop(0)


class FaultCounter:
    """Which videos each fault has actually hit so far (thread-safe), for the live display."""

    def __init__(self) -> None:
        self._hit: dict[Fault, set[str]] = {}
        self._lock = threading.Lock()

    def hit(self, fault: Fault, video_id: str) -> None:
        with self._lock:
            self._hit.setdefault(fault, set()).add(video_id)

    def snapshot(self) -> dict[Fault, int]:
        """How many videos each fault has hit, in the order faults are declared."""
        with self._lock:
            return {fault: len(self._hit[fault]) for fault in Fault if fault in self._hit}
