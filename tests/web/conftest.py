"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real server process
on a database the demo simulation filled (run once per session; each module's server gets a copy).

Chromium is ``/usr/bin/chromium`` (``scripts/test.sh`` installs it). Without it the tests skip, except
in CI (``CI=true``), where its absence fails them. Screenshots of every page land in
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stagewatch.demo.faults import Fault, plan_faults
from stagewatch.demo.world import video_id
from tests.conftest import LiveServer, api_token, free_port, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
SEED, VIDEOS = 7, 30
DEMO_TIMEOUT = 150
STAGES = ("webhook", "download", "enqueue", "process", "publish")


def _need_browser() -> Any:
    """The Playwright module, or a skip (a failure in CI) saying what is missing."""
    missing = None
    try:
        from playwright import sync_api
    except ImportError:
        missing, sync_api = "the playwright package (pip install -e '.[dev]')", None
    if missing is None and not CHROMIUM.exists():
        missing = f"{CHROMIUM} (apt-get install -y chromium; scripts/test.sh does it)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests need {missing}")
        pytest.skip(f"the browser tests need {missing}")
    return sync_api


def expect(target: Any) -> Any:
    """Playwright's ``expect`` (it polls without evaluating strings, which the dashboard's CSP forbids)."""
    return _need_browser().expect(target)


def video_with(fault: Fault) -> str:
    """The id of the demo's video that the fault plan broke that way."""
    return video_id(SEED, plan_faults(VIDEOS, SEED).videos_with(fault)[0])


@pytest.fixture(scope="session")
def demo_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file filled by ``stagewatch demo`` (every fault of the plan, 30 videos), made once."""
    _need_browser()
    path = tmp_path_factory.mktemp("web-demo") / "demo.db"
    env = {name: value for name, value in os.environ.items() if not name.startswith("STAGEWATCH_")}
    command = [sys.executable, "-m", "stagewatch", "demo", "--videos", str(VIDEOS), "--seed", str(SEED),
               "--speed", "10", "--exit-when-done", "--no-keep-serving", "--port", str(free_port()),
               "--db", str(path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=DEMO_TIMEOUT, env=env)
    assert done.returncode == 0, f"the demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return path


@dataclass
class Dashboard:
    """A server for one test module, with a token per role."""

    server: LiveServer
    reader: str
    operator: str
    ingest: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def dashboard(demo_database: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    workdir = tmp_path_factory.mktemp("web-server")
    db_path = workdir / "stagewatch.db"
    shutil.copy(demo_database, db_path)
    url = f"sqlite:///{db_path}"
    tokens = Dashboard(
        server=start_server(url, workdir / "server.log", auth=True),
        reader=api_token(url, "web-reader", "read"),
        operator=api_token(url, "web-operator", "operate"),
        ingest=api_token(url, "web-worker", "ingest"),
    )
    yield tokens
    stop_server(tokens.server)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = _need_browser()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """``new_page(width=1280)``: a page in a fresh browser context (its own cookies)."""
    contexts: list[Any] = []

    def make(width: int = 1280, height: int = 900) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def log_in(page: Any, base: str, token: str) -> Any:
    """Log in through the form, as a person would; the page ends on the overview."""
    page.goto(f"{base}/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")
    return page


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
