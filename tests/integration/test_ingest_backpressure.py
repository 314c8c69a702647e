"""A server that is behind turns senders away (503, ``Retry-After``) instead of queueing without bound,
and nothing is lost: what was accepted is written, and what was turned away lands when sent again.

A real server process on SQLite and on PostgreSQL, with ``STAGEWATCH_MAX_INGEST_BACKLOG`` tiny. The
writer is held up by a real lock on the database, taken from another connection: a SQLite write
transaction, or a PostgreSQL lock on the tables ``events`` and ``logs``.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from stagewatch import Client
from stagewatch.server_process import launch
from tests.conftest import LiveServer, stop_server

BACKLOG_LIMIT = 10
T0 = float(int(time.time()) - 3600)


@pytest.fixture
def busy_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    server = launch(
        database_url, tmp_path / "server.log", extra=("--no-auth",),
        env_overrides={"STAGEWATCH_MAX_INGEST_BACKLOG": str(BACKLOG_LIMIT)},
    )  # fmt: skip
    server.wait_healthy(timeout=30)
    yield server
    stop_server(server)


@contextmanager
def writer_held_up(database_url: str) -> Iterator[None]:
    """Hold the lock the server's writer needs to store events, until the block ends."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as pg:
        pg.execute("LOCK TABLE events, logs IN EXCLUSIVE MODE")
        yield
        pg.rollback()


def batch(prefix: str, size: int) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}-e{i}", "type": "item.created", "item_id": f"{prefix}-v{i}", "time": T0 + i}
        for i in range(size)
    ]


def post(server: LiveServer, events: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/events", json=events, timeout=60)


def in_background(server: LiveServer, events: list[dict[str, Any]]) -> tuple[threading.Thread, list[Any]]:
    """POST ``events`` on a thread (it waits while the writer is held up); the answer lands in the list."""
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(post(server, events)), daemon=True)
    thread.start()
    return thread, answers


def wait_for_backlog(server: LiveServer, events: int) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ingest: dict[str, Any] = httpx.get(f"{server.url}/readyz", timeout=10).json()["ingest"]
        if ingest["events"]["backlog"] >= events:
            return ingest
        time.sleep(0.05)
    raise AssertionError(f"the backlog never reached {events} events")


def wait_for_refusal(server: LiveServer) -> None:
    """Until the server has turned a sender away (it logs each refusal)."""
    deadline = time.monotonic() + 30
    while "ingest.overloaded" not in server.log_path.read_text():
        assert time.monotonic() < deadline, "the server never turned a sender away"
        time.sleep(0.05)


def stored(server: LiveServer, item_id: str) -> bool:
    return httpx.get(f"{server.url}/v1/items/{item_id}", timeout=10).status_code == 200


def test_a_full_backlog_turns_a_batch_away_and_nothing_is_lost(
    busy_server: LiveServer, database_url: str
) -> None:
    ns = uuid.uuid4().hex[:8]
    waiting, turned_away = batch(f"{ns}-a", 20), batch(f"{ns}-b", 5)
    with writer_held_up(database_url):
        thread, answers = in_background(busy_server, waiting)
        ingest = wait_for_backlog(busy_server, 20)
        limit = BACKLOG_LIMIT
        assert ingest == {"events": {"backlog": 20, "limit": limit}, "logs": {"backlog": 0, "limit": limit}}

        refused = post(busy_server, turned_away)
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert "20 events are waiting" in error and "the limit is 10" in error and "nothing" in error

        overview = httpx.get(f"{busy_server.url}/", timeout=30).text
        assert "ingest behind" in overview and "20 events waiting to be written (limit 10)" in overview
    thread.join(30)
    assert answers[0].status_code == 200 and answers[0].json()["accepted"] == 20, "the waiting batch lands"
    assert not stored(busy_server, f"{ns}-b-v0"), "a batch turned away stores nothing"

    again = post(busy_server, turned_away)
    assert again.status_code == 200 and again.json()["accepted"] == 5
    assert all(stored(busy_server, e["item_id"]) for e in waiting + turned_away)
    assert httpx.get(f"{busy_server.url}/readyz", timeout=10).json()["ingest"]["events"]["backlog"] == 0
    assert "ingest.overloaded backlog=20 limit=10" in busy_server.log_path.read_text()


def test_log_lines_have_a_backlog_of_their_own(busy_server: LiveServer, database_url: str) -> None:
    ns = uuid.uuid4().hex[:8]
    lines = [{"id": f"{ns}-l{i}", "message": f"line {i}", "time": T0 + i} for i in range(12)]
    with writer_held_up(database_url):
        answers: list[httpx.Response] = []
        url = f"{busy_server.url}/v1/logs"
        thread = threading.Thread(target=lambda: answers.append(httpx.post(url, json=lines, timeout=60)))
        thread.start()
        deadline = time.monotonic() + 20
        while httpx.get(f"{busy_server.url}/readyz", timeout=10).json()["ingest"]["logs"]["backlog"] < 12:
            assert time.monotonic() < deadline, "the log backlog never filled"
            time.sleep(0.05)
        refused = httpx.post(url, json=lines[:1], timeout=10)
        assert refused.status_code == 503 and "12 log lines are waiting" in refused.json()["error"]
        ingest = httpx.get(f"{busy_server.url}/readyz", timeout=10).json()["ingest"]
        assert ingest["events"]["backlog"] == 0, "log lines waiting do not count against events"
    thread.join(30)
    assert answers[0].json()["accepted"] == 12


def test_send_events_waits_as_the_busy_server_says_and_delivers_everything(
    busy_server: LiveServer, database_url: str, tmp_path: Path
) -> None:
    ns = uuid.uuid4().hex[:8]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in batch(f"{ns}-cli", 30)))
    with writer_held_up(database_url):
        thread, answers = in_background(busy_server, batch(f"{ns}-a", 20))
        wait_for_backlog(busy_server, 20)
        command = [sys.executable, "-m", "stagewatch", "send-events", str(path), "--url", busy_server.url]
        cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_refusal(busy_server)
    out, err = cli.communicate(timeout=60)
    thread.join(30)
    assert cli.returncode == 0, err
    assert "retrying in 1s" in err and "the server is behind" in err
    assert "30 events: 30 accepted, 0 duplicate, 0 rejected" in out
    assert answers[0].json()["accepted"] == 20


def test_the_sdk_keeps_what_a_busy_server_turned_away_and_delivers_it(
    busy_server: LiveServer, database_url: str
) -> None:
    ns = uuid.uuid4().hex[:8]
    client = Client(busy_server.url, spool_dir=False, flush_interval=0.01)
    try:
        with writer_held_up(database_url):
            thread, _ = in_background(busy_server, batch(f"{ns}-a", 20))
            wait_for_backlog(busy_server, 20)
            for i in range(5):
                client.enqueued("download", f"{ns}-sdk-{i}")
            wait_for_refusal(busy_server)
        thread.join(30)
        assert client.flush(timeout=30), "everything the SDK held was delivered"
    finally:
        client.close()
    assert client.stats.sent == 5 and client.stats.retried >= 1
    assert all(stored(busy_server, f"{ns}-sdk-{i}") for i in range(5))
