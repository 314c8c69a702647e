"""Fixtures for the SDK tests: one real ``stagewatch serve`` on SQLite shared by the session (each test
uses its own item ids), a client per test with a private spool directory, and a stub HTTP server for
answers the real server cannot be made to give (400, 404, 413, 503 with Retry-After)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagewatch import Client
from tests.conftest import LiveServer, start_server, stop_server

NO_AUTH = "--no-auth"
"""The SDK's tests send no API token: their servers run on loopback with auth off."""


@pytest.fixture(scope="session")
def sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("sdk-server")
    server = start_server(f"sqlite:///{tmp / 'stagewatch.db'}", tmp / "server.log", NO_AUTH)
    yield server
    stop_server(server)


@pytest.fixture
def client(sdk_server: LiveServer, tmp_path: Path) -> Iterator[Client]:
    """An unguarded client: the tests using it are about what runs report. The control plane's
    decisions (which change statuses and attempts) have their own tests in test_guarded*.py."""
    sdk = Client(
        sdk_server.url,
        spool_dir=tmp_path / "spool",
        flush_interval=0.02,
        heartbeat_interval=0.2,
        guarded=False,
    )
    yield sdk
    sdk.close()


def new_id(prefix: str = "v") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def get_item(server: LiveServer, item_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/items/{item_id}", params={"history": 1})
    assert response.status_code == 200, response.text
    item: dict[str, Any] = response.json()
    return item


# --- a stub server --------------------------------------------------------------------------------

Reply = tuple[int, dict[str, Any], dict[str, str]]


@dataclass
class Stub:
    """A real HTTP server on loopback whose answers a test scripts; it records every request."""

    url: str
    requests: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


def accept_all(records: list[dict[str, Any]]) -> Reply:
    return 200, {"accepted": len(records), "duplicate": 0, "rejected": 0, "errors": []}, {}


@pytest.fixture
def stub() -> Iterator[Callable[[Callable[[str, list[dict[str, Any]], int], Reply]], Stub]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[str, list[dict[str, Any]], int], Reply]) -> Stub:
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                records = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with lock:
                    recorder.requests.append((self.path, records))
                    status, body, headers = answer(self.path, records, len(recorder.requests))
                payload = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        recorder = Stub(f"http://127.0.0.1:{server.server_address[1]}")
        return recorder

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
