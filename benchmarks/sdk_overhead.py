"""What the SDK costs a pipeline worker: time on the caller's thread, throughput to a real server, and
memory and disk during an outage.

    python benchmarks/sdk_overhead.py [--calls 50000] [--events 40000] [--threads 4]
                                      [--outage-events 100000] [--repeats 5]

(a) Cost per event of ``run.progress()`` and ``client.enqueued()`` with the exporter really running and
    sending (to an in-process discard transport that answers 200, so the network does not count):
    timed on the caller's thread in bursts of 400 with deliveries in between (what a worker pays when
    events are interleaved with real work), back to back in a tight loop (the caller then shares the GIL
    with the exporter's JSON encoding), and as CPU time of the whole process per event. Next to it, in
    the same process: an OpenTelemetry SDK span started and ended (TracerProvider + BatchSpanProcessor
    + an in-memory exporter), and a disabled client (the floor).
(b) Throughput end to end: ``--threads`` worker threads run stages in a tight loop (started,
    3 x progress, succeeded) against a real ``stagewatch serve`` on a temporary SQLite file, until
    ``flush()`` returns; then the events are counted in the database. Twice: with a queue that holds
    the whole burst, and with the default ``max_queue`` of 10,000 (the burst then goes through the spool,
    and what the spiller cannot keep up with is dropped and counted).
(c) An outage: ``--outage-events`` events to a closed port, with the disk spool and without it. RSS
    growth of the process (psutil), the spool's size on disk, and what was spooled or dropped.

Prints figures only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import func, select

from _common import free_port, machine, start_server, stop_server, temp_dir
from stagewatch import Client
from stagewatch.store import schema
from stagewatch.store.engine import open_database

nan = float("nan")

# --- (a) caller cost --------------------------------------------------------------------------------


def discard_transport() -> httpx.MockTransport:
    """Answers every batch with 200 "all accepted", counting records without parsing JSON."""

    def answer(request: httpx.Request) -> httpx.Response:
        count = request.content.count(b'"id":')
        return httpx.Response(200, json={"accepted": count, "duplicate": 0, "rejected": 0, "errors": []})

    return httpx.MockTransport(answer)


def tight_loop_us(
    action: Callable[[], None], calls: int, repeats: int, between: Callable[[], object] = lambda: None
) -> float:
    """Median over ``repeats`` of the mean time of one ``action()`` in a loop of ``calls``, in µs;
    ``between`` runs untimed after each repeat (delivering what was queued)."""
    samples = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        for _ in range(calls):
            action()
        samples.append((time.perf_counter() - started) / calls * 1e6)
        between()
    return statistics.median(samples)


def bursts_us(action: Callable[[], None], calls: int, flush: Callable[[], object], burst: int = 400) -> float:
    """Mean µs of one ``action()`` timed in bursts smaller than a batch, the exporter delivering between
    bursts (untimed): the cost a worker's thread pays when events are interleaved with real work."""
    timed = 0.0
    for _ in range(max(1, calls // burst)):
        started = time.perf_counter()
        for _ in range(burst):
            action()
        timed += time.perf_counter() - started
        flush()
    return timed / (max(1, calls // burst) * burst) * 1e6


def cpu_per_event_us(action: Callable[[], None], calls: int, client: Client) -> float:
    """Process CPU time (every thread: the caller, and the exporter encoding and posting) per event."""
    cpu = psutil.Process().cpu_times
    before = sum(cpu()[:2])
    for _ in range(calls):
        action()
    client.flush(60)
    return (sum(cpu()[:2]) - before) / calls * 1e6


def caller_cost(calls: int, repeats: int, spool: Path) -> list[tuple[str, float, float, float, str]]:
    """Rows: operation, µs in bursts, µs in a tight loop, CPU µs per event (all threads), note."""
    client = Client(
        "http://discard.invalid", transport=discard_transport(), spool_dir=spool, flush_interval=60,
        max_queue=calls * 2,
    )  # fmt: skip
    rows = []
    with client.stage("process", "bench-video") as run:
        progress = lambda: run.progress(0.5)  # noqa: E731
        enqueued = lambda: client.enqueued("process", "bench-video")  # noqa: E731
        for name, action in (("run.progress()", progress), ("client.enqueued()", enqueued)):
            bursts = bursts_us(action, calls, client.flush)
            cpu = cpu_per_event_us(action, calls, client)
            tight = tight_loop_us(action, calls, repeats, lambda: client.flush(60))
            rows.append((name, bursts, tight, cpu, "exporter sending (discard transport)"))
    client.flush(60)
    stats = client.stats
    totals = f"sent={stats.sent:,} spooled={stats.spooled:,} dropped={stats.dropped:,}"
    rows.append(("  exporter totals, all phases", nan, nan, nan, totals))
    client.close()
    provider, tracer = otel_tracer()
    span = lambda: tracer.start_span("process").end()  # noqa: E731
    otel = (bursts_us(span, calls, provider.force_flush), tight_loop_us(span, calls, repeats))
    rows.append(("OpenTelemetry span start+end", *otel, nan, "BatchSpanProcessor, in-memory exporter"))
    with Client(enabled=False).stage("process", "bench-video") as quiet:
        floor = tight_loop_us(lambda: quiet.progress(0.5), calls, repeats)
        rows.append(("run.progress(), disabled client", nan, floor, nan, "the floor"))
    return rows


def otel_tracer() -> tuple[TracerProvider, Any]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))

    def discard_finished() -> None:  # keep memory flat: the in-memory exporter would grow forever
        while True:
            time.sleep(0.5)
            exporter.clear()

    threading.Thread(target=discard_finished, daemon=True).start()
    return provider, provider.get_tracer("bench")


# --- (b) throughput -----------------------------------------------------------------------------------


def throughput(events: int, threads: int, tmp: Path, max_queue: int) -> dict[str, float]:
    database_url = f"sqlite:///{tmp / f'throughput-{max_queue}.db'}"
    server = start_server(database_url, tmp / "server.log")
    prefix = f"tp-{uuid.uuid4().hex[:8]}"
    runs_per_thread = events // 5 // threads
    client = Client(server.url, spool_dir=tmp / f"spool-tp-{max_queue}", max_queue=max_queue)
    try:
        started = time.perf_counter()
        workers = [
            threading.Thread(target=run_stages, args=(client, f"{prefix}-{t}", runs_per_thread))
            for t in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        emitted = time.perf_counter() - started
        delivered = client.flush(300)
        elapsed = time.perf_counter() - started
        stats = client.stats
    finally:
        client.close()
        stop_server(server)
    total, stored = runs_per_thread * threads * 5, count_events(database_url, prefix)
    return {
        "max_queue": max_queue, "events": total, "emit_s": emitted, "total_s": elapsed,
        "events_per_s": (stats.sent + stats.duplicate) / elapsed, "stored": stored,
        "delivered": delivered, "sent": stats.sent, "dropped": stats.dropped, "spooled": stats.spooled,
    }  # fmt: skip


def run_stages(client: Client, prefix: str, runs: int) -> None:
    """A worker in a tight loop: each run is started, reports progress three times, and succeeds."""
    for i in range(runs):
        with client.stage("download", f"{prefix}-{i}") as run:
            for step in (0.25, 0.5, 0.75):
                run.progress(step)


def count_events(database_url: str, prefix: str) -> int:
    db = open_database(database_url)
    try:
        with db.reader.connect() as conn:
            where = schema.events.c.item_id.like(f"{prefix}-%")
            return int(conn.execute(select(func.count()).where(where)).scalar_one())
    finally:
        db.dispose()


# --- (c) outage -----------------------------------------------------------------------------------


def outage(events: int, spool: Path | None) -> dict[str, float]:
    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    client = Client(f"http://127.0.0.1:{free_port()}", spool_dir=spool if spool else False, timeout=1)
    started = time.perf_counter()
    for i in range(events):
        client.enqueued("download", f"outage-{i}")
    per_event_us = (time.perf_counter() - started) / events * 1e6
    client.flush(10)  # during an outage: moves what is in memory to the spool
    gc.collect()
    rss_after = process.memory_info().rss
    stats = client.stats
    on_disk = sum(p.stat().st_size for p in spool.glob("*.jsonl")) if spool else 0
    client.close(timeout=1)
    return {
        "per_event_us": per_event_us, "rss_growth_mb": (rss_after - rss_before) / 2**20,
        "spool_mb": on_disk / 2**20, "spooled": stats.spooled, "dropped": stats.dropped,
        "queued": stats.queued, "bytes_per_event": on_disk / events,
    }  # fmt: skip


# --- report ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--outage-events", type=int, default=100_000)
    args = parser.parse_args()
    print(f"# SDK overhead — {machine()}\n")
    with temp_dir() as tmp:
        print_caller_cost(caller_cost(args.calls, args.repeats, tmp / "spool-a"), args.calls, args.repeats)
        runs = [throughput(args.events, args.threads, tmp, q) for q in (args.events, 10_000)]
        print_throughput(runs, args.threads)
        # Each in a fresh process: RSS growth is only meaningful from a clean heap.
        with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
            outages = {
                "with spool": pool.apply(outage, (args.outage_events, tmp / "spool-c")),
                "spool off": pool.apply(outage, (args.outage_events, None)),
            }
        print_outage(outages, args.outage_events)


def print_caller_cost(rows: list[tuple[str, float, float, float, str]], calls: int, repeats: int) -> None:
    print(f"(a) cost per event, µs ({calls:,} calls; tight loop: median of {repeats})")
    print(f"    {'operation':<34}{'bursts':>9}{'tight':>9}{'CPU/ev':>9}  note")
    for name, *values, note in rows:
        figures = "".join(f"{v:9.2f}" if v == v else " " * 9 for v in values)
        print(f"    {name:<34}{figures}  {note}")
    print("    bursts: caller's thread, 400 calls at a time, the exporter sending in between;")
    print("    tight: back to back while the exporter encodes and posts (they share the GIL);")
    print("    CPU/ev: CPU time of the whole process (caller + exporter) per event.")
    print()


def print_throughput(runs: list[dict[str, float]], threads: int) -> None:
    print(f"(b) end to end: {threads} threads in a tight loop -> stagewatch serve (SQLite file)")
    head = ("max_queue", "events", "emit s", "total s", "events/s", "in db", "spooled", "dropped", "flush")
    print("    " + "".join(f"{h:>10}" for h in head))
    for r in runs:
        cells = [r["max_queue"], r["events"], r["emit_s"], r["total_s"], r["events_per_s"], r["stored"]]
        cells += [r["spooled"], r["dropped"]]
        text = [f"{c:10,.0f}" if c >= 100 or c == int(c) else f"{c:10.2f}" for c in cells]
        print("    " + "".join(text) + f"{bool(r['delivered'])!s:>10}")
    print("    events/s: events the server took / seconds from the first event until flush() returned")
    print()


def print_outage(results: dict[str, dict[str, float]], events: int) -> None:
    print(f"(c) server outage: {events:,} events to a closed port (max_queue 10,000)")
    head = ("µs/event", "RSS +MB", "spool MB", "B/event", "spooled", "dropped", "queued")
    print("    " + " " * 12 + "".join(f"{h:>10}" for h in head))
    for name, r in results.items():
        cells = [f"{r['per_event_us']:10.2f}", f"{r['rss_growth_mb']:10.1f}", f"{r['spool_mb']:10.1f}"]
        cells += [f"{r[k]:10,.0f}" for k in ("bytes_per_event", "spooled", "dropped", "queued")]
        print(f"    {name:<12}" + "".join(cells))


if __name__ == "__main__":
    main()
