"""Dependency health gates ``begin``, end to end on a real server: a dependency going down makes the
stages that need it wait (naming it and since when), and its recovery lets work resume. Once with a
worker's health reports, once with the server's own HTTP probe of a real endpoint that stops and starts."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server

CONFIG = """
[dependencies.instagram-api]
kind = "event"
failure_threshold = 2
recovery = "1s"

[dependencies.storage]
kind = "http"
url = "http://127.0.0.1:{port}/health"
interval = "0.2s"
timeout = "0.5s"
failure_threshold = 1
recovery = "0.5s"

[pipelines.p]
[[pipelines.p.stages]]
name = "publish"
depends_on = ["instagram-api"]
[[pipelines.p.stages]]
name = "download"
depends_on = ["storage"]
"""


class Endpoint:
    """A real health endpoint on loopback that can go down (it answers 503, as a failing service's
    health check does) and come back (200). It keeps its socket: re-binding a port is itself flaky."""

    def __init__(self) -> None:
        self.healthy = threading.Event()
        self.healthy.set()
        health = self.healthy

        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if health.is_set() else 503)
                self.end_headers()
                self.wfile.write(b"ok" if health.is_set() else b"storage unavailable")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def up(self) -> None:
        self.healthy.set()

    def down(self) -> None:
        self.healthy.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    health = Endpoint()
    yield health
    health.close()


@pytest.fixture
def server(database_url: str, tmp_path: Path, endpoint: Endpoint) -> Iterator[LiveServer]:
    config = tmp_path / "stagewatch.toml"
    config.write_text(CONFIG.format(port=endpoint.port))
    live = start_server(database_url, tmp_path / "server.log", "--config", str(config))
    yield live
    stop_server(live)


def _begin(server: LiveServer, stage: str, item: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.post(
        f"{server.url}/v1/runs/begin", json={"stage": stage, "item_id": item}
    ).json()
    return answer


def _until(check: Any, server: LiveServer, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            states = httpx.get(f"{server.url}/v1/dependencies").text
            raise AssertionError(
                f"timed out; dependencies: {states}; server log: {server.log_path.read_text()[-2000:]}"
            )
        time.sleep(0.1)
    return result


def test_a_reported_outage_makes_begin_wait_and_recovery_lets_work_resume(server: LiveServer) -> None:
    assert _begin(server, "publish", "a1")["decision"] == "run"
    report = f"{server.url}/v1/dependencies/instagram-api/health"
    for _ in range(2):
        assert httpx.post(
            report, json={"ok": False, "message": "HTTP 503 from graph.facebook.com"}
        ).is_success
    waiting = _begin(server, "publish", "a2")
    assert waiting["decision"] == "wait"
    assert waiting["reason"].startswith("dependency instagram-api down since ")
    assert "503" in waiting["reason"] and waiting["retry_after"] > 0
    assert _begin(server, "download", "a2")["decision"] == "run", "a stage that does not need it runs"
    item = httpx.get(f"{server.url}/v1/items/a2").json()
    time.sleep(1.1)  # past the recovery time: the next report closes the circuit
    assert httpx.post(report, json={"ok": True}).is_success
    assert _begin(server, "publish", "a2")["decision"] == "run"
    assert item["status"] in ("waiting", "running")


def test_a_probed_endpoint_going_down_and_up_gates_begin(server: LiveServer, endpoint: Endpoint) -> None:
    assert _begin(server, "download", "b1")["decision"] == "run"
    endpoint.down()
    # A new video each time: one begun before the probe noticed would hold a lease, and be a duplicate.
    fresh = (f"b{n}" for n in itertools.count(2))
    waiting = _until(
        lambda: (a := _begin(server, "download", next(fresh)))["decision"] == "wait" and a, server
    )
    assert waiting["reason"].startswith("dependency storage down since ")
    ready = httpx.get(f"{server.url}/readyz").json()
    assert "storage" in str(ready)
    endpoint.up()
    _until(lambda: _begin(server, "download", next(fresh))["decision"] == "run", server)
