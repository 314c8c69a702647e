"""Acting from the dashboard, as an operator: cancel a running video and watch another window see it
change without reloading, replay a dead letter, cancel everything a filter matches after seeing the
count. And what must never work: a POST without this session's CSRF token, or from another site, and
a video id, error message or log line that smuggles HTML into the page."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

import stagewatch
from stagewatch.demo.faults import Fault
from tests.web.conftest import Dashboard, expect, log_in, screenshot, video_with

pytestmark = pytest.mark.slow


def _item(dashboard: Dashboard, item_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {dashboard.reader}"}
    answer = httpx.get(f"{dashboard.url}/v1/items/{item_id}", headers=headers)
    return dict(answer.json()) if answer.status_code == 200 else {}


@contextmanager
def running_video(dashboard: Dashboard, item_id: str) -> Iterator[list[str]]:
    """A guarded ``process`` run of ``item_id`` that works (checking in) until it is told to stop or the
    block ends. Yields the list its outcome is appended to."""
    client = stagewatch.Client(dashboard.url, dashboard.ingest, heartbeat_interval=0.3, spool_dir=False)
    outcome: list[str] = []
    done = threading.Event()

    def work() -> None:
        try:
            with client.stage("process", item_id, account="acct-web", payload={"video": item_id}) as run:
                while not done.wait(0.05):
                    run.check()
            outcome.append("finished")
        except stagewatch.Cancelled as stopped:
            outcome.append(f"cancelled: {stopped}")

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while _item(dashboard, item_id).get("status") != "running":
        assert time.monotonic() < deadline, "the guarded run did not start"
        time.sleep(0.1)
    try:
        yield outcome
    finally:
        done.set()
        worker.join(10)
        client.close()


def test_cancel_a_running_video_and_another_window_sees_it_live(dashboard: Dashboard, new_page: Any) -> None:
    item_id = f"web-live-{uuid.uuid4().hex[:6]}"
    with running_video(dashboard, item_id) as outcome:
        watcher = log_in(new_page(), dashboard.url, dashboard.reader)
        watcher.goto(f"{dashboard.url}/videos/{item_id}")
        assert watcher.locator("#video-head [data-status]").get_attribute("data-status") == "running"
        watcher.wait_for_selector("[data-live-status].on")
        watcher.evaluate("window.notReloaded = true")

        operator = log_in(new_page(), dashboard.url, dashboard.operator)
        operator.goto(f"{dashboard.url}/inflight")
        row = operator.locator("#inflight-table tbody tr", has_text=item_id)
        assert row.get_by_role("button", name="Stop").count() == 1
        screenshot(operator, "inflight")
        operator.goto(f"{dashboard.url}/videos/{item_id}")
        operator.locator("#cancel-reason").fill("customer withdrew the video")
        operator.get_by_role("button", name="Cancel video").click()
        assert (
            f"Cancelled {item_id}: customer withdrew the video" in operator.get_by_role("status").inner_text()
        )

        expect(watcher.locator("#video-head [data-status]")).to_have_attribute(
            "data-status", "cancelled", timeout=10_000
        )
        assert watcher.evaluate("window.notReloaded") is True, "the page changed without a reload"
        expect(watcher.get_by_text("This video has changed since the page was loaded")).to_be_visible()
        assert (
            "cancelled by web-operator: customer withdrew the video"
            in watcher.locator("#video-head").inner_text()
        )
        screenshot(watcher, "video-cancelled-live")
        deadline = time.monotonic() + 10
        while not outcome and time.monotonic() < deadline:
            time.sleep(0.1)
    assert outcome and outcome[0].startswith("cancelled"), "the worker was told to stop"
    operator.goto(f"{dashboard.url}/audit?action=item.cancel&target={item_id}")
    row_text = operator.locator("#audit tbody tr").first.inner_text()
    assert "web-operator" in row_text and "customer withdrew the video" in row_text


def test_replay_a_dead_letter(dashboard: Dashboard, new_page: Any) -> None:
    video = video_with(Fault.DOWNLOAD_404)
    page = log_in(new_page(), dashboard.url, dashboard.operator)
    page.goto(f"{dashboard.url}/dead-letters?item_id={video}")
    row = page.locator("#dead-letters tbody tr", has_text=video)
    row.get_by_text("Payload").click()
    assert "source_url" in row.locator("pre").first.inner_text()
    row.get_by_placeholder("Reason").fill("the source is back")
    row.get_by_role("button", name="Replay").click()
    assert re.search(r"Replayed dead letter #\d+", page.get_by_role("status").inner_text())
    page.goto(f"{dashboard.url}/dead-letters?status=all&item_id={video}")
    assert "replayed" in page.locator("#dead-letters tbody tr").first.inner_text()
    page.goto(f"{dashboard.url}/videos/{video}")
    assert page.locator("#video-head [data-status]").get_attribute("data-status") != "dead_lettered"
    history = page.locator("section[aria-labelledby=hist-h]").inner_text()
    assert "replayed from the dead-letter queue by web-operator: the source is back" in history
    assert "dlq.replay" in page.locator("section[aria-labelledby=audit-h]").inner_text()
    screenshot(page, "video-replayed")


def test_bulk_cancel_shows_the_count_first_then_cancels_them_all(dashboard: Dashboard, new_page: Any) -> None:
    page = log_in(new_page(), dashboard.url, dashboard.operator)
    page.goto(f"{dashboard.url}/videos?status=waiting")
    waiting = page.locator("#videos tbody tr a").count()
    assert waiting >= 1, "the demo leaves the quota-bound video waiting"
    page.get_by_role("button", name="Cancel matching videos…").click()
    assert page.get_by_test_id("bulk-count").inner_text() == str(waiting)
    screenshot(page, "bulk-confirm")
    page.get_by_label("Reason").fill("account closed")
    page.get_by_role("button", name=f"Yes, cancel {waiting}").click()
    assert (
        f"Cancelled {waiting} videos (status waiting): account closed"
        in page.get_by_role("status").inner_text()
    )
    assert page.locator("#videos tbody tr a").count() == 0
    page.goto(f"{dashboard.url}/audit?action=item.cancel")
    assert page.locator("#audit tbody tr", has_text="account closed").count() == waiting


def test_a_post_without_this_session_s_csrf_token_is_refused(dashboard: Dashboard, new_page: Any) -> None:
    video = video_with(Fault.CONTAINER_ERROR)
    reader = log_in(new_page(), dashboard.url, dashboard.reader)
    someone_elses = reader.locator("input[name=csrf]").first.get_attribute("value")
    page = log_in(new_page(), dashboard.url, dashboard.operator)
    own = page.locator("input[name=csrf]").first.get_attribute("value")
    url, form = f"{dashboard.url}/actions/cancel", {"item_id": video, "reason": "forged"}
    assert page.request.post(url, form=form).status == 403
    assert page.request.post(url, form={**form, "csrf": someone_elses}).status == 403
    from_elsewhere = page.request.post(
        url, form={**form, "csrf": own}, headers={"Origin": "https://evil.example"}
    )
    assert from_elsewhere.status == 403
    assert _item(dashboard, video)["status"] == "dead_lettered", "no forged POST changed anything"
    assert page.request.post(f"{dashboard.url}/actions/cancel", form={**form, "csrf": own}).status == 200


def test_html_in_ids_errors_and_log_lines_is_shown_as_text(dashboard: Dashboard, new_page: Any) -> None:
    evil = "xss-<script>document.title='owned'</script>"
    headers = {"Authorization": f"Bearer {dashboard.ingest}"}
    run = {"item_id": evil, "stage": "download", "run_id": "x/1"}
    events = [
        {"id": f"x-{uuid.uuid4()}", "type": "item.created", "item_id": evil, "account": "<b>acct</b>"},
        {"id": f"x-{uuid.uuid4()}", "type": "run.started", **run},
        {"id": f"x-{uuid.uuid4()}", "type": "run.failed", **run,
         "error": {"type": "ValueError", "message": "<img src=x onerror=\"document.title='owned'\">"}},
    ]  # fmt: skip
    assert httpx.post(f"{dashboard.url}/v1/events", json=events, headers=headers).status_code == 200
    line = {
        "id": f"l-{uuid.uuid4()}",
        "message": "<script>document.title='owned'</script> in a log",
        "item_id": evil,
    }
    assert httpx.post(f"{dashboard.url}/v1/logs", json=[line], headers=headers).status_code in (200, 202)

    page = log_in(new_page(), dashboard.url, dashboard.reader)
    page.goto(f"{dashboard.url}/videos?q=xss-")
    assert evil in page.locator("#videos tbody").inner_text()
    page.get_by_role("link", name=evil).click()
    page.wait_for_selector("[data-live-status].on")
    page.wait_for_timeout(500)  # the live stream has re-rendered the header by now
    assert page.locator("#video-head h1").inner_text() == evil
    assert "<b>acct</b>" in page.locator("#video-head").inner_text()
    assert "<img src=x onerror=" in page.locator("section[aria-labelledby=err-h]").inner_text()
    assert (
        "<script>document.title='owned'</script> in a log"
        in page.locator("section[aria-labelledby=logs-h]").inner_text()
    )
    assert page.locator("main script, main img").count() == 0
    screenshot(page, "video-xss-as-text")
    page.goto(f"{dashboard.url}/logs?q=log")
    assert "<script>document.title='owned'</script>" in page.locator("#log-lines").inner_text()
    assert page.title() != "owned" and page.locator("main script").count() == 0


def test_logging_out_ends_the_session(dashboard: Dashboard, new_page: Any) -> None:
    page = log_in(new_page(), dashboard.url, dashboard.operator)
    page.get_by_role("button", name="Log out").click()
    assert "You are logged out." in page.get_by_role("status").inner_text()
    page.goto(f"{dashboard.url}/videos")
    assert "/login" in page.url
