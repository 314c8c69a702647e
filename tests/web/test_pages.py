"""What a person sees on each page of the dashboard, logged in with a read-only token, on the demo's
data: the pipeline and its counts, a video found by its id and its whole story, the other pages, and no
button that a read-only login could press (a forged POST is refused all the same)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from stagewatch.demo.faults import Fault
from tests.web.conftest import STAGES, Dashboard, log_in, screenshot, video_with

pytestmark = pytest.mark.slow

# Seed 7 publishes at least half of its 30 videos, plus the 50 posts of the day before.
VIDEOS_PUBLISHED = 15


def test_without_a_session_every_page_sends_you_to_the_login_form(dashboard: Dashboard) -> None:
    for path in ("/", "/videos?status=failed", "/dead-letters", "/inflight"):
        answer = httpx.get(dashboard.url + path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")
    assert httpx.get(dashboard.url + "/live/overview", follow_redirects=False).status_code == 303


def test_a_wrong_or_ingest_only_token_is_turned_away_with_a_reason(
    dashboard: Dashboard, new_page: Any
) -> None:
    page = new_page()
    page.goto(f"{dashboard.url}/login")
    page.get_by_label("API token").fill("sw_not-a-real-token")
    page.get_by_role("button", name="Log in").click()
    assert "That token was not accepted" in page.get_by_role("alert").inner_text()
    page.get_by_label("API token").fill(dashboard.ingest)
    page.get_by_role("button", name="Log in").click()
    assert "needs read" in page.get_by_role("alert").inner_text()
    screenshot(page, "login-refused")


def test_the_session_cookie_holds_no_token_and_no_script_can_read_it(
    dashboard: Dashboard, new_page: Any
) -> None:
    page = log_in(new_page(), dashboard.url, dashboard.reader)
    [session] = [c for c in page.context.cookies() if c["name"] == "sw_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert dashboard.reader not in session["value"]
    assert "sw_session" not in page.evaluate("document.cookie")


def test_the_overview_draws_every_stage_in_order_with_its_counts(dashboard: Dashboard, new_page: Any) -> None:
    page = log_in(new_page(), dashboard.url, dashboard.reader)
    cards = page.locator("ol.pipeline > li.stage")
    assert [cards.nth(i).locator("h3 a").inner_text() for i in range(cards.count())] == list(STAGES)
    download = page.locator("#stage-download")
    for words in ("queued", "running", "waiting", "failed", "dead-lettered", "stuck", "done"):
        assert download.get_by_text(words, exact=True).count() == 1, words
    assert download.locator("[data-key='download:dead_lettered'] dd").inner_text() == "1"
    assert int(page.locator("[data-key='publish:done'] dd").inner_text()) >= VIDEOS_PUBLISHED
    assert "Oldest queued" in download.inner_text()
    assert download.locator("svg[role=img]").get_attribute("aria-label").startswith("download runs, last 1h")
    assert "1 dead-lettered at download" in page.locator("#overview-problems").inner_text()
    page.wait_for_selector("[data-live-status].on")  # the live stream connected
    screenshot(page, "overview")
    phone = log_in(new_page(width=390, height=844), dashboard.url, dashboard.reader)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling on a phone"
    screenshot(phone, "overview-phone")


def test_search_a_video_by_id_and_read_why_it_failed(dashboard: Dashboard, new_page: Any) -> None:
    video = video_with(Fault.DOWNLOAD_404)
    page = log_in(new_page(), dashboard.url, dashboard.reader)
    page.get_by_role("link", name="Videos", exact=True).click()
    page.get_by_label("Video id starts with").fill(video[:8])
    page.get_by_role("button", name="Show").click()
    page.get_by_role("link", name=video).click()
    page.wait_for_url(re.compile(f"/videos/{video}$"))
    head = page.locator("#video-head")
    assert "dead-lettered" in head.inner_text() and "404 Not Found" in head.inner_text()
    assert "download" in head.locator(".facts").inner_text()
    assert page.locator("#video-timeline svg[role=img]").count() == 1
    history = page.locator("section[aria-labelledby=hist-h]").inner_text()
    assert "item.created" in history and "run.failed" in history and "item.dead_lettered" in history
    errors = page.locator("section[aria-labelledby=err-h]")
    assert "httpx.HTTPStatusError" in errors.inner_text()
    errors.get_by_text("Stack trace").first.click()
    assert "Traceback" in errors.locator("pre").first.inner_text()
    assert "open" in page.locator("section[aria-labelledby=dlq-h]").inner_text()
    assert page.locator("section[aria-labelledby=logs-h] tbody tr").count() > 0
    screenshot(page, "video-dead-lettered")


def test_a_video_s_logs_can_be_searched_on_its_page(dashboard: Dashboard, new_page: Any) -> None:
    video = video_with(Fault.FFMPEG_CRASH)
    page = log_in(new_page(), dashboard.url, dashboard.reader)
    page.goto(f"{dashboard.url}/videos/{video}")
    logs = page.locator("section[aria-labelledby=logs-h]")
    everything = logs.locator("tbody tr").count()
    logs.get_by_label("Search words").fill("ffmpeg")
    logs.get_by_role("button", name="Search").click()
    matching = page.locator("section[aria-labelledby=logs-h] tbody tr")
    assert 0 < matching.count() < everything
    assert all("ffmpeg" in text.lower() for text in matching.all_inner_texts())


def test_a_waiting_video_names_what_it_waits_for(dashboard: Dashboard, new_page: Any) -> None:
    page = log_in(new_page(), dashboard.url, dashboard.reader)
    page.goto(f"{dashboard.url}/videos/{video_with(Fault.PUBLISH_QUOTA)}")
    assert "Waiting for: rate publish account:acct-viral 50/50" in page.locator("#video-head").inner_text()
    assert "item.waiting" in page.locator("section[aria-labelledby=hist-h]").inner_text()


def test_the_other_pages_show_what_they_promise(dashboard: Dashboard, new_page: Any) -> None:
    page = log_in(new_page(), dashboard.url, dashboard.reader)
    page.goto(f"{dashboard.url}/errors?window=24h")
    errors = page.locator("table tbody").inner_text()
    assert "FfmpegError" in errors and "HTTPStatusError" in errors
    assert page.locator("table tbody svg[role=img]").count() > 0  # a sparkline per group
    screenshot(page, "errors")
    page.locator("table tbody tr", has_text="FfmpegError").get_by_role("link").click()
    assert video_with(Fault.FFMPEG_CRASH) in page.locator("table").inner_text()
    screenshot(page, "error-group")
    page.goto(f"{dashboard.url}/dead-letters")
    letters = page.locator("#dead-letters tbody").inner_text()
    assert video_with(Fault.DOWNLOAD_404) in letters and video_with(Fault.CONTAINER_ERROR) in letters
    screenshot(page, "dead-letters")
    page.goto(f"{dashboard.url}/logs?q=crashed&level=error")
    lines = page.locator("#log-lines tbody tr")
    assert lines.count() > 0 and all("crashed" in t for t in lines.all_inner_texts())
    screenshot(page, "logs")
    page.goto(f"{dashboard.url}/audit")
    assert "token.create" in page.locator("#audit").inner_text()
    screenshot(page, "audit")
    page.goto(f"{dashboard.url}/inflight")
    assert "running" in page.locator("#inflight-table caption").inner_text()
    screenshot(page, "inflight-idle")


def test_a_read_only_login_sees_no_button_and_its_posts_are_refused(
    dashboard: Dashboard, new_page: Any
) -> None:
    video = video_with(Fault.DOWNLOAD_404)
    page = log_in(new_page(), dashboard.url, dashboard.reader)
    assert "read only" in page.locator("header .who").inner_text()
    page.goto(f"{dashboard.url}/videos/{video}")
    assert page.get_by_role("button", name="Cancel video").count() == 0
    assert page.get_by_role("button", name="Replay").count() == 0
    page.goto(f"{dashboard.url}/videos?status=dead_lettered")
    assert page.get_by_role("button", name=re.compile("Cancel matching")).count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")  # from the logout form
    answer = page.request.post(
        f"{dashboard.url}/actions/cancel", form={"csrf": csrf, "item_id": video, "reason": "read-only try"}
    )
    assert answer.status == 403 and "operate" in answer.text()
    page.goto(f"{dashboard.url}/videos/{video}")
    assert "dead-lettered" in page.locator("#video-head").inner_text()  # nothing changed
    assert "read-only try" not in page.locator("section[aria-labelledby=audit-h]").inner_text()


def test_a_published_video_shows_what_it_cost_so_far(dashboard: Dashboard, new_page: Any) -> None:
    page = log_in(new_page(), dashboard.url, dashboard.reader)
    page.goto(f"{dashboard.url}/videos/{video_with(Fault.RATE_LIMIT)}")
    head = page.locator("#video-head").inner_text()
    units = r"[\d.]+ cloud_run_vcpu_seconds · [\d.]+ instagram_api_call · [\d.]+ storage_gb"
    assert re.search(rf"cost so far\s+{units}", head, re.IGNORECASE), head  # the label is styled upper-case
