"""Decision throughput and latency: ``begin`` + ``complete`` round trips over loopback HTTP.

    python benchmarks/begin.py [--workers 8] [--seconds 10] [--backend sqlite|postgres|both]

Starts ``stagewatch serve`` on a fresh database (auth off, so the figure is the decision path itself),
then runs ``--workers`` threads, each with its own keep-alive connection, doing for a new item each time:
``POST /v1/runs/begin`` (a run decision: a work row, a lease, slot and rate checks, a run.started event)
then ``POST /v1/runs/{id}/complete`` (succeeded). The stage used is ``publish`` of the instagram preset,
so the rate limit ({account}, 50 per 24 h) is checked on every begin; accounts rotate over 10,000 so
the limit itself never blocks. Prints decisions/s (begins per second) and p50/p99 latency of each call
as the client sees it.

Targets (issue 4): p50 under 3 ms and at least 1,000 decisions/s on SQLite.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import backends, code_version, fresh_database, machine, ms, pct, start_server, stop_server, temp_dir


def _worker(
    base: str, label: str, number: int, stop_at: float, begins: list[float], completes: list[float]
) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        i = 0
        while time.perf_counter() < stop_at:
            item = f"{label}-{number}-{i}"
            started = time.perf_counter()
            answer = http.post(
                "/v1/runs/begin", json={"stage": "publish", "item_id": item, "account": f"acct-{i % 10_000}"}
            ).json()
            begun = time.perf_counter()
            assert answer["decision"] == "run", answer
            http.post(f"/v1/runs/{answer['run_id']}/complete", json={"outcome": "succeeded"}).raise_for_status()
            begins.append(begun - started)
            completes.append(time.perf_counter() - begun)
            i += 1


def run(backend: str, workers: int, seconds: float) -> None:
    with temp_dir() as tmp, fresh_database(backend, tmp, "begin") as url:
        server = start_server(url, tmp / "server.log", "--no-auth")
        try:
            # Warm-up: connections, statement caches, the first pages of every table.
            _measure(server.url, "warm", workers, 1.0)
            begins, completes, elapsed = _measure(server.url, "bench", workers, seconds)
        finally:
            stop_server(server)
    rate = len(begins) / elapsed
    print(f"\n{backend}: {workers} workers, {elapsed:.1f} s, {len(begins)} begin+complete round trips")
    print(f"  decisions/s            {rate:10.0f}   (round trips/s; each is 2 requests, 2 transactions)")
    print(f"  begin    p50/p99 ms  {ms(pct(begins, 50))} {ms(pct(begins, 99))}")
    print(f"  complete p50/p99 ms  {ms(pct(completes, 50))} {ms(pct(completes, 99))}")


def _measure(base: str, label: str, workers: int, seconds: float) -> tuple[list[float], list[float], float]:
    begins: list[float] = []
    completes: list[float] = []
    start = time.perf_counter()
    stop_at = start + seconds
    threads = [
        threading.Thread(target=_worker, args=(base, label, n, stop_at, begins, completes)) for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return begins, completes, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    print(f"begin benchmark on {machine()}; code {code_version()}")
    for backend in backends(args.backend):
        run(backend, args.workers, args.seconds)


if __name__ == "__main__":
    main()
