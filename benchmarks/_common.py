"""Shared pieces of the benchmarks: realistic event generation, databases, a real server process,
and percentile maths. Not a test helper: nothing here asserts beyond sanity checks."""

from __future__ import annotations

import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from stagewatch.server_process import ServerProcess, launch
from stagewatch.server_process import free_port as free_port  # re-exported for the benchmarks

PG_ADMIN = os.environ.get("STAGEWATCH_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# --- event generation ---------------------------------------------------------------------------

STAGES = ("webhook", "download", "enqueue", "process", "publish")
MAX_ATTEMPTS = {"webhook": 1, "download": 3, "enqueue": 5, "process": 3, "publish": 5}
FAIL_RATE = {"webhook": 0.0, "download": 0.08, "enqueue": 0.02, "process": 0.06, "publish": 0.05}
ACCOUNTS = [f"acct-{i:03d}" for i in range(60)]
SCENARIOS = ("reels", "story", "feed", "carousel", "promo")
WORKERS = [f"cloudrun-{i:02d}" for i in range(24)]
REVISIONS = ("rev-0041", "rev-0042")
ERRORS = {
    "download": [
        ("HTTPError", "GET https://cdn.example.com/v.mp4: 503 Service Unavailable", True),
        ("TimeoutError", "read timed out after 60s", True),
        ("NotFound", "source file was deleted by the owner", False),
    ],
    "enqueue": [("PubSubError", "DEADLINE_EXCEEDED publishing to topic videos", True)],
    "process": [
        ("FFmpegError", "ffmpeg exited with code 1: moov atom not found", False),
        ("MemoryError", "container killed: memory limit 2Gi exceeded", True),
    ],
    "publish": [
        ("GraphAPIError", "(#4) Application request limit reached", True),
        ("GraphAPIError", "(#9004) media container status ERROR", False),
    ],
}
STACK = (
    'Traceback (most recent call last):\n  File "/app/worker.py", line 88, in handle\n'
    '    result = step(video)\n  File "/app/steps.py", line 41, in step\n    raise exc\n'
)
T0 = 1_764_300_000.0  # 2025-11-28, fixed so runs are reproducible


def _hex(rng: random.Random, bits: int) -> str:
    value = 0
    while value == 0:
        value = rng.getrandbits(bits)
    return f"{value:0{bits // 4}x}"


def _item_story(rng: random.Random, item_id: str, start: float) -> list[dict[str, Any]]:
    """One video's events, in the order they happened: created, then each stage's runs (retries
    with errors, progress, heartbeats); about 15% of videos are still in flight (story cut short)."""
    trace = _hex(rng, 128)
    account = rng.choice(ACCOUNTS)
    out: list[dict[str, Any]] = []

    def emit(kind: str, t: float, **fields: Any) -> None:
        event = {"id": f"{item_id}.{len(out):02d}", "type": kind, "item_id": item_id, "time": round(t, 3)}
        event.update(fields)
        out.append(event)

    t = start
    emit(
        "item.created", t, account=account, scenario=rng.choice(SCENARIOS), trace_id=trace,
        source="webhook", actor=f"user-{rng.randrange(5000)}",
        params={"caption_len": rng.randrange(2200), "share_to_feed": rng.random() < 0.5},
        attrs={"duration_s": round(rng.uniform(3, 90), 1), "lang": rng.choice(("en", "es", "pt", "de"))},
    )  # fmt: skip
    for stage in STAGES:
        for attempt in range(1, MAX_ATTEMPTS[stage] + 1):
            common = {"stage": stage, "attempt": attempt, "trace_id": trace, "span_id": _hex(rng, 64)}
            worker = {"worker": rng.choice(WORKERS), "revision": rng.choice(REVISIONS)}
            if stage in ("webhook", "enqueue"):  # instant steps: one report of the outcome
                t += rng.uniform(0.01, 0.3)
            else:
                if stage == "process":
                    emit("run.enqueued", t, **common)
                    t += rng.uniform(1, 120)  # waiting on Pub/Sub
                emit("run.started", t, **common, **worker)
                t += rng.uniform(5, 300)
                if rng.random() < 0.3:
                    kind = "run.heartbeat" if stage == "process" else "run.progress"
                    extra = (
                        {"progress": round(rng.uniform(0.1, 0.9), 2), "note": "uploading"}
                        if (kind == "run.progress")
                        else {}
                    )
                    emit(kind, t, **common, **extra)
                    t += rng.uniform(1, 60)
            if rng.random() < FAIL_RATE[stage]:
                kind_, message, retryable = rng.choice(ERRORS[stage])
                error = {"type": kind_, "message": message, "stack": STACK, "retryable": retryable}
                emit("run.failed", t, **common, error=error, **worker)
                if retryable and attempt < MAX_ATTEMPTS[stage]:
                    t += rng.uniform(5, 60)  # backoff
                    continue
                return out  # the video stops here: failed
            emit("run.succeeded", t, **common, **worker, resources={"cpu_s": round(rng.uniform(0.1, 90), 2)})
            break
        t += rng.uniform(0.1, 30)
    if rng.random() < 0.15:  # still in flight: only the first part of the story has happened
        return out[: rng.randint(1, len(out))]
    return out


def make_events(
    n_items: int,
    n_events: int,
    seed: int = 7,
    prefix: str = "vid",
    first: int = 0,
    window: float | None = None,
) -> list[dict[str, Any]]:
    """``n_events`` unique events about ``n_items`` videos, interleaved as real workers send them:
    videos start spread over a window, each story spans minutes, and events are ordered by when a
    worker would flush them (client time plus up to 2 s of batching delay), so a batch of 500 touches
    hundreds of videos and each video's events land in several batches, sometimes out of order.
    The count is made exact by cutting the latest events or adding heartbeats to runs. ``first`` and
    ``window`` let a caller make a large set in slices (videos ``first`` .. ``first + n_items - 1``)."""
    rng = random.Random(seed + first)
    if window is None:
        window = max(600.0, n_items * 0.18)  # 20,000 videos start within an hour (~5.5 per second)
    stories = []
    for i in range(first, first + n_items):
        stories.append(_item_story(rng, f"{prefix}-{i:07d}", T0 + rng.uniform(0, window)))
    flat = [e for story in stories for e in story]
    runs = [e for e in flat if e["type"] == "run.started"]
    extra = 0
    while len(flat) < n_events and runs:  # long runs beat more often
        run = rng.choice(runs)
        extra += 1
        flat.append({
            "id": f"{run['item_id']}.hb{extra}", "type": "run.heartbeat", "item_id": run["item_id"],
            "stage": run["stage"], "attempt": run["attempt"],
            "time": round(run["time"] + rng.uniform(1, 30), 3),
        })  # fmt: skip
    flush = [e["time"] + rng.uniform(0, 2.0) for e in flat]
    order = sorted(range(len(flat)), key=flush.__getitem__)
    events = [flat[i] for i in order]
    # Too many: cut the latest run events (those videos are then still in flight); never a creation,
    # so every requested video exists.
    surplus = len(events) - n_events
    if surplus > 0:
        keep = []
        for e in reversed(events):
            if surplus > 0 and e["type"] != "item.created":
                surplus -= 1
                continue
            keep.append(e)
        events = keep[::-1]
    return events[:n_events]


def batches_of(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def story_stats(events: Sequence[dict[str, Any]], batch: int) -> dict[str, float]:
    items = {e["item_id"] for e in events}
    per_batch = [len({e["item_id"] for e in b}) for b in batches_of(events, batch)]
    return {
        "items": len(items),
        "events_per_item": len(events) / max(1, len(items)),
        "items_per_batch": statistics.median(per_batch) if per_batch else 0,
    }


# --- databases ------------------------------------------------------------------------------------


@contextmanager
def fresh_database(backend: str, tmp: Path, label: str) -> Iterator[str]:
    """A URL to an empty, not yet migrated database: a new SQLite file, or a new uniquely named
    PostgreSQL database that is dropped afterwards."""
    if backend == "sqlite":
        path = tmp / f"{label}-{uuid.uuid4().hex[:8]}.db"
        yield f"sqlite:///{path}"
        return
    name = f"stagewatch_bench_{label}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def backends(choice: str) -> list[str]:
    chosen = ["sqlite", "postgres"] if choice == "both" else [choice]
    if "postgres" in chosen and not postgres_available():
        print(f"!! no PostgreSQL at {PG_ADMIN}: skipping the postgres backend")
        chosen.remove("postgres")
    return chosen


@contextmanager
def temp_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="stagewatch-bench-") as name:
        yield Path(name)


# --- a real server process ------------------------------------------------------------------------


Server = ServerProcess


def start_server(database_url: str, log_path: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """``stagewatch serve`` on a free loopback port (with ``env`` added to its environment), waited for
    until /healthz answers. Auth is off (the benchmarks measure the paths behind it; a token check is
    one cached dict lookup per request)."""
    extra = ("--log-level", "warning", "--no-auth", *extra)
    server = launch(database_url, log_path, extra=extra, cwd=log_path.parent, env_overrides=env)
    server.wait_healthy(timeout=60)
    return server


def stop_server(server: Server) -> None:
    server.stop(timeout=30)  # SIGTERM first: uvicorn shuts down cleanly


def attach_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the server at 100 Hz, only the thread holding the GIL (where CPU goes)."""
    if shutil.which("py-spy") is None:
        sys.exit("--profile needs py-spy, which is not installed: pip install py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        "py-spy",
        "record",
        "--pid",
        str(pid),
        "--rate",
        "100",
        "--gil",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    profiler = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it attach before the load starts
    print(f"   profiling server pid {pid} with py-spy into {out}")
    return profiler


def detach_profiler(profiler: subprocess.Popen[bytes]) -> None:
    profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        profiler.wait(timeout=60)
    except subprocess.TimeoutExpired:
        profiler.kill()


# --- figures --------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def load() -> str:
    """The 1-minute load average: on a shared 2-core machine, anything above ~2 means contention."""
    return f"{os.getloadavg()[0]:.1f}"


def code_version() -> str:
    """The commit benchmarked, and whether the work tree had changes on top of it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes in src/' if dirty else ''}"


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} "
        f"{platform.release()}, {time.strftime('%Y-%m-%d %H:%M %Z')}, load average {load()}; "
        f"code {code_version()}"
    )
