"""Everything the simulated stage workers share: the four services (each with its own SDK client, as
four real deployments would have), the queues between stages, the Pub/Sub subscription, and the
bookkeeping of videos, faults and child processes."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass, field

from stagewatch import Client
from stagewatch.demo.config import heartbeat_interval
from stagewatch.demo.faults import FaultCounter, FaultPlan
from stagewatch.demo.pubsub import Subscription
from stagewatch.demo.world import Clock, Job, Ledger, SeenTable, Submission, Video, WorkQueue
from stagewatch.domain.pipeline import instagram_preset

PIPELINE = "instagram"
MAX_ATTEMPTS = {stage.name: stage.max_attempts for stage in instagram_preset().stages}
# Pub/Sub's own delivery limit stays above the stage's attempts: the control plane decides when a message
# is dead-lettered (it answers dead_letter, which the worker acks), not the subscription.
PUBSUB_MAX_DELIVERIES = 20
# Where each stage runs: (Cloud Run service, revision), as K_SERVICE and K_REVISION would say.
DEPLOYMENTS = {
    "webhook": ("webhook-receiver", "webhook-receiver-00007-q2x"),
    "download": ("downloader", "downloader-00012-kq7"),
    "process": ("video-worker", "video-worker-00042-tux"),
    "publish": ("publisher", "publisher-00009-m2c"),
}


@dataclass(frozen=True, slots=True)
class Service:
    """One deployed service and its SDK client."""

    name: str
    revision: str
    client: Client


def make_service(stage: str, url: str, token: str | None, heartbeat_interval: float) -> Service:
    name, revision = DEPLOYMENTS[stage]
    client = Client(
        url,
        token,
        pipeline=PIPELINE,
        worker=name,
        revision=revision,
        spool_dir=False,
        flush_interval=0.25,
        heartbeat_interval=heartbeat_interval,
    )
    return Service(name, revision, client)


@dataclass(frozen=True, slots=True)
class Services:
    webhook: Service
    downloader: Service
    worker: Service
    publisher: Service

    def all(self) -> tuple[Service, ...]:
        return (self.webhook, self.downloader, self.worker, self.publisher)


def make_services(url: str, token: str | None, speed: float) -> Services:
    """The four services; heartbeats come every 5 simulated seconds (0.5 to 5 real seconds)."""
    interval = heartbeat_interval(speed)
    stages = ("webhook", "download", "process", "publish")
    return Services(*(make_service(stage, url, token, interval) for stage in stages))


class Children:
    """Child processes the demo started (the doomed worker), so it can kill any left at the end."""

    def __init__(self) -> None:
        self._alive: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def add(self, process: subprocess.Popen[str]) -> None:
        with self._lock:
            self._alive.add(process)

    def discard(self, process: subprocess.Popen[str]) -> None:
        with self._lock:
            self._alive.discard(process)

    def kill_all(self) -> None:
        with self._lock:
            left, self._alive = self._alive, set()
        for process in left:
            process.kill()
            process.wait()


@dataclass
class World:
    """The simulated pipeline's shared state."""

    url: str
    token: str | None
    seed: int
    clock: Clock
    plan: FaultPlan
    services: Services
    ledger: Ledger = field(default_factory=Ledger)
    faults: FaultCounter = field(default_factory=FaultCounter)
    webhooks: WorkQueue[Submission] = field(default_factory=lambda: WorkQueue("webhook deliveries"))
    sources: WorkQueue[Job] = field(default_factory=lambda: WorkQueue("sources"))
    downloaded: WorkQueue[Job] = field(default_factory=lambda: WorkQueue("downloaded"))
    subscription: Subscription = field(default_factory=lambda: Subscription(PUBSUB_MAX_DELIVERIES))
    prepared: WorkQueue[Job] = field(default_factory=lambda: WorkQueue("preparedVideos"))
    source_rows: SeenTable = field(default_factory=SeenTable)
    videos: dict[str, Video] = field(default_factory=dict)
    children: Children = field(default_factory=Children)
    # What the control plane did to a video on the way (a runaway stopped), for the final summary.
    remarks: dict[str, str] = field(default_factory=dict)

    def remark(self, video: Video, text: str) -> None:
        self.remarks.setdefault(video.video_id, text)
