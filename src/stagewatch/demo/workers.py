"""One function per stage worker of the simulated pipeline, each reporting through the SDK the way a
real worker would: ``client.item_created`` at the webhook, ``with client.stage(...) as run`` around the
work (a guarded run: the control plane decides first whether it may run), progress, costs and logs on
the run, and the trace carried to the next stage in its ``traceparent`` (a column of the row, or the
``googclient_traceparent`` attribute of the Pub/Sub message)."""

from __future__ import annotations

import json
import threading
from functools import partial
from typing import NoReturn

from stagewatch import Run, Skip
from stagewatch.demo import media
from stagewatch.demo.faults import Fault
from stagewatch.demo.instagram import ContainerStatusError, GraphApi, InstagramApiError, status_detail
from stagewatch.demo.pipeline import World
from stagewatch.demo.retries import log_for, run_guarded
from stagewatch.demo.world import Job, Outcome, Submission, Video

TOPIC = "projects/demo-project/topics/videos-to-process"
BUCKET = "gs://demo-videos"

# --- webhook -------------------------------------------------------------------------------------------


def receive_webhook(world: World, submission: Submission) -> None:
    """The webhook endpoint: record the submitted video, then write its row in ``sources``. A second
    delivery of the same video is refused by the control plane (``skip``: already running or done)."""
    video, service = submission.video, world.services.webhook
    service.client.item_created(
        video.video_id, source=video.source, actor=video.actor, params=video.params(),
        account=video.account, scenario=video.scenario,
    )  # fmt: skip
    try:
        with service.client.stage(
            "webhook", video.video_id, account=video.account, scenario=video.scenario,
            payload=video.params(),
        ) as run:  # fmt: skip
            run.log.info(
                "webhook delivery %d of %s from %s", submission.delivery, video.video_id, video.source
            )
            world.clock.sleep(video.uniform(0.1, 0.4))
            write_source_row(world, run, submission)
    except Skip as duplicate:
        world.faults.hit(Fault.DUPLICATE_WEBHOOK, video.video_id)
        text = f"webhook delivery {submission.delivery} of {video.video_id} skipped: {duplicate}"
        log_for(service, Job(video, ""), "webhook", "warning", text)


def write_source_row(world: World, run: Run, submission: Submission) -> None:
    """Insert the ``sources`` row (with the trace), unless a delivery of the same video did already."""
    video = submission.video
    if world.source_rows.insert(video.video_id):
        world.sources.put(Job(video, run.traceparent))
        run.log.info("row written to `sources`; waiting for the downloader")
        return
    world.faults.hit(Fault.DUPLICATE_WEBHOOK, video.video_id)
    note = "%s is already in `sources`: delivery %d is a duplicate; not queued again"
    run.log.warning(note, video.video_id, submission.delivery)


# --- download and enqueue ------------------------------------------------------------------------------


def download(world: World, job: Job) -> None:
    """The downloader: fetch the source file to storage; the control plane retries timeouts, and
    dead-letters a 404 at once (the worker says it is not retryable)."""
    payload = {"video_id": job.video.video_id, "source_url": job.video.source_url}
    run_guarded(world, world.services.downloader, "download", job, partial(fetch, world, job), payload)


def fetch(world: World, job: Job, run: Run) -> None:
    """One download attempt: the file in four chunks, then its row for the enqueue stage."""
    video = job.video
    run.log.info("GET %s (%.1f MB)", video.source_url, video.size_mb)
    if video.fault is Fault.DOWNLOAD_404:
        source_gone(world, run, video)
    seconds = 0.5 + video.size_mb / 25
    for chunk in range(1, 5):
        world.clock.sleep(seconds / 4)
        if chunk == 3 and video.fault is Fault.DOWNLOAD_TIMEOUT and run.attempt == 1:
            cdn_stalls(world, run, video)
        run.progress(chunk / 4, note=f"{video.size_mb * chunk / 4:.1f} of {video.size_mb} MB")
    run.add_cost("storage_gb", round(video.size_mb / 1024, 4))
    run.log.info("stored %s/raw/%s.mp4", BUCKET, video.video_id)
    world.downloaded.put(Job(video, run.traceparent))


def source_gone(world: World, run: Run, video: Video) -> NoReturn:
    world.faults.hit(Fault.DOWNLOAD_404, video.video_id)
    run.retryable = False  # the file is gone: retrying cannot help
    run.log.error("the source file is gone (404 Not Found): %s; not retrying", video.source_url)
    media.fail_not_found(video.source_url)


def cdn_stalls(world: World, run: Run, video: Video) -> NoReturn:
    world.faults.hit(Fault.DOWNLOAD_TIMEOUT, video.video_id)
    run.retryable = True  # a slow CDN usually answers the next time
    run.log.warning("the CDN stopped sending half way through %s", video.source_url)
    media.fail_read_timeout(video.source_url, 30)


def enqueue(world: World, job: Job) -> None:
    """Publish the Pub/Sub message the Cloud Run worker is pushed, with the trace in its attributes."""
    run_guarded(world, world.services.downloader, "enqueue", job, partial(publish_message, world, job))


def publish_message(world: World, job: Job, run: Run) -> None:
    """One enqueue attempt: report the ``process`` run as queued, then publish its message."""
    video = job.video
    world.clock.sleep(video.uniform(0.05, 0.2))
    process_run = world.services.downloader.client.enqueued("process", video.video_id)
    attributes = {
        "googclient_traceparent": run.traceparent,
        "stagewatch_run_id": process_run,
        "account": video.account,
        "scenario": video.scenario,
    }
    data = {
        "video_id": video.video_id,
        "gcs_uri": f"{BUCKET}/raw/{video.video_id}.mp4",
        "scenario": video.scenario,
        "account": video.account,
    }
    message_id = world.subscription.publish(json.dumps(data).encode(), attributes)
    run.log.info("published message %s to %s", message_id, TOPIC)


# --- process (the Cloud Run worker's body) -------------------------------------------------------------


def transcode(world: World, run: Run, video: Video) -> None:
    """Probe, transcode, thumbnail and upload; then the row in ``preparedVideos`` (ready to publish)."""
    total = 2.0 + video.duration_s * 0.08
    run.log.info(
        "transcoding %s: %d s %s clip for %s", video.video_id, video.duration_s, video.scenario, video.account
    )
    world.clock.sleep(total * 0.05)
    run.progress(0.05, note="probed: h264 1080x1920 30 fps")
    total = meet_trouble(world, run, video, total)
    for step in range(1, 5):
        world.clock.sleep(total * 0.75 / 4)
        run.progress(0.05 + 0.75 * step / 4, note=f"transcoding pass {step} of 4")
    world.clock.sleep(total * 0.2)
    run.progress(1.0, note="thumbnail made; uploaded")
    run.add_cost("cloud_run_vcpu_seconds", round(total * 2, 1))
    run.add_cost("storage_gb", round(video.size_mb * 0.6 / 1024, 4))
    run.log.info("row written to `preparedVideos`: ready to publish")
    world.prepared.put(Job(video, run.traceparent))


def meet_trouble(world: World, run: Run, video: Video, total: float) -> float:
    """The process faults: a crashing ffmpeg, a run that never ends, a transcode eating memory.
    Returns the time the transcode takes."""
    if video.fault is Fault.FFMPEG_CRASH:
        ffmpeg_crashes(world, run, video)
    if video.fault is Fault.RUNAWAY and run.attempt == 1:
        run_away(world, run, video)
    if video.fault is Fault.MEMORY_HOG:
        return eat_memory(world, run, video, total)
    return total


def eat_memory(world: World, run: Run, video: Video, total: float) -> float:
    """A 4K source: memory close to the instance's limit, so the transcode runs on one thread, slowly."""
    world.faults.hit(Fault.MEMORY_HOG, video.video_id)
    run.log.warning("memory at 3.6 GiB of the 4 GiB limit (4K source); transcoding on 1 thread, slowly")
    run.annotate("memory pressure", rss_mb=3712, limit_mb=4096)
    return total * 2.5


def ffmpeg_crashes(world: World, run: Run, video: Video) -> None:
    world.faults.hit(Fault.FFMPEG_CRASH, video.video_id)
    try:
        media.run_broken_ffmpeg(f"/tmp/{video.video_id}.mp4")
    except media.FfmpegError as error:
        run.log.error("ffmpeg crashed on %s: %s", video.video_id, error)
        raise


def run_away(world: World, run: Run, video: Video) -> NoReturn:
    """ffmpeg stops making progress but never exits: the run would heartbeat and cost money forever,
    until the control plane answers a heartbeat past the stage's timeout with stop, and the next
    ``run.progress`` raises ``Cancelled``."""
    world.faults.hit(Fault.RUNAWAY, video.video_id)
    run.progress(0.42, note="transcoding pass 2 of 4")
    run.log.warning("ffmpeg stopped making progress at frame 1843 (pass 2 of 4) but is still running")
    stalled, waited = threading.Event(), 0  # never set: nothing stops a stuck process by itself
    while True:
        for _ in range(30):  # the frame loop asks between frames whether to go on
            stalled.wait(world.clock.real(1))
            run.check()
        waited += 30
        run.progress(0.42, note=f"transcoding pass 2 of 4: no progress for {waited} s")
        run.add_cost("cloud_run_vcpu_seconds", 60.0)
        run.log.warning("no progress for %d s; still burning 2 vCPU", waited)


# --- publish -------------------------------------------------------------------------------------------


def publish(world: World, job: Job) -> None:
    """The publisher: media container, ``status_code`` polling, ``media_publish``."""
    publisher = world.services.publisher
    payload = {"video_id": job.video.video_id, "account": job.video.account}
    if run_guarded(world, publisher, "publish", job, partial(post_to_instagram, world, job.video), payload):
        world.ledger.settle(job.video, Outcome.PUBLISHED, "publish")


def post_to_instagram(world: World, video: Video, run: Run) -> None:
    """One publish attempt; every Graph API call it made is counted as a cost, even when it fails."""
    api = GraphApi(video, run.attempt)
    try:
        container = create_container(world, run, api)
        wait_until_finished(world, run, api, container)
        world.clock.sleep(video.uniform(0.3, 0.6))
        media_id = api.media_publish(container)
        run.progress(1.0, note="media_publish done")
        run.log.info("media_publish: published as media %s", media_id)
        run.annotate("published on Instagram", media_id=media_id)
    finally:
        run.add_cost("instagram_api_call", api.calls)


def create_container(world: World, run: Run, api: GraphApi) -> str:
    video = api.video
    world.clock.sleep(video.uniform(0.3, 0.6))
    try:
        container = api.create_container()
    except InstagramApiError as error:
        world.faults.hit(Fault.RATE_LIMIT, video.video_id)
        run.log.warning("Instagram refused the container: %s", error)
        raise
    run.log.info("media container %s created (%s)", container, video.scenario)
    return container


def wait_until_finished(world: World, run: Run, api: GraphApi, container: str) -> None:
    """Poll the container's ``status_code`` every second until it is FINISHED; raise if it is not."""
    polls = 0
    while True:
        world.clock.sleep(1.0)
        polls += 1
        status = api.status_code(container)
        run.progress(min(0.8, 0.2 * polls), note=f"container status_code {status}")
        if status == "FINISHED":
            return
        if status != "IN_PROGRESS":
            container_failed(world, run, api.video, container, status)


def container_failed(world: World, run: Run, video: Video, container: str, status: str) -> NoReturn:
    fault = Fault.CONTAINER_ERROR if status == "ERROR" else Fault.CONTAINER_EXPIRED
    world.faults.hit(fault, video.video_id)
    error = ContainerStatusError(container, status, status_detail(status))
    follow_up = "the next attempt creates a new container" if error.retryable else "not retrying"
    run.log.error("%s; %s", error, follow_up)
    raise error
