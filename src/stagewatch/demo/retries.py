"""Attempts of one stage for one video, decided by the control plane: each attempt asks ``begin`` first
(through the SDK's guarded ``client.stage``), so the server says whether to run, wait (a retry's backoff,
a spent quota), skip a duplicate, or give up into the dead-letter queue. The worker only does what it is
told; nothing here counts attempts or computes backoffs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stagewatch import Aborted, Cancelled, DeadLettered, Run, Skip, Wait
from stagewatch.demo.faults import Fault
from stagewatch.demo.pipeline import Service, World
from stagewatch.demo.world import Job, Outcome

# A wait longer than this (real seconds) parks the video: its message would come back long after the
# demo ends (a spent daily quota waits for hours), so the demo records it as waiting and moves on.
PARK_AFTER = 30.0

Body = Callable[[Run], None]


def run_guarded(
    world: World, service: Service, stage: str, job: Job, body: Body, payload: Any = None
) -> bool:
    """Run ``body`` as ``stage`` of the job's video until it succeeds (True) or the control plane ends
    its story here (False: dead-lettered, parked waiting, skipped, cancelled)."""
    video = job.video
    while True:
        try:
            with service.client.stage(
                stage, video.video_id, account=video.account, scenario=video.scenario,
                traceparent=job.traceparent, payload=payload,
            ) as run:  # fmt: skip
                body(run)
            return True
        except Wait as wait:
            if not wait_or_park(world, service, stage, job, wait):
                return False
        except DeadLettered as dead:
            log_for(service, job, stage, "error", f"{stage} stops here, as the control plane says: {dead}")
            world.ledger.settle(video, Outcome.DEAD_LETTERED, stage, str(dead))
            return False
        except Skip as skip:
            log_for(service, job, stage, "warning", f"{stage} skipped as a duplicate: {skip}")
            return False
        except Aborted as aborted:
            world.ledger.settle(video, Outcome.CANCELLED, stage, str(aborted))
            return False
        except Cancelled as stop:
            if not is_runaway(stop):
                raise  # the demo is stopping, or an operator stopped the run: nothing more to do here
            world.remark(video, f"{stage} stopped as a runaway, then retried")
        except Exception as error:  # reported by the SDK; the next begin says wait, or dead-letter
            log_for(
                service, job, stage, "warning", f"{stage} attempt failed: {type(error).__name__}: {error}"
            )


def wait_or_park(world: World, service: Service, stage: str, job: Job, wait: Wait) -> bool:
    """Wait as told and say True (try again), or park the video if the wait outlasts the demo."""
    if wait.retry_after > PARK_AFTER:
        if job.video.fault is Fault.PUBLISH_QUOTA:
            world.faults.hit(Fault.PUBLISH_QUOTA, job.video.video_id)
        log_for(service, job, stage, "warning", f"{stage} must wait {wait.retry_after:.0f}s: {wait.reason}")
        world.ledger.settle(job.video, Outcome.WAITING, stage, wait.reason)
        return False
    world.clock.sleep_real(wait.retry_after)
    return True


def is_runaway(stop: Cancelled) -> bool:
    return str(stop).startswith("runaway")


def log_for(service: Service, job: Job, stage: str, level: str, message: str) -> None:
    """A log line about the job's video from outside any run (between attempts), in its trace."""
    trace_id = job.traceparent.split("-")[1] if job.traceparent.count("-") == 3 else None
    service.client.emit_log(
        {
            "level": level,
            "message": message,
            "logger": service.name,
            "item_id": job.video.video_id,
            "stage": stage,
            "trace_id": trace_id,
            "pipeline": "instagram",
        }
    )
