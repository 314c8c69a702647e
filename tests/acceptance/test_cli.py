"""The read and send commands, run as the real console script against a real server process.

Each test that takes ``live_server`` runs twice: on SQLite and on PostgreSQL. Tables are read back by
splitting rows on runs of two or more spaces, the way a person's eye (or ``awk``) reads them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, free_port

VID = "vid-42"
STACK = 'Traceback (most recent call last):\n  File "dl.py", line 10, in fetch\nHTTPError: 403'
STORY = [
    {"id": "s1", "type": "item.created", "item_id": VID, "time": "2026-01-10T10:00:00Z",
     "account": "acct-7", "scenario": "reels", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
    {"id": "s2", "type": "run.started", "item_id": VID, "stage": "download", "attempt": 1,
     "time": "2026-01-10T10:00:05Z", "worker": "dl-1"},
    {"id": "s3", "type": "run.failed", "item_id": VID, "stage": "download", "attempt": 1,
     "time": "2026-01-10T10:00:35Z",
     "error": {"type": "HTTPError", "message": "403 Forbidden from cdn.example.com", "stack": STACK}},
    {"id": "s4", "type": "run.started", "item_id": VID, "stage": "download", "attempt": 2,
     "time": "2026-01-10T10:01:00Z", "worker": "dl-2"},
    {"id": "s5", "type": "run.succeeded", "item_id": VID, "stage": "download", "attempt": 2,
     "time": "2026-01-10T10:02:10Z"},
    {"id": "s6", "type": "run.enqueued", "item_id": VID, "stage": "enqueue", "time": "2026-01-10T10:02:11Z"},
    {"id": "s7", "type": "run.succeeded", "item_id": VID, "stage": "enqueue", "time": "2026-01-10T10:02:12Z"},
    {"id": "s8", "type": "run.enqueued", "item_id": VID, "stage": "process", "time": "2026-01-10T10:02:12Z"},
    {"id": "s9", "type": "run.started", "item_id": VID, "stage": "process", "time": "2026-01-10T10:03:00Z",
     "worker": "cr-abc", "revision": "worker-00042"},
    {"id": "s10", "type": "run.succeeded", "item_id": VID, "stage": "process",
     "time": "2026-01-10T10:08:30Z"},
]  # fmt: skip
PUBLISH_STARTED = {
    "id": "s11", "type": "run.started", "item_id": VID, "stage": "publish", "time": "2026-01-10T10:09:00Z",
}  # fmt: skip


# --- helpers ---------------------------------------------------------------------------------------


def stagewatch(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stagewatch ARGS`` with no STAGEWATCH_* or COLUMNS inherited from this shell."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STAGEWATCH_") and k != "COLUMNS"}
    command = [sys.executable, "-m", "stagewatch", *args]
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=60, env={**clean, **(env or {})}
    )


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """One line per entry: dicts as JSON, strings verbatim (blank or deliberately broken lines)."""
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def post(server: LiveServer, events: list[dict[str, Any]]) -> None:
    answer = httpx.post(f"{server.url}/v1/events", json=events).json()
    assert answer["rejected"] == 0, answer


def table(output: str, first_header: str, *, title: str | None = None) -> list[list[str]]:
    """The rows of the (first after ``title``) table whose header starts with ``first_header``, cells split
    on runs of two or more spaces."""
    lines = output.splitlines()
    after = lines.index(title) if title else 0
    start = next(i for i, line in enumerate(lines) if i >= after and line.split()[:1] == [first_header])
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def table_header(output: str, first_header: str) -> list[str]:
    """The header lines (a header may take two) of the table whose last header line starts so."""
    lines = output.splitlines()
    end = next(i for i, line in enumerate(lines) if line.split()[:1] == [first_header])
    start = end - 1 if end and lines[end - 1].startswith(" ") else end
    return [line.strip() for line in lines[start : end + 1]]


def story_of(server: LiveServer, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return stagewatch("send-events", str(write_jsonl(tmp_path / "story.jsonl", STORY)), "--url", server.url)


# --- status ----------------------------------------------------------------------------------------


def test_status_tells_the_story_sent_with_send_events(live_server: LiveServer, tmp_path: Path) -> None:
    sent = story_of(live_server, tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert "10 events: 10 accepted, 0 duplicate, 0 rejected" in sent.stdout

    shown = stagewatch("status", VID, "--url", live_server.url)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert re.search(r"^Status\s+ready_to_publish\s+at stage process\b", out, re.M), out
    assert re.search(r"^Account\s+acct-7$", out, re.M) and re.search(r"^Scenario\s+reels$", out, re.M)
    assert "4bf92f3577b34da6a3ce929d0e0e4736" in out
    assert re.search(
        r"^Last error\s+HTTPError: 403 Forbidden from cdn.example.com\s+\(download attempt 1", out, re.M
    )
    runs = [row[:3] for row in table(out, "stage", title="Runs")]
    assert runs == [
        ["download", "1", "failed"],
        ["download", "2", "succeeded"],
        ["enqueue", "1", "succeeded"],
        ["process", "1", "succeeded"],
    ]
    failed_run = next(line for line in out.splitlines() if re.match(r"download\s+1\s+failed", line))
    assert "dl-1" in failed_run and "HTTPError: 403 Forbidden from cdn.example.com" in failed_run
    stage_times = {row[0]: row[1:] for row in table(out, "stage", title="Time per stage")}
    assert stage_times == {
        "download": ["2m 5s", "2", "succeeded"],
        "enqueue": ["1s", "1", "succeeded"],
        "process": ["6m 18s", "1", "succeeded"],
    }
    history = [row[2] for row in table(out, "time", title="History")]
    assert history == [event["type"] for event in STORY]
    assert 'File "dl.py"' not in out, "the stack is shown only with --stack"


def test_status_shows_the_videos_log_lines_oldest_first(live_server: LiveServer, tmp_path: Path) -> None:
    assert story_of(live_server, tmp_path).returncode == 0
    lines = [
        {"id": "log-1", "time": 1_767_225_600, "level": "info", "message": "fetching source", "item_id": VID,
         "stage": "download"},
        {"id": "log-2", "time": 1_767_225_605, "level": "error", "message": "403 <b>Forbidden</b>",
         "item_id": VID, "stage": "download", "exception": "Traceback: dl.py line 3"},
        {"id": "log-3", "time": 1_767_225_606, "level": "info", "message": "another video",
         "item_id": "other"},
    ]  # fmt: skip
    assert httpx.post(f"{live_server.url}/v1/logs", json=lines).json()["accepted"] == 3

    out = stagewatch("status", VID, "--url", live_server.url).stdout
    logs = out[out.index("Logs (the newest 2") :]
    assert logs.index("fetching source") < logs.index("ERROR") < logs.index("403 <b>Forbidden</b>")
    assert "Traceback: dl.py line 3" in logs and "another video" not in out
    assert "Logs" not in stagewatch("status", VID, "--logs", "0", "--url", live_server.url).stdout


def test_status_shows_stacks_json_and_the_move_to_publish(live_server: LiveServer, tmp_path: Path) -> None:
    assert story_of(live_server, tmp_path).returncode == 0

    stacked = stagewatch("status", VID, "--stack", "--url", live_server.url)
    assert stacked.returncode == 0, stacked.stderr
    assert "Stack of download attempt 1" in stacked.stdout
    assert 'File "dl.py", line 10, in fetch' in stacked.stdout

    post(live_server, [PUBLISH_STARTED])
    moved = stagewatch("status", VID, "--url", live_server.url).stdout
    assert re.search(r"^Status\s+running\s+at stage publish\b", moved, re.M), moved
    # Running since 2026-01-10: "ran for" counts up to now, not to the last report.
    assert re.search(r"^publish\s+1\s+running\s+—\s+\d+d \d+h so far\b", moved, re.M), moved

    as_json = stagewatch("status", VID, "--json", "--url", live_server.url)
    assert as_json.returncode == 0, as_json.stderr
    api = httpx.get(f"{live_server.url}/v1/items/{VID}", params={"history": "1"}).json()
    assert json.loads(as_json.stdout) == api
    assert api["status"] == "running" and len(api["history"]) == 11

    again = story_of(live_server, tmp_path)
    assert again.returncode == 0 and "10 events: 0 accepted, 10 duplicate, 0 rejected" in again.stdout


def test_status_of_an_unknown_item_exits_1_with_the_message(live_server: LiveServer) -> None:
    for extra in ([], ["--json"]):
        missing = stagewatch("status", "no-such-video", *extra, "--url", live_server.url)
        assert missing.returncode == 1
        assert missing.stderr.strip() == "error: no item 'no-such-video'"
        assert missing.stdout == ""


# --- items -----------------------------------------------------------------------------------------


def _mixed_items() -> list[dict[str, Any]]:
    def event(n: int, item: str, kind: str, stage: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": f"m{n}",
            "type": kind,
            "item_id": item,
            "stage": stage,
            "time": 1_790_000_000 + n,
            **extra,
        }

    error = {"type": "Boom", "message": "it broke"}
    return [
        event(1, "vid-f1", "run.failed", "download", error=error, account="acct-1"),
        event(2, "vid-f2", "run.failed", "process", error=error, account="acct-2"),
        event(3, "vid-r", "run.started", "publish"),
        event(4, "vid-q", "run.enqueued", "process"),
        event(5, "vid-ok", "run.succeeded", "process"),
    ]


def test_items_filters_by_status_and_pages_with_a_cursor(live_server: LiveServer) -> None:
    post(live_server, _mixed_items())
    failed = stagewatch("items", "--status", "failed", "--url", live_server.url)
    assert failed.returncode == 0, failed.stderr
    rows = table(failed.stdout, "id")
    assert {row[0] for row in rows} == {"vid-f1", "vid-f2"}
    assert all(row[1] == "failed" and row[-1] == "Boom: it broke" for row in rows)

    either = stagewatch("items", "--status", "failed,running", "--url", live_server.url)
    assert {row[0] for row in table(either.stdout, "id")} == {"vid-f1", "vid-f2", "vid-r"}

    as_json = stagewatch("items", "--status", "failed", "--json", "--url", live_server.url)
    api = httpx.get(f"{live_server.url}/v1/items", params={"status": "failed"}).json()
    assert json.loads(as_json.stdout) == api

    first = stagewatch("items", "--limit", "2", "--url", live_server.url).stdout
    cursor = re.search(r"--cursor (\S+)", first)
    assert cursor, first
    second = stagewatch("items", "--limit", "2", "--cursor", cursor.group(1), "--url", live_server.url).stdout
    seen = [row[0] for row in table(first, "id") + table(second, "id")]
    assert seen == ["vid-ok", "vid-q", "vid-r", "vid-f2"]

    everything = stagewatch("items", "--all", "--limit", "2", "--url", live_server.url)
    assert [row[0] for row in table(everything.stdout, "id")] == [
        "vid-ok",
        "vid-q",
        "vid-r",
        "vid-f2",
        "vid-f1",
    ]
    assert "--cursor" not in everything.stdout

    bad = stagewatch("items", "--status", "broken", "--url", live_server.url)
    assert bad.returncode == 2 and "'broken' is not a status" in bad.stderr


# --- summary ---------------------------------------------------------------------------------------


def test_summary_shows_counts_per_stage(live_server: LiveServer) -> None:
    post(live_server, _mixed_items())
    shown = stagewatch("summary", "--url", live_server.url)
    assert shown.returncode == 0, shown.stderr
    columns = ["stage", "queued", "running", "waiting", "failed", "dead-lettered", "cancelled",
               "ready to publish", "published", "done", "oldest queued"]  # fmt: skip
    header = re.sub(r"\s+", " ", " ".join(table_header(shown.stdout, "stage")))
    assert re.fullmatch(r"dead- ready to oldest stage queued running waiting failed lettered cancelled "
                        r"publish published done queued", header), header  # fmt: skip
    rows = {row[0]: dict(zip(columns, row, strict=True)) for row in table(shown.stdout, "stage")}
    assert rows["download"]["failed"] == "1"
    assert rows["process"]["failed"] == "1" and rows["process"]["queued"] == "1"
    assert rows["process"]["ready to publish"] == "1" and rows["process"]["done"] == "1"
    assert rows["publish"]["running"] == "1"
    assert rows["webhook"]["queued"] == "0" and rows["process"]["oldest queued"] != "—"
    assert "instagram: 5 items" in shown.stdout

    as_json = stagewatch("summary", "--json", "--url", live_server.url)
    document = json.loads(as_json.stdout)
    assert [stage["stage"] for stage in document["pipelines"][0]["stages"]] == list(rows)


# --- send-events -----------------------------------------------------------------------------------


def test_send_events_with_a_malformed_line_exits_2_and_sends_nothing(
    live_server: LiveServer, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "broken.jsonl", [STORY[0], "", '{"id": "s2", "type": ', STORY[1]])
    sent = stagewatch("send-events", str(path), "--url", live_server.url)
    assert sent.returncode == 2
    assert re.search(r"broken\.jsonl: line 3: not valid JSON", sent.stderr), sent.stderr
    assert "line 1:" not in sent.stderr and "line 4:" not in sent.stderr
    assert "nothing was sent" in sent.stderr and "Traceback" not in sent.stderr
    assert httpx.get(f"{live_server.url}/v1/items").json()["items"] == []


def test_rejected_events_are_reported_by_file_line_and_the_rest_are_stored(
    live_server: LiveServer, tmp_path: Path
) -> None:
    lines: list[Any] = [
        {"id": "r1", "type": "item.created", "item_id": "vid-a"},
        {"id": "r2", "type": "run.started", "item_id": "vid-a", "stage": "download"},
        "",
        {"id": "r4", "type": "run.started", "item_id": "vid-b", "stage": "transcode"},
        {"id": "r5", "type": "run.started", "item_id": "vid-b", "stage": "download", "pipeline": "tiktok"},
        {"id": "r6", "type": "item.created", "item_id": "vid-c"},
    ]
    # Batches of two: [1, 2], [4, 5] (all rejected: a 422), [6]; line numbers are not batch indexes.
    path = write_jsonl(tmp_path / "mixed.jsonl", lines)
    sent = stagewatch("send-events", str(path), "--batch-size", "2", "--url", live_server.url)
    assert sent.returncode == 1, sent.stderr
    rejected = [line for line in sent.stdout.splitlines() if "rejected (event" in line]
    assert len(rejected) == 2
    assert (
        rejected[0].startswith("line 4: rejected (event r4): field stage:") and "'transcode'" in rejected[0]
    )
    assert rejected[1].startswith("line 5: rejected (event r5): field pipeline:")
    assert "5 events: 3 accepted, 0 duplicate, 2 rejected" in sent.stdout

    def status_of(item_id: str) -> int:
        return httpx.get(f"{live_server.url}/v1/items/{item_id}").status_code

    assert (status_of("vid-a"), status_of("vid-b"), status_of("vid-c")) == (200, 404, 200)

    from_stdin = stagewatch("send-events", "-", "--json", "--url", live_server.url, stdin=path.read_text())
    assert from_stdin.returncode == 1
    assert json.loads(from_stdin.stdout) == {
        "accepted": 0,
        "duplicate": 3,
        "rejected": 2,
        "errors": [
            {"line": 4, "id": "r4", "field": "stage", "error": rejected[0].split("field stage: ", 1)[1]},
            {
                "line": 5,
                "id": "r5",
                "field": "pipeline",
                "error": rejected[1].split("field pipeline: ", 1)[1],
            },
        ],
    }


# --- a server that is down, or misbehaves ----------------------------------------------------------


def test_an_unreachable_server_is_one_line_naming_the_url_and_exit_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    runs = [
        stagewatch("status", VID, "--url", url),
        stagewatch("items", "--url", url),
        stagewatch("summary", env={"STAGEWATCH_URL": url}),
    ]
    for run in runs:
        assert run.returncode == 1
        assert run.stderr.startswith(f"error: cannot reach the stagewatch server at {url} ")
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
        assert run.stdout == ""

    path = write_jsonl(tmp_path / "story.jsonl", STORY)
    sent = stagewatch("send-events", str(path), "--url", url)
    assert sent.returncode == 1 and "Traceback" not in sent.stderr
    assert sent.stderr.count("retrying in") == 3
    assert f"cannot reach the stagewatch server at {url}" in sent.stderr
    assert "stopped at the batch of lines 1-10" in sent.stderr


class _FlakyIngest(BaseHTTPRequestHandler):
    """Answers 503 to the first POST, then accepts; refuses batches of more than ``max_events`` with 413."""

    posts: list[tuple[str | None, list[Any]]]
    max_events = 1000

    def do_POST(self) -> None:
        batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.posts.append((self.headers.get("Authorization"), batch))
        if len(self.posts) == 1:
            return self._answer(503, {"error": "the database is unavailable", "field": None})
        if len(batch) > self.max_events:
            return self._answer(413, {"error": "batch too large", "field": "events"})
        errors = [{"index": i, "id": e["id"], "field": "stage", "error": "no"} for i, e in enumerate(batch)
                  if e.get("stage") == "bogus"]  # fmt: skip
        self._answer(200, {"accepted": len(batch) - len(errors), "duplicate": 0, "rejected": len(errors),
                           "errors": errors})  # fmt: skip

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, type[_FlakyIngest]]]:
    handler = type("Handler", (_FlakyIngest,), {"posts": [], "max_events": 2})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_send_events_retries_a_5xx_splits_an_oversize_batch_and_sends_the_token(
    flaky_server: tuple[str, type[_FlakyIngest]], tmp_path: Path
) -> None:
    url, handler = flaky_server
    lines = [{"id": f"f{i}", "type": "item.created", "item_id": f"v{i}"} for i in range(1, 5)]
    lines[2] = {"id": "f3", "type": "run.started", "item_id": "v3", "stage": "bogus"}
    path = write_jsonl(tmp_path / "four.jsonl", lines)
    sent = stagewatch("send-events", str(path), "--batch-size", "4", "--url", url, "--token", "s3cret")
    assert sent.returncode == 1, sent.stderr
    assert "retrying in 0.5s" in sent.stderr and "answered 503" in sent.stderr
    assert "line 3: rejected (event f3): field stage: no" in sent.stdout
    assert "4 events: 3 accepted, 0 duplicate, 1 rejected" in sent.stdout
    sizes = [len(batch) for _, batch in handler.posts]
    assert sizes == [4, 4, 2, 2]  # 503, then 413, then the two halves
    assert {auth for auth, _ in handler.posts} == {"Bearer s3cret"}


def test_every_command_explains_itself() -> None:
    expected = {
        "status": ["ITEM_ID", "--stack", "--json", "--url", "--token"],
        "items": [
            "--status",
            "--stage",
            "--account",
            "--scenario",
            "--prefix",
            "--limit",
            "--cursor",
            "--all",
        ],
        "summary": ["--json", "--url", "--token"],
        "send-events": ["FILE.jsonl", "--batch-size", "--json", "--url", "--token"],
    }
    listing = stagewatch("--help").stdout
    for command, words in expected.items():
        assert re.search(rf"^\s+{command}\s+\S", listing, re.M), f"{command} missing from stagewatch --help"
        helped = stagewatch(command, "--help", env={"COLUMNS": "120"})
        assert helped.returncode == 0
        assert all(word in helped.stdout for word in words), (command, helped.stdout)
