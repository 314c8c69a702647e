"""Runs as the server sees them: status, errors, trace ids, heartbeats, progress, notes, costs and
attributes, from the context manager, the decorator (sync and async) and the AsyncClient."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import stagewatch
from stagewatch import AsyncClient, Client, current_run
from stagewatch.sdk.tracing import parse_traceparent
from tests.conftest import LiveServer
from tests.sdk.conftest import get_item, new_id


class GraphAPIError(Exception):
    """Like Instagram's: the API says whether the error is transient."""

    def __init__(self, message: str, *, is_transient: bool) -> None:
        super().__init__(message)
        self.is_transient = is_transient


def run_of(item: dict[str, Any], stage: str) -> dict[str, Any]:
    (run,) = [r for r in item["runs"] if r["stage"] == stage]
    found: dict[str, Any] = run
    return found


def test_a_succeeding_and_a_failing_stage_are_reported_and_the_exception_reaches_the_caller(
    client: Client, sdk_server: LiveServer
) -> None:
    vid = new_id()
    with client.stage("download", vid, account="acct-1", scenario="reels") as run:
        assert current_run() is run
    boom = GraphAPIError("(#4) Application request limit reached", is_transient=True)
    with pytest.raises(GraphAPIError) as caught, client.stage("process", vid):
        raise boom
    assert caught.value is boom
    assert client.flush()

    item = get_item(sdk_server, vid)
    assert (item["status"], item["stage"], item["account"], item["scenario"]) == (
        "failed", "process", "acct-1", "reels",
    )  # fmt: skip
    assert run_of(item, "download")["status"] == "succeeded"
    assert run_of(item, "download")["run_id"] == run.run_id
    error = run_of(item, "process")["error"]
    assert error["type"] == "tests.sdk.test_runs.GraphAPIError"
    assert error["message"] == "(#4) Application request limit reached"
    assert error["retryable"] is True
    assert "Traceback (most recent call last)" in error["stack"] and "raise boom" in error["stack"]


def test_retryable_set_by_code_wins_over_the_exception(client: Client, sdk_server: LiveServer) -> None:
    vid = new_id()
    with pytest.raises(GraphAPIError), client.stage("publish", vid) as run:
        run.retryable = False
        raise GraphAPIError("media container status ERROR", is_transient=True)
    with pytest.raises(KeyError), client.stage("process", vid):
        raise KeyError("no flag at all")
    assert client.flush()
    item = get_item(sdk_server, vid)
    assert run_of(item, "publish")["error"]["retryable"] is False
    assert run_of(item, "process")["error"] == {**run_of(item, "process")["error"], "type": "KeyError"}
    assert run_of(item, "process")["error"]["retryable"] is None


def test_sync_decorator_keeps_runs_apart_across_threads(client: Client, sdk_server: LiveServer) -> None:
    @client.task("download", item_id="video_id", account="acct-7")
    def download(video_id: str, delay: float) -> str:
        time.sleep(delay)
        run = current_run()
        assert run is not None and run.item_id == video_id
        return run.run_id

    vids = [new_id() for _ in range(8)]
    with ThreadPoolExecutor(4) as pool:
        run_ids = list(pool.map(download, vids, [0.01 * (i % 3) for i in range(8)]))
    assert len(set(run_ids)) == 8 and current_run() is None
    assert client.flush()
    for vid, run_id in zip(vids, run_ids, strict=True):
        item = get_item(sdk_server, vid)
        assert (item["account"], run_of(item, "download")["run_id"]) == ("acct-7", run_id)


def test_async_decorator_and_async_client_keep_concurrent_tasks_apart(
    sdk_server: LiveServer, tmp_path: Path
) -> None:
    async def main() -> tuple[list[str], list[str], list[str]]:
        async with AsyncClient(sdk_server.url, spool_dir=tmp_path / "spool", flush_interval=0.02) as client:

            @client.task("process", item_id=lambda args: args["message"]["video"])
            async def process(message: dict[str, str]) -> str:
                await asyncio.sleep(0.01)
                run = current_run()
                assert run is not None and run.item_id == message["video"]
                return run.run_id

            async def publish(video: str, delay: float) -> str:
                async with client.stage("publish", video) as run:
                    await asyncio.sleep(delay)
                    assert current_run() is run
                    return run.run_id

            vids = [new_id() for _ in range(10)]
            processed = await asyncio.gather(*(process({"video": v}) for v in vids))
            published = await asyncio.gather(*(publish(v, 0.005 * (i % 4)) for i, v in enumerate(vids)))
            assert await client.flush()
            return vids, list(processed), list(published)

    vids, processed, published = asyncio.run(main())
    assert len(set(processed) | set(published)) == 20
    for vid, process_id, publish_id in zip(vids, processed, published, strict=True):
        item = get_item(sdk_server, vid)
        assert run_of(item, "process")["run_id"] == process_id
        assert run_of(item, "publish")["run_id"] == publish_id
        assert item["status"] == "published"


def test_one_trace_from_item_created_through_every_stage(client: Client, sdk_server: LiveServer) -> None:
    vid = new_id()
    trace = client.item_created(vid, source="webhook:airtable", actor="alice", params={"caption": "hi"})
    with client.stage("download", vid):
        pass
    with client.stage("process", vid) as outer, client.stage("publish", vid) as inner:
        assert inner.trace_id == outer.trace_id == trace
    assert client.flush()
    item = get_item(sdk_server, vid)
    assert (item["trace_id"], item["source"], item["actor"], item["params"]) == (
        trace, "webhook:airtable", "alice", {"caption": "hi"},
    )  # fmt: skip
    assert {run["trace_id"] for run in item["runs"]} == {trace}
    assert len({run["span_id"] for run in item["runs"]}) == 3


def test_a_traceparent_continues_the_given_trace_in_another_process(
    client: Client, sdk_server: LiveServer, tmp_path: Path
) -> None:
    vid = new_id()
    with client.stage("process", vid) as run:
        header = run.traceparent  # what the worker puts in the Pub/Sub message's attributes
    parent = parse_traceparent(header)
    assert parent is not None and (parent.trace_id, parent.span_id) == (run.trace_id, run.span_id)
    with Client(sdk_server.url, spool_dir=tmp_path / "other") as other:
        with other.stage("publish", vid, traceparent=header) as child:
            assert child.trace_id == run.trace_id and child.span_id != run.span_id
        with other.stage("publish", new_id(), traceparent="garbage") as fresh:
            assert fresh.trace_id != run.trace_id
        assert other.flush()
    assert client.flush()
    assert {r["trace_id"] for r in get_item(sdk_server, vid)["runs"]} == {run.trace_id}


def test_heartbeats_arrive_with_resources_and_progress(client: Client, sdk_server: LiveServer) -> None:
    vid = new_id()
    with client.stage("process", vid) as run:
        run.progress(0.25)
        time.sleep(0.7)  # heartbeat_interval is 0.2 s
    assert client.flush()
    item = get_item(sdk_server, vid)
    beats = [e for e in item["history"] if e["type"] == "run.heartbeat"]
    assert len(beats) >= 2
    assert all(b["resources"]["rss_bytes"] > 1e6 and "cpu_percent" in b["resources"] for b in beats)
    assert beats[-1]["progress"] == 0.25 and beats[-1]["run_id"] == run.run_id
    assert run_of(item, "process")["resources"]["rss_bytes"] > 1e6


def test_progress_notes_costs_and_attributes_are_visible(client: Client, sdk_server: LiveServer) -> None:
    vid = new_id()
    with client.stage("publish", vid) as run:
        run.progress(0.4, "container created")
        run.progress("half", None)  # type: ignore[arg-type]  # a bad value is logged, never raised
        run.add_cost("instagram_api_call", 3)
        run.annotate("cropped to 9:16", ratio=0.5625)
        run.set_attrs(duration_s=31, codec="h264", path=Path("/tmp/v.mp4"))
        run.progress(7)  # clamped
        run.check()
    assert client.flush()
    item = get_item(sdk_server, vid)
    publish = run_of(item, "publish")
    assert (publish["progress"], publish["progress_note"]) == (1.0, None)
    notes = [e.get("note") for e in item["history"] if e["type"] == "item.annotated"]
    assert notes == ["cost instagram_api_call=3", "cropped to 9:16", None]
    assert [e["progress"] for e in item["history"] if e["type"] == "run.progress"] == [0.4, 1.0]
    assert item["attrs"] == {
        "cost_unit": "instagram_api_call", "cost_quantity": 3, "ratio": 0.5625,
        "duration_s": 31, "codec": "h264", "path": "/tmp/v.mp4",
    }  # fmt: skip
    annotated = [e for e in item["history"] if e["type"] == "item.annotated"]
    assert {(e["stage"], e["span_id"]) for e in annotated} == {("publish", run.span_id)}


def test_enqueued_and_the_worker_s_stage_are_one_run(client: Client, sdk_server: LiveServer) -> None:
    vid = new_id()
    run_id = client.enqueued("process", vid, attempt=2)
    time.sleep(0.05)
    with client.stage("process", vid, attempt=2, run_id=run_id):
        pass
    assert client.flush()
    (run,) = get_item(sdk_server, vid)["runs"]
    assert (run["run_id"], run["attempt"], run["status"]) == (run_id, 2, "succeeded")
    assert run["queued_seconds"] >= 0.04


def test_a_disabled_client_still_gives_working_runs_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STAGEWATCH_URL", raising=False)
    for client in (Client(enabled=False), Client()):
        with client.stage("download", "v-1") as run:
            assert current_run() is run and run.reporting is False
            run.progress(0.5)
            run.add_cost("x", 1)
            run.log.info("still logs locally")
        with pytest.raises(ValueError), client.stage("process", "v-1"):
            raise ValueError("still re-raised")
        assert client.item_created("v-1") and client.enqueued("download", "v-1")
        client.emit_log({"message": "nowhere"})
        assert client.flush() and client.stats == stagewatch.sdk.Stats()
        client.close()


def test_cancellation_signals_are_reported_as_cancelled(client: Client, sdk_server: LiveServer) -> None:
    vid = new_id()
    with pytest.raises(stagewatch.Cancelled), client.stage("process", vid):
        raise stagewatch.Cancelled("operator asked to stop")
    assert client.flush()
    run = get_item(sdk_server, vid)["runs"][0]
    assert run["status"] == "cancelled"
