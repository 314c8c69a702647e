"""Log search: how fast one video's error line is found among a million lines, by a rare word in it.

    python benchmarks/log_search.py [--lines 1000000] [--videos 50000] [--queries 200]
                                    [--backend sqlite|postgres|both] [--chunk 50000]

Per backend, on a fresh database:

1. Load: ``--lines`` realistic log lines (many videos, five stages, levels from debug to critical,
   messages with words, URLs, ids and numbers; error lines carry a stack and a unique request id) through
   ``stagewatch.store.logs.insert_logs``, ``--chunk`` lines per transaction. Prints lines/s and the size of
   the database. On PostgreSQL, ``VACUUM ANALYZE`` follows, as autovacuum would after such a load (it also
   merges the GIN index's pending list).
2. Search, ``--queries`` times each, through the service (``search_logs``, what the API calls) and over
   HTTP against a real ``stagewatch serve`` (keep-alive client), p50/p99:
   - rare: ``q=<the request id of one video's error line>``, newest 100 lines (one match);
   - rare + video: the same with ``item_id`` and ``level=error``;
   - word + video: ``q=<error word>&item_id=...`` (the word is in ~1 line in 30);
   - common: ``q=download`` (in ~1 line in 5), the newest page: informational, not a target;
   - baseline: the rare search as ``message LIKE '%...%'`` (what the full-text index replaces), a few runs.
The target is p50 < 50 ms for the rare searches.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import backends, fresh_database, machine, ms, pct, start_server, stop_server, temp_dir
from stagewatch.service.logs import log_filter, search_logs
from stagewatch.store import logs as log_store
from stagewatch.store.engine import Database, open_database
from stagewatch.store.migrate import upgrade

TARGET_P50 = 0.050
STAGES = ("webhook", "download", "enqueue", "process", "publish")
LEVELS = ((10, 0.15), (20, 0.64), (30, 0.12), (40, 0.08), (50, 0.01))
ERRORS = (
    ("download", "HTTPError 503 Service Unavailable from cdn.example.com"),
    ("download", "read timed out after 60s fetching source file"),
    ("process", "ffmpeg exited with code 1: moov atom not found"),
    ("process", "container killed: memory limit 2Gi exceeded"),
    ("publish", "GraphAPIError (#4) Application request limit reached"),
    ("publish", "GraphAPIError (#9004) media container status ERROR"),
)
STACK = (
    'Traceback (most recent call last):\n  File "/app/worker.py", line 88, in handle\n'
    '    result = step(video)\n  File "/app/steps.py", line 41, in step\n'
    "    raise {kind}({message!r})\n{kind}: {message}\n"
)
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "sa", "do", "fu", "gi", "ho", "ju")


# --- realistic lines --------------------------------------------------------------------------------


@dataclass
class Corpus:
    """The generated lines' parameters, and the error lines the searches look for."""

    videos: int
    lines: int
    end: float
    rng: random.Random
    words: list[str] = field(default_factory=list)
    cum_weights: list[float] = field(default_factory=list)
    targets: list[tuple[str, str, str]] = field(default_factory=list)  # (item_id, request id, error word)

    def __post_init__(self) -> None:
        # A few thousand pseudo-words, picked with a skewed distribution as real vocabularies are.
        self.words = sorted(
            {"".join(self.rng.choices(SYLLABLES, k=self.rng.randint(2, 4))) for _ in range(6000)}
        )
        self.rng.shuffle(self.words)
        self.cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(self.words))))

    def chunks(self, size: int) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        for row in self._rows():
            chunk.append(row)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _rows(self) -> Iterator[dict[str, Any]]:
        per_video = self.lines // self.videos
        for n in range(self.videos):
            count = per_video + (1 if n < self.lines - per_video * self.videos else 0)
            yield from self._video(f"vid-{n:07d}", count)

    def _video(self, item_id: str, count: int) -> Iterator[dict[str, Any]]:
        rng = self.rng
        at = self.end - rng.uniform(0, 3 * 86400)  # videos spread over the last three days
        for i in range(count):
            stage = STAGES[min(len(STAGES) - 1, i * len(STAGES) // count)]
            at += rng.uniform(0.05, 20)
            level = rng.choices([lv for lv, _ in LEVELS], [w for _, w in LEVELS])[0]
            yield self._line(item_id, f"{item_id}/{stage}/1", stage, min(at, self.end), level, i)

    def _line(self, item_id: str, run_id: str, stage: str, at: float, level: int, i: int) -> dict[str, Any]:
        message, exception = self._message(item_id, stage, level)
        return {
            "id": f"{item_id}.{i}", "time": at, "received_at": at + 0.5, "level": level, "message": message,
            "logger": f"worker.{stage}", "item_id": item_id, "run_id": run_id, "stage": stage,
            "pipeline": "instagram", "trace_id": None, "span_id": None, "worker": f"cloudrun-{i % 24:02d}",
            "revision": "rev-0042", "attrs": {"attempt": 1}, "exception": exception,
        }  # fmt: skip

    def _message(self, item_id: str, stage: str, level: int) -> tuple[str, str | None]:
        rng = self.rng
        detail = " ".join(rng.choices(self.words, cum_weights=self.cum_weights, k=rng.randint(2, 6)))
        if level < 40:
            return f"{_ordinary(rng, item_id, stage)} {detail}", None
        kind, message = _error_for(rng, stage)
        request = f"req{rng.getrandbits(40):010x}"
        if len(self.targets) < 20_000 and rng.random() < 0.5:
            self.targets.append((item_id, request, message.split()[0].lower()))
        line = f"{stage} failed for {item_id}: {message} request_id={request} {detail}"
        return line, STACK.format(kind=kind, message=message)


def _ordinary(rng: random.Random, item_id: str, stage: str) -> str:
    choices = {
        "webhook": f"webhook received for {item_id} account acct-{rng.randrange(60):03d}",
        "download": f"download GET https://cdn.example.com/{item_id}.mp4 200 in {rng.randrange(90, 9000)} ms",
        "enqueue": f"published message {rng.getrandbits(48)} to topic videos-process",
        "process": f"ffmpeg frame={rng.randrange(9000)} fps={rng.randrange(20, 240)} q={rng.random():.2f}",
        "publish": f"container {rng.getrandbits(50)} status_code IN_PROGRESS for {item_id}",
    }
    return choices[stage]


def _error_for(rng: random.Random, stage: str) -> tuple[str, str]:
    fitting = [message for where, message in ERRORS if where == stage] or [m for _, m in ERRORS]
    message = rng.choice(fitting)
    return message.split()[0].rstrip(":") if message[0].isupper() else "RuntimeError", message


# --- load -------------------------------------------------------------------------------------------


def load(db: Database, corpus: Corpus, chunk: int) -> float:
    """Insert every line; returns the seconds it took."""
    started = time.perf_counter()
    done = 0
    for rows in corpus.chunks(chunk):
        with db.writer.begin() as conn:
            log_store.insert_logs(conn, rows)
        done += len(rows)
        if done % (chunk * 4) == 0:
            rate = done / (time.perf_counter() - started)
            print(f"   … {done:,} lines ({rate:,.0f}/s)", flush=True)
    return time.perf_counter() - started


def settle(db: Database) -> None:
    """What autovacuum / autoanalyze would do after a large load (PostgreSQL only)."""
    if db.is_postgres:
        with db.writer.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE logs"))


def size_of(db: Database, url: str) -> str:
    if db.is_postgres:
        with db.reader.connect() as conn:
            total = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
            table = conn.execute(text("SELECT pg_table_size('logs')")).scalar_one()
            gin = conn.execute(text("SELECT pg_relation_size('ix_logs_search')")).scalar_one()
        return f"database {_mib(total)} (logs table {_mib(table)}, GIN index {_mib(gin)})"
    path = Path(url.removeprefix("sqlite:///"))
    wal = path.with_name(path.name + "-wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    with db.reader.connect() as conn:
        fts = conn.execute(text("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'logs_fts%'")).scalar()
    return f"file + WAL {_mib(size)} (FTS5 index {_mib(fts) if fts else 'n/a'})"


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


# --- search -----------------------------------------------------------------------------------------


Query = dict[str, Any]


def queries(corpus: Corpus, n: int, rng: random.Random) -> dict[str, list[Query]]:
    picks = [rng.choice(corpus.targets) for _ in range(n)]
    return {
        "rare": [{"q": request} for _, request, _ in picks],
        "rare + video": [{"q": request, "item_id": item, "level": "error"} for item, request, _ in picks],
        "word + video": [{"q": word, "item_id": item} for item, _, word in picks],
        "common": [{"q": "download"} for _ in picks],
    }


def expect_found(page: dict[str, Any], query: Query) -> None:
    if query["q"].startswith("req"):
        assert len(page["logs"]) == 1 and query["q"] in page["logs"][0]["message"], (query, page)
    else:
        assert page["logs"], query


def time_service(db: Database, batch: list[Query]) -> list[float]:
    took = []
    for query in batch:
        started = time.perf_counter()
        page = search_logs(db, log_filter(**query), None, 100)
        took.append(time.perf_counter() - started)
        expect_found(page, query)
    return took


def time_http(url: str, batch: list[Query]) -> list[float]:
    took = []
    with httpx.Client(base_url=url, timeout=60) as client:
        client.get("/healthz")
        for query in batch:
            started = time.perf_counter()
            response = client.get("/v1/logs", params={**query, "limit": 100})
            took.append(time.perf_counter() - started)
            expect_found(response.json(), query)
    return took


def time_like(db: Database, batch: list[Query]) -> list[float]:
    took = []
    for query in batch:
        started = time.perf_counter()
        with db.reader.connect() as conn:
            sql = "SELECT id FROM logs WHERE message LIKE :p ORDER BY time DESC LIMIT 100"
            found = conn.execute(text(sql), {"p": f"%{query['q']}%"}).all()
        took.append(time.perf_counter() - started)
        assert len(found) == 1
    return took


def report(label: str, took: list[float], target: float | None = None) -> None:
    verdict = "" if target is None else ("  ok" if pct(took, 50) < target else "  OVER TARGET")
    print(f"   {label:<28} p50 {ms(pct(took, 50))} ms   p99 {ms(pct(took, 99))} ms   n={len(took)}{verdict}")


def explain(db: Database, query: Query) -> str:
    """The plan the database picks for one search, indented, to show which index answers it."""
    with db.reader.connect() as conn:
        stmt = log_store.logs_query(conn, log_filter(**query), None, 101)
        sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
        if db.is_postgres:
            plan = [row[0] for row in conn.execute(text(f"EXPLAIN {sql}"))]
        else:
            plan = [row[3] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    return "\n".join(f"      {step}" for step in plan)


def measure(db: Database, url: str, batches: dict[str, list[Query]], tmp: Path, backend: str) -> None:
    for name in ("rare", "common"):
        print(f" plan of a {name} search {batches[name][0]}:\n{explain(db, batches[name][0])}")
    print(" search through the service (search_logs):")
    for name, batch in batches.items():
        time_service(db, batch[:5])  # warm the cache and connection pool
        report(name, time_service(db, batch), TARGET_P50 if name.startswith("rare") else None)
    report("baseline: LIKE scan (rare)", time_like(db, batches["rare"][:5]))
    server = start_server(url, tmp / f"server-{backend}.log")
    try:
        print(f" search over HTTP ({server.url}/v1/logs):")
        for name, batch in batches.items():
            time_http(server.url, batch[:5])
            report(name, time_http(server.url, batch), TARGET_P50 if name.startswith("rare") else None)
    finally:
        stop_server(server)


def run(backend: str, tmp: Path, args: argparse.Namespace) -> None:
    print(f"\n== {backend}")
    corpus = Corpus(args.videos, args.lines, float(int(time.time())), random.Random(7))
    with fresh_database(backend, tmp, "logs") as url:
        db = open_database(url)
        try:
            upgrade(db)
            seconds = load(db, corpus, args.chunk)
            print(f" loaded {args.lines:,} lines in {seconds:.1f}s: {args.lines / seconds:,.0f} lines/s")
            settle(db)
            print(f" size: {size_of(db, url)}")
            measure(db, url, queries(corpus, args.queries, random.Random(11)), tmp, backend)
        finally:
            db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--videos", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="sqlite")
    args = parser.parse_args()
    # The server started for the HTTP figures must not expire the freshly loaded lines.
    os.environ["STAGEWATCH_LOG_RETENTION"] = "0"
    print(f"log search benchmark: {args.lines:,} lines about {args.videos:,} videos; {machine()}")
    with temp_dir() as tmp:
        for backend in backends(args.backend):
            run(backend, tmp, args)


if __name__ == "__main__":
    main()
