"""The simulated world the demo's workers live in: the videos, a clock that compresses time, the queues
between stages, and a ledger of how each video ended.

Everything random comes from ``random.Random`` seeded by ``--seed`` and the video's position, so a seed
always gives the same videos, accounts, scenarios and faults, whatever the threads' timing.
"""

from __future__ import annotations

import queue
import random
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from stagewatch import Cancelled
from stagewatch.demo.faults import Fault, FaultPlan

ACCOUNTS = ("acct-bakery", "acct-travel", "acct-fitness", "acct-music", "acct-news")
# The account that already published its 50 posts of the day before the demo began: its videos wait.
VIRAL_ACCOUNT = "acct-viral"
SCENARIOS = ("reels", "stories", "feed")
_SCENARIO_WEIGHTS = (5, 3, 2)
_ID_ALPHABET = "0123456789abcdefghijkmnpqrstuvwxyz"
SUBMITTERS = ("webhook:airtable", "webhook:zapier", "webhook:cms")

T = TypeVar("T")


def video_id(seed: int, index: int) -> str:
    """The id of the ``index``-th video of the stream for ``seed``, e.g. ``vid-7k2p9xq4`` (eight
    characters: two ids of one stream collide with odds under one in 30,000 even for 10,000 videos)."""
    rng = random.Random(f"id:{seed}:{index}")
    return "vid-" + "".join(rng.choice(_ID_ALPHABET) for _ in range(8))


@dataclass(frozen=True, slots=True)
class Video:
    """One submitted video: who it belongs to, what it is, and the trouble planned for it."""

    index: int
    video_id: str
    account: str
    scenario: str
    duration_s: int
    size_mb: float
    fault: Fault | None
    rng: random.Random = field(compare=False, repr=False)

    @property
    def source_url(self) -> str:
        return f"https://cdn.example-uploads.com/{self.account}/{self.video_id}.mp4"

    def params(self) -> dict[str, Any]:
        """What the video was submitted with (the webhook's body)."""
        return {
            "source_url": self.source_url,
            "caption": f"New {self.scenario} from {self.account.removeprefix('acct-')}",
            "duration_s": self.duration_s,
            "resolution": "1080x1920" if self.scenario != "feed" else "1080x1350",
        }

    @property
    def source(self) -> str:
        """What submitted it, e.g. ``webhook:airtable``."""
        return SUBMITTERS[self.index % len(SUBMITTERS)]

    @property
    def actor(self) -> str:
        """Who submitted it."""
        return f"user:{self.account.removeprefix('acct-')}-editor@example.com"

    def uniform(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)


def make_video(seed: int, index: int, plan: FaultPlan) -> Video:
    """The ``index``-th video for ``seed``: the same every time."""
    rng = random.Random(f"video:{seed}:{index}")
    return Video(
        index=index,
        video_id=video_id(seed, index),
        account=VIRAL_ACCOUNT if plan.fault_of(index) is Fault.PUBLISH_QUOTA else rng.choice(ACCOUNTS),
        scenario=rng.choices(SCENARIOS, _SCENARIO_WEIGHTS)[0],
        duration_s=rng.randint(6, 60),
        size_mb=round(rng.uniform(8, 60), 1),
        fault=plan.fault_of(index),
        rng=rng,
    )


class Clock:
    """Simulated time: ``sleep(seconds)`` waits ``seconds / speed``. Once ``halt()`` is called, every
    sleep raises ``stagewatch.Cancelled``, which a run inside ``client.stage`` reports as cancelled."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.halted = threading.Event()

    def real(self, seconds: float) -> float:
        """Real seconds for ``seconds`` of simulated work."""
        return seconds / self.speed

    def sleep(self, seconds: float) -> None:
        self.sleep_real(self.real(seconds))

    def sleep_real(self, seconds: float) -> None:
        """Wait ``seconds`` of real time (a wait the control plane asked for)."""
        if self.halted.wait(seconds):
            raise Cancelled("the demo stopped before this run finished")

    def halt(self) -> None:
        self.halted.set()


class Outcome(StrEnum):
    """How a video's journey ended, as the simulation knows it."""

    PUBLISHED = "published"
    FAILED = "failed"
    DEAD_LETTERED = "dead-lettered"
    WAITING = "waiting"
    WORKER_KILLED = "worker killed: its run timed out"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Ending:
    video: Video
    outcome: Outcome
    stage: str
    detail: str = ""


class Ledger:
    """Which videos were submitted and how each one ended (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._endings: dict[str, Ending] = {}
        self.submitted = 0
        self.producing = True

    def submit(self) -> None:
        with self._lock:
            self.submitted += 1

    def stop_producing(self) -> None:
        """No more videos will be submitted."""
        with self._lock:
            self.producing = False

    def settle(self, video: Video, outcome: Outcome, stage: str, detail: str = "") -> None:
        """Record how ``video`` ended (``detail``: why, in the control plane's words); the first ending
        recorded stands."""
        with self._lock:
            self._endings.setdefault(video.video_id, Ending(video, outcome, stage, detail))

    def endings(self) -> list[Ending]:
        with self._lock:
            return sorted(self._endings.values(), key=lambda ending: ending.video.index)

    def all_settled(self) -> bool:
        with self._lock:
            return not self.producing and len(self._endings) >= self.submitted


@dataclass(frozen=True, slots=True)
class Job:
    """A video handed from one stage to the next (a row in a table), with the trace context the next
    stage continues: the ``traceparent`` of the run that wrote the row."""

    video: Video
    traceparent: str


class WorkQueue(Generic[T]):
    """A queue between two stages: the ``sources`` table, ``preparedVideos``, a webhook's inbox."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.Queue[T] = queue.Queue()

    def put(self, entry: T) -> None:
        self._queue.put(entry)

    def get(self, timeout: float = 0.2) -> T | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def __len__(self) -> int:
        return self._queue.qsize()


@dataclass(frozen=True, slots=True)
class Submission:
    """One webhook delivery of a video; a duplicate delivery has ``delivery`` 2."""

    video: Video
    delivery: int = 1


class SeenTable:
    """A table keyed by video id (the ``sources`` table): ``insert`` is False when the row exists."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def insert(self, key: str) -> bool:
        with self._lock:
            if key in self._ids:
                return False
            self._ids.add(key)
            return True
