"""The demo from start to end: start a server, start the simulated pipeline, show it live, stop it
cleanly, print what to look at, and keep serving or stop."""

from __future__ import annotations

import contextlib
import logging
import random
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from stagewatch.cli.client import ClientError, StagewatchClient
from stagewatch.demo import report
from stagewatch.demo.cloudrun import consume
from stagewatch.demo.config import QUOTA
from stagewatch.demo.display import LiveView, Snapshot
from stagewatch.demo.faults import Fault, fault_counts, plan_faults
from stagewatch.demo.pipeline import World, make_services
from stagewatch.demo.pools import StagePool, pool_size
from stagewatch.demo.server import DemoServer, demo_token, free_port, port_is_free, start_server
from stagewatch.demo.workers import download, enqueue, publish, receive_webhook
from stagewatch.demo.world import VIRAL_ACCOUNT, Clock, Submission, Video, make_video

REFRESH = 0.5
# Real seconds in-flight videos get to finish after a stop (Ctrl-C, --duration): 15 simulated seconds,
# between 3 and 10 real ones.
GRACE_SIMULATED, GRACE_MIN, GRACE_MAX = 15.0, 3.0, 10.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``stagewatch demo`` was asked to do (see its ``--help``)."""

    videos: int = 60
    rate: float = 2.0
    seed: int | None = None
    duration: float | None = None
    exit_when_done: bool = False
    port: int = 8000
    db: Path | None = None
    speed: float = 1.0
    keep_serving: bool | None = None

    def keeps_serving(self, interactive: bool) -> bool:
        """``--keep-serving`` if given, else yes on a terminal unless ``--exit-when-done``."""
        if self.keep_serving is not None:
            return self.keep_serving
        return interactive and not self.exit_when_done


def run_demo(options: DemoOptions, console: Console) -> int:
    """Run the demo; the exit status of the command."""
    workdir = Path(tempfile.mkdtemp(prefix="stagewatch-demo-"))
    port = options.port if port_is_free(options.port) else free_port()
    db_path = options.db.resolve() if options.db else workdir / "stagewatch.db"
    if db_path.exists():
        console.print(f"note: {db_path} exists already; the demo adds its videos to it", markup=False)
    token = demo_token(db_path)
    server = start_server(port, db_path, workdir, options.speed)
    try:
        server.wait_healthy()
        seed = options.seed if options.seed is not None else random.randrange(1000, 100_000)
        info = report.DemoInfo(
            url=server.url, requested_port=options.port, port=port, db_path=db_path, workdir=workdir,
            seed=seed, videos=options.videos, rate=options.rate, speed=options.speed, token=token,
        )  # fmt: skip
        report.banner(console, info)
        send_sdk_logs_to(workdir / "workers.log")
        Demo(options, info, server, console).run()
    finally:
        server.stop()
    return 0


def send_sdk_logs_to(path: Path) -> None:
    """The workers' and the SDK's own log lines go to a file, never over the live view."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("stagewatch")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


class Demo:
    """One run of the simulation against a started server."""

    def __init__(self, options: DemoOptions, info: report.DemoInfo, server: DemoServer, console: Console):
        self.options, self.info, self.server, self.console = options, info, server, console
        self.plan = plan_faults(options.videos, info.seed)
        services = make_services(server.url, info.token, options.speed)
        self.world = World(server.url, info.token, info.seed, Clock(options.speed), self.plan, services)
        self.pools = make_pools(self.world, options)
        self.stop_producing = threading.Event()
        self.api = StagewatchClient(server.url, info.token, timeout=2)
        self.started = time.monotonic()

    def run(self) -> None:
        """Start the workers and the stream, show it, wind down, report, then keep serving or return."""
        if self.plan.videos_with(Fault.PUBLISH_QUOTA):
            spend_quota(self.world)
        for pool in self.pools:
            pool.start()
        threading.Thread(target=self.produce, name="demo-producer", daemon=True).start()
        try:
            with self.api, LiveView(self.console) as view:
                why = self.watch(view)
                self.wind_down(view)
                view.update(self.snapshot(), last=True)
            elapsed = time.monotonic() - self.started
            report.final_summary(
                self.console, self.info, self.plan, self.world.ledger, self.world.remarks, why, elapsed
            )
            self.finish()
        finally:
            for service in self.world.services.all():
                service.client.close(5)
            self.world.children.kill_all()

    def produce(self) -> None:
        """Submit the videos at ``--rate``, until all are submitted or the demo stops."""
        next_at = time.monotonic()
        try:
            for index in range(self.options.videos):
                if self.stop_producing.is_set():
                    break
                self.submit(make_video(self.world.seed, index, self.plan))
                next_at += 1 / self.options.rate
                self.stop_producing.wait(max(0.0, next_at - time.monotonic()))
        finally:
            self.world.ledger.stop_producing()

    def submit(self, video: Video) -> None:
        """Deliver the video's webhook; a duplicate delivery follows its original at once."""
        self.world.videos[video.video_id] = video
        self.world.ledger.submit()
        self.world.webhooks.put(Submission(video))
        if video.fault is Fault.DUPLICATE_WEBHOOK:
            self.world.webhooks.put(Submission(video, delivery=2))

    def watch(self, view: LiveView) -> str:
        """Refresh the view until every video has finished, ``--duration`` passes or Ctrl-C; say which."""
        try:
            while True:
                view.update(self.snapshot())
                if self.world.ledger.all_settled():
                    return "every video finished"
                if self.options.duration and time.monotonic() - self.started >= self.options.duration:
                    return "--duration reached"
                time.sleep(REFRESH)
        except KeyboardInterrupt:
            return "stopped with Ctrl-C"

    def wind_down(self, view: LiveView) -> None:
        """Stop submitting, give in-flight videos a few seconds, then stop the workers (in-flight runs are
        reported cancelled) and send everything the SDK still holds."""
        self.stop_producing.set()
        with contextlib.suppress(KeyboardInterrupt):
            self.grace_period(view)
        self.world.clock.halt()
        self.world.children.kill_all()
        for pool in self.pools:
            pool.join(2.0)
        for service in self.world.services.all():
            service.client.flush(10)

    def grace_period(self, view: LiveView) -> None:
        """Wait, refreshing the view, until every video has finished or the grace period is over."""
        grace = min(GRACE_MAX, max(GRACE_MIN, GRACE_SIMULATED / self.options.speed))
        if not self.world.ledger.all_settled():
            self.console.print(f"letting videos in flight finish (at most {grace:.0f} s; Ctrl-C to stop now)")
        deadline = time.monotonic() + grace
        while not self.world.ledger.all_settled() and time.monotonic() < deadline:
            view.update(self.snapshot())
            time.sleep(REFRESH / 2)

    def finish(self) -> None:
        """Keep serving until Ctrl-C (the runaway keeps heartbeating), or return to stop the server."""
        if not self.options.keeps_serving(self.console.is_terminal):
            self.console.print(
                f"Stopping the server. The database stays at {self.info.db_path}; look again with: "
                f"stagewatch serve --db {self.info.db_path}",
                markup=False,
                highlight=False,
            )
            return
        self.console.print(
            f"\nThe server keeps running at {self.info.url}/ : look around, cancel, replay "
            "(the token above is an admin's). Ctrl-C stops it.",
            markup=False,
            highlight=False,
        )
        try:
            while self.server.alive():
                time.sleep(REFRESH)
        except KeyboardInterrupt:
            self.console.print("stopping the server")

    def snapshot(self) -> Snapshot:
        world = self.world
        return Snapshot(
            summary=fetch_summary(self.api),
            elapsed=time.monotonic() - self.started,
            submitted=world.ledger.submitted,
            videos=self.options.videos,
            injected=world.faults.snapshot(),
            planned={fault: n for fault, n in fault_counts(self.options.videos).items() if n},
            workers={pool.stage: (pool.busy, pool.size) for pool in self.pools},
        )


def spend_quota(world: World) -> None:
    """The viral account already published Instagram's daily maximum before the demo began (from another
    tool, through the same guarded publish stage), so its videos in the stream wait for the quota."""
    client = world.services.publisher.client
    for number in range(1, QUOTA + 1):
        with client.stage("publish", f"{VIRAL_ACCOUNT}-earlier-post-{number:02d}", account=VIRAL_ACCOUNT):
            pass
    client.flush(10)


def fetch_summary(api: StagewatchClient) -> dict[str, Any] | None:
    """The server's ``GET /v1/summary``, or None if it does not answer."""
    try:
        return api.summary()
    except ClientError:
        return None


def make_pools(world: World, options: DemoOptions) -> list[StagePool[Any]]:
    """One pool per stage, each sized for ``--rate`` at ``--speed``."""
    halted = world.clock.halted

    def size(stage: str) -> int:
        return pool_size(stage, options.rate, options.speed)

    return [
        StagePool(
            "webhook", size("webhook"), world.webhooks.get, lambda s: receive_webhook(world, s), halted
        ),
        StagePool("download", size("download"), world.sources.get, lambda j: download(world, j), halted),
        StagePool("enqueue", size("enqueue"), world.downloaded.get, lambda j: enqueue(world, j), halted),
        StagePool("process", size("process"), world.subscription.pull, lambda d: consume(world, d), halted),
        StagePool("publish", size("publish"), world.prepared.get, lambda j: publish(world, j), halted),
    ]
