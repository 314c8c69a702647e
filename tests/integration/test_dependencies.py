"""Dependency health against real things on loopback: an HTTP health endpoint served by this test (then
stopped, then started again), Redis's TCP port and a closed one, the real PostgreSQL and a wrong port.
Probes, the prober's passes on SQLite and PostgreSQL, atomic reports, and the whole loop through a real
server process: ``GET /v1/dependencies``, ``/readyz``, workers' reports and ``stagewatch deps``."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from stagewatch.cli.main import cli
from stagewatch.domain.circuit import DOWN, UNKNOWN, UP, DependencySpec, Observation
from stagewatch.domain.pipeline import StagePolicy
from stagewatch.service.dependencies import report
from stagewatch.service.health_probes import probe_all, probe_pass
from stagewatch.store.dependencies import read_states
from stagewatch.store.engine import Database
from tests.conftest import PG_ADMIN, LiveServer, free_port, start_server, stop_server
from tests.conftest import _empty_postgres as empty_postgres

REDIS = "127.0.0.1:6379"


class HealthEndpoint:
    """A real HTTP server on loopback answering ``GET /health`` with ``status``; it can be stopped and
    started again on the same port, like a dependency that goes down and comes back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def start(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(endpoint.status)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def health() -> Iterator[HealthEndpoint]:
    endpoint = HealthEndpoint()
    endpoint.start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="session")
def redis() -> str:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        pytest.skip(f"no Redis at {REDIS}")
    return REDIS


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def probed(*specs: DependencySpec) -> dict[str, Observation]:
    return asyncio.run(probe_all(specs))


def http_spec(url: str, **settings: Any) -> DependencySpec:
    return DependencySpec("storage", "http", url, **{"timeout": 1.0, **settings})


def wait_for(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout}s")


# --------------------------------------------------------------------------------------------- probes


def test_http_probe_is_up_on_2xx_and_down_otherwise(health: HealthEndpoint) -> None:
    seen = probed(http_spec(health.url))["storage"]
    assert seen.ok and (seen.message or "").startswith("HTTP 200 in ")
    health.status = 503
    seen = probed(http_spec(health.url))["storage"]
    assert (seen.ok, seen.message) == (False, "HTTP 503 Service Unavailable")
    health.stop()
    seen = probed(http_spec(health.url))["storage"]
    assert not seen.ok and seen.message


def test_a_probe_that_gets_no_answer_fails_at_its_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/health"
        started = time.monotonic()
        seen = probed(http_spec(url, timeout=0.3))["storage"]
    assert (seen.ok, seen.message) == (False, "no answer within 0.3s")
    assert time.monotonic() - started < 2.0


def test_tcp_probe_connects_to_redis_and_fails_on_a_closed_port(redis: str) -> None:
    up = DependencySpec("redis", "tcp", redis)
    down = DependencySpec("nothing", "tcp", f"127.0.0.1:{closed_port()}")
    seen = probed(up, down)
    assert seen["redis"].ok and (seen["redis"].message or "").startswith("connected in ")
    assert not seen["nothing"].ok and seen["nothing"].message


@pytest.mark.postgres
def test_postgres_probe_runs_select_1_and_fails_on_a_wrong_port(postgres_url: str) -> None:
    wrong_port = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    no_database = PG_ADMIN.rsplit("/", 1)[0] + "/no_such_database_here"
    seen = probed(
        DependencySpec("pg", "postgres", PG_ADMIN),
        DependencySpec("wrong-port", "postgres", wrong_port),
        DependencySpec("no-db", "postgres", no_database),
    )
    assert seen["pg"].ok and (seen["pg"].message or "").startswith("SELECT 1 in ")
    assert not seen["wrong-port"].ok and seen["wrong-port"].message
    assert not seen["no-db"].ok and "no_such_database_here" in (seen["no-db"].message or "")


# ------------------------------------------------------------------------------------- the prober's pass


def states(db: Database, *names: str) -> dict[str, str]:
    with db.reader.connect() as conn:
        return {name: state.state for name, state in read_states(conn, names).items()}


def test_missing_rows_are_unknown_which_is_not_down(db: Database) -> None:
    with db.reader.connect() as conn:
        found = read_states(conn, StagePolicy("upload", depends_on=("storage", "redis")).depends_on)
    assert [(s.name, s.state, s.is_down) for s in found.values()] == [
        ("storage", UNKNOWN, False),
        ("redis", UNKNOWN, False),
    ]


def test_a_dependency_goes_down_and_recovers_through_half_open(db: Database, health: HealthEndpoint) -> None:
    spec = http_spec(health.url, interval=0.05, failure_threshold=2, recovery=0.4)
    specs = {"storage": spec}
    assert probe_pass(db, specs)["storage"].state == UP
    health.stop()
    time.sleep(0.06)
    assert probe_pass(db, specs)["storage"].state == UP  # one failure: still closed
    time.sleep(0.06)
    down = probe_pass(db, specs)["storage"]
    assert (down.state, down.failures) == (DOWN, 2)
    with db.reader.connect() as conn:
        assert read_states(conn, StagePolicy("upload", depends_on=("storage",)).depends_on)["storage"].is_down
    health.start()
    time.sleep(0.06)
    assert probe_pass(db, specs) == {}  # open: nothing is probed before `recovery` has passed
    assert states(db, "storage") == {"storage": DOWN}
    time.sleep(0.4)
    up = probe_pass(db, specs)["storage"]  # half-open, probed, closed
    assert (up.state, up.failures, up.is_down) == (UP, 0, False)
    assert up.since >= down.since + 0.4


def test_event_dependencies_are_not_probed_but_close_on_trial(db: Database) -> None:
    spec = DependencySpec("instagram-api", failure_threshold=1, recovery=0.2)
    specs = {"instagram-api": spec}
    assert probe_pass(db, specs) == {}
    report(db, specs, "instagram-api", Observation(False, time.time(), "rate limited"))
    assert states(db, "instagram-api") == {"instagram-api": DOWN}
    time.sleep(0.25)
    trial = probe_pass(db, specs)["instagram-api"]
    assert (trial.state, trial.failures) == (UP, 0)


def test_reports_from_many_threads_are_never_lost(db: Database) -> None:
    spec = DependencySpec("queue", failure_threshold=1000)
    specs = {"queue": spec}

    def fail_once(_: int) -> None:
        report(db, specs, "queue", Observation(False, time.time(), "timeout"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fail_once, range(80)))
    with db.reader.connect() as conn:
        assert read_states(conn, ["queue"])["queue"].failures == 80


# ------------------------------------------------------------------------------------- through a server


def server_config(health: HealthEndpoint, redis: str) -> str:
    return f"""
[pipelines.p]
[[pipelines.p.stages]]
name = "upload"
depends_on = ["storage", "redis", "instagram-api", "queue"]

[dependencies.storage]
kind = "http"
url = "{health.url}"
interval = 0.1
timeout = 0.5
failure_threshold = 2
recovery = 0.5
[dependencies.redis]
kind = "tcp"
address = "{redis}"
interval = 0.2
[dependencies.cache]
kind = "tcp"
address = "127.0.0.1:{closed_port()}"
interval = 0.2
failure_threshold = 1
recovery = 60
[dependencies.postgres]
kind = "postgres"
dsn = "{PG_ADMIN}"
interval = 0.2
[dependencies.replica]
kind = "postgres"
dsn = "postgresql://postgres:secret@127.0.0.1:{closed_port()}/postgres"
interval = 0.2
failure_threshold = 1
recovery = 60
[dependencies.instagram-api]
kind = "event"
failure_threshold = 2
recovery = 1
"""


@dataclass
class Served:
    """A real server process whose config declares, among others, ``health`` as its storage."""

    server: LiveServer
    health: HealthEndpoint


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server per database for this module (starting one takes seconds); each test leaves the
    dependencies it touches as it found them, or waits for the state it needs."""
    redis = request.getfixturevalue("redis")
    workdir = tmp_path_factory.mktemp(f"deps-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'stagewatch.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
    health = HealthEndpoint()
    health.start()
    config = workdir / "stagewatch.toml"
    config.write_text(server_config(health, redis), encoding="utf-8")
    live = start_server(url, workdir / "server.log", "--config", str(config))
    yield Served(live, health)
    stop_server(live)
    health.stop()


@pytest.fixture
def server(served: Served) -> LiveServer:
    return served.server


def listed(server: LiveServer) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{server.url}/v1/dependencies", timeout=10)
    assert answer.status_code == 200, answer.text
    return {entry["name"]: entry for entry in answer.json()["dependencies"]}


def state_of(server: LiveServer, name: str) -> str:
    return str(listed(server)[name]["state"])


def report_health(server: LiveServer, name: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/dependencies/{name}/health", json=body, timeout=10)


def test_dependencies_are_probed_listed_and_reported_by_readyz(server: LiveServer) -> None:
    expected = {"storage": UP, "redis": UP, "cache": DOWN, "postgres": UP, "replica": DOWN, "queue": UNKNOWN}
    wait_for(lambda: {n: listed(server)[n]["state"] for n in expected} == expected, what="first probes")
    deps = listed(server)
    assert deps["storage"]["kind"] == "http" and deps["storage"]["needed_by"] == ["p.upload"]
    assert deps["replica"]["target"].startswith("postgresql://postgres:***@127.0.0.1:")  # no password
    assert deps["cache"]["down"] is True and deps["cache"]["failures"] == 1 and deps["cache"]["message"]
    assert deps["queue"]["kind"] == "event"  # needed by a stage, never declared
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok" and body["checks"]["database"]["ok"] is True
    assert body["dependencies"]["down"] == ["cache", "replica"]
    assert "not fatal" in body["dependencies"]["note"]
    assert body["dependencies"]["states"]["storage"]["state"] == UP


def test_an_http_dependency_goes_down_and_recovers(served: Served) -> None:
    server, health = served.server, served.health
    wait_for(lambda: state_of(server, "storage") == UP, what="storage up")
    health.stop()
    try:
        wait_for(lambda: state_of(server, "storage") == DOWN, what="storage down")
        down = listed(server)["storage"]
        assert down["since"] and down["failures"] >= 2 and down["message"]
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200 and "storage" in ready.json()["dependencies"]["down"]
    finally:
        health.start()
    wait_for(lambda: state_of(server, "storage") == UP, what="storage back up")
    assert "storage" not in httpx.get(f"{server.url}/readyz", timeout=10).json()["dependencies"]["down"]


def begin(server: LiveServer, item_id: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.url}/v1/runs/begin", json={"stage": "upload", "item_id": item_id}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_begin_waits_while_a_needed_dependency_is_down_and_runs_once_it_recovers(
    served: Served, request: pytest.FixtureRequest
) -> None:
    server, health = served.server, served.health
    item = f"vid-{request.node.callspec.id}-{time.time_ns()}"
    wait_for(lambda: state_of(server, "storage") == UP, what="storage up")
    health.stop()
    try:
        wait_for(lambda: state_of(server, "storage") == DOWN, what="storage down")
        waiting = begin(server, item)
        assert waiting["decision"] == "wait"
        assert waiting["reason"].startswith("dependency storage down since ")
        assert waiting["retry_after"] > 0
    finally:
        health.start()
    wait_for(lambda: state_of(server, "storage") == UP, what="storage back up")
    assert begin(server, item)["decision"] == "run"


def test_worker_reports_open_the_circuit_which_closes_on_trial(server: LiveServer) -> None:
    first = report_health(server, "instagram-api", {"ok": False, "message": "rate limited"})
    assert first.status_code == 200, first.text
    assert (first.json()["state"], first.json()["failures"]) == (UNKNOWN, 1)
    second = report_health(server, "instagram-api", {"ok": False, "message": "rate limited"}).json()
    assert (second["state"], second["down"], second["message"]) == (DOWN, True, "rate limited")
    assert listed(server)["instagram-api"]["state"] == DOWN
    wait_for(lambda: state_of(server, "instagram-api") == UP, what="trial after recovery")
    assert "on trial" in listed(server)["instagram-api"]["message"]
    again = report_health(server, "instagram-api", {"ok": False, "message": "still limited"}).json()
    assert again["state"] == DOWN  # one failure on trial reopens it
    closed = report_health(server, "instagram-api", {"ok": True}).json()
    assert (closed["state"], closed["failures"]) == (UP, 0)


def test_reports_on_probed_and_unknown_dependencies(server: LiveServer) -> None:
    answer = report_health(server, "redis", {"ok": False, "message": "OOM command not allowed"})
    assert answer.status_code == 200 and answer.json()["failures"] >= 1
    missing = report_health(server, "redsi", {"ok": False})
    assert missing.status_code == 404
    assert "no dependency 'redsi'" in missing.json()["error"] and "redis" in missing.json()["error"]
    assert report_health(server, "redis", {"ok": "yes"}).status_code == 422
    assert report_health(server, "redis", {"message": "no verdict"}).status_code == 422


def test_the_deps_command_lists_the_circuits(server: LiveServer) -> None:
    wait_for(lambda: state_of(server, "cache") == DOWN, what="cache down")
    runner = CliRunner()
    as_json = runner.invoke(cli, ["deps", "--url", server.url, "--json"])
    assert as_json.exit_code == 0, as_json.output
    names = [entry["name"] for entry in json.loads(as_json.output)["dependencies"]]
    assert names == sorted(["storage", "redis", "cache", "postgres", "replica", "instagram-api", "queue"])
    table = runner.invoke(cli, ["deps", "--url", server.url])
    assert table.exit_code == 0, table.output
    rows = {line.split()[0]: line for line in table.output.splitlines() if line.strip()}
    assert "DOWN" in rows["cache"] and "tcp" in rows["cache"]
    assert "unknown" in rows["queue"] and "p.upload" in rows["queue"]


def test_the_deps_command_says_when_the_server_is_unreachable() -> None:
    result = CliRunner().invoke(cli, ["deps", "--url", f"http://127.0.0.1:{closed_port()}"])
    assert result.exit_code == 1
    assert "cannot reach the stagewatch server" in result.output
