"""``POST /v1/events`` against a real server process, on SQLite and PostgreSQL: partial acceptance with
per-index errors, idempotent re-posting, size caps, shape errors, and concurrent posting that neither
loses nor doubles an event.

One server per database serves the whole module (starting one takes seconds); every test uses its own
ids, so tests do not see each other's events.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from stagewatch.api.app import create_app
from stagewatch.domain.pipeline import PipelineRegistry, instagram_preset
from stagewatch.settings import Settings
from tests.conftest import LiveServer

T0 = float(int(time.time()) - 3600)


@pytest.fixture(scope="module")
def server(module_server: LiveServer) -> LiveServer:
    """A real ``stagewatch serve`` on an empty database, shared by this module's tests."""
    return module_server


@pytest.fixture
def ns() -> str:
    """A prefix that makes this test's event and item ids its own."""
    return uuid.uuid4().hex[:10]


def post(server: LiveServer, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/events", json=body, timeout=30, **kwargs)


def post_raw(server: LiveServer, content: bytes | str) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(f"{server.url}/v1/events", content=content, headers=headers, timeout=30)


def get_item(server: LiveServer, item_id: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/items/{item_id}", params=params, timeout=30)


def event(ns: str, n: int, kind: str = "item.created", item: str = "v", **fields: Any) -> dict[str, Any]:
    return {"id": f"{ns}-e{n}", "type": kind, "item_id": f"{ns}-{item}", "time": T0 + n, **fields}


def test_valid_events_are_kept_and_each_rejected_one_is_explained(server: LiveServer, ns: str) -> None:
    batch = [
        event(ns, 0, account="acct-1"),
        event(ns, 1, "run.started", stage="download"),
        event(ns, 2, "run.started", stage="dowload"),
        event(ns, 3, "run.failed", stage="download"),
        event(ns, 4, time=(T0 + 4) * 1000),
        "not an event",
        event(ns, 6, stauts="running"),
        event(ns, 7, pipeline="tiktok"),
        event(ns, 8, "run.succeeded", stage="download", attempt=1),
        event(ns, 9, "run.heartbeat", stage="download", note="nul \x00 here"),
    ]
    answer = post(server, batch)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (3, 0, 7)
    errors = {e["index"]: e for e in body["errors"]}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 9]
    assert {i: (e["id"], e["field"]) for i, e in errors.items()} == {
        2: (f"{ns}-e2", "stage"),
        3: (f"{ns}-e3", "error"),
        4: (f"{ns}-e4", "time"),
        5: (None, ""),
        6: (f"{ns}-e6", "stauts"),
        7: (f"{ns}-e7", "pipeline"),
        9: (f"{ns}-e9", "note"),
    }
    assert "'dowload' is not in pipeline 'instagram'" in errors[2]["error"]
    assert errors[3]["error"] == "error is required for run.failed events"
    assert "milliseconds" in errors[4]["error"]
    assert "JSON object" in errors[5]["error"]
    assert "not permitted" in errors[6]["error"]
    assert "'tiktok'" in errors[7]["error"] and "instagram" in errors[7]["error"]
    assert "NUL" in errors[9]["error"]

    item = get_item(server, f"{ns}-v", history=1).json()
    assert (item["status"], item["stage"], item["account"]) == ("queued", "enqueue", "acct-1")
    assert item["event_count"] == 3
    assert [h["id"] for h in item["history"]] == [f"{ns}-e0", f"{ns}-e1", f"{ns}-e8"]

    again = post(server, {"events": batch})
    assert again.status_code == 200
    assert (again.json()["accepted"], again.json()["duplicate"], again.json()["rejected"]) == (0, 3, 7)
    assert get_item(server, f"{ns}-v").json()["event_count"] == 3


def test_a_batch_repeating_an_id_stores_it_once(server: LiveServer, ns: str) -> None:
    one = event(ns, 0)
    body = post(server, [one, event(ns, 1, "run.enqueued", stage="download"), one]).json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 1, 0)
    assert get_item(server, f"{ns}-v").json()["event_count"] == 2


def test_a_default_run_id_too_long_for_the_database_is_rejected_not_fatal(
    server: LiveServer, ns: str
) -> None:
    long_item = f"{ns}-" + "x" * (256 - len(ns) - 1)
    batch = [
        {"id": f"{ns}-a", "type": "item.created", "item_id": long_item, "time": T0},
        {"id": f"{ns}-b", "type": "run.started", "item_id": long_item, "stage": "download", "time": T0 + 1},
        {"id": f"{ns}-c", "type": "run.started", "item_id": long_item, "stage": "process", "run_id": "r-1"},
    ]
    answer = post(server, batch)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert (body["errors"][0]["index"], body["errors"][0]["field"]) == (1, "run_id")
    assert get_item(server, long_item).json()["event_count"] == 2


def test_over_1000_events_is_413_naming_the_limit(server: LiveServer, ns: str) -> None:
    batch = [event(ns, n, item=f"v{n % 3}") for n in range(1001)]
    answer = post(server, batch)
    assert answer.status_code == 413
    assert answer.json()["field"] == "events"
    assert "1001 events" in answer.json()["error"] and "limit of 1000" in answer.json()["error"]
    assert get_item(server, f"{ns}-v0").status_code == 404

    answer = post(server, {"events": batch[:1000]})
    assert answer.status_code == 200
    assert answer.json()["accepted"] == 1000


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('[{"id": "x", "type": "item.created", "item_id": "v"', "malformed JSON"),
        ("{'id': 'single quotes'}", "malformed JSON"),
        ("[1, 2,]", "malformed JSON"),
        (b"\xff\xfe[]", "malformed JSON"),
        ("", "empty"),
        ("   \n", "empty"),
    ],
)
def test_a_body_that_is_not_json_is_400_naming_the_body(server: LiveServer, content: str, words: str) -> None:
    answer = post_raw(server, content)
    assert answer.status_code == 400
    assert answer.json()["field"] == "body"
    assert words in answer.json()["error"]


@pytest.mark.parametrize(
    "content",
    ['{"event": []}', '{"events": {"id": "x"}}', '{"events": null}', "42", '"events"', "null", "true"],
)
def test_json_of_the_wrong_shape_is_422_naming_events(server: LiveServer, content: str) -> None:
    answer = post_raw(server, content)
    assert answer.status_code == 422
    assert answer.json()["field"] == "events"
    assert "array of events" in answer.json()["error"]


def test_an_empty_batch_is_fine_and_does_nothing(server: LiveServer) -> None:
    answer = post(server, [])
    assert answer.status_code == 200
    assert answer.json() == {"accepted": 0, "duplicate": 0, "rejected": 0, "errors": []}


def test_a_batch_where_every_event_is_invalid_is_422_with_each_error(server: LiveServer, ns: str) -> None:
    batch = [
        event(ns, 0, "run.started"),
        event(ns, 1, "run.started", stage="upload"),
        event(ns, 2, trace_id="XYZ"),
        {"type": "item.created", "item_id": f"{ns}-v"},
    ]
    answer = post(server, batch)
    assert answer.status_code == 422
    body = answer.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (0, 0, 4)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (0, "stage"),
        (1, "stage"),
        (2, "trace_id"),
        (3, "id"),
    ]
    assert all(e["error"] for e in body["errors"])
    assert get_item(server, f"{ns}-v").status_code == 404


def test_concurrent_posting_loses_nothing_and_doubles_nothing(server: LiveServer, ns: str) -> None:
    """8 clients x 20 batches drawn from one pool of 300 events, so most events arrive several times and
    often in concurrent requests; every id must be stored exactly once."""
    pool = []
    for n in range(300):
        item = f"c{n % 5}"
        if n % 3 == 0:
            pool.append(event(ns, n, "run.heartbeat", item=item, stage="download", progress=(n % 10) / 10))
        else:
            pool.append(event(ns, n, "item.annotated", item=item, note=f"note {n}", attrs={"n": n}))
    answers: list[dict[str, Any]] = []
    posted: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(20):
                batch = rng.sample(pool, 25)
                response = http.post("/v1/events", json=batch)
                with lock:
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                        continue
                    answers.append(response.json())
                    posted.extend(e["id"] for e in batch)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert len(answers) == 160
    unique = set(posted)
    assert sum(a["accepted"] for a in answers) == len(unique)
    assert sum(a["duplicate"] for a in answers) == len(posted) - len(unique)
    assert all(a["rejected"] == 0 for a in answers)
    stored = 0
    for k in range(5):
        item = get_item(server, f"{ns}-c{k}", history=1).json()
        expected = {e["id"] for e in pool if e["item_id"] == f"{ns}-c{k}"} & unique
        assert item["event_count"] == len(expected)
        assert sorted(h["id"] for h in item["history"]) == sorted(expected)
        stored += item["event_count"]
    assert stored == len(unique)


# --- the byte cap, in-process with a small cap ------------------------------------------------------------


@pytest.fixture
def small_cap_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'cap.db'}", max_body_bytes=2048)
    app = create_app(settings, PipelineRegistry.of([instagram_preset()]))
    with TestClient(app) as client:
        yield client


def _body_of(size: int) -> bytes:
    """A valid batch of exactly ``size`` bytes."""
    prefix, suffix = b'[{"id": "cap-1", "type": "item.created", "item_id": "v", "note": "', b'"}]'
    return prefix + b"n" * (size - len(prefix) - len(suffix)) + suffix


def test_a_body_over_the_byte_cap_is_413(small_cap_client: TestClient) -> None:
    answer = small_cap_client.post("/v1/events", content=_body_of(2049))
    assert answer.status_code == 413
    assert "limit of 2048 bytes" in answer.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap is enforced while reading
        body = _body_of(4000)
        yield from (body[i : i + 500] for i in range(0, len(body), 500))

    answer = small_cap_client.post("/v1/events", content=chunks())
    assert answer.status_code == 413
    assert "limit of 2048 bytes" in answer.json()["error"]
    assert small_cap_client.get("/v1/items/v").status_code == 404

    answer = small_cap_client.post("/v1/events", content=_body_of(2048))
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
