"""The dashboard's read models: what each page shows, as plain JSON-able dicts (times as ISO 8601 strings,
durations in seconds) that templates render and Server-Sent Events can send as they are.

- ``stage_overview``: ``query.summary`` per stage, plus stuck items and the last hour's throughput and
  error rate in 5-minute buckets.
- ``in_flight``: runs running now, with their leases, flagged stuck or runaway.
- ``error_groups`` and ``videos_of_group``: failures grouped by fingerprint.
- ``item_control`` and ``timeline``: what the video page needs beyond ``query.get_item``.

A failed attempt here is a run that ended ``failed`` or ``timed_out``; a cancel is an operator's
decision, so it counts as finished but not as an error.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stagewatch.domain.events import iso, parse_time_text
from stagewatch.domain.fingerprint import normalise_message
from stagewatch.domain.pipeline import PipelineRegistry, StagePolicy
from stagewatch.errors import InputError
from stagewatch.service import query
from stagewatch.service.audit import audit_view
from stagewatch.service.control.heartbeats import runaway_reason
from stagewatch.store import audit as audit_store
from stagewatch.store import control
from stagewatch.store import dashboard as store
from stagewatch.store.audit import AuditFilter
from stagewatch.store.engine import Database

WINDOW_SECONDS = 3600.0
BUCKET_SECONDS = 300.0
MAX_LIMIT = 500


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}", field="limit")


def _bucket_index(bucket: int, count: int) -> int:
    # A run that ended exactly at the window's end falls one past the last bucket: it belongs to it.
    return min(max(bucket, 0), count - 1)


# --- the overview ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Throughput:
    """One stage's runs finished and failed per bucket."""

    finished: list[int]
    failed: list[int]

    @classmethod
    def empty(cls, buckets: int) -> _Throughput:
        return cls([0] * buckets, [0] * buckets)

    def view(self) -> dict[str, Any]:
        finished, failed = sum(self.finished), sum(self.failed)
        return {
            "throughput": list(self.finished),
            "failures": list(self.failed),
            "finished_last_hour": finished,
            "failed_last_hour": failed,
            "error_rate": failed / finished if finished else None,
        }


def stage_overview(db: Database, registry: PipelineRegistry, now: float | None = None) -> dict[str, Any]:
    """``query.summary`` (per pipeline and stage, in order: counts by status, done, oldest queued age),
    each stage row extended with ``stuck`` (items the watchdog marked stuck there), ``throughput`` and
    ``failures`` (runs finished and failed per 5-minute bucket over the last hour, oldest first),
    ``finished_last_hour``, ``failed_last_hour`` and ``error_rate`` (failed / finished, None when none
    finished). ``window`` says where the buckets start and how wide they are."""
    now = _now(now)
    overview = query.summary(db, registry, now)
    start, buckets = now - WINDOW_SECONDS, int(WINDOW_SECONDS // BUCKET_SECONDS)
    with db.reader.connect() as conn:
        stuck = store.stuck_counts(conn)
        rows = store.finished_by_bucket(
            conn, start, now, BUCKET_SECONDS, by_pipeline=_shares_stages(registry)
        )
    tallies = _tally(rows, _pipeline_of_stage(registry), buckets)
    for pipeline in overview["pipelines"]:
        for row in pipeline["stages"]:
            key = (pipeline["pipeline"], row["stage"])
            row["stuck"] = stuck.get(key, 0)
            row.update(tallies.get(key, _Throughput.empty(buckets)).view())
    overview["window"] = {
        "start": iso(start), "end": iso(now), "start_epoch": start, "end_epoch": now,
        "bucket_seconds": BUCKET_SECONDS, "buckets": buckets,
    }  # fmt: skip
    return overview


def _shares_stages(registry: PipelineRegistry) -> bool:
    """Whether two pipelines have a stage of the same name: only then must a run's pipeline be looked up
    (runs record only the stage)."""
    names = [stage for p in registry.pipelines.values() for stage in p.stage_names]
    return len(names) != len(set(names))


def _pipeline_of_stage(registry: PipelineRegistry) -> dict[str, str]:
    return {stage: p.name for p in registry.pipelines.values() for stage in p.stage_names}


def _tally(
    rows: Iterable[tuple[str | None, str, str, int, int]], pipeline_of: Mapping[str, str], buckets: int
) -> dict[tuple[str, str], _Throughput]:
    tallies: dict[tuple[str, str], _Throughput] = {}
    for pipeline, stage, status, bucket, count in rows:
        name = pipeline or pipeline_of.get(stage)
        if name is None:  # a stage no configured pipeline has
            continue
        tally = tallies.setdefault((name, stage), _Throughput.empty(buckets))
        index = _bucket_index(bucket, buckets)
        tally.finished[index] += count
        if status in store.ERROR_STATUSES:
            tally.failed[index] += count
    return tallies


# --- in flight ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunHealth:
    """Whether a running run needs an operator: ``stuck`` (the watchdog marked its lease, or its last
    heartbeat is older than half its stage's heartbeat timeout, when the watchdog would mark it) and
    ``runaway`` (past its deadline, or told to stop as one)."""

    stuck: bool = False
    stuck_reason: str | None = None
    runaway: bool = False
    runaway_reason: str | None = None


def run_health(
    *,
    now: float,
    started_at: float | None,
    heartbeat_at: float | None,
    deadline: float | None,
    policy: StagePolicy | None,
    lease_stuck: bool = False,
    stop_reason: str | None = None,
) -> RunHealth:
    """Judge one running run (pure: every input is given)."""
    stuck_reason = _stuck_reason(now, heartbeat_at, policy, lease_stuck)
    runaway = None
    if stop_reason and stop_reason.startswith("runaway"):
        runaway = stop_reason
    elif deadline is not None and started_at is not None and now > deadline:
        runaway = runaway_reason({"deadline": deadline, "started_at": started_at}, now)
    return RunHealth(stuck_reason is not None, stuck_reason, runaway is not None, runaway)


def _stuck_reason(
    now: float, heartbeat_at: float | None, policy: StagePolicy | None, lease_stuck: bool
) -> str | None:
    age = None if heartbeat_at is None else now - heartbeat_at
    timeout = policy.heartbeat_timeout if policy is not None else None
    if age is not None and timeout is not None and (lease_stuck or age > timeout / 2):
        return f"no heartbeat for {age:.0f}s (timeout {timeout:g}s)"
    return "marked stuck by the watchdog" if lease_stuck else None


def in_flight(
    db: Database, registry: PipelineRegistry, now: float | None = None, limit: int = 100
) -> dict[str, Any]:
    """Runs running now, stuck and runaway ones first, then the longest running: ``total`` (all running
    runs) and ``runs`` (up to ``limit``; see ``_in_flight_view`` for the fields). A flagged run is shown
    even when more than ``limit`` older runs are running."""
    _check_limit(limit)
    now = _now(now)
    with db.reader.connect() as conn:
        found = {row["run_id"]: row for row in store.flagged_runs(conn, now, limit)}
        for row in store.running_runs(conn, limit):
            found.setdefault(row["run_id"], row)
        total = store.running_count(conn)
    views = [_in_flight_view(row, registry, now) for row in found.values()]
    views.sort(key=lambda v: (not (v["stuck"] or v["runaway"]), -(v["elapsed_seconds"] or 0.0), v["run_id"]))
    return {"generated_at": iso(now), "total": total, "runs": views[:limit]}


def _policy(registry: PipelineRegistry, pipeline: str | None, stage: str) -> StagePolicy | None:
    found = registry.get(pipeline)
    return found.stage(stage) if found is not None and found.has_stage(stage) else None


def _latest(*times: float | None) -> float | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None


def _since(now: float, at: float | None) -> float | None:
    return None if at is None else max(0.0, now - at)


def _in_flight_view(row: Mapping[str, Any], registry: PipelineRegistry, now: float) -> dict[str, Any]:
    policy = _policy(registry, row["pipeline"], row["stage"])
    guarded = row["lease_run_id"] is not None
    started = row["started_at"] if row["started_at"] is not None else row["lease_started_at"]
    # The lease's heartbeat is written at once; the run's comes through the projection a moment later.
    heartbeat = _latest(row["heartbeat_at"], row["lease_heartbeat_at"])
    deadline = row["lease_deadline"]
    if deadline is None and policy is not None and started is not None:
        deadline = started + policy.timeout  # a run without a lease: its stage's timeout still applies
    health = run_health(
        now=now, started_at=started, heartbeat_at=heartbeat, deadline=deadline, policy=policy,
        lease_stuck=bool(row["lease_stuck"]), stop_reason=row["lease_stop_reason"],
    )  # fmt: skip
    resources = dict(row["resources"] or {})
    return {
        "run_id": row["run_id"], "item_id": row["item_id"], "pipeline": row["pipeline"],
        "stage": row["stage"], "attempt": row["attempt"], "account": row["account"],
        "scenario": row["scenario"], "worker": row["worker"] or row["lease_worker"],
        "revision": row["revision"], "started_at": iso(started), "elapsed_seconds": _since(now, started),
        "heartbeat_at": iso(heartbeat), "heartbeat_age_seconds": _since(now, heartbeat),
        "heartbeat_timeout_seconds": policy.heartbeat_timeout if policy else None,
        "progress": row["progress"], "progress_note": row["progress_note"],
        "cpu_percent": resources.get("cpu_percent"), "rss_bytes": resources.get("rss_bytes"),
        "resources": resources, "guarded": guarded, "deadline": iso(deadline),
        "stop_reason": row["lease_stop_reason"], "stuck": health.stuck, "stuck_reason": health.stuck_reason,
        "runaway": health.runaway, "runaway_reason": health.runaway_reason,
    }  # fmt: skip


# --- errors ---------------------------------------------------------------------------------------------


def error_groups(
    db: Database,
    since: float,
    limit: int = 50,
    *,
    stage: str | None = None,
    now: float | None = None,
    buckets: int = 24,
) -> dict[str, Any]:
    """Failures since ``since`` (at ``stage``, when given) grouped by fingerprint, the most frequent
    first: per group its stage,
    error type, normalised message, the latest raw message and stack, count, videos affected, first
    and last seen, and ``counts`` per bucket (``buckets`` equal slices of ``[since, now]``) for a
    sparkline."""
    _check_limit(limit)
    now = _now(now)
    if since >= now:
        raise InputError("since must be before now", field="since")
    width = (now - since) / buckets
    with db.reader.connect() as conn:
        rows = store.error_group_rows(conn, since, now, limit, stage)
        fingerprints = [row["fingerprint"] for row in rows]
        latest = store.latest_failures(conn, fingerprints)
        spark = store.error_buckets(conn, fingerprints, since, now, width)
    counts = {fp: [0] * buckets for fp in fingerprints}
    for fp, bucket, count in spark:
        counts[fp][_bucket_index(bucket, buckets)] += count
    groups = [
        _group_view(row, latest.get(row["fingerprint"], {}), counts[row["fingerprint"]]) for row in rows
    ]
    window = {"since": iso(since), "until": iso(now), "bucket_seconds": width, "buckets": buckets}
    return {**window, "groups": groups}


def _group_view(row: Mapping[str, Any], latest: Mapping[str, Any], counts: list[int]) -> dict[str, Any]:
    error = dict(latest.get("error") or {})
    message = str(error.get("message") or "")
    return {
        "fingerprint": row["fingerprint"], "stage": latest.get("stage"), "error_type": error.get("type"),
        "message": normalise_message(message), "latest_message": message, "latest_stack": error.get("stack"),
        "latest_item_id": latest.get("item_id"), "latest_run_id": latest.get("run_id"),
        "count": int(row["count"]), "videos": int(row["videos"]), "first_seen": iso(row["first_seen"]),
        "last_seen": iso(row["last_seen"]), "counts": counts,
    }  # fmt: skip


def videos_of_group(db: Database, fingerprint: str, limit: int = 100) -> dict[str, Any]:
    """The videos that failed with ``fingerprint``, most recent failure first: where each is now and how
    often it failed so."""
    _check_limit(limit)
    with db.reader.connect() as conn:
        rows = store.videos_of_fingerprint(conn, fingerprint, limit)
    videos = [
        {**row, "last_failed_at": iso(row["last_failed_at"]), "stuck": bool(row["stuck"])} for row in rows
    ]
    return {"fingerprint": fingerprint, "videos": videos}


# --- the video page -------------------------------------------------------------------------------------


def item_control(
    db: Database, item_id: str, now: float | None = None, audit_limit: int = 50
) -> dict[str, Any]:
    """What the control plane holds about one video: ``work`` (each guarded stage: state, attempts,
    duplicates, next attempt), ``leases`` (its live runs' leases), ``dead_letters`` (all of them,
    newest first, each with its ``status``: open ones can be replayed or discarded), ``cancellation``
    (the active cancel, if any) and ``audit`` (who acted on it, newest first). Empty for a video the
    control plane never saw."""
    now = _now(now)
    with db.reader.connect() as conn:
        work = store.work_rows(conn, item_id)
        leases = control.live_leases_of_items(conn, [item_id])
        letters = control.dead_letter_page(conn, item_id=item_id, status=None, limit=100)
        cancel = control.active_cancellation(conn, item_id)
        audit = audit_store.page(conn, AuditFilter(target=item_id), None, audit_limit)
    return {
        "item_id": item_id,
        "work": [_work_view(row, now) for row in work],
        "leases": [_lease_view(row, now) for row in leases],
        "dead_letters": [_letter_view(row) for row in letters],
        "cancellation": None if cancel is None else {
            "reason": cancel.reason, "actor": cancel.actor, "at": iso(cancel.at),
        },
        "audit": [audit_view(row) for row in audit],
    }  # fmt: skip


def _work_view(row: Mapping[str, Any], now: float) -> dict[str, Any]:
    due = row["next_attempt_at"]
    return {
        "pipeline": row["pipeline"], "stage": row["stage"], "work_key": row["work_key"],
        "state": row["state"], "attempts": row["attempts"], "run_id": row["run_id"],
        "duplicates": row["duplicates"], "next_attempt_at": iso(due),
        "retry_in_seconds": None if due is None else max(0.0, due - now), "last_error": row["last_error"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }  # fmt: skip


def _lease_view(row: Mapping[str, Any], now: float) -> dict[str, Any]:
    return {
        "run_id": row["run_id"], "stage": row["stage"], "attempt": row["attempt"], "worker": row["worker"],
        "started_at": iso(row["started_at"]), "heartbeat_age_seconds": _since(now, row["heartbeat_at"]),
        "expires_at": iso(row["expires_at"]), "deadline": iso(row["deadline"]),
        "stop_reason": row["stop_reason"], "stuck": bool(row["stuck"]),
    }  # fmt: skip


def _letter_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "stage": row["stage"], "work_key": row["work_key"], "status": row["status"],
        "reason": row["reason"], "attempts": row["attempts"], "error": row["error"],
        "payload": row["payload"], "replays": row["replays"], "created_at": iso(row["created_at"]),
        "resolved_at": iso(row["resolved_at"]), "resolved_by": row["resolved_by"],
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class TimelineBar:
    """One run on the video's Gantt chart (epoch seconds): queued from ``queued_at`` to ``started_at``,
    running from ``started_at`` to ``ended_at`` (None: still running, drawn up to now)."""

    run_id: str
    stage: str
    attempt: int
    status: str
    queued_at: float | None
    started_at: float | None
    ended_at: float | None
    worker: str | None = None
    error: str | None = None

    @property
    def lane(self) -> str:
        return f"{self.stage} #{self.attempt}"

    @property
    def begins(self) -> float | None:
        return self.queued_at if self.queued_at is not None else self.started_at


def timeline(runs: Sequence[Mapping[str, Any]]) -> list[TimelineBar]:
    """The bars of the video's timeline from ``query.get_item(...)["runs"]`` (already in the order they
    began); a run with no time at all (impossible from events, but cheap to survive) is left out."""
    bars = [_bar(run) for run in runs]
    return [bar for bar in bars if bar.begins is not None or bar.ended_at is not None]


def _epoch(value: Any) -> float | None:
    return None if value is None else parse_time_text(str(value))


def _bar(run: Mapping[str, Any]) -> TimelineBar:
    error = run.get("error") or {}
    text = f"{error.get('type')}: {error.get('message')}" if error else None
    return TimelineBar(
        run_id=run["run_id"], stage=run["stage"], attempt=int(run["attempt"]), status=run["status"],
        queued_at=_epoch(run.get("enqueued_at")), started_at=_epoch(run.get("started_at")),
        ended_at=_epoch(run.get("ended_at")), worker=run.get("worker"), error=text,
    )  # fmt: skip


def costs_of(history: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """What a video has cost so far, per unit, from the costs its runs reported (``run.add_cost`` sends
    each as an annotation with ``cost_unit`` and ``cost_quantity``; every one is a fact in its history)."""
    totals: dict[str, float] = {}
    for entry in history:
        attrs = entry.get("attrs") or {}
        unit, quantity = attrs.get("cost_unit"), attrs.get("cost_quantity")
        if isinstance(unit, str) and isinstance(quantity, int | float) and not isinstance(quantity, bool):
            totals[unit] = totals.get(unit, 0.0) + float(quantity)
    return dict(sorted(totals.items()))
