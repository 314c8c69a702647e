"""The dashboard of a laptop server run with ``--no-auth``: no login, everyone is ``anonymous`` and may
act, yet a form still needs this browser's CSRF token. And a live stream never holds up a server that
is told to stop."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server
from tests.web.conftest import screenshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("web-no-auth")
    server = start_server(f"sqlite:///{workdir / 'stagewatch.db'}", workdir / "server.log")
    yield server
    stop_server(server)


def _new_video(server: LiveServer) -> str:
    item_id = f"laptop-{uuid.uuid4().hex[:6]}"
    event = {"id": f"e-{uuid.uuid4()}", "type": "item.created", "item_id": item_id, "account": "acct-1"}
    assert httpx.post(f"{server.url}/v1/events", json=[event]).status_code == 200
    return item_id


def test_without_auth_anyone_on_the_machine_can_look_and_act(open_server: LiveServer, new_page: Any) -> None:
    item_id = _new_video(open_server)
    page = new_page()
    page.goto(f"{open_server.url}/")
    assert "anonymous" in page.locator("header .who").inner_text()
    assert "auth off" in page.locator("header .who").inner_text()
    assert [h.inner_text() for h in page.locator("li.stage h3 a").all()][:2] == ["webhook", "download"]
    screenshot(page, "overview-empty-no-auth")
    page.goto(f"{open_server.url}/videos/{item_id}")
    page.locator("#cancel-reason").fill("testing on my laptop")
    page.get_by_role("button", name="Cancel video").click()
    assert page.locator("#video-head [data-status]").get_attribute("data-status") == "cancelled"
    audit = page.locator("section[aria-labelledby=audit-h]").inner_text()
    assert "anonymous" in audit and "testing on my laptop" in audit


def test_without_auth_a_form_still_needs_this_browser_s_csrf_token(open_server: LiveServer) -> None:
    item_id = _new_video(open_server)
    form = {"item_id": item_id, "reason": "from another site"}
    assert httpx.post(f"{open_server.url}/actions/cancel", data=form).status_code == 403
    assert httpx.post(f"{open_server.url}/actions/cancel", data={**form, "csrf": "x"}).status_code == 403
    assert httpx.get(f"{open_server.url}/v1/items/{item_id}").json()["status"] != "cancelled"


def test_a_server_with_a_live_stream_open_stops_at_once(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'stagewatch.db'}", tmp_path / "server.log")
    received: list[str] = []

    def listen() -> None:
        try:
            with httpx.stream("GET", f"{server.url}/live/overview", timeout=30) as stream:
                for line in stream.iter_lines():
                    received.append(line)
        except httpx.HTTPError:
            pass

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    deadline = time.monotonic() + 10
    while not any(line.startswith("event: overview-stages") for line in received):
        assert time.monotonic() < deadline, f"no live event: {received}"
        time.sleep(0.05)
    started = time.monotonic()
    server.stop(timeout=10)
    took = time.monotonic() - started
    # uvicorn re-raises the SIGTERM once it has shut down in order: -15, never -9 (killed after a timeout).
    assert server.process.returncode in (0, -15) and took < 5, f"stopped in {took:.1f}s"
    assert "Application shutdown complete" in server.log()
    listener.join(5)
