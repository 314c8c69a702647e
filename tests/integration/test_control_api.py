"""The control plane over real HTTP against real server processes: the decision API and its errors,
and operator commands through the CLI (test_control_processes.py has the multi-process tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from stagewatch.cli.main import cli
from tests.conftest import LiveServer, start_server, stop_server

CONFIG = """
[pipelines.guarded]
description = "a test pipeline with limits"
[[pipelines.guarded.stages]]
name = "work"
max_attempts = 3
timeout = "60s"
heartbeat_timeout = "{heartbeat_timeout}"
backoff_initial = "1s"
backoff_max = "2s"
permanent_errors = ["ValueError"]
concurrency = [{{ key = "{{account}}", limit = 3 }}]
"""


def _config(tmp_path: Path, heartbeat_timeout: str = "30s") -> Path:
    path = tmp_path / "stagewatch.toml"
    path.write_text(CONFIG.format(heartbeat_timeout=heartbeat_timeout))
    return path


@pytest.fixture(scope="module")
def guarded_server(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One server per database for this module; each test uses item ids of its own."""
    workdir = tmp_path_factory.mktemp("guarded")
    server = start_server(module_database_url, workdir / "server.log", "--config", str(_config(workdir)))
    yield server
    stop_server(server)


def _begin(http: httpx.Client, base: str, item: str, **body: Any) -> dict[str, Any]:
    response = http.post(f"{base}/v1/runs/begin", json={"stage": "work", "item_id": item, **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _complete(http: httpx.Client, base: str, run_id: str, **body: Any) -> dict[str, Any]:
    response = http.post(f"{base}/v1/runs/{run_id}/complete", json={"outcome": "succeeded", **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_begin_heartbeat_complete_over_http(guarded_server: LiveServer) -> None:
    base = guarded_server.url
    with httpx.Client() as http:
        run = _begin(http, base, "http-1", account="a1", payload={"file": "v1.mp4"}, worker="w-1")
        assert run["decision"] == "run" and run["run_id"] == "http-1/work/1" and run["attempt"] == 1
        assert run["heartbeat_timeout"] == 30 and run["heartbeat_interval"] == 10 and run["deadline_in"] == 60
        beat = http.post(
            f"{base}/v1/runs/heartbeat", json={"runs": [{"run_id": "http-1/work/1", "progress": 0.5}]}
        )
        assert beat.json() == {"runs": [{"run_id": "http-1/work/1", "action": "continue", "reason": None}]}
        assert _begin(http, base, "http-1")["decision"] == "skip"
        failed = _complete(http, base, "http-1/work/1", outcome="failed",
                           error={"type": "ValueError", "message": "bad codec"})  # fmt: skip
        assert failed["next"] == "dead_letter"
        item = http.get(f"{base}/v1/items/http-1").json()
        assert item["status"] == "dead_lettered" and "bad codec" in item["status_reason"]
        letters = http.get(f"{base}/v1/dlq", params={"item_id": "http-1"}).json()["dead_letters"]
        assert [(d["item_id"], d["payload"]) for d in letters] == [("http-1", {"file": "v1.mp4"})]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"item_id": "v1"}, "stage"),
        ({"stage": "work"}, "item_id"),
        ({"stage": "nope", "item_id": "v1"}, "stage"),
        ({"stage": "work", "item_id": "v1", "pipeline": "nope"}, "pipeline"),
        ({"stage": "work", "item_id": "v1", "bogus": 1}, "bogus"),
        ({"stage": "work", "item_id": "v1", "trace_id": "xyz"}, "trace_id"),
    ],
)
def test_a_bad_begin_is_a_422_naming_the_field(
    guarded_server: LiveServer, body: dict[str, Any], field: str
) -> None:
    response = httpx.post(f"{guarded_server.url}/v1/runs/begin", json=body)
    assert response.status_code == 422
    assert field in str(response.json()["field"])


def test_failing_without_an_error_and_completing_an_unknown_run_are_refused(
    guarded_server: LiveServer,
) -> None:
    base = guarded_server.url
    with httpx.Client() as http:
        run = _begin(http, base, "refused-1")
        response = http.post(f"{base}/v1/runs/{run['run_id']}/complete", json={"outcome": "failed"})
        assert response.status_code == 422 and response.json()["field"] == "error"
        assert http.post(f"{base}/v1/runs/nope/complete", json={"outcome": "succeeded"}).status_code == 404
        assert http.post(f"{base}/v1/items/nope/cancel", json={"reason": "x"}).status_code == 404
        assert http.post(f"{base}/v1/items/refused-1/cancel", json={}).status_code == 422


def _cli(server: LiveServer, *args: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--url", server.url], catch_exceptions=False)


def test_operators_cancel_stop_resume_and_replay_from_the_cli(guarded_server: LiveServer) -> None:
    base = guarded_server.url
    with httpx.Client() as http:
        running = _begin(http, base, "ops-1", account="a1")
        result = _cli(guarded_server, "cancel", "ops-1", "--reason", "customer withdrew")
        assert result.exit_code == 0 and "cancelled ops-1" in result.output
        beat = http.post(f"{base}/v1/runs/heartbeat", json={"runs": [{"run_id": running["run_id"]}]}).json()
        assert beat["runs"][0] == {"run_id": running["run_id"], "action": "stop",
                                   "reason": "cancelled by anonymous: customer withdrew"}  # fmt: skip
        _complete(http, base, running["run_id"], outcome="cancelled")
        assert _begin(http, base, "ops-1")["decision"] == "abort"

        result = _cli(guarded_server, "resume", "ops-1", "--from-stage", "work", "--reason", "mistake")
        assert result.exit_code == 0 and "resumed ops-1 from work" in result.output
        again = _begin(http, base, "ops-1")
        assert again["decision"] == "run"
        result = _cli(guarded_server, "stop", again["run_id"], "--reason", "runaway")
        assert result.exit_code == 0
        beat = http.post(f"{base}/v1/runs/heartbeat", json={"runs": [{"run_id": again["run_id"]}]}).json()
        assert beat["runs"][0]["reason"] == "stopped by anonymous: runaway"
        _complete(http, base, again["run_id"], outcome="failed", error={"type": "ValueError", "message": "x"})

        result = _cli(guarded_server, "dlq", "list", "--item", "ops-1")
        assert result.exit_code == 0 and "ops-1" in result.output and "ValueError: x" in result.output
        assert (
            "1 dead letters match"
            in _cli(guarded_server, "dlq", "replay", "--item", "ops-1", "--dry-run").output
        )
        result = _cli(guarded_server, "dlq", "replay", "--item", "ops-1", "--yes", "--reason", "fixed")
        assert result.exit_code == 0 and "replayed 1 dead letters" in result.output
        assert _begin(http, base, "ops-1")["decision"] == "run"

        audit = http.get(f"{base}/v1/audit").json()["audit"]
        assert {"item.cancel", "item.resume", "run.stop", "dlq.replay"} <= {a["action"] for a in audit}


def test_bulk_cancel_counts_first_and_needs_a_filter(guarded_server: LiveServer) -> None:
    base = guarded_server.url
    with httpx.Client() as http:
        for i in range(4):
            _begin(http, base, f"bulk-{i}", account="a1")
        result = _cli(guarded_server, "cancel", "--prefix", "bulk-", "--reason", "cleanup", "--dry-run")
        assert result.exit_code == 0 and "4 items match" in result.output
        assert _begin(http, base, "bulk-9")["decision"] == "run"
        result = _cli(guarded_server, "cancel", "--prefix", "bulk-", "--reason", "cleanup", "--yes")
        assert "cancelled 5 items" in result.output
        assert http.get(f"{base}/v1/items/bulk-2").json()["status"] == "cancelled"
        empty = http.post(f"{base}/v1/items/cancel", json={"filter": {}, "reason": "all"})
        assert empty.status_code == 422 and empty.json()["field"] == "filter"
    result = _cli(guarded_server, "cancel", "--reason", "x")
    assert result.exit_code == 2


def test_pausing_a_stage_from_the_cli_makes_begin_wait_until_unpaused(guarded_server: LiveServer) -> None:
    base = guarded_server.url
    with httpx.Client() as http:
        result = _cli(guarded_server, "pause", "work", "--reason", "storage incident")
        assert result.exit_code == 0 and "paused work" in result.output
        waiting = _begin(http, base, "paused-1")
        assert (
            waiting["decision"] == "wait"
            and waiting["reason"] == "stage work paused by anonymous: storage incident"
        )
        assert http.get(f"{base}/v1/stages").json()["overrides"][0]["paused"] is True
        assert _cli(guarded_server, "unpause", "work").exit_code == 0
        assert _begin(http, base, "paused-1")["decision"] == "run"
        assert _cli(guarded_server, "limit", "work").exit_code == 2  # neither --max-running nor --clear
