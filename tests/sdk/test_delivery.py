"""Delivery when things go wrong: the server killed mid-stream, a full queue, refusals that must not be
retried, throttling, an older server without /v1/logs, and the flush at interpreter exit."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from stagewatch import Client
from stagewatch.store import schema
from stagewatch.store.engine import open_database
from tests.conftest import LiveServer, free_port, start_server, stop_server
from tests.sdk.conftest import NO_AUTH, Reply, Stub, accept_all, get_item, new_id

StartStub = Callable[[Callable[[str, list[dict[str, Any]], int], Reply]], Stub]

ITEMS = 1000
EVENTS_PER_ITEM = 3


def emit_story(client: Client, prefix: str, progress: list[int]) -> None:
    """3,000 events about 1,000 videos, paced so that the outage falls in the middle."""
    for i in range(ITEMS):
        vid = f"{prefix}-{i:04d}"
        client.item_created(vid, source="webhook")
        run_id = client.enqueued("download", vid)
        client.enqueued("process", vid, run_id=f"{run_id}-p")
        progress[0] = i + 1
        if i % 10 == 0:
            time.sleep(0.004)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def stored_event_counts(database_url: str, prefix: str) -> tuple[int, int, list[int]]:
    """Straight from the database: events stored, distinct event ids, and each item's event_count."""
    db = open_database(database_url)
    try:
        with db.reader.connect() as conn:
            e, i = schema.events.c, schema.items.c
            where = e.item_id.like(f"{prefix}-%")
            total = conn.execute(select(func.count()).where(where)).scalar_one()
            distinct = conn.execute(select(func.count(func.distinct(e.id))).where(where)).scalar_one()
            counts = conn.execute(select(i.event_count).where(i.item_id.like(f"{prefix}-%"))).scalars()
            return total, distinct, list(counts)
    finally:
        db.dispose()


@pytest.mark.slow
def test_server_killed_mid_stream_loses_nothing_and_doubles_nothing(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    server = start_server(database_url, tmp_path / "server.log", NO_AUTH, port=port)
    client = Client(server.url, spool_dir=tmp_path / "spool", flush_interval=0.02, batch_size=100)
    prefix, progress = new_id("kill"), [0]
    producer = threading.Thread(target=emit_story, args=(client, prefix, progress))
    try:
        producer.start()
        wait_for(lambda: progress[0] >= ITEMS // 4)
        server.process.kill()  # SIGKILL: no graceful shutdown, requests in flight are cut
        server.process.wait()
        wait_for(lambda: progress[0] >= ITEMS // 2)
        started = time.monotonic()
        assert client.flush(timeout=5) is False  # the server is down: what is queued goes to the spool
        assert time.monotonic() - started < 2.5, "a flush during an outage answers at once"
        assert client.stats.spooled > 0 and list((tmp_path / "spool").glob("events-*.jsonl"))
        server = start_server(database_url, tmp_path / "server.log", NO_AUTH, port=port)
        producer.join(timeout=60)
        assert client.flush(timeout=30) is True
        stats = client.stats
    finally:
        client.close()
        stop_server(server)

    total, distinct, counts = stored_event_counts(database_url, prefix)
    assert total == distinct == ITEMS * EVENTS_PER_ITEM
    assert len(counts) == ITEMS and set(counts) == {EVENTS_PER_ITEM}
    assert stats.sent + stats.duplicate == ITEMS * EVENTS_PER_ITEM
    assert stats.retried > 0 and stats.spooled > 0
    assert (stats.dropped, stats.rejected, stats.queued) == (0, 0, 0)
    assert not list((tmp_path / "spool").glob("*.jsonl")), "a replayed spool is deleted"


def test_a_burst_faster_than_the_server_goes_through_the_spool_in_order(
    stub: StartStub, tmp_path: Path
) -> None:
    def slow(path: str, records: list[dict[str, Any]], n: int) -> Reply:
        time.sleep(0.05)  # 2,000 events/s at most: the burst below is 10x faster
        return accept_all(records)

    server = stub(slow)
    client = Client(server.url, spool_dir=tmp_path, max_queue=400, batch_size=100, flush_interval=0.01)
    for i in range(5000):
        client.enqueued("download", f"v-{i}")
        if i % 50 == 0:
            time.sleep(0.002)
    assert client.flush(timeout=30) is True
    received = [record["item_id"] for _, records in server.requests for record in records]
    assert received == [f"v-{i}" for i in range(5000)], "every event once, first in first out"
    assert client.stats.spooled > 0 and client.stats.dropped == 0
    client.close()


def test_flush_answers_for_earlier_events_while_other_threads_keep_emitting(stub: StartStub) -> None:
    def answer(path: str, records: list[dict[str, Any]], n: int) -> Reply:
        time.sleep(0.01)
        return accept_all(records)

    server = stub(answer)
    client = Client(server.url, spool_dir=False, flush_interval=0.05)
    stop = threading.Event()

    def noise() -> None:
        while not stop.is_set():
            client.enqueued("download", "noise")
            time.sleep(0.0002)

    emitter = threading.Thread(target=noise)
    emitter.start()
    try:
        time.sleep(0.1)
        for i in range(50):
            client.enqueued("process", f"mine-{i}")
        started = time.monotonic()
        assert client.flush(timeout=5) is True
        assert time.monotonic() - started < 2
        received = {r["item_id"] for _, records in list(server.requests) for r in records}
        assert {f"mine-{i}" for i in range(50)} <= received
    finally:
        stop.set()
        emitter.join()
        client.close()


def test_queue_full_without_a_spool_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    closed_port = free_port()
    client = Client(
        f"http://127.0.0.1:{closed_port}", spool_dir=False, max_queue=100, batch_size=50, flush_interval=0.01
    )
    started = time.perf_counter()
    for i in range(5000):
        client.enqueued("download", f"v-{i}")
    elapsed = time.perf_counter() - started
    assert client.flush(timeout=0.5) is False
    stats = client.stats
    assert elapsed < 1.0, f"5,000 enqueues took {elapsed:.2f}s: the worker was blocked"
    assert stats.dropped >= 4800 and stats.dropped + stats.queued == 5000
    assert stats.sent == stats.spooled == 0 and stats.retried > 0
    client.close(timeout=0.5)
    assert client.stats.dropped == 5000  # what was still in memory at close is counted too


def test_a_4xx_refusal_is_dropped_not_retried(stub: StartStub, caplog: pytest.LogCaptureFixture) -> None:
    server = stub(lambda path, records, n: (400, {"error": "malformed JSON", "field": "body"}, {}))
    client = Client(server.url, spool_dir=False, flush_interval=0.01)
    client.enqueued("download", "v-1")
    client.enqueued("download", "v-2")
    with caplog.at_level(logging.ERROR, "stagewatch.sdk"):
        assert client.flush(timeout=2) is True  # settled: there is nothing left to send
        time.sleep(0.2)
    assert len(server.requests) == 1
    assert (client.stats.rejected, client.stats.retried, client.stats.dropped) == (2, 0, 0)
    assert any("sdk.export.refused" in r.message and "malformed JSON" in r.message for r in caplog.records)
    client.close()


def test_rejected_events_are_counted_and_each_is_logged_once(
    client: Client, sdk_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    vid = new_id()
    with caplog.at_level(logging.WARNING, "stagewatch.sdk"):
        with client.stage("dowload", vid):  # a typo: not a stage of the pipeline
            pass
        client.item_created(vid)
        assert client.flush()
    rejected = [r.message for r in caplog.records if "sdk.export.rejected" in r.message]
    assert len(rejected) == 2 and all("field=stage" in m and "'dowload'" in m for m in rejected)
    assert (client.stats.rejected, client.stats.sent, client.stats.retried) == (2, 1, 0)
    assert get_item(sdk_server, vid)["runs"] == []


def test_throttling_is_retried_after_the_servers_retry_after(stub: StartStub) -> None:
    times: list[float] = []

    def answer(path: str, records: list[dict[str, Any]], n: int) -> Reply:
        times.append(time.monotonic())
        return (429, {"error": "slow down"}, {"retry-after": "0.4"}) if n == 1 else accept_all(records)

    server = stub(answer)
    client = Client(server.url, spool_dir=False, flush_interval=0.01)
    client.enqueued("download", "v-1")
    wait_for(lambda: len(times) == 2, timeout=5)
    assert times[1] - times[0] >= 0.39
    assert server.requests[0][1] == server.requests[1][1]  # the same batch, the same event ids
    assert client.flush() and client.stats.sent == 1 and client.stats.retried == 1
    client.close()


def test_an_oversized_batch_is_split_until_the_server_takes_it(stub: StartStub) -> None:
    def answer(path: str, records: list[dict[str, Any]], n: int) -> Reply:
        return (413, {"error": "too big"}, {}) if len(records) > 2 else accept_all(records)

    server = stub(answer)
    client = Client(server.url, spool_dir=False, flush_interval=5)
    for i in range(7):
        client.enqueued("download", f"v-{i}")
    assert client.flush()
    sent = [r["item_id"] for path, records in server.requests if len(records) <= 2 for r in records]
    assert sorted(sent) == [f"v-{i}" for i in range(7)] and client.stats.sent == 7
    client.close()


def test_logs_to_an_older_server_without_v1_logs_are_dropped_quietly(
    stub: StartStub, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(path: str, records: list[dict[str, Any]], n: int) -> Reply:
        return (404, {"detail": "Not Found"}, {}) if path == "/v1/logs" else accept_all(records)

    server = stub(answer)
    client = Client(server.url, spool_dir=False, flush_interval=0.01)
    with caplog.at_level(logging.WARNING, "stagewatch.sdk"):
        with client.stage("download", "v-1", guarded=False) as run:  # the stub knows no /v1/runs/begin
            run.log.warning("first line")
        assert client.flush()
        client.emit_log({"level": "error", "message": "second line"})
        client.enqueued("process", "v-1")
        assert client.flush()
    assert server.paths().count("/v1/logs") == 1
    assert sum(len(records) for path, records in server.requests if path == "/v1/events") == 3
    warnings = [r for r in caplog.records if r.name == "stagewatch.sdk"]
    assert len(warnings) == 1 and "sdk.export.unsupported channel=logs" in warnings[0].message
    assert client.stats.dropped == 0
    client.close()


def test_run_logs_reach_the_servers_log_search(client: Client, sdk_server: LiveServer) -> None:
    vid = new_id()
    with client.stage("download", vid) as run:
        run.log.info("fetching %s", "https://cdn.example.com/v.mp4", extra={"bytes": 1024})
        try:
            raise TimeoutError("read timed out")
        except TimeoutError:
            run.log.exception("download attempt failed")
    client.emit_log({"level": "warning", "message": "from a handler", "item_id": vid})
    assert client.flush()
    found = httpx.get(f"{sdk_server.url}/v1/logs", params={"item_id": vid}).json()
    lines = {line["message"]: line for line in found["logs"]}
    assert set(lines) == {
        "fetching https://cdn.example.com/v.mp4",
        "download attempt failed",
        "from a handler",
    }
    fetching = lines["fetching https://cdn.example.com/v.mp4"]
    assert (fetching["run_id"], fetching["trace_id"], fetching["level"]) == (run.run_id, run.trace_id, "info")
    assert "TimeoutError: read timed out" in lines["download attempt failed"]["exception"]


def test_events_left_without_close_are_sent_at_interpreter_exit(
    sdk_server: LiveServer, tmp_path: Path
) -> None:
    prefix = new_id("exit")
    script = (
        "import stagewatch\n"
        f"client = stagewatch.Client({sdk_server.url!r}, spool_dir={str(tmp_path)!r}, flush_interval=60)\n"
        f"for i in range(50):\n    client.item_created('{prefix}-%d' % i)\n"
        f"with client.stage('download', '{prefix}-0'):\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert get_item(sdk_server, f"{prefix}-49")["event_count"] == 1
    assert get_item(sdk_server, f"{prefix}-0")["status"] == "queued"  # download done, next stage due


def test_a_client_dropped_without_close_is_collected_and_still_delivers(
    sdk_server: LiveServer, tmp_path: Path
) -> None:
    before = set(threading.enumerate())
    client = Client(sdk_server.url, spool_dir=tmp_path, flush_interval=30, heartbeat_interval=0.05)
    vid = new_id()
    with client.stage("download", vid):
        time.sleep(0.1)
    started = set(threading.enumerate()) - before
    assert started, "the exporter and heartbeat threads run"
    collected = weakref.ref(client)
    del client
    gc.collect()
    assert collected() is None
    wait_for(lambda: not any(thread.is_alive() for thread in started), timeout=10)
    assert get_item(sdk_server, vid)["status"] == "queued"  # download succeeded: sent on the way out


def test_an_unusable_spool_directory_never_raises_into_the_worker(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    client = Client(f"http://127.0.0.1:{free_port()}", spool_dir=not_a_directory, timeout=0.5)
    with client.stage("download", "v-1") as run:
        run.progress(0.5)
    assert client.flush(timeout=2) is False
    assert client.stats.dropped == 3 and client.stats.spooled == 0
    client.close(timeout=1)


def test_a_flush_during_an_outage_leaves_nothing_in_memory(sdk_server: LiveServer, tmp_path: Path) -> None:
    vid = new_id()
    down = Client(f"http://127.0.0.1:{free_port()}", spool_dir=tmp_path, timeout=0.5)
    down.item_created(vid, source="webhook")
    assert down.flush(timeout=2) is False
    assert (down.stats.queued, down.stats.spooled, down.stats.dropped) == (0, 1, 0)
    down.close(timeout=1)
    assert down.stats.dropped == 0
    with Client(sdk_server.url, spool_dir=tmp_path) as up:  # the next process, the server back
        assert up.flush()
    assert get_item(sdk_server, vid)["source"] == "webhook"
