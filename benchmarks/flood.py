"""A flood of ingest: more senders than the server can write for, with and without the backlog bound.

    python benchmarks/flood.py [--seconds 40] [--clients 2] [--inflight 128] [--limits 20000 0]

For each backlog limit (``STAGEWATCH_MAX_INGEST_BACKLOG``; 0 is unbounded) a real ``stagewatch serve``
on a fresh SQLite file takes ``--clients`` processes x ``--inflight`` threads posting batches of 500
new events as fast as they are answered, for ``--seconds``. A sender turned away (503) sends the same
batch again after the SDK's own backoff: ``Retry-After`` at least, more (jittered, growing) when
refused again and again; past the deadline it drops it instead. Prints the server's peak resident
memory (sampled every 50 ms), the events accepted per second until every sender has its answer (the
drain of the queue included), how many requests were turned away, the latency of accepted requests,
and checks that exactly the events accepted are stored, once each.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    batches_of,
    fresh_database,
    machine,
    make_events,
    pct,
    start_server,
    stop_server,
    temp_dir,
)
from stagewatch.sdk.backoff import Backoff, parse_retry_after
from stagewatch.store import schema
from stagewatch.store.engine import open_database

BODIES: list[bytes] = []  # set before the client processes fork


def _client(url: str, index: int, clients: int, inflight: int, seconds: float, go: Any, out: Any) -> None:
    """Send bodies index, index+clients, ... until ``seconds`` have passed; each until accepted."""
    mine = BODIES[index::clients]
    cursor = itertools.count()
    accepted_latencies: list[float] = []
    counts = {"accepted": 0, "turned_away": 0}
    lock = threading.Lock()

    def worker() -> None:
        backoff = Backoff()
        with httpx.Client(base_url=url, timeout=600, headers={"content-type": "application/json"}) as http:
            go.wait()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and (i := next(cursor)) < len(mine):
                refusals = 0
                while True:
                    start = time.perf_counter()
                    response = http.post("/v1/events", content=mine[i])
                    if response.status_code != 503:
                        break
                    with lock:
                        counts["turned_away"] += 1
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    wait = backoff.delay(refusals, retry_after)
                    if time.monotonic() + wait >= deadline:
                        return  # the flood is over: this batch is dropped, never stored
                    time.sleep(wait)
                    refusals += 1
                response.raise_for_status()
                with lock:
                    accepted_latencies.append(time.perf_counter() - start)
                    counts["accepted"] += response.json()["accepted"]

    threads = [threading.Thread(target=worker) for _ in range(inflight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((accepted_latencies, counts))


def _peak_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        stop.wait(0.05)


def run(limit: int, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    with fresh_database("sqlite", tmp, f"flood-{limit}") as url:
        env = {"STAGEWATCH_MAX_INGEST_BACKLOG": str(limit)}
        server = start_server(url, tmp / f"server-{limit}.log", env=env)
        try:
            baseline = psutil.Process(server.process.pid).memory_info().rss
            ctx = mp.get_context("fork")
            go, out = ctx.Event(), ctx.Queue()
            procs = [
                ctx.Process(
                    target=_client, args=(server.url, k, args.clients, args.inflight, args.seconds, go, out)
                )
                for k in range(args.clients)
            ]
            for proc in procs:
                proc.start()
            stop, peak = threading.Event(), [baseline]
            sampler = threading.Thread(target=_peak_rss, args=(server.process.pid, stop, peak))
            sampler.start()
            time.sleep(1.0)  # let the clients connect
            start = time.perf_counter()
            go.set()
            results = [out.get(timeout=3600) for _ in procs]
            wall = time.perf_counter() - start
            stop.set()
            sampler.join()
            for proc in procs:
                proc.join()
        finally:
            stop_server(server)
        db = open_database(url)
        try:
            with db.reader.connect() as conn:
                rows, distinct = conn.execute(
                    select(func.count(), func.count(schema.events.c.id.distinct()))
                ).one()
        finally:
            db.dispose()
    latencies = [lat for lats, _ in results for lat in lats]
    accepted = sum(counts["accepted"] for _, counts in results)
    return {
        "limit": limit,
        "accepted": accepted,
        "rate": accepted / wall,
        "baseline_mb": baseline / 2**20,
        "peak_mb": peak[0] / 2**20,
        "turned_away": sum(counts["turned_away"] for _, counts in results),
        "p50": pct(latencies, 50),
        "p99": pct(latencies, 99),
        "exactly_once": accepted == rows == distinct,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the senders keep sending")
    parser.add_argument("--events", type=int, default=400_000, help="events made up front (at most sent)")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--inflight", type=int, default=128, help="concurrent requests per client process")
    parser.add_argument("--limits", type=int, nargs="+", default=[20_000, 0], help="backlog limits; 0: none")
    args = parser.parse_args()
    print(f"stagewatch flood benchmark: {machine()}")
    events = make_events(max(1, args.events // 10), args.events)
    BODIES[:] = [orjson.dumps(list(chunk)) for chunk in batches_of(events, 500)]
    print(
        f"{len(events):,} events in {len(BODIES)} batches of 500; "
        f"{args.clients} clients x {args.inflight} requests in flight "
        f"(up to {args.clients * args.inflight * 500:,} events sent and not yet answered)"
    )
    with temp_dir() as tmp:
        for limit in args.limits:
            r = run(limit, tmp, args)
            print(
                f"backlog limit {r['limit'] or 'none':>6}: server memory {r['baseline_mb']:.0f} MB at rest, "
                f"peak {r['peak_mb']:.0f} MB; {r['accepted']:,} events accepted, {r['rate']:,.0f}/s; "
                f"{r['turned_away']:,} requests turned away (503); "
                f"accepted requests p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms; "
                f"exactly once: {'OK' if r['exactly_once'] else 'FAILED'} ({r['rows']:,} rows)"
            )


if __name__ == "__main__":
    main()
