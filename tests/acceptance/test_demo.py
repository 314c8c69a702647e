"""``stagewatch demo`` as a new user runs it: the real command in a subprocess (its own server, worker
threads and a child process that is killed), then the database it leaves, read the way the server reads
it, and ``stagewatch status`` on a server started again on that file.

The run is deterministic by its seed: the fault plan says which video gets which fault, so each test
looks at the video the plan broke, and asserts what a user would notice about it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stagewatch.demo.faults import Fault, fault_counts, plan_faults
from stagewatch.demo.world import video_id
from stagewatch.domain.pipeline import PipelineRegistry, instagram_preset
from stagewatch.service import query
from stagewatch.store.engine import Database, open_database
from stagewatch.store.reads import ItemFilter
from tests.conftest import free_port, start_server, stop_server

SEED, VIDEOS = 7, 30
DEMO_TIMEOUT = 150
STAGES = ("webhook", "download", "enqueue", "process", "publish")


# --- the fault plan (no server) ----------------------------------------------------------------------


def test_the_plan_for_seed_7_and_30_videos_has_every_fault() -> None:
    plan = plan_faults(VIDEOS, SEED)
    assert plan.kinds() == set(Fault)
    assert all(index < VIDEOS for index in plan.faults)
    for fault in (Fault.RUNAWAY, Fault.WORKER_KILLED):  # early, so their story has time to show
        assert [index < VIDEOS // 2 for index in plan.videos_with(fault)] == [True]


def test_the_plan_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    assert plan_faults(VIDEOS, SEED) == plan_faults(VIDEOS, SEED)
    assert plan_faults(VIDEOS, SEED).faults != plan_faults(VIDEOS, SEED + 1).faults
    assert [video_id(SEED, i) for i in range(3)] == [video_id(SEED, i) for i in range(3)]


@pytest.mark.parametrize("videos", [30, 31, 60, 500])
def test_every_fault_occurs_at_least_once_from_30_videos_on(videos: int) -> None:
    assert plan_faults(videos, 123).kinds() == set(Fault)
    assert sum(fault_counts(videos).values()) <= videos


def test_a_short_stream_gets_as_many_faults_as_it_has_videos() -> None:
    assert len(plan_faults(4, SEED).faults) == 4
    assert plan_faults(4, SEED).kinds() >= {Fault.RUNAWAY, Fault.WORKER_KILLED}


# --- the demo, run once for the module ----------------------------------------------------------------


@dataclass
class DemoRun:
    output: str
    db_path: Path
    db: Database

    def item(self, item_id: str) -> dict[str, Any]:
        return query.get_item(self.db, item_id, with_history=True)

    def video_with(self, fault: Fault) -> dict[str, Any]:
        index = plan_faults(VIDEOS, SEED).videos_with(fault)[0]
        return self.item(video_id(SEED, index))

    def items(self) -> list[dict[str, Any]]:
        """The stream's videos (not the viral account's posts from earlier in the day)."""
        page = query.list_items(self.db, ItemFilter(id_prefix="vid-"), None, 500)
        items: list[dict[str, Any]] = page["items"]
        return items


def runs_of(item: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    return sorted((run for run in item["runs"] if run["stage"] == stage), key=lambda run: run["attempt"])


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m stagewatch demo ARGS``, with no STAGEWATCH_* setting inherited from this shell."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("STAGEWATCH_")}
    command = [sys.executable, "-m", "stagewatch", "demo", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=DEMO_TIMEOUT, env=env)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    db_path = tmp_path_factory.mktemp("demo") / "demo.db"
    done = run_demo("--videos", str(VIDEOS), "--seed", str(SEED), "--speed", "10", "--exit-when-done",
                    "--no-keep-serving", "--port", str(free_port()), "--db", str(db_path))  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    db = open_database(f"sqlite:///{db_path}")
    yield DemoRun(done.stdout, db_path, db)
    db.dispose()


@pytest.mark.slow
def test_a_busy_port_and_a_duration_still_make_a_clean_short_demo(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        short = ("--videos", "40", "--rate", "10", "--speed", "20", "--duration", "2", "--no-keep-serving")
        done = run_demo(*short, "--port", str(port), "--db", str(tmp_path / "short.db"))
    assert done.returncode == 0, done.stderr
    assert f"port {port} is busy: using" in done.stdout
    assert "--duration reached" in done.stdout and "Stopping the server" in done.stdout
    assert re.search(r"^\[\s*\d+s\] submitted \d+/40 \|", done.stdout, re.M), "plain progress lines"
    db = open_database(f"sqlite:///{tmp_path / 'short.db'}")
    try:
        assert 0 < len(query.list_items(db, ItemFilter(id_prefix="vid-"), None, 500)["items"]) < 40
    finally:
        db.dispose()


@pytest.mark.slow
def test_the_banner_says_where_to_look_and_the_summary_names_the_stories(demo: DemoRun) -> None:
    out = demo.output
    assert "/docs" in out and "/v1/summary" in out and str(demo.db_path) in out
    assert re.search(r"token\s+sw_\S+\s+\(admin", out) and "export STAGEWATCH_TOKEN=sw_" in out
    assert f"stagewatch status {video_id(SEED, 0)}" in out and "stagewatch items --status failed" in out
    assert "Demo stopped after" in out and "every video finished" in out
    for fault in (
        Fault.DOWNLOAD_404,
        Fault.RATE_LIMIT,
        Fault.RUNAWAY,
        Fault.WORKER_KILLED,
        Fault.PUBLISH_QUOTA,
    ):
        assert video_id(SEED, plan_faults(VIDEOS, SEED).videos_with(fault)[0]) in out
    assert "dead-lettered at download (replay: stagewatch dlq replay --item" in out
    assert "waiting at publish: rate publish account:acct-viral 50/50 per 1d" in out
    assert "process stopped as a runaway, then retried" in out
    assert re.search(r"Videos by status \(from the server\):.*published \d+", out)


@pytest.mark.slow
def test_every_stage_has_done_videos_and_some_are_published(demo: DemoRun) -> None:
    summary = query.summary(demo.db, PipelineRegistry.of([instagram_preset()]))
    stages = {row["stage"]: row for row in summary["pipelines"][0]["stages"]}
    assert all(stages[stage]["done"] > 0 for stage in STAGES), stages
    statuses = [item["status"] for item in demo.items()]
    assert len(statuses) == VIDEOS
    assert statuses.count("published") >= VIDEOS // 2


@pytest.mark.slow
def test_a_normal_published_video_keeps_one_trace_id_across_every_stage(demo: DemoRun) -> None:
    faulty = {video_id(SEED, index) for index in plan_faults(VIDEOS, SEED).faults}
    clean = [item for item in demo.items() if item["item_id"] not in faulty]
    assert clean and all(item["status"] == "published" for item in clean)
    for summary in clean:
        item = demo.item(summary["item_id"])
        assert [run["stage"] for run in item["runs"]] == list(STAGES)
        assert {run["trace_id"] for run in item["runs"]} == {item["trace_id"]}, item["runs"]


@pytest.mark.slow
def test_a_published_video_counts_its_costs(demo: DemoRun) -> None:
    item = demo.video_with(Fault.RATE_LIMIT)
    units = {entry.get("attrs", {}).get("cost_unit") for entry in item["history"]}
    assert {"instagram_api_call", "cloud_run_vcpu_seconds", "storage_gb"} <= units


@pytest.mark.slow
def test_a_download_404_is_dead_lettered_at_download_at_once(demo: DemoRun) -> None:
    item = demo.video_with(Fault.DOWNLOAD_404)
    assert (item["status"], item["stage"]) == ("dead_lettered", "download")
    assert item["status_reason"].startswith("permanent error: httpx.HTTPStatusError")
    [run] = runs_of(item, "download")
    assert run["error"]["type"] == "httpx.HTTPStatusError" and "404 Not Found" in run["error"]["message"]
    assert run["error"]["retryable"] is False
    assert item["last_error"]["stage"] == "download"


@pytest.mark.slow
def test_a_download_timeout_is_retried_and_the_video_goes_on(demo: DemoRun) -> None:
    item = demo.video_with(Fault.DOWNLOAD_TIMEOUT)
    first, second = runs_of(item, "download")
    assert (first["status"], first["error"]["type"], first["error"]["retryable"]) == (
        "failed", "httpx.ReadTimeout", True,
    )  # fmt: skip
    assert second["status"] == "succeeded" and item["status"] == "published"


@pytest.mark.slow
def test_an_ffmpeg_crash_fails_every_attempt_and_is_dead_lettered_after_three(demo: DemoRun) -> None:
    item = demo.video_with(Fault.FFMPEG_CRASH)
    runs = runs_of(item, "process")
    assert [run["attempt"] for run in runs] == [1, 2, 3]
    assert all(run["status"] == "failed" and "moov atom not found" in run["error"]["message"] for run in runs)
    assert runs[0]["error"]["type"].endswith("FfmpegError")
    assert (item["status"], item["stage"], item["attempts"]) == ("dead_lettered", "process", 3)
    assert item["status_reason"].startswith("attempts exhausted (3 of 3)")


@pytest.mark.slow
def test_a_memory_hungry_transcode_says_so_and_finishes(demo: DemoRun) -> None:
    item = demo.video_with(Fault.MEMORY_HOG)
    notes = [entry.get("note") for entry in item["history"]]
    assert "memory pressure" in notes and item["status"] == "published"


@pytest.mark.slow
def test_a_rate_limited_publish_is_retried_and_published(demo: DemoRun) -> None:
    item = demo.video_with(Fault.RATE_LIMIT)
    first, second = runs_of(item, "publish")
    assert first["status"] == "failed" and first["error"]["type"].endswith("InstagramApiError")
    assert (
        "code 9, error_subcode 2207042" in first["error"]["message"] and first["error"]["retryable"] is True
    )
    assert second["status"] == "succeeded" and item["status"] == "published"


@pytest.mark.slow
def test_a_container_in_error_fails_the_publish_without_retry(demo: DemoRun) -> None:
    item = demo.video_with(Fault.CONTAINER_ERROR)
    [run] = runs_of(item, "publish")
    assert "status_code ERROR" in run["error"]["message"] and run["error"]["retryable"] is False
    assert (item["status"], item["stage"]) == ("dead_lettered", "publish")


@pytest.mark.slow
def test_an_expired_container_is_replaced_by_a_new_one(demo: DemoRun) -> None:
    item = demo.video_with(Fault.CONTAINER_EXPIRED)
    first, second = runs_of(item, "publish")
    assert "status_code EXPIRED" in first["error"]["message"] and first["error"]["retryable"] is True
    assert second["status"] == "succeeded" and item["status"] == "published"


@pytest.mark.slow
def test_the_killed_workers_run_is_timed_out_after_its_heartbeats_stop(demo: DemoRun) -> None:
    item = demo.video_with(Fault.WORKER_KILLED)
    [killed] = runs_of(item, "process")
    assert killed["status"] == "timed_out" and killed["error"]["type"] == "TimedOut"
    assert "no heartbeat for" in killed["error"]["message"]
    assert seconds(killed["heartbeat_at"]) > seconds(killed["started_at"]), "it heartbeated before it died"
    assert seconds(killed["ended_at"]) - seconds(killed["heartbeat_at"]) >= 2, "timed out only after silence"
    assert (item["status"], item["stage"]) == ("waiting", "process")
    assert item["status_reason"].startswith("retry backoff before attempt 2")


@pytest.mark.slow
def test_the_runaway_run_is_stopped_then_retried_and_published(demo: DemoRun) -> None:
    item = demo.video_with(Fault.RUNAWAY)
    stopped, retried = runs_of(item, "process")
    assert stopped["status"] == "cancelled" and stopped["progress"] < 1
    cancelled = [e for e in item["history"] if e["type"] == "run.cancelled"]
    assert "runaway: running" in cancelled[0]["note"] and "past its" in cancelled[0]["note"]
    assert retried["status"] == "succeeded" and item["status"] == "published"


@pytest.mark.slow
def test_a_spent_publish_quota_leaves_the_video_waiting_with_the_reason(demo: DemoRun) -> None:
    item = demo.video_with(Fault.PUBLISH_QUOTA)
    assert (item["status"], item["stage"], item["account"]) == ("waiting", "publish", "acct-viral")
    assert item["status_reason"] == "rate publish account:acct-viral 50/50 per 1d"
    assert runs_of(item, "publish") == [], "a waiting publish never started, so it never called Instagram"


@pytest.mark.slow
def test_a_duplicate_webhook_delivery_is_skipped_and_shows_in_the_history(demo: DemoRun) -> None:
    item = demo.video_with(Fault.DUPLICATE_WEBHOOK)
    assert [run["status"] for run in runs_of(item, "webhook")] == ["succeeded"]
    types = [entry["type"] for entry in item["history"]]
    assert types.count("item.created") == 2 and types.count("item.duplicate") == 1
    duplicate = next(e for e in item["history"] if e["type"] == "item.duplicate")
    assert duplicate["note"].startswith("already ")
    assert item["status"] == "published"


@pytest.mark.slow
def test_stagewatch_status_tells_the_rate_limited_videos_story(demo: DemoRun, tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{demo.db_path}", tmp_path / "server.log")
    try:
        vid = video_id(SEED, plan_faults(VIDEOS, SEED).videos_with(Fault.RATE_LIMIT)[0])
        env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEWATCH_")} | {"COLUMNS": "200"}
        shown = subprocess.run([sys.executable, "-m", "stagewatch", "status", vid, "--url", server.url],
                               capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    finally:
        stop_server(server)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert re.search(rf"^Item\s+{vid}$", out, re.M)
    assert re.search(r"^Status\s+published\s+at stage publish", out, re.M)
    assert "InstagramApiError" in out and "code 9, error_subcode 2207042" in out
    assert all(stage in out for stage in STAGES) and "Runs" in out and "History" in out


def seconds(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_the_demo_token_replays_a_dead_letter_from_the_cli_and_it_is_audited(
    demo: DemoRun, tmp_path: Path
) -> None:
    """Runs last: it changes the demo's database (the replayed video is queued again)."""
    token = re.search(r"export STAGEWATCH_TOKEN=(sw_\S+)", demo.output)
    assert token is not None
    vid = video_id(SEED, plan_faults(VIDEOS, SEED).videos_with(Fault.DOWNLOAD_404)[0])
    server = start_server(f"sqlite:///{demo.db_path}", tmp_path / "server.log", auth=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEWATCH_")} | {"COLUMNS": "200"}

    def cli(*args: str, token_value: str | None = token.group(1)) -> subprocess.CompletedProcess[str]:
        extra = {"STAGEWATCH_TOKEN": token_value} if token_value else {}
        command = [sys.executable, "-m", "stagewatch", *args, "--url", server.url]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env | extra)

    try:
        refused = cli("dlq", "list", token_value=None)
        assert refused.returncode == 1 and "401" in refused.stderr
        listed = cli("dlq", "list", "--item", vid)
        assert listed.returncode == 0 and vid in listed.stdout and "404 Not Found" in listed.stdout
        replayed = cli("dlq", "replay", "--item", vid, "--yes", "--reason", "the CDN restored the file")
        assert replayed.returncode == 0 and "replayed 1 dead letters" in replayed.stdout
        shown = cli("status", vid)
        assert re.search(r"^Status\s+queued\s+at stage download", shown.stdout, re.M), shown.stdout
        audit = cli("audit", "--action", "dlq.replay", "--json")
        assert audit.returncode == 0 and '"actor": "demo-admin"' in audit.stdout
        assert "the CDN restored the file" in audit.stdout
    finally:
        stop_server(server)
