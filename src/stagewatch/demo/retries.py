"""Attempts of one stage for one video, as an in-process worker makes them: each attempt is its own run
(``attempt`` 1, 2, ...), a retryable failure waits a little and tries again up to the stage's
``max_attempts``, and a permanent one stops at once, leaving the video ``failed``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stagewatch import Run
from stagewatch.demo.pipeline import MAX_ATTEMPTS, Service, World
from stagewatch.demo.world import Job, Outcome
from stagewatch.sdk import RunInterrupted

# First wait before a retry, in simulated seconds; it doubles with each attempt.
BACKOFF = {"download": 2.0, "enqueue": 0.5, "process": 3.0, "publish": 4.0}
MAX_BACKOFF = 30.0

Body = Callable[[Run], None]


@dataclass(frozen=True, slots=True)
class Failure:
    error: Exception
    retryable: bool

    def describe(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


def backoff(stage: str, attempt: int) -> float:
    """Simulated seconds to wait after failed ``attempt``."""
    return min(MAX_BACKOFF, BACKOFF.get(stage, 1.0) * 2.0 ** (attempt - 1))


def is_retryable(error: BaseException, decided: bool | None) -> bool:
    """The run's own verdict if the code gave one, else the error's ``retryable`` or ``is_transient``
    flag, else yes (an unknown failure is worth one more try)."""
    if decided is not None:
        return decided
    for name in ("retryable", "is_transient"):
        value = getattr(error, name, None)
        if isinstance(value, bool):
            return value
    return True


def run_with_retries(world: World, service: Service, stage: str, job: Job, body: Body) -> bool:
    """Run ``body`` as ``stage`` of the job's video until it succeeds (True) or must stop (False)."""
    limit = MAX_ATTEMPTS[stage]
    for attempt in range(1, limit + 1):
        failure = attempt_once(service, stage, job, attempt, body)
        if failure is None:
            return True
        if not failure.retryable or attempt == limit:
            give_up(world, service, stage, job, attempt, failure)
            return False
        delay = backoff(stage, attempt)
        text = f"{stage} attempt {attempt} of {limit} failed; retrying in {delay:g}s: {failure.describe()}"
        log_for(service, job, stage, "warning", text)
        world.clock.sleep(delay)
    return False


def attempt_once(service: Service, stage: str, job: Job, attempt: int, body: Body) -> Failure | None:
    """One attempt, reported as one run; the failure if it failed."""
    video, run = job.video, None
    try:
        with service.client.stage(
            stage, video.video_id, account=video.account, scenario=video.scenario, attempt=attempt,
            traceparent=job.traceparent,
        ) as run:  # fmt: skip
            body(run)
    except RunInterrupted:
        raise
    except Exception as error:
        return Failure(error, is_retryable(error, run.retryable if run is not None else None))
    return None


def give_up(world: World, service: Service, stage: str, job: Job, attempt: int, failure: Failure) -> None:
    why = "a permanent error" if not failure.retryable else f"{attempt} attempts, the most allowed"
    log_for(service, job, stage, "error", f"{stage} gave up after {why}: {failure.describe()}")
    world.ledger.settle(job.video, Outcome.FAILED, stage)


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
