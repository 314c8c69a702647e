"""The dashboard's data, in process: every read model and chart each page needs, on 100,000 videos.

    python benchmarks/dashboard.py [--items 100000] [--events-per-item 10] [--runs 200]
                                   [--backend sqlite|postgres|both] [--db URL] [--leases 300]

Seeds a fresh database the way ``reads.py`` does (``make_events`` stories through ``validate_batch`` +
``ingest_now``: 100,000 videos, 1,000,000 events), then gives the control plane something to show:
``--leases`` guarded runs begun through ``begin`` (some silent long enough to be stuck, some past their
deadline), some failed into the dead-letter queue, one cancel, and a watchdog sweep (which also marks
the videos that overstayed a stage). ``--db URL`` keeps the database: seeded when empty, reused as it is
otherwise. On PostgreSQL the tables are vacuumed and analysed once after seeding, as autovacuum would do.

"Now" is the end of the generated data (the last run's end), so the last hour is the busiest one:
about 100,000 runs ended in it. Each case runs ``--runs`` times after 5 warm-up calls, sequentially,
on one thread, without HTTP (the server adds ~1-3 ms per request: see ``reads.py``). The page rows add
up what one page of the dashboard asks for; the target is under 300 ms each (issue 5). ``query.summary``
and ``query.get_item`` are the baselines, measured in the same process.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import backends, fresh_database, load, machine, pct, temp_dir
from reads import seed
from stagewatch.domain.pipeline import PipelineRegistry, instagram_preset
from stagewatch.service import dashboard, query
from stagewatch.service.control.begin import BeginRequest, begin
from stagewatch.service.control.completion import complete
from stagewatch.service.control.heartbeats import BeatReport, heartbeat
from stagewatch.service.control.operate import Actor, cancel_items
from stagewatch.service.control.watchdog import sweep
from stagewatch.store import schema
from stagewatch.store.engine import Database, open_database
from stagewatch.store.migrate import upgrade
from stagewatch.store.reads import ItemFilter
from stagewatch.web.charts import gantt, sparkline, throughput_chart

TARGET = 0.300
# Dead letters made while seeding. Kept to a few: on PostgreSQL, store.control.add_dead_letter fails from
# the eleventh in one connection (psycopg prepares the statement, and a prepared ON CONFLICT cannot match
# the partial unique index through a parameter), a bug reported to its owner.
DEAD_LETTERS = 8
REGISTRY = PipelineRegistry.of([instagram_preset()], "instagram")
PERMANENT = {
    "type": "FFmpegError",
    "message": "ffmpeg exited with code 1: moov atom not found",
    "retryable": False,
}


def _count(db: Database, table: Any) -> int:
    with db.reader.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def data_end(db: Database) -> float:
    with db.reader.connect() as conn:
        return float(conn.execute(select(func.max(schema.runs.c.ended_at))).scalar_one())


def add_control_plane(db: Database, n_items: int, leases: int, now: float) -> dict[str, int]:
    """Guarded runs on ``leases`` videos: most healthy, a tenth silent past half their heartbeat timeout
    (stuck), a tenth beating but past their deadline (runaway), and a few whose process stage fails for
    good (dead letters); one cancel; then a watchdog sweep at ``now``."""
    rng = random.Random(11)
    ids = rng.sample(range(n_items), leases)
    dead = 0
    for n, i in enumerate(ids):
        item = f"vid-{i:07d}"
        if n % 10 == 0 and dead < DEAD_LETTERS:
            result = begin(
                db, REGISTRY, BeginRequest("process", item, payload={"video": item}), now=now - 900
            )
            if result.run_id is not None:
                complete(db, REGISTRY, result.run_id, "failed", PERMANENT, now=now - 890)
                dead += 1
            continue
        # publish: heartbeat timeout 120 s, timeout 1800 s.
        started = now - (90 if n % 10 == 1 else 1850 if n % 10 == 2 else rng.uniform(1, 25))
        request = BeginRequest("publish", item, account=f"acct-{i % 60:03d}", worker="w-1")
        run = begin(db, REGISTRY, request, now=started)
        if n % 10 == 2 and run.run_id is not None:
            heartbeat(db, REGISTRY, [BeatReport(run.run_id)], now=now - 10)
    cancel_items(db, REGISTRY, [f"vid-{ids[-1]:07d}"], "benchmark", Actor("bench"), now=now - 1)
    report = sweep(db, REGISTRY, now=now)
    return {"dead_letters": dead, "stuck_runs": report.stuck_runs, "stuck_items": report.stuck_items,
            "timed_out": report.timed_out}  # fmt: skip


def vacuum(db: Database) -> None:
    """PostgreSQL: what autovacuum does soon after a bulk load (index-only scans need the visibility map,
    the planner needs statistics)."""
    with db.writer.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))


def prepare(url: str, args: argparse.Namespace) -> tuple[Database, float]:
    db = open_database(url)
    upgrade(db)
    if _count(db, schema.items) == 0:
        db.dispose()
        s = seed(url, args.items, args.events_per_item, args.seed_batch)
        print(f"   seeded {s['items']:,} videos, {s['runs']:,} runs, {s['events']:,} events "
              f"(ingest_now {s['store']:.0f}s)")  # fmt: skip
        db = open_database(url)
        now = data_end(db)
        t = time.perf_counter()
        print(f"   control plane: {add_control_plane(db, args.items, args.leases, now)} "
              f"({time.perf_counter() - t:.0f}s)")  # fmt: skip
        if db.is_postgres:
            vacuum(db)
    return db, data_end(db)


def timed(call: Callable[[], Any], runs: int) -> list[float]:
    for _ in range(5):
        call()
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        took.append(time.perf_counter() - start)
    return took


def cases(db: Database, now: float, n_items: int) -> list[tuple[str, Callable[[], Any]]]:
    rng = random.Random(3)

    def item_id() -> str:
        return f"vid-{rng.randrange(n_items):07d}"

    top = dashboard.error_groups(db, now - 86_400, now=now)["groups"][0]["fingerprint"]
    failed = ItemFilter(status=["failed"])
    pages = _pages(db, now, item_id)
    return [
        ("query.summary (baseline)", lambda: query.summary(db, REGISTRY, now)),
        ("stage_overview", lambda: dashboard.stage_overview(db, REGISTRY, now)),
        ("in_flight(limit=100)", lambda: dashboard.in_flight(db, REGISTRY, now, 100)),
        ("error_groups(last 24 h)", lambda: dashboard.error_groups(db, now - 86_400, now=now)),
        ("error_groups(last hour)", lambda: dashboard.error_groups(db, now - 3600, now=now)),
        ("videos_of_group(top, 100)", lambda: dashboard.videos_of_group(db, top, 100)),
        ("item_control(random id)", lambda: dashboard.item_control(db, item_id(), now)),
        ("query.get_item (baseline)", lambda: query.get_item(db, item_id())),
        ("query.get_item(history=1)", lambda: query.get_item(db, item_id(), with_history=True)),
        ("query.list_items(limit=50)", lambda: query.list_items(db, ItemFilter(), None, 50)),
        ("list_items(status=failed)", lambda: query.list_items(db, failed, None, 50)),
        *pages,
    ]


def _pages(db: Database, now: float, item_id: Callable[[], str]) -> list[tuple[str, Callable[[], Any]]]:
    """What each page asks for, reads and charts together."""

    def overview() -> None:
        data = dashboard.stage_overview(db, REGISTRY, now)
        dashboard.in_flight(db, REGISTRY, now, 50)
        step = data["window"]["bucket_seconds"]
        for row in data["pipelines"][0]["stages"]:
            throughput_chart(row["throughput"], row["failures"], bucket_seconds=step, label=row["stage"])

    def video() -> None:
        view = query.get_item(db, item_id(), with_history=True)
        dashboard.item_control(db, view["item_id"], now)
        gantt(dashboard.timeline(view["runs"]), now=now)

    def errors() -> None:
        for group in dashboard.error_groups(db, now - 86_400, now=now)["groups"]:
            sparkline(group["counts"], label=group["message"])

    return [
        ("page: overview", overview),
        ("page: video", video),
        ("page: in flight", lambda: dashboard.in_flight(db, REGISTRY, now, 100)),
        ("page: errors", errors),
    ]


def sanity(db: Database, now: float) -> str:
    overview = dashboard.stage_overview(db, REGISTRY, now)
    stages = overview["pipelines"][0]["stages"]
    flights = dashboard.in_flight(db, REGISTRY, now, 100)
    groups = dashboard.error_groups(db, now - 86_400, now=now)["groups"]
    flagged = sum(1 for run in flights["runs"] if run["stuck"] or run["runaway"])
    return (
        f"runs finished in the last hour {sum(r['finished_last_hour'] for r in stages):,}, "
        f"stuck items {sum(r['stuck'] for r in stages):,}, running runs {flights['total']:,} "
        f"({flagged} of the first 100 flagged), error groups {len(groups)} "
        f"(top: {groups[0]['count']:,} failures, {groups[0]['videos']:,} videos)"
    )


def run_backend(backend: str, tmp: Path, args: argparse.Namespace) -> None:
    print(f"\n== {backend} ==  (load average {load()})")
    with nullcontext(args.db) if args.db else fresh_database(backend, tmp, "dashboard") as url:
        db, now = prepare(url, args)
        try:
            print(f"   {sanity(db, now)}")
            print(f"   {'case':32} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  target < 300 ms")
            for name, call in cases(db, now, args.items):
                took = timed(call, args.runs)
                verdict = (
                    "" if not name.startswith("page") else "met" if pct(took, 99) < TARGET else "NOT met"
                )
                print(f"   {name:32} {len(took):5} {pct(took, 50) * 1000:8.2f} {pct(took, 99) * 1000:8.2f} "
                      f"{max(took) * 1000:8.2f}  {verdict}")  # fmt: skip
            print(f"   (load average {load()})")
        finally:
            db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events-per-item", type=int, default=10)
    parser.add_argument("--seed-batch", type=int, default=2000)
    parser.add_argument("--leases", type=int, default=300)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--db", help="use (and keep) this database; seeded only if empty")
    args = parser.parse_args()
    print(f"dashboard read models: {args.items:,} videos, {args.items * args.events_per_item:,} events")
    print(f"   {machine()}")
    with temp_dir() as tmp:
        for backend in backends(args.backend) if not args.db else ["given"]:
            run_backend(backend, tmp, args)


if __name__ == "__main__":
    main()
