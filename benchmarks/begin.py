"""Decision throughput and latency: ``begin`` + ``complete`` round trips, over loopback HTTP and in process.

    python benchmarks/begin.py [--workers 8] [--seconds 10] [--backend sqlite|postgres|both]
                               [--client stdlib|httpx] [--skip http inprocess] [--profile DIR]

**HTTP.** Starts ``stagewatch serve`` on a fresh database (auth off, so the figure is the decision path
itself), then runs ``--workers`` threads, each with its own keep-alive connection, doing for a new item
each time: ``POST /v1/runs/begin`` (a run decision: a work row, a lease, slot and rate checks, a
run.started event) then ``POST /v1/runs/{id}/complete`` (succeeded). The stage used is ``publish`` of
the instagram preset, so the rate limit ({account}, 50 per 24 h) and the ``instagram-api`` dependency
are checked on every begin; accounts rotate over 10,000 so the limit itself never blocks. Prints
decisions/s (begins per second), p50/p99 latency of each call as the client sees it, and the CPU time
the server and the client spent per round trip: on a shared machine, where throughput depends on what
else runs, CPU per round trip is the steadier figure, and (server + client) / cores is the ceiling.
The client is the standard library's http.client; ``--client httpx`` uses httpx, which costs this
process about twice the CPU per request, on the same cores as the server (see README).

**In process.** The same load without HTTP: ``--workers`` asyncio tasks hand their decisions to the
server's own ``DecisionCommitter`` in this process, on a fresh database. This is what the decision path
itself can do; the difference to HTTP is the cost of FastAPI, uvicorn and the httpx client.

Targets (issue 4): p50 under 3 ms and at least 1,000 decisions/s on SQLite.

``--profile DIR`` attaches ``py-spy record --gil`` to the server for the measured HTTP load and writes
collapsed stacks to ``DIR/begin-BACKEND.txt`` (summarise with ``benchmarks/profile_top.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    attach_profiler,
    backends,
    detach_profiler,
    fresh_database,
    load,
    machine,
    ms,
    pct,
    start_server,
    stop_server,
    temp_dir,
)
from stagewatch.domain.pipeline import PipelineRegistry, instagram_preset
from stagewatch.service.control import begin, completion
from stagewatch.service.control.committer import DecisionCommitter
from stagewatch.store.engine import open_database
from stagewatch.store.migrate import upgrade

Samples = tuple[list[float], list[float], float]  # begin latencies, complete latencies, elapsed seconds


def _account(i: int) -> str:
    return f"acct-{i % 10_000}"


# --- over HTTP ----------------------------------------------------------------------------------------


Post = Callable[[str, dict[str, Any]], Any]  # path, JSON body -> the decoded answer (raises unless 200)


class _Stdlib:
    """POST JSON over one keep-alive http.client connection."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        self.conn.request("POST", path, orjson.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {answer[:300]!r}")
        return orjson.loads(answer)

    def close(self) -> None:
        self.conn.close()


class _Httpx:
    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.http.post(path, json=body).raise_for_status().json()

    def close(self) -> None:
        self.http.close()


CLIENTS = {"stdlib": _Stdlib, "httpx": _Httpx}


def _worker(
    client: _Stdlib | _Httpx, label: str, stop_at: float, begins: list[float], completes: list[float]
) -> None:
    try:
        i = 0
        while time.perf_counter() < stop_at:
            body = {"stage": "publish", "item_id": f"{label}-{i}", "account": _account(i)}
            started = time.perf_counter()
            answer = client.post("/v1/runs/begin", body)
            begun = time.perf_counter()
            assert answer["decision"] == "run", answer
            client.post(f"/v1/runs/{answer['run_id']}/complete", {"outcome": "succeeded"})
            begins.append(begun - started)
            completes.append(time.perf_counter() - begun)
            i += 1
    finally:
        client.close()


def run_http(backend: str, workers: int, seconds: float, client: str, profile: Path | None) -> None:
    with temp_dir() as tmp, fresh_database(backend, tmp, "begin") as url:
        server = start_server(url, tmp / "server.log", "--no-auth")
        try:
            # Warm-up: connections, statement caches, the first pages of every table.
            _measure(server.url, client, "warm", workers, 1.0)
            out = profile / f"begin-{backend}.txt" if profile else None
            profiler = attach_profiler(server.process.pid, out) if out else None
            server_cpu, client_cpu = _cpu_seconds(server.process.pid), time.process_time()
            try:
                samples = _measure(server.url, client, "bench", workers, seconds)
            finally:
                server_cpu = _cpu_seconds(server.process.pid) - server_cpu
                client_cpu = time.process_time() - client_cpu
                if profiler is not None:
                    detach_profiler(profiler)
        finally:
            stop_server(server)
    _report(f"{backend}, HTTP ({client} client)", workers, samples)
    per_trip = 1000 / len(samples[0])
    print(f"  CPU per round trip ms  server {server_cpu * per_trip:.2f}, client {client_cpu * per_trip:.2f}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(base: str, client: str, label: str, workers: int, seconds: float) -> Samples:
    begins: list[float] = []
    completes: list[float] = []
    clients = [CLIENTS[client](base) for _ in range(workers)]
    start = time.perf_counter()
    stop_at = start + seconds
    threads = [
        threading.Thread(target=_worker, args=(c, f"{label}-{n}", stop_at, begins, completes))
        for n, c in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return begins, completes, time.perf_counter() - start


# --- in process ---------------------------------------------------------------------------------------


def run_inprocess(backend: str, workers: int, seconds: float) -> None:
    with temp_dir() as tmp, fresh_database(backend, tmp, "begin_inproc") as url:
        db = open_database(url)
        upgrade(db)
        committer = DecisionCommitter(db, PipelineRegistry.of([instagram_preset()]))
        try:
            samples, cpu = asyncio.run(_warm_then_measure(committer, workers, seconds))
        finally:
            db.dispose()
    _report(f"{backend}, in process", workers, samples)
    trips, stats = len(samples[0]), committer.stats
    print(f"  CPU per round trip ms  {cpu / trips * 1000:.2f}")
    print(f"  decisions/transaction  {stats.decisions / max(1, stats.transactions):10.1f}")


async def _warm_then_measure(
    committer: DecisionCommitter, workers: int, seconds: float
) -> tuple[Samples, float]:
    await _decide_for(committer, "warm", workers, 1.0)
    cpu = time.process_time()
    samples = await _decide_for(committer, "bench", workers, seconds)
    return samples, time.process_time() - cpu


async def _decide_for(committer: DecisionCommitter, label: str, workers: int, seconds: float) -> Samples:
    begins: list[float] = []
    completes: list[float] = []
    start = time.perf_counter()
    stop_at = start + seconds
    tasks = [_decider(committer, f"{label}-{n}", stop_at, begins, completes) for n in range(workers)]
    await asyncio.gather(*tasks)
    return begins, completes, time.perf_counter() - start


async def _decider(
    committer: DecisionCommitter, label: str, stop_at: float, begins: list[float], completes: list[float]
) -> None:
    registry, i = committer.registry, 0
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        request = begin.BeginRequest("publish", f"{label}-{i}", account=_account(i))
        result = await committer.decide(begin.as_job(registry, request))
        begun = time.perf_counter()
        assert result.decision.action == "run" and result.run_id is not None, result
        await committer.decide(completion.as_job(registry, result.run_id, "succeeded"))
        begins.append(begun - started)
        completes.append(time.perf_counter() - begun)
        i += 1


# --- report -------------------------------------------------------------------------------------------


def _report(title: str, workers: int, samples: Samples) -> None:
    begins, completes, elapsed = samples
    print(f"\n{title}: {workers} workers, {elapsed:.1f} s, {len(begins)} begin+complete round trips")
    print(f"  load average after     {load():>10}")
    print(f"  decisions/s            {len(begins) / elapsed:10.0f}   (begins per second)")
    print(f"  begin    p50/p99 ms  {ms(pct(begins, 50))} {ms(pct(begins, 99))}")
    print(f"  complete p50/p99 ms  {ms(pct(completes, 50))} {ms(pct(completes, 99))}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="stdlib")
    parser.add_argument("--skip", nargs="*", default=[], choices=["http", "inprocess"])
    parser.add_argument(
        "--profile", type=Path, default=None, help="directory for py-spy profiles of the server"
    )
    args = parser.parse_args()
    print(f"begin benchmark on {machine()}")  # machine() names the code version too
    for backend in backends(args.backend):
        if "http" not in args.skip:
            run_http(backend, args.workers, args.seconds, args.client, args.profile)
        if "inprocess" not in args.skip:
            run_inprocess(backend, args.workers, args.seconds)


if __name__ == "__main__":
    main()
