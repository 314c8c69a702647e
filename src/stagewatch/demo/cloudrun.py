"""The Cloud Run worker of the ``process`` stage, fed by the Pub/Sub push subscription: decode the
envelope, continue the trace from ``googclient_traceparent``, run a guarded stage (the control plane
decides whether a delivery runs, waits, is a duplicate, or is dead-lettered), and answer as a push
endpoint does: 2xx acks, anything else nacks and Pub/Sub redelivers after a backoff.

One planned instance dies mid-run: its work runs in a real child process (``stagewatch.demo.doomed``)
with its own SDK client, killed with SIGKILL, so its heartbeats really stop and its run stays open.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

from stagewatch import Cancelled, DeadLettered
from stagewatch.demo.doomed import READY
from stagewatch.demo.faults import Fault
from stagewatch.demo.pipeline import PUBSUB_MAX_DELIVERIES, World
from stagewatch.demo.pubsub import Delivery
from stagewatch.demo.retries import is_runaway, log_for
from stagewatch.demo.workers import transcode
from stagewatch.demo.world import Job, Outcome, Video
from stagewatch.sdk.pubsub import PushMessage, decode_push, is_ack, push_stage, status_for

log = logging.getLogger("stagewatch.demo")
# How long (simulated seconds) the doomed instance works before it is killed; at least KILL_MIN real.
KILL_AFTER = 12.0
KILL_MIN = 1.5
# The subscription's retry policy (simulated seconds): minimum and maximum backoff of a nacked message.
NACK_BACKOFF = (2.0, 30.0)


def nack_delay(attempt: int) -> float:
    low, high = NACK_BACKOFF
    return min(high, low * 2.0 ** (attempt - 1))


def consume(world: World, delivery: Delivery) -> None:
    """Push one delivery to the worker and act on its answer as Pub/Sub does."""
    message = decode_push(delivery.envelope())
    video = world.videos[message.json()["video_id"]]
    status = serve_push(world, message, video)
    if status is None or is_ack(status):
        return  # acked, or no answer at all: Pub/Sub waits for the ack deadline
    job = Job(video, message.traceparent or "")
    delay = nack_delay(delivery.attempt)
    if world.subscription.nack(delivery, world.clock.real(delay)):
        next_try = f"delivery {delivery.attempt + 1} of at most {PUBSUB_MAX_DELIVERIES}"
        text = f"push answered {status}; Pub/Sub redelivers in {delay:g}s ({next_try})"
        log_for(world.services.worker, job, "process", "warning", text)
        return
    text = f"gave up after {delivery.attempt} delivery attempts; the message went to the dead-letter topic"
    log_for(world.services.worker, job, "process", "error", text)
    world.ledger.settle(video, Outcome.FAILED, "process")


def serve_push(world: World, message: PushMessage, video: Video) -> int | None:
    """The push endpoint: 204 when the video is processed; 200 for a duplicate, a dead letter or a
    cancel (nothing more to do); 429 when the control plane says wait and 500 when the run failed or ran
    away (both nack, so Pub/Sub redelivers); None if the instance died before it could answer."""
    attempt = message.delivery_attempt or 1
    if video.fault is Fault.WORKER_KILLED and attempt == 1:
        crash_instance(world, message, video)
        return None
    run_id = message.attributes.get("stagewatch_run_id") if attempt == 1 else None
    outcome: Exception | None = None
    try:
        with push_stage(
            world.services.worker.client, message, "process", video.video_id,
            account=video.account, scenario=video.scenario, run_id=run_id,
        ) as run:  # fmt: skip
            transcode(world, run, video)
    except Exception as error:  # reported by the SDK: run.failed with the error, or run.cancelled
        outcome = error
    if isinstance(outcome, DeadLettered):
        world.ledger.settle(video, Outcome.DEAD_LETTERED, "process", str(outcome))
    if isinstance(outcome, Cancelled) and is_runaway(outcome):
        world.remark(video, "process stopped as a runaway, then retried")
        return 500  # the control plane scheduled a retry: have Pub/Sub redeliver the message
    return status_for(outcome)


def crash_instance(world: World, message: PushMessage, video: Video) -> None:
    """Run the delivery in a child process with its own client, then kill it with SIGKILL."""
    world.faults.hit(Fault.WORKER_KILLED, video.video_id)
    child = start_doomed(world, message, video)
    try:
        if not reports_running(child):
            log.error("demo: the dying worker did not start (exit status %s)", child.poll())
            return
        world.clock.halted.wait(max(KILL_MIN, world.clock.real(KILL_AFTER)))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        world.children.discard(child)
        if child.poll() is None:
            child.kill()
            child.wait()
        world.ledger.settle(video, Outcome.WORKER_KILLED, "process")
    job = Job(video, message.traceparent or "")
    text = (
        f"Container terminated on signal 9 (instance pid {child.pid}); its heartbeats stopped, so "
        "stagewatch times the run out; the push got no answer, so Pub/Sub redelivers only after the ack "
        "deadline (600 s)"
    )
    log_for(world.services.worker, job, "process", "error", text)


def reports_running(child: subprocess.Popen[str]) -> bool:
    """Wait for the child to say its run is started and reported."""
    line = child.stdout.readline() if child.stdout is not None else ""
    return line.strip() == READY


def start_doomed(world: World, message: PushMessage, video: Video) -> subprocess.Popen[str]:
    service = world.services.worker
    spec = {
        "url": world.url,
        "video_id": video.video_id,
        "account": video.account,
        "scenario": video.scenario,
        "attempt": message.delivery_attempt,
        "run_id": message.attributes.get("stagewatch_run_id"),
        "traceparent": message.traceparent,
        "worker": service.name,
        "revision": service.revision,
        "token": world.token,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "stagewatch.demo.doomed", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    world.children.add(child)
    return child
