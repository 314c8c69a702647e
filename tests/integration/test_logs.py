"""Log lines end to end, on SQLite and PostgreSQL: ingest over HTTP (partial acceptance, duplicates, caps),
full-text search through the real index (words, filters, pages, hostile queries), retention (old logs,
and events only of long-finished videos) and the ``stagewatch logs`` command in a subprocess.

One server per database serves the HTTP tests of this module; every test uses its own ids.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text

from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.errors import InvalidShape
from stagewatch.service import logs, query
from stagewatch.service.ingest import ingest_now
from stagewatch.service.retention import run_retention_once
from stagewatch.service.validation import validate_batch
from stagewatch.settings import Settings
from stagewatch.store.engine import Database
from stagewatch.store.logs import logs_query
from tests.conftest import (
    LiveServer,
    _empty_postgres,
    free_port,
    own_postgres_database,
    start_server,
    stop_server,
)

NOW = float(int(time.time()))
DAY = 86400.0
STACK = 'Traceback (most recent call last):\n  File "steps.py", line 41, in step\nFFmpegError: quokka frames'
HOSTILE_QUERIES = [
    '"', '""', '"unterminated', "*", "foo*", "*foo", "AND", "OR", "NOT", "a AND", "AND OR NOT", "NEAR(",
    "NEAR(a b, 2)", "-", "-foo", ":", "message:foo", "exception:", "^", "(", ")", "((", "'", "it's", "\\",
    "%", "_", "!", "&", "|", "<->", "foo:*", "{a b}", "[x]", "ü", "🙂", "\x00", "a\x00b", " ", "+1",
    'moov" OR "x', "col:moov AND NOT atom NEAR(x y)",
]  # fmt: skip


# --- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(module_server: LiveServer) -> LiveServer:
    """A real ``stagewatch serve`` on an empty database, shared by this module's HTTP tests."""
    return module_server


@pytest.fixture
def ns() -> str:
    """A prefix that makes this test's record ids and item ids its own."""
    return uuid.uuid4().hex[:10]


def line(ns: str, n: int, message: str = "step done", **fields: Any) -> dict[str, Any]:
    return {"id": f"{ns}-{n}", "time": NOW - 600 + n, "message": message, "item_id": f"{ns}-vid", **fields}


def post(server: LiveServer, body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/logs", json=body, timeout=30)


def get(server: LiveServer, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/logs", params=params, timeout=30)


def store(db: Database, raw: list[dict[str, Any]]) -> None:
    batch = logs.validate_logs(raw, NOW)
    assert batch.rejections == []
    logs.store_logs(db, [batch.records])


def search(db: Database, q: str | None = None, limit: int = 1000, **filters: Any) -> list[str]:
    page = logs.search_logs(db, logs.log_filter(q, **filters), None, limit)
    return [found["id"] for found in page["logs"]]


# Hundreds of distinct words, so PostgreSQL's statistics on the tsvector look like real text's.
VOCABULARY = ["".join(letters) for letters in itertools.product("bdfgklmnprstvz", "aeiou", "bdfgklmnprstvz")]


def haystack(ns: str, count: int) -> list[dict[str, Any]]:
    """Many ordinary lines about many videos, none with the rare words the tests look for."""
    words = ("download", "started", "upload", "progress", "ffmpeg", "frame", "container", "status", "ok")
    return [
        line(ns, n, f"{words[n % 9]} {VOCABULARY[(n * 7919) % 600]} {VOCABULARY[n * n % 600]} part {n} of "
             f"vid-{n % 50:04d}", item_id=f"v{n % 50}")
        for n in range(count)
    ]  # fmt: skip


# --- ingest over HTTP -------------------------------------------------------------------------------


def test_valid_records_are_kept_and_each_rejected_one_is_explained(server: LiveServer, ns: str) -> None:
    batch = [
        line(ns, 0, level="WARN", trace_id="4BF92F3577B34DA6A3CE929D0E0E4736", attrs={"attempt": 2}),
        line(ns, 1, level="loud"),
        {"id": f"{ns}-2", "item_id": f"{ns}-vid"},
        line(ns, 3, trace_id="xyz"),
        line(ns, 4, message="x" * (32 * 1024 + 1)),
        "not a record",
        line(ns, 6, levle="info"),
        line(ns, 7, time=(NOW - 1) * 1000),
        line(ns, 8, attrs={"nested": {"no": 1}}),
        line(ns, 9, level="critical", exception=STACK, stage="process", run_id=f"{ns}-run"),
        {"id": f"{ns}-10", "message": "no time: the server's clock", "item_id": f"{ns}-vid"},
    ]
    answer = post(server, batch)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (3, 0, 8)
    assert {e["index"]: (e["id"], e["field"]) for e in body["errors"]} == {
        1: (f"{ns}-1", "level"),
        2: (f"{ns}-2", "message"),
        3: (f"{ns}-3", "trace_id"),
        4: (f"{ns}-4", "message"),
        5: (None, ""),
        6: (f"{ns}-6", "levle"),
        7: (f"{ns}-7", "time"),
        8: (f"{ns}-8", "attrs"),
    }
    stored = {found["id"]: found for found in get(server, item_id=f"{ns}-vid").json()["logs"]}
    assert sorted(stored) == [f"{ns}-0", f"{ns}-10", f"{ns}-9"]
    assert stored[f"{ns}-0"]["level"] == "warning"
    assert stored[f"{ns}-0"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert stored[f"{ns}-0"]["attrs"] == {"attempt": 2}
    assert (stored[f"{ns}-9"]["exception"], stored[f"{ns}-9"]["run_id"]) == (STACK, f"{ns}-run")
    assert abs(logs.parse_time(stored[f"{ns}-10"]["time"]) - time.time()) < 60


def test_resending_records_counts_duplicates_and_stores_each_line_once(server: LiveServer, ns: str) -> None:
    batch = [line(ns, n) for n in range(5)]
    assert post(server, batch).json()["accepted"] == 5
    again = post(server, {"logs": [*batch, line(ns, 5), line(ns, 5)]}).json()
    assert (again["accepted"], again["duplicate"], again["rejected"]) == (1, 6, 0)
    assert len(get(server, item_id=f"{ns}-vid").json()["logs"]) == 6


def test_bad_bodies_get_the_status_events_get(server: LiveServer, ns: str) -> None:
    every_bad = post(server, [line(ns, 0, level="loud"), {"message": "no id"}])
    assert every_bad.status_code == 422
    assert [(e["index"], e["field"]) for e in every_bad.json()["errors"]] == [(0, "level"), (1, "id")]
    malformed = httpx.post(
        f"{server.url}/v1/logs", content=b"[{", headers={"content-type": "application/json"}
    )
    assert (malformed.status_code, malformed.json()["field"]) == (400, "body")
    shape = post(server, {"logs": {"id": "x"}})
    assert (shape.status_code, shape.json()["field"]) == (422, "logs")
    too_many = post(server, [line(ns, n) for n in range(1001)])
    assert (too_many.status_code, too_many.json()["field"]) == (413, "logs")
    assert "limit of 1000" in too_many.json()["error"]
    assert post(server, []).json() == {"accepted": 0, "duplicate": 0, "rejected": 0, "errors": []}


def test_concurrent_batches_share_commits_and_each_id_lands_once(db: Database, ns: str) -> None:
    async def submit_all() -> list[tuple[int, int]]:
        committer = logs.log_committer(db)
        committer.start()
        batches = [
            logs.validate_logs([line(ns, b * 20 + i) for i in range(20)], NOW).records for b in range(30)
        ]
        try:
            outcomes = await asyncio.gather(*(committer.submit(b) for b in [*batches, batches[0]]))
        finally:
            await committer.stop()
        assert committer.stats.transactions < 30 / 4, "batches waiting together must share a commit"
        return [(o.accepted, o.duplicate) for o in outcomes]

    outcomes = asyncio.run(submit_all())
    assert sorted(outcomes) == [(0, 20)] + [(20, 0)] * 30
    assert len(search(db, item_id=f"{ns}-vid")) == 600


# --- search -----------------------------------------------------------------------------------------


def test_a_rare_word_finds_its_line_among_many(db: Database, ns: str) -> None:
    lines = haystack(ns, 3000)
    lines[1234]["message"] = "ffmpeg exited with code 1: moov atom not found in vid-9042"
    lines[2000] = line(ns, 2000, "process failed", level="error", exception=STACK)
    lines[2500]["message"] = "atom smasher"
    lines[2600]["message"] = "9042 bytes from vid-0001"
    store(db, lines)

    assert search(db, "moov") == [f"{ns}-1234"]
    assert search(db, "MOOV Atom") == [f"{ns}-1234"], "words are AND-ed, case does not matter"
    assert search(db, "atom") == [f"{ns}-2500", f"{ns}-1234"]
    assert search(db, "quokka") == [f"{ns}-2000"], "the exception text is searched too"
    assert search(db, "quok") == [f"{ns}-2000"], "the last word may be a prefix"
    assert search(db, "moov quok") == [], "every word must be in the line"
    assert search(db, "vid-9042") == [f"{ns}-1234"], "an id is found whole, not as its parts anywhere"
    assert search(db, "9042") == [f"{ns}-2600", f"{ns}-1234"]
    assert search(db, "mo") == [], "a two-letter word is matched exactly, not as a prefix"


def test_filters_by_item_run_stage_level_and_time(db: Database, ns: str) -> None:
    levels = ("debug", "info", "warning", "error", "critical")
    stages = ("download", "process", "publish")
    store(db, [
        line(ns, n, f"line {n}", item_id=f"{ns}-v{n % 2}", run_id=f"{ns}-r{n % 3}", stage=stages[n % 3],
             level=levels[n % 5], time=NOW - 100 + n)
        for n in range(30)
    ])  # fmt: skip

    def ids(**filters: Any) -> set[int]:
        return {int(found.rsplit("-", 1)[1]) for found in search(db, **filters)}

    assert ids(item_id=f"{ns}-v1") == {n for n in range(30) if n % 2}
    assert ids(run_id=f"{ns}-r2") == {n for n in range(30) if n % 3 == 2}
    assert ids(stage="publish") == {n for n in range(30) if n % 3 == 2}
    assert ids(level="warning") == {n for n in range(30) if n % 5 >= 2}, "warning and above"
    assert ids(level="ERROR") == {n for n in range(30) if n % 5 >= 3}
    assert ids(since=NOW - 80, until=str(NOW - 75)) == {20, 21, 22, 23, 24, 25}
    iso_since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 73))
    assert ids(since=iso_since) == set(range(27, 30))
    assert ids(item_id=f"{ns}-v0", stage="download", level="warning") == {
        n for n in (0, 6, 12, 18, 24) if n % 5 >= 2
    }
    assert ids(q="line", stage="process", level="critical") == {4, 19}
    with pytest.raises(InvalidShape, match="unknown level"):
        search(db, level="loud")
    with pytest.raises(InvalidShape, match="since"):
        search(db, since="yesterday")


def test_pages_walk_every_match_exactly_once_newest_first(db: Database, ns: str) -> None:
    # Ten lines share each time stamp, so the order within a time comes from the insertion sequence.
    store(db, [line(ns, n, f"tick {n}", time=NOW - 1000 + n // 10, level="error" if n % 4 else "info")
               for n in range(250)])  # fmt: skip
    for filters, expected in (
        ({}, 250),
        ({"q": "tick", "level": "error"}, 187),
    ):
        where = logs.log_filter(filters.get("q"), item_id=f"{ns}-vid", level=filters.get("level"))
        seen: list[str] = []
        cursor = None
        while True:
            page = logs.search_logs(db, where, cursor, 7)
            seen += [found["id"] for found in page["logs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == expected
        numbers = [int(found.rsplit("-", 1)[1]) for found in seen]
        assert numbers == sorted(numbers, reverse=True), "newest first, ties by arrival"


def test_queries_full_of_search_syntax_never_fail(server: LiveServer, ns: str) -> None:
    post(server, [line(ns, 0, 'moov "atom" NEAR(x) AND -y col:z *'), line(ns, 1, "other")])
    for q in HOSTILE_QUERIES:
        answer = get(server, q=q, item_id=f"{ns}-vid")
        assert answer.status_code == 200, (q, answer.text)
    assert [f["id"] for f in get(server, q='col:z "atom" NEAR(', item_id=f"{ns}-vid").json()["logs"]] == [
        f"{ns}-0"
    ]
    too_long = get(server, q="x" * 1001)
    assert (too_long.status_code, too_long.json()["field"]) == (422, "q")
    nul = get(server, item_id="a\x00b")
    assert (nul.status_code, nul.json()["field"]) == (422, "item_id")
    for name, value in (
        ("cursor", "not-a-cursor"),
        ("level", "loud"),
        ("since", "yesterday"),
        ("limit", "0"),
    ):
        answer = get(server, **{name: value})
        assert 400 <= answer.status_code < 500, (name, answer.text)


def analyze(db: Database) -> None:
    """What autovacuum does after a load. On PostgreSQL it also merges the GIN index's pending list,
    without which the planner rightly prefers scanning a table this small."""
    if db.is_postgres:
        with db.writer.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE logs"))
    else:
        with db.writer.begin() as conn:
            conn.execute(text("ANALYZE"))


def test_search_is_answered_by_the_full_text_index(db: Database, ns: str) -> None:
    lines = haystack(ns, 6000)
    lines[4321]["message"] = "publish failed: quokka container"
    store(db, lines)
    analyze(db)
    with db.reader.connect() as conn:
        where = logs.log_filter("quokka")
        query_sql = logs_query(conn, where, None, 101).compile(conn, compile_kwargs={"literal_binds": True})
        if db.is_postgres:
            plan = "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN {query_sql}")))
            assert "Bitmap Index Scan on ix_logs_search" in plan, plan
        else:
            plan = "\n".join(row[3] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {query_sql}")))
            assert re.search(r"SCAN logs_fts VIRTUAL TABLE INDEX \d+:M", plan), plan
            assert not re.search(r"^SCAN logs\b", plan, re.M), plan
        assert "LIKE" not in str(query_sql).upper()
    assert search(db, "quokka") == [f"{ns}-4321"]


# --- retention --------------------------------------------------------------------------------------


def test_retention_deletes_old_lines_and_search_forgets_them(db: Database, ns: str) -> None:
    old = [line(ns, n, f"oldword shared {n}", time=NOW - 20 * DAY + n) for n in range(50)]
    new = [line(ns, 100 + n, f"shared {n}", time=NOW - DAY + n) for n in range(30)]
    store(db, old + new)
    settings = Settings(log_retention=14 * DAY, event_retention=None)

    report = run_retention_once(db, settings, NOW, log_chunk=7)

    assert (report.logs_deleted, report.events_deleted, report.skipped) == (50, 0, False)
    assert search(db, "oldword") == []
    assert sorted(search(db, "shared")) == sorted(f"{ns}-{100 + n}" for n in range(30))
    assert len(search(db)) == 30
    with db.writer.begin() as conn:
        if db.is_postgres:
            stale = "SELECT count(*) FROM logs WHERE search @@ to_tsquery('simple', 'oldword')"
            assert conn.execute(text(stale)).scalar() == 0
        else:  # raises if the FTS5 index and the logs table disagree
            conn.execute(text("INSERT INTO logs_fts(logs_fts, rank) VALUES ('integrity-check', 1)"))
    assert run_retention_once(db, settings, NOW).logs_deleted == 0


def _story(item: str, at: float, end: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"id": f"{item}-c", "type": "item.created", "item_id": item, "time": at}]
    stage = "publish" if end == "run.succeeded" else "download"
    events.append({"id": f"{item}-s", "type": "run.started", "item_id": item, "stage": stage, "time": at + 1})
    if end == "run.failed":
        events.append({"id": f"{item}-e", "type": end, "item_id": item, "stage": stage, "time": at + 2,
                       "error": {"type": "HTTPError", "message": "403"}})  # fmt: skip
    elif end != "run.started":
        events.append({"id": f"{item}-e", "type": end, "item_id": item, "stage": stage, "time": at + 2})
    return events


def test_event_retention_is_off_by_default_and_then_spares_unfinished_or_recent_items(
    db: Database, registry: PipelineRegistry, ns: str
) -> None:
    stories = {
        f"{ns}-published-old": (NOW - 40 * DAY, "run.succeeded"),
        f"{ns}-failed-old": (NOW - 40 * DAY, "run.failed"),
        f"{ns}-cancelled-old": (NOW - 40 * DAY, "run.cancelled"),
        f"{ns}-running-old": (NOW - 40 * DAY, "run.started"),
        f"{ns}-failed-recent": (NOW - 2 * DAY, "run.failed"),
    }
    for item, (at, end) in stories.items():
        ingest_now(db, registry, validate_batch(_story(item, at, end), registry, NOW).events)
    statuses = {item: query.get_item(db, item)["status"] for item in stories}
    assert list(statuses.values()) == ["published", "failed", "cancelled", "running", "failed"]

    assert run_retention_once(db, Settings(event_retention=None), NOW).events_deleted == 0
    report = run_retention_once(db, Settings(event_retention=30 * DAY), NOW, item_chunk=1)

    assert report.events_deleted == 9
    histories = {item: len(query.get_item(db, item, with_history=True)["history"]) for item in stories}
    assert list(histories.values()) == [0, 0, 0, 2, 3]
    assert {item: query.get_item(db, item)["status"] for item in stories} == statuses, "items stay"


@pytest.mark.postgres
def test_only_one_replica_runs_retention_at_a_time(postgres_url: str) -> None:
    from stagewatch.store.engine import open_database
    from stagewatch.store.retention import RETENTION_LOCK

    _empty_postgres(postgres_url)
    db = open_database(postgres_url)
    try:
        store(db, [line("lock", 0, time=NOW - 30 * DAY)])
        with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (RETENTION_LOCK,))
            assert run_retention_once(db, Settings(), NOW).skipped
        assert run_retention_once(db, Settings(), NOW).logs_deleted == 1
    finally:
        db.dispose()


def test_the_server_deletes_old_lines_in_the_background(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ns: str
) -> None:
    monkeypatch.setenv("STAGEWATCH_LOG_RETENTION", "3600")
    monkeypatch.setenv("STAGEWATCH_RETENTION_INTERVAL", "0.3")
    with ExitStack() as stack:
        if database_url.startswith("postgresql"):  # the module's server leads the shared database's loops
            database_url = stack.enter_context(own_postgres_database())
        live = start_server(database_url, tmp_path / "server.log")
        stack.callback(stop_server, live)
        post(live, [line(ns, 0, time=NOW - 7200), line(ns, 1, time=time.time())])
        deadline = time.monotonic() + 20
        while len(get(live, item_id=f"{ns}-vid").json()["logs"]) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [found["id"] for found in get(live, item_id=f"{ns}-vid").json()["logs"]] == [f"{ns}-1"]
        assert "retention.done logs_deleted=1" in live.log()


# --- the command line -------------------------------------------------------------------------------


def stagewatch(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m stagewatch ARGS`` with no STAGEWATCH_* settings inherited from this shell."""
    return subprocess.run(
        [sys.executable, "-m", "stagewatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STAGEWATCH_") and k != "NO_COLOR"}


def test_logs_command_prints_readable_lines_and_json(server: LiveServer, ns: str) -> None:
    vid = f"{ns}-vid"
    post(server, [
        line(ns, 0, "download started [bold]not markup[/bold]", stage="download"),
        line(ns, 1, "ffmpeg failed", stage="process", level="error", exception=STACK),
        line(ns, 2, "no stage here", level="debug"),
    ])  # fmt: skip

    shown = stagewatch("logs", "--item", vid, "--url", server.url)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout.splitlines()
    assert re.fullmatch(
        rf"\S+Z INFO     \[{vid} download\] download started \[bold\]not markup\[/bold\]", out[0]
    )
    assert re.fullmatch(rf"\S+Z ERROR    \[{vid} process\] ffmpeg failed", out[1])
    assert out[2:5] == ["    " + stack_line for stack_line in STACK.splitlines()]
    assert re.fullmatch(rf"\S+Z DEBUG    \[{vid}\] no stage here", out[5])

    errors = stagewatch(
        "logs", "--item", vid, "--level", "error", "-q", "ffmpeg", "--json", "--url", server.url
    )
    assert errors.returncode == 0, errors.stderr
    document = json.loads(errors.stdout)
    assert [found["id"] for found in document["logs"]] == [f"{ns}-1"]
    assert document["next_cursor"] is None


def test_logs_command_exit_codes_say_whose_fault_it_was(server: LiveServer) -> None:
    bad_since = stagewatch("logs", "--since", "yesterday", "--url", server.url)
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr
    bad_level = stagewatch("logs", "--level", "loud", "--url", server.url)
    assert bad_level.returncode == 2
    nowhere = f"http://127.0.0.1:{free_port()}"
    down = stagewatch("logs", "--url", nowhere)
    assert down.returncode == 1
    assert down.stderr.count("\n") == 1 and nowhere in down.stderr
    assert stagewatch("logs", "--since", "1h", "--url", server.url).returncode == 0


def _pump(process: subprocess.Popen[str], into: queue.Queue[str]) -> None:
    for printed_line in process.stdout or ():
        into.put(printed_line)


def test_logs_follow_prints_a_line_that_arrives_after_it_started(server: LiveServer, ns: str) -> None:
    post(server, [line(ns, 0, "before following", time=time.time() - 2)])
    command = [
        sys.executable,
        "-m",
        "stagewatch",
        "logs",
        "--follow",
        "--item",
        f"{ns}-vid",
        "--url",
        server.url,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env()
    )
    printed: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process, printed), daemon=True).start()
    try:
        assert "before following" in printed.get(timeout=30)
        post(server, [line(ns, 1, "arrived while following", time=time.time())])
        assert "arrived while following" in printed.get(timeout=15)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            returncode = process.wait(timeout=15)
        finally:
            process.kill()
    assert returncode == 0, process.stderr.read() if process.stderr else ""
