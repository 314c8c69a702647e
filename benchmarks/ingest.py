"""Ingest throughput: HTTP end to end, against the store's raw insert limit and the in-process path.

    python benchmarks/ingest.py [--events 200000] [--items 20000] [--batch 500] [--clients 2]
                                [--inflight 4] [--backend sqlite|postgres|both] [--profile DIR]

Per backend, three measurements on three fresh databases:

1. HTTP: a real ``stagewatch serve`` process; ``--clients`` client processes, each with ``--inflight``
   threads holding a keep-alive httpx connection, POST pre-serialised batches of ``--batch`` events.
   Prints events/s, request latency p50/p99, and checks that every event arrived exactly once
   (response counts, a COUNT on the events table, the summary's item total, and a replayed batch).
2. Raw: plain ``INSERT INTO events`` of the same rows (same columns), executemany in batches of
   ``--batch``, one transaction per batch, one process: no HTTP, validation or projection; once through
   SQLAlchemy Core and once straight through the DB-API driver (tuples, the body encoded by orjson).
   HTTP events/s divided by each is the "share of the raw limit".
3. In-process: the server's work without HTTP, stage by stage on one thread: orjson parse, validation
   (``validate_batch``), and ``ingest_now`` (store + projection, one transaction per batch), on the
   first ``--inprocess-events`` events (default 50,000, to keep the run short).

``--profile DIR`` attaches ``py-spy record --gil`` to the server for the HTTP load and writes collapsed
stacks there; summarise them with ``python benchmarks/profile_top.py DIR/server-sqlite.txt``.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    attach_profiler,
    backends,
    batches_of,
    detach_profiler,
    fresh_database,
    load,
    machine,
    make_events,
    pct,
    start_server,
    stop_server,
    story_stats,
    temp_dir,
)
from stagewatch.domain.events import default_run_id
from stagewatch.domain.pipeline import PipelineRegistry, instagram_preset
from stagewatch.service.ingest import ingest_now
from stagewatch.service.runtime import tune_garbage_collector
from stagewatch.service.validation import validate_batch
from stagewatch.store import schema
from stagewatch.store.engine import open_database
from stagewatch.store.migrate import upgrade
from stagewatch.store.writes import EVENT_COLUMNS

TARGET_EVENTS_PER_S = 20_000
TARGET_SHARE_OF_RAW = 0.40

# Set in the parent before the client processes fork, so they inherit the bodies without pickling.
BODIES: list[bytes] = []


# --- HTTP -----------------------------------------------------------------------------------------


def _client_process(url: str, index: int, clients: int, inflight: int, ready: Any, go: Any, out: Any) -> None:
    """Send bodies index, index+clients, ... with ``inflight`` threads; report one record per request."""
    mine = BODIES[index::clients]
    cursor = itertools.count()  # next() on a count is atomic under the GIL
    records: list[tuple[float, int, int, int, int]] = []
    lock = threading.Lock()

    def worker() -> None:
        local = []
        with httpx.Client(base_url=url, timeout=120, headers={"content-type": "application/json"}) as http:
            http.get("/healthz")  # open the keep-alive connection before the clock starts
            barrier.wait()
            while (i := next(cursor)) < len(mine):
                start = time.perf_counter()
                response = http.post("/v1/events", content=mine[i])
                took = time.perf_counter() - start
                body = response.json() if response.status_code in (200, 422) else {}
                local.append((
                    took, response.status_code, body.get("accepted", 0), body.get("duplicate", 0),
                    body.get("rejected", 0),
                ))  # fmt: skip
        with lock:
            records.extend(local)

    barrier = threading.Barrier(inflight + 1)
    threads = [threading.Thread(target=worker) for _ in range(inflight)]
    for thread in threads:
        thread.start()
    ready.set()
    go.wait()
    barrier.wait()
    for thread in threads:
        thread.join()
    out.put(records)


def run_http(
    backend: str, tmp: Path, n_events: int, n_items: int, args: argparse.Namespace
) -> dict[str, Any]:
    with fresh_database(backend, tmp, "http") as url:
        server = start_server(url, tmp / f"server-{backend}.log")
        profiler = None
        try:
            if args.profile:
                profiler = attach_profiler(server.process.pid, Path(args.profile) / f"server-{backend}.txt")
            ctx = mp.get_context("fork")
            go = ctx.Event()
            out = ctx.Queue()
            readies = [ctx.Event() for _ in range(args.clients)]
            procs = [
                ctx.Process(
                    target=_client_process,
                    args=(server.url, k, args.clients, args.inflight, readies[k], go, out),
                )
                for k in range(args.clients)
            ]
            for proc in procs:
                proc.start()
            for ready in readies:
                ready.wait(60)
            start = time.perf_counter()
            go.set()
            records = [r for _ in procs for r in out.get(timeout=1800)]
            wall = time.perf_counter() - start
            for proc in procs:
                proc.join()
            if profiler is not None:
                detach_profiler(profiler)
                profiler = None
            checks = _verify(server.url, url, n_events, n_items, records)
        finally:
            if profiler is not None:
                detach_profiler(profiler)
            stop_server(server)
    # Transactions PostgreSQL aborted (a deadlock...) and the server tried again: no client saw them.
    retried = server.log_path.read_text(errors="replace").count(".transient_retry")
    latencies = [r[0] for r in records]
    return {
        "events": n_events,
        "requests": len(records),
        "wall": wall,
        "rate": n_events / wall,
        "p50": pct(latencies, 50),
        "p99": pct(latencies, 99),
        "max": max(latencies),
        "retried": retried,
        **checks,
    }


def _verify(
    server_url: str, db_url: str, n_events: int, n_items: int, records: Sequence[Any]
) -> dict[str, Any]:
    """Every event exactly once: per-response counts, the table, the summary, and a replay."""
    statuses = sorted({r[1] for r in records})
    accepted = sum(r[2] for r in records)
    duplicate = sum(r[3] for r in records)
    rejected = sum(r[4] for r in records)
    with httpx.Client(base_url=server_url, timeout=60) as http:
        summary = http.get("/v1/summary").json()
        replay = http.post(
            "/v1/events", content=BODIES[0], headers={"content-type": "application/json"}
        ).json()
    items_in_summary = sum(p["items"] for p in summary["pipelines"])
    db = open_database(db_url)
    try:
        with db.reader.connect() as conn:
            rows = conn.execute(select(func.count(), func.count(schema.events.c.id.distinct()))).one()
            items = conn.execute(select(func.count()).select_from(schema.items)).scalar_one()
    finally:
        db.dispose()
    replay_ok = replay.get("accepted") == 0 and replay.get("duplicate") == len(orjson.loads(BODIES[0]))
    ok = (
        statuses == [200]
        and accepted == n_events
        and duplicate == 0
        and rejected == 0
        and rows[0] == rows[1] == n_events
        and items == items_in_summary == n_items
        and replay_ok
    )
    return {
        "statuses": statuses,
        "accepted": accepted,
        "duplicate": duplicate,
        "rejected": rejected,
        "db_events": rows[0],
        "db_distinct": rows[1],
        "db_items": items,
        "summary_items": items_in_summary,
        "replay": f"{replay.get('accepted')} accepted / {replay.get('duplicate')} duplicate",
        "exactly_once": ok,
    }


# --- raw inserts ----------------------------------------------------------------------------------


def _raw_rows(events: Sequence[dict[str, Any]], received_at: float) -> list[dict[str, Any]]:
    rows = []
    for e in events:
        run_id = e.get("run_id")
        if run_id is None and e["type"].startswith("run."):
            run_id = default_run_id(e["item_id"], e.get("stage"), e.get("attempt"))
        rows.append({
            "id": e["id"], "type": e["type"], "item_id": e["item_id"], "run_id": run_id,
            "pipeline": "instagram", "stage": e.get("stage"), "time": e["time"], "received_at": received_at,
            "trace_id": e.get("trace_id"), "body": e,
        })  # fmt: skip
    return rows


# The events table's columns as ingest writes them.
_RAW_COLUMNS = EVENT_COLUMNS


def _insert_through_driver(conn: Any, chunk: Sequence[dict[str, Any]]) -> None:
    """The same rows as tuples, body JSON-encoded once with orjson, in one DB-API ``executemany``."""
    marks = "?" if conn.dialect.name == "sqlite" else "%s"
    sql = f"INSERT INTO events ({', '.join(_RAW_COLUMNS)}) VALUES ({', '.join([marks] * len(_RAW_COLUMNS))})"
    values = [
        tuple(orjson.dumps(row[c]).decode() if c == "body" else row[c] for c in _RAW_COLUMNS) for row in chunk
    ]
    conn.connection.dbapi_connection.cursor().executemany(sql, values)


def run_raw(
    backend: str, tmp: Path, events: Sequence[dict[str, Any]], batch: int, *, via: str = "core"
) -> dict[str, Any]:
    """Plain batched inserts of the events' rows: through SQLAlchemy Core (``via="core"``, as the
    first version of this benchmark measured it) or straight through the DB-API driver (``"driver"``)."""
    rows = _raw_rows(events, time.time())
    with fresh_database(backend, tmp, "raw") as url:
        db = open_database(url)
        try:
            upgrade(db)
            stmt = insert(schema.events)
            took = []
            start = time.perf_counter()
            for chunk in batches_of(rows, batch):
                t = time.perf_counter()
                with db.writer.begin() as conn:
                    if via == "core":
                        conn.execute(stmt, list(chunk))
                    else:
                        _insert_through_driver(conn, chunk)
                took.append(time.perf_counter() - t)
            wall = time.perf_counter() - start
            with db.reader.connect() as conn:
                stored = conn.execute(select(func.count()).select_from(schema.events)).scalar_one()
        finally:
            db.dispose()
    assert stored == len(rows), f"raw insert stored {stored} of {len(rows)} rows"
    return {
        "rows": len(rows),
        "wall": wall,
        "rate": len(rows) / wall,
        "p50": pct(took, 50),
        "p99": pct(took, 99),
    }


# --- in-process ingest ----------------------------------------------------------------------------


def run_inprocess(backend: str, tmp: Path, bodies: Sequence[bytes]) -> dict[str, Any]:
    registry = PipelineRegistry.of([instagram_preset()], "instagram")
    # The server tunes its collector at start-up; without the same here, collections scanning this
    # process's 200,000 generated events would be charged to parsing and ingest.
    tune_garbage_collector()
    parse = validate = store = 0.0
    took = []
    n_events = 0
    with fresh_database(backend, tmp, "inproc") as url:
        db = open_database(url)
        try:
            upgrade(db)
            accepted = 0
            for body in bodies:
                t0 = time.perf_counter()
                raw = orjson.loads(body)
                t1 = time.perf_counter()
                n_events += len(raw)
                batch = validate_batch(raw, registry, time.time())
                t2 = time.perf_counter()
                accepted += ingest_now(db, registry, batch.events).accepted
                t3 = time.perf_counter()
                parse, validate, store = parse + t1 - t0, validate + t2 - t1, store + t3 - t2
                took.append(t3 - t2)
        finally:
            db.dispose()
    assert accepted == n_events, f"in-process ingest accepted {accepted} of {n_events}"
    total = parse + validate + store
    return {
        "events": n_events,
        "parse_us": parse / n_events * 1e6,
        "validate_us": validate / n_events * 1e6,
        "store_us": store / n_events * 1e6,
        "store_rate": n_events / store,
        "total_rate": n_events / total,
        "store_p50": pct(took, 50),
        "store_p99": pct(took, 99),
    }


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=None, help="videos [default: events / 10]")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--inflight", type=int, default=4, help="concurrent requests per client process")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--skip", nargs="*", default=[], choices=("http", "raw", "inprocess"))
    parser.add_argument(
        "--inprocess-events", type=int, default=50_000, help="events for the in-process run (the first N)"
    )
    parser.add_argument("--profile", default=None, help="directory for py-spy profiles of the server")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n_items = args.items or max(1, args.events // 10)

    print(f"stagewatch ingest benchmark: {machine()}")
    t = time.perf_counter()
    events = make_events(n_items, args.events, seed=args.seed)
    stats = story_stats(events, args.batch)
    BODIES[:] = [orjson.dumps(list(chunk)) for chunk in batches_of(events, args.batch)]
    print(
        f"generated {len(events):,} events about {stats['items']:,} videos "
        f"({stats['events_per_item']:.1f}/video) in {time.perf_counter() - t:.1f}s; "
        f"{len(BODIES)} batches of {args.batch} (median {stats['items_per_batch']:.0f} videos/batch, "
        f"{sum(map(len, BODIES)) / len(BODIES) / 1024:.0f} KiB/body); "
        f"{args.clients} client processes x {args.inflight} requests in flight"
    )
    results: dict[str, dict[str, Any]] = {}
    for backend in backends(args.backend):
        print(f"\n== {backend} ==  (load average {load()})")
        result: dict[str, Any] = {}
        with temp_dir() as tmp:
            if "http" not in args.skip:
                h = result["http"] = run_http(backend, tmp, len(events), stats["items"], args)
                print(
                    f"HTTP        {h['events']:,} events in {h['wall']:.2f}s = {h['rate']:,.0f} events/s; "
                    f"{h['requests']} requests, latency p50 {h['p50'] * 1000:.0f} ms, "
                    f"p99 {h['p99'] * 1000:.0f} ms, max {h['max'] * 1000:.0f} ms"
                )
                print(
                    f"  verify    exactly once: {'OK' if h['exactly_once'] else 'FAILED'} "
                    f"(HTTP {h['statuses']}; accepted {h['accepted']:,}, duplicate {h['duplicate']}, "
                    f"rejected {h['rejected']}; events table {h['db_events']:,} rows / "
                    f"{h['db_distinct']:,} distinct ids; items {h['db_items']:,}, "
                    f"summary {h['summary_items']:,}; "
                    f"replayed batch: {h['replay']}); "
                    f"transactions retried by the server: {h['retried']}"
                )
            if "raw" not in args.skip:
                for via, label in (("core", "raw insert "), ("driver", "raw, driver")):
                    r = result[f"raw-{via}"] = run_raw(backend, tmp, events, args.batch, via=via)
                    print(
                        f"{label} {r['rows']:,} rows in {r['wall']:.2f}s = {r['rate']:,.0f} rows/s "
                        f"(per batch of {args.batch}: p50 {r['p50'] * 1000:.1f} ms, "
                        f"p99 {r['p99'] * 1000:.1f} ms)"
                    )
            if "inprocess" not in args.skip:
                first = BODIES[: max(1, -(-args.inprocess_events // args.batch))]
                p = result["inprocess"] = run_inprocess(backend, tmp, first)
                print(
                    f"in-process  {p['events']:,} events: ingest_now {p['store_rate']:,.0f} events/s "
                    f"(per batch p50 {p['store_p50'] * 1000:.0f} ms, p99 {p['store_p99'] * 1000:.0f} ms); "
                    f"per event: parse {p['parse_us']:.1f} us + validate {p['validate_us']:.1f} us + "
                    f"ingest_now {p['store_us']:.1f} us -> one-thread ceiling {p['total_rate']:,.0f} events/s"
                )
        results[backend] = result

    print("\n== against the targets ==")
    for backend, result in results.items():
        h = result.get("http")
        if h is None:
            continue
        line = f"{backend:9} HTTP {h['rate']:>8,.0f} events/s"
        if backend == "sqlite":
            met = "met" if h["rate"] >= TARGET_EVENTS_PER_S else "NOT met"
            line += f" (target >= {TARGET_EVENTS_PER_S:,}: {met})"
        for via in ("core", "driver"):
            r = result.get(f"raw-{via}")
            if r is not None:
                share = h["rate"] / r["rate"]
                met = "met" if share >= TARGET_SHARE_OF_RAW else "NOT met"
                line += (
                    f"; raw ({via}) {r['rate']:,.0f} rows/s, HTTP/raw = {share:.0%} (target >= 40%: {met})"
                )
        print(line)


if __name__ == "__main__":
    main()
