"""Read latency: one item, the summary, filtered lists, on a database of 100,000 videos.

    python benchmarks/reads.py [--items 100000] [--events-per-item 10] [--requests 2000]
                               [--backend sqlite|postgres|both] [--db URL] [--profile DIR]
                               [--only /healthz /v1/items/{id}]

Seeds a fresh database through the in-process ingest path (``validate_batch`` + ``ingest_now``, the
server's own code, in batches of ``--seed-batch``; each batch holds whole stories of videos, which the
order-independent projection makes equivalent to the interleaved arrival the ingest benchmark sends,
and much faster to load), starts ``stagewatch serve`` on it, and times each endpoint with sequential
requests over one keep-alive connection (after a warm-up). ``--db URL`` uses that database instead and
keeps it: seeded if it is empty, reused as it is otherwise, so later runs skip the seeding.

Latencies are as the client sees them, over the standard library's http.client (lean: ~0.3 ms per
request on this machine); ``GET /healthz`` is the floor (HTTP + client). Two extra rows repeat
``/healthz`` and ``/v1/items/{id}`` with httpx, which adds ~0.5-0.8 ms per request here.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select

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
    temp_dir,
)
from stagewatch.domain.pipeline import PipelineRegistry, instagram_preset
from stagewatch.service.ingest import ingest_now
from stagewatch.service.validation import validate_batch
from stagewatch.store import schema
from stagewatch.store.engine import open_database
from stagewatch.store.migrate import upgrade

SLICE = 10_000  # videos generated at a time while seeding
TARGETS_P50 = {"GET /v1/items/{id}": 0.002, "GET /v1/summary": 0.020}


def seed(url: str, n_items: int, per_item: int, batch: int) -> dict[str, Any]:
    """Migrate and fill ``url`` with ``n_items`` videos through validate_batch + ingest_now."""
    registry = PipelineRegistry.of([instagram_preset()], "instagram")
    window = max(600.0, n_items * 0.18)
    db = open_database(url)
    generated = validate = store = 0.0
    sent = accepted = 0
    try:
        upgrade(db)
        for first in range(0, n_items, SLICE):  # in slices of videos, to keep memory small
            t = time.perf_counter()
            size = min(SLICE, n_items - first)
            events = make_events(size, size * per_item, first=first, window=window)
            events.sort(key=lambda e: e["item_id"])  # stable: each video's story stays in time order
            generated += time.perf_counter() - t
            sent += len(events)
            for chunk in batches_of(events, batch):
                t0 = time.perf_counter()
                valid = validate_batch(list(chunk), registry, time.time())
                t1 = time.perf_counter()
                accepted += ingest_now(db, registry, valid.events).accepted
                validate, store = validate + t1 - t0, store + time.perf_counter() - t1
        with db.reader.connect() as conn:
            items = conn.execute(select(func.count()).select_from(schema.items)).scalar_one()
            runs = conn.execute(select(func.count()).select_from(schema.runs)).scalar_one()
    finally:
        db.dispose()
    assert accepted == sent and items == n_items, f"seeded {accepted} of {sent} events, {items} items"
    return {
        "events": sent, "items": items, "runs": runs, "generate": generated,
        "validate": validate, "store": store,
    }  # fmt: skip


class KeepAlive:
    """GET over one keep-alive connection with the standard library's http.client: it adds ~0.3 ms per
    request here where httpx adds ~0.8-1.1 ms, so the figures are closer to the server's own time."""

    def __init__(self, base_url: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        return response.status, response.read()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        return orjson.loads(body)

    def close(self) -> None:
        self.conn.close()


def _timed(get: Callable[[str], tuple[int, bytes]], path: Callable[[], str], n: int) -> list[float]:
    for _ in range(20):  # warm-up
        get(path())
    took = []
    for _ in range(n):
        target = path()
        start = time.perf_counter()
        status, body = get(target)
        took.append(time.perf_counter() - start)
        if status != 200:
            raise RuntimeError(f"GET {target}: {status} {body[:300]!r}")
    return took


def _httpx_get(client: httpx.Client) -> Callable[[str], tuple[int, bytes]]:
    def get(path: str) -> tuple[int, bytes]:
        response = client.get(path)
        return response.status_code, response.content

    return get


def measure(
    base_url: str, n_items: int, n: int, rng: random.Random, only: list[str] | None = None
) -> list[tuple[str, str, list[float]]]:
    def item_id() -> str:
        return f"vid-{rng.randrange(n_items):07d}"

    http = KeepAlive(base_url)
    try:
        failed = http.json("/v1/items?status=failed&limit=50")
        cursor = failed["next_cursor"]
        sanity = {
            "failed_page": len(failed["items"]),
            "summary_items": sum(p["items"] for p in http.json("/v1/summary")["pipelines"]),
        }
        narrow = max(1, n_items // 100_000) * 1000  # ids vid-00NNN.. : ~100 videos per prefix at 100k
        cases: list[tuple[str, str, Callable[[], str], int]] = [
            ("GET /healthz", "floor: HTTP + client", lambda: "/healthz", n),
            ("GET /v1/items/{id}", "random id", lambda: f"/v1/items/{item_id()}", n),
            ("GET /v1/items/{id}?history=1", "random id + events", lambda: f"/v1/items/{item_id()}?history=1",
             max(50, n // 4)),
            ("GET /v1/summary", "", lambda: "/v1/summary", max(50, n // 10)),
            ("GET /v1/items?status=failed", "limit=50", lambda: "/v1/items?status=failed&limit=50",
             max(50, n // 10)),
            ("GET /v1/items?status=failed", "page 2 (cursor)",
             lambda: f"/v1/items?status=failed&limit=50&cursor={cursor}", max(50, n // 10)),
            ("GET /v1/items?prefix=", "vid-00NNN (~100 match)",
             lambda: f"/v1/items?prefix=vid-00{rng.randrange(narrow):03d}&limit=50", max(50, n // 4)),
            ("GET /v1/items?prefix=", "vid-0 (all match)", lambda: "/v1/items?prefix=vid-0&limit=50",
             max(50, n // 10)),
            ("GET /v1/items?account=", "one of 60 accounts",
             lambda: f"/v1/items?account=acct-{rng.randrange(60):03d}&limit=50", max(50, n // 10)),
            ("GET /v1/items", "no filter, limit=50", lambda: "/v1/items?limit=50", max(50, n // 10)),
        ]  # fmt: skip
        rows = []
        for name, note, path, count in cases:
            if ("cursor" in note and cursor is None) or not _chosen(name, only):
                continue
            rows.append((name, note, _timed(http.get, path, count)))
    finally:
        http.close()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for name, note, path in (
            ("GET /healthz", "httpx client", lambda: "/healthz"),
            ("GET /v1/items/{id}", "random id, httpx client", lambda: f"/v1/items/{item_id()}"),
        ):
            if _chosen(name, only):
                rows.append((name, note, _timed(_httpx_get(client), path, n)))
    print(
        f"   sanity: summary counts {sanity['summary_items']:,} videos; failed page holds "
        f"{sanity['failed_page']} items"
    )
    return rows


def _chosen(name: str, only: list[str] | None) -> bool:
    return not only or any(part in name for part in only)


def print_table(rows: list[tuple[str, str, list[float]]]) -> None:
    print(
        f"   {'endpoint':30} {'case':24} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8}  target"
    )
    for name, note, took in rows:
        target = TARGETS_P50.get(name) if note in ("", "random id") else None
        verdict = ""
        if target is not None:
            met = "met" if pct(took, 50) < target else "NOT met"
            verdict = f"p50 < {target * 1000:.0f} ms: {met}"
        print(
            f"   {name:30} {note:24} {len(took):5} {pct(took, 50) * 1000:8.2f} {pct(took, 90) * 1000:8.2f} "
            f"{pct(took, 99) * 1000:8.2f} {max(took) * 1000:8.2f}  {verdict}"
        )


def _item_count(url: str) -> int:
    """Videos already in ``url`` (0 for a new or empty database), after migrating it."""
    db = open_database(url)
    try:
        upgrade(db)
        with db.reader.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.items)).scalar_one())
    finally:
        db.dispose()


def run_backend(backend: str, tmp: Path, args: argparse.Namespace) -> None:
    print(f"\n== {backend} ==  (load average {load()})")
    with nullcontext(args.db) if args.db else fresh_database(backend, tmp, "reads") as url:
        if args.db is None or _item_count(url) == 0:
            s = seed(url, args.items, args.events_per_item, args.seed_batch)
            print(
                f"   seeded {s['items']:,} videos, {s['runs']:,} runs, {s['events']:,} events "
                f"(generate {s['generate']:.0f}s, validate {s['validate']:.0f}s, "
                f"ingest_now {s['store']:.0f}s = {s['events'] / s['store']:,.0f} events/s)"
            )
        server = start_server(url, tmp / f"reads-{backend}.log")
        profiler = None
        try:
            if args.profile:
                profiler = attach_profiler(server.process.pid, Path(args.profile) / f"reads-{backend}.txt")
            for run in range(1, args.repeat + 1):
                rows = measure(server.url, args.items, args.requests, random.Random(run), args.only)
                print(f"   run {run} (load average {load()}):")
                print_table(rows)
        finally:
            if profiler is not None:
                detach_profiler(profiler)
            stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events-per-item", type=int, default=10)
    parser.add_argument("--seed-batch", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=2000, help="requests for GET /v1/items/{id}")
    parser.add_argument("--repeat", type=int, default=2, help="measure this many times (noise)")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument(
        "--db", default=None, help="a database URL to use and keep: seeded if empty, reused as is otherwise"
    )
    parser.add_argument(
        "--only", nargs="+", default=None, help="time only the endpoints whose name contains one of these"
    )
    parser.add_argument("--profile", default=None, help="directory for a py-spy profile of the server")
    args = parser.parse_args()
    print(f"stagewatch reads benchmark: {machine()}")
    with temp_dir() as tmp:
        for backend in [args.backend] if args.db else backends(args.backend):
            run_backend(backend, tmp, args)


if __name__ == "__main__":
    main()
