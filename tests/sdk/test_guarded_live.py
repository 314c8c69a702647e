"""Guarded runs against a real ``stagewatch serve`` (SQLite, loopback): begin → run → complete as the
server records it, a duplicate skipped, a permanent error dead-lettered, and an operator's cancel that
reaches a running stage at its next heartbeat and kills the child process it started."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import stagewatch
from stagewatch import AsyncClient, Client
from tests.conftest import LiveServer, start_server, stop_server
from tests.sdk.conftest import NO_AUTH, get_item, new_id

# heartbeat_timeout 0.9 s: the server asks for a heartbeat every 0.3 s, so a cancel arrives that fast.
CONFIG = """
[pipelines.live]
[[pipelines.live.stages]]
name = "encode"
max_attempts = 2
timeout = "60s"
heartbeat_timeout = 0.9
backoff_initial = "1s"
backoff_max = "1s"
permanent_errors = ["ValueError"]
"""
BEAT = 0.3
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("guarded-server")
    config = tmp / "stagewatch.toml"
    config.write_text(CONFIG)
    live = start_server(
        f"sqlite:///{tmp / 'stagewatch.db'}", tmp / "server.log", NO_AUTH, "--config", str(config)
    )
    yield live
    stop_server(live)


@pytest.fixture
def client(server: LiveServer, tmp_path: Path) -> Iterator[Client]:
    sdk = Client(
        server.url, pipeline="live", spool_dir=tmp_path / "spool", flush_interval=0.02, heartbeat_interval=30
    )
    yield sdk
    sdk.close()


def run_of(server: LiveServer, item_id: str) -> dict[str, Any]:
    (run,) = get_item(server, item_id)["runs"]
    found: dict[str, Any] = run
    return found


def cancel(server: LiveServer, item_id: str, reason: str) -> None:
    response = httpx.post(f"{server.url}/v1/items/{item_id}/cancel", json={"reason": reason})
    assert response.status_code == 200, response.text


def test_begin_run_complete_and_a_duplicate_is_skipped(client: Client, server: LiveServer) -> None:
    vid = new_id()
    with client.stage("encode", vid, payload={"file": f"{vid}.mp4"}) as run:
        assert (run.run_id, run.attempt, run.guarded) == (f"{vid}/encode/1", 1, True)
        assert run.deadline is not None
        run.progress(0.5, "half way")
    assert client.flush()
    stored = run_of(server, vid)
    assert (stored["run_id"], stored["status"], stored["trace_id"]) == (run.run_id, "succeeded", run.trace_id)
    with pytest.raises(stagewatch.Skip, match="already succeeded"), client.stage("encode", vid):
        pytest.fail("a duplicate must not run")


def test_a_permanent_error_is_dead_lettered_and_the_next_delivery_is_refused(
    client: Client, server: LiveServer
) -> None:
    vid = new_id()
    with pytest.raises(ValueError), client.stage("encode", vid, payload={"file": "x.mp4"}):
        raise ValueError("moov atom not found")
    with pytest.raises(stagewatch.DeadLettered, match="moov atom not found"), client.stage("encode", vid):
        pytest.fail("a dead-lettered item must not run")
    item = get_item(server, vid)
    assert item["status"] == "dead_lettered" and item["runs"][0]["error"]["type"] == "ValueError"


def test_a_cancel_stops_the_running_stage_and_kills_its_child_process(
    client: Client, server: LiveServer
) -> None:
    vid = new_id()
    with pytest.raises(stagewatch.Cancelled) as caught, client.stage("encode", vid) as run:
        child = run.subprocess(SLEEPER)
        try:
            cancel(server, vid, "customer withdrew the video")
            asked = time.monotonic()
            while not run.stopped:
                assert time.monotonic() - asked < BEAT + 1.0, "the stop did not arrive at the next heartbeat"
                time.sleep(0.01)
            assert child.wait(timeout=5) == -signal.SIGTERM
        finally:
            if child.poll() is None:
                child.kill()
        run.check()
    assert "customer withdrew the video" in str(caught.value)
    assert client.flush()
    assert run_of(server, vid)["status"] == "cancelled"
    with pytest.raises(stagewatch.Aborted, match="customer withdrew"), client.stage("encode", vid):
        pytest.fail("a cancelled item must not run")


def test_a_cancel_reaches_an_asyncio_stage(server: LiveServer, tmp_path: Path) -> None:
    vid = new_id()

    async def main() -> str:
        async with AsyncClient(
            server.url, pipeline="live", spool_dir=tmp_path, heartbeat_interval=30
        ) as client:
            try:
                async with client.stage("encode", vid):
                    await asyncio.to_thread(cancel, server, vid, "operator stop")
                    await asyncio.sleep(30)
            except stagewatch.Cancelled as exc:
                return str(exc)
        return "not cancelled"

    started = time.monotonic()
    assert "operator stop" in asyncio.run(main())
    assert time.monotonic() - started < 5
