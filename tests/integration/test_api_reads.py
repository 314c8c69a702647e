"""Reading over HTTP from a real server process, on SQLite and PostgreSQL: one item with its history,
filtered and paginated lists, the per-stage summary, and readiness.

One server per database, seeded once with ~30 videos in known states, serves the read-only tests.
"""

from __future__ import annotations

import base64
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server

T0 = float(int(time.time()) - 86_400)  # a day ago, so queued ages are positive
STAGES = ("webhook", "download", "enqueue", "process", "publish")
SPECIAL_IDS = ("ig/2026/11/clip 1", "vidéo-日本-✓")

# What each kind of seeded video has been through, and where that leaves it.
KINDS = {
    0: ("received", "webhook"),
    1: ("running", "download"),
    2: ("queued", "enqueue"),
    3: ("ready_to_publish", "process"),
    4: ("failed", "publish"),
}


@dataclass(frozen=True)
class Seeded:
    item_id: str
    status: str
    stage: str
    account: str
    scenario: str
    updated_at: float
    status_since: float


def _story(item_id: str, kind: int, start: float, account: str, scenario: str) -> list[dict[str, Any]]:
    """The events of one video; the last one is at ``start + 50`` whatever the kind."""
    events: list[dict[str, Any]] = [
        {"type": "item.created", "time": start, "account": account, "scenario": scenario}
    ]
    done = {0: 0, 1: 1, 2: 2, 3: 4, 4: 4}[kind]
    for i, stage in enumerate(STAGES[:done]):
        events.append({"type": "run.succeeded", "stage": stage, "time": start + 1 + i})
    if kind == 0:
        events.append({"type": "item.annotated", "note": "waiting", "time": start + 50})
    elif kind == 1:
        events.append({"type": "run.started", "stage": "download", "time": start + 50})
    elif kind in (2, 3):
        events[-1]["time"] = start + 50  # the last success: queued at the next stage, or ready to publish
    else:
        events.append(
            {
                "type": "run.failed",
                "stage": "publish",
                "time": start + 50,
                "error": {"type": "GraphAPIError", "message": "(#9004) media 17841 not ready"},
            }
        )
    return [{"id": f"{item_id}#{n}", "item_id": item_id, **fields} for n, fields in enumerate(events)]


def _seed() -> tuple[list[dict[str, Any]], list[Seeded]]:
    """32 videos. Each group of three shares its last update time, so pagination must break ties."""
    events: list[dict[str, Any]] = []
    seeded = []
    ids = [f"clip-{i:02d}" for i in range(30)] + list(SPECIAL_IDS)
    for i, item_id in enumerate(ids):
        kind, start = i % 5, T0 + (i // 3) * 100
        account, scenario = f"acct-{i % 3}", "reels" if i % 2 else "stories"
        events += _story(item_id, kind, start, account, scenario)
        status, stage = KINDS[kind]
        since = start if kind == 0 else start + 50  # received: since created; otherwise the last event
        seeded.append(Seeded(item_id, status, stage, account, scenario, start + 50, since))
    return events, seeded


EVENTS, SEEDED = _seed()


@pytest.fixture(scope="module")
def server(module_server: LiveServer) -> LiveServer:
    """The module's server, seeded once with every event of this module."""
    # Newest first, so the history must be sorted by time rather than arrival.
    answer = httpx.post(f"{module_server.url}/v1/events", json=list(reversed(EVENTS)), timeout=60)
    assert answer.status_code == 200 and answer.json()["accepted"] == len(EVENTS), answer.text
    return module_server


def get(server: LiveServer, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", params=params, timeout=30)


def list_ids(server: LiveServer, **params: Any) -> list[str]:
    answer = get(server, "/v1/items", limit=500, **params)
    assert answer.status_code == 200, answer.text
    assert answer.json()["next_cursor"] is None
    return [item["item_id"] for item in answer.json()["items"]]


def newest_first(items: list[Seeded]) -> list[str]:
    return [s.item_id for s in sorted(items, key=lambda s: (s.updated_at, s.item_id), reverse=True)]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- one item ------------------------------------------------------------------------------------------


def test_an_item_shows_status_stage_and_runs_without_history_unless_asked(server: LiveServer) -> None:
    item = get(server, "/v1/items/clip-04").json()
    assert (item["status"], item["stage"], item["account"], item["scenario"]) == (
        "failed",
        "publish",
        "acct-1",
        "stories",
    )
    assert item["stages_done"] == ["webhook", "download", "enqueue", "process"]
    assert item["last_error"]["type"] == "GraphAPIError"
    assert item["last_error"]["at"] == iso(T0 + 150)
    assert [(r["stage"], r["status"]) for r in item["runs"]] == [
        ("webhook", "succeeded"),
        ("download", "succeeded"),
        ("enqueue", "succeeded"),
        ("process", "succeeded"),
        ("publish", "failed"),
    ]
    assert "history" not in item
    assert "history" not in get(server, "/v1/items/clip-04", history="false").json()


@pytest.mark.parametrize("flag", ["1", "true"])
def test_history_is_the_items_events_in_time_order(server: LiveServer, flag: str) -> None:
    item = get(server, "/v1/items/clip-04", history=flag).json()
    history = item["history"]
    assert [h["id"] for h in history] == [f"clip-04#{n}" for n in range(6)]
    assert [h["type"] for h in history] == ["item.created"] + ["run.succeeded"] * 4 + ["run.failed"]
    assert [h["time"] for h in history] == sorted(h["time"] for h in history)
    assert history[0]["time"] == iso(T0 + 100)
    assert history[-1]["run_id"] == "clip-04/publish/1"
    assert history[-1]["error"]["message"] == "(#9004) media 17841 not ready"
    assert all(h["received_at"] for h in history)


def test_an_unknown_item_is_404_with_a_message(server: LiveServer) -> None:
    answer = get(server, "/v1/items/no-such-video")
    assert answer.status_code == 404
    assert answer.json() == {"error": "no item 'no-such-video'", "field": None}


@pytest.mark.parametrize("item_id", SPECIAL_IDS)
@pytest.mark.parametrize("safe", ["/", ""], ids=["slash-literal", "slash-encoded"])
def test_ids_with_slashes_spaces_and_unicode_work(server: LiveServer, item_id: str, safe: str) -> None:
    answer = httpx.get(f"{server.url}/v1/items/{quote(item_id, safe=safe)}", params={"history": 1})
    assert answer.status_code == 200, answer.text
    assert answer.json()["item_id"] == item_id
    assert {h["item_id"] for h in answer.json()["history"]} == {item_id}
    assert list_ids(server, prefix=item_id[:5]) == [item_id]


# --- lists and filters ---------------------------------------------------------------------------------


def test_an_unfiltered_list_is_every_item_newest_updated_first(server: LiveServer) -> None:
    assert list_ids(server) == newest_first(SEEDED)


@pytest.mark.parametrize(
    ("params", "wanted"),
    [
        ({"status": "failed"}, lambda s: s.status == "failed"),
        ({"status": "failed,queued"}, lambda s: s.status in {"failed", "queued"}),
        ({"status": ["failed", "queued"]}, lambda s: s.status in {"failed", "queued"}),
        ({"status": ["failed, queued", "received"]}, lambda s: s.status in {"failed", "queued", "received"}),
        ({"stage": "enqueue"}, lambda s: s.stage == "enqueue"),
        ({"account": "acct-1"}, lambda s: s.account == "acct-1"),
        ({"scenario": "reels"}, lambda s: s.scenario == "reels"),
        (
            {"scenario": "reels", "account": "acct-2", "status": "running,received"},
            lambda s: s.scenario == "reels" and s.account == "acct-2" and s.status in {"running", "received"},
        ),
        ({"pipeline": "instagram", "status": "ready_to_publish"}, lambda s: s.status == "ready_to_publish"),
        ({"pipeline": "other"}, lambda s: False),
        ({"prefix": "clip-1"}, lambda s: s.item_id.startswith("clip-1")),
        ({"prefix": "ig/2026/"}, lambda s: s.item_id.startswith("ig/2026/")),
        ({"prefix": "clip_"}, lambda s: False),  # "_" is a LIKE wildcard: it must be taken literally
        ({"prefix": "%"}, lambda s: False),
        ({"updated_since": iso(T0 + 550)}, lambda s: s.updated_at >= T0 + 550),
        ({"updated_since": str(T0 + 550)}, lambda s: s.updated_at >= T0 + 550),
        ({"updated_since": str(T0 + 550.5)}, lambda s: s.updated_at > T0 + 550),
        (
            {"updated_since": (datetime.fromtimestamp(T0 + 550, UTC).astimezone().isoformat())},
            lambda s: s.updated_at >= T0 + 550,
        ),
    ],
)
def test_filters_select_exactly_the_matching_items(
    server: LiveServer, params: dict[str, Any], wanted: Any
) -> None:
    expected = newest_first([s for s in SEEDED if wanted(s)])
    assert list_ids(server, **params) == expected
    if params.get("pipeline") != "other" and "%" not in params.values() and "clip_" not in params.values():
        assert expected, "the seed should make every filter match something"


def test_the_id_prefix_is_case_sensitive(server: LiveServer) -> None:
    assert list_ids(server, prefix="CLIP-1") == []


def test_cursor_pagination_walks_every_item_exactly_once(server: LiveServer) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = get(server, "/v1/items", **params).json()
        pages += 1
        assert len(page["items"]) <= 7
        seen += [item["item_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 7
        assert pages < 10, "pagination does not end"
    assert seen == newest_first(SEEDED)
    assert pages == 5  # 32 items: 7 + 7 + 7 + 7 + 4


def test_pagination_respects_the_filter(server: LiveServer) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2, "status": "queued,failed"}
    while True:
        page = get(server, "/v1/items", **params).json()
        seen += [item["item_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == newest_first([s for s in SEEDED if s.status in {"queued", "failed"}])


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"status": "done"}, 422, "status"),
        ({"status": "failed,bogus"}, 422, "status"),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 501}, 422, "limit"),
        ({"limit": "seven"}, 422, "limit"),
        ({"cursor": "not-a-cursor!"}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"not json").decode()}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"[1, 2, 3]").decode()}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'"12"').decode()}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'[NaN, "clip-01"]').decode()}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'["1", "clip-01"]').decode()}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'[true, "clip-01"]').decode()}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"[1767225600, 7]").decode()}, 400, "cursor"),
        ({"updated_since": "last tuesday"}, 422, "updated_since"),
    ],
)
def test_bad_list_parameters_are_4xx_naming_the_field(
    server: LiveServer, params: dict[str, Any], status: int, field: str
) -> None:
    answer = get(server, "/v1/items", **params)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field
    assert answer.json()["error"]


def test_an_unknown_status_lists_the_known_ones(server: LiveServer) -> None:
    error = get(server, "/v1/items", status="dead").json()["error"]
    assert "'dead'" in error and "ready_to_publish" in error and "dead_lettered" in error


# --- summary and health --------------------------------------------------------------------------------


def test_the_summary_counts_items_per_stage_and_the_oldest_queued_age(server: LiveServer) -> None:
    summary = get(server, "/v1/summary").json()
    (pipeline,) = summary["pipelines"]
    assert pipeline["pipeline"] == "instagram"
    assert pipeline["items"] == len(SEEDED)
    stages = {row["stage"]: row for row in pipeline["stages"]}
    assert list(stages) == list(STAGES)
    for stage in STAGES:
        row = stages[stage]
        for status in ("queued", "running", "failed", "ready_to_publish", "published", "cancelled"):
            expected = sum(1 for s in SEEDED if (s.stage, s.status) == (stage, status))
            assert row[status] == expected, (stage, status)
    assert (stages["download"]["running"], stages["enqueue"]["queued"]) == (7, 6)
    assert [stages[s]["done"] for s in STAGES] == [
        sum(1 for i in range(len(SEEDED)) if i % 5 >= 1),
        sum(1 for i in range(len(SEEDED)) if i % 5 >= 2),
        sum(1 for i in range(len(SEEDED)) if i % 5 >= 3),
        sum(1 for i in range(len(SEEDED)) if i % 5 >= 3),
        0,
    ]
    generated = datetime.fromisoformat(summary["generated_at"].replace("Z", "+00:00")).timestamp()
    oldest = min(s.status_since for s in SEEDED if s.status == "queued")
    assert stages["enqueue"]["oldest_queued_age_seconds"] == pytest.approx(generated - oldest, abs=0.002)
    assert stages["download"]["oldest_queued_age_seconds"] is None


def test_readyz_is_ok_when_the_database_answers(server: LiveServer) -> None:
    answer = get(server, "/readyz")
    assert answer.status_code == 200
    assert answer.json()["checks"]["database"]["ok"] is True


def test_readyz_is_503_when_the_sqlite_database_is_gone(tmp_path: Path) -> None:
    """The database's directory is removed before the server has opened a read connection. (Once one is
    pooled, SQLite keeps answering from the unlinked file, so this is the only observable case.)"""
    folder = tmp_path / "data"
    folder.mkdir()
    live = start_server(f"sqlite:///{folder / 'stagewatch.db'}", tmp_path / "server.log")
    try:
        shutil.rmtree(folder)
        answer = httpx.get(f"{live.url}/readyz", timeout=30)
        assert answer.status_code == 503
        assert answer.json() == {
            "status": "unavailable",
            "checks": {"database": {"ok": False, "error": "OperationalError"}},
        }
        assert httpx.get(f"{live.url}/healthz", timeout=30).status_code == 200
    finally:
        stop_server(live)
