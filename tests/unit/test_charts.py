"""The dashboard's SVG charts: well-formed markup that says in words what it draws, text that can never
become markup, and shapes that follow the data."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from stagewatch.service.dashboard import TimelineBar, timeline
from stagewatch.web.charts import duration, gantt, sparkline, throughput_chart

SVG = "{http://www.w3.org/2000/svg}"
EVIL = '<script>alert("x")</script>'
T0 = 1_800_000_000.0


def _parse(markup: Markup) -> ET.Element:
    """The chart as XML: a parse error here is markup a browser would mangle."""
    return ET.fromstring(str(markup))


def _label(root: ET.Element) -> str:
    label = root.get("aria-label")
    assert root.get("role") == "img" and label
    assert root.find(f"{SVG}title") is not None and root.find(f"{SVG}title").text == label  # type: ignore[union-attr]
    return label


def _bar(stage: str, attempt: int, status: str, start: float, end: float | None, **kw: object) -> TimelineBar:
    return TimelineBar(
        f"v1/{stage}/{attempt}", stage, attempt, status, kw.pop("queued", None), start, end, **kw
    )  # type: ignore[arg-type]


# --- sparkline ------------------------------------------------------------------------------------------


def test_a_sparkline_is_an_accessible_image_that_states_its_figures() -> None:
    root = _parse(sparkline([0, 2, 5, 1], label="TimeoutError at download, failures per hour"))
    assert _label(root) == "TimeoutError at download, failures per hour: 8 in 4 intervals, peak 5"


def test_a_sparkline_puts_the_peak_highest_and_marks_the_last_point() -> None:
    root = _parse(sparkline([1, 9, 3], label="x", width=100, height=20))
    points = [tuple(map(float, p.split(","))) for p in root.find(f"{SVG}polyline").get("points").split()]  # type: ignore[union-attr]
    assert len(points) == 3 and min(points, key=lambda p: p[1]) == points[1]  # SVG's y grows downwards
    assert [p[0] for p in points] == sorted(p[0] for p in points)
    last = root.find(f"{SVG}circle")
    assert last is not None and (float(last.get("cx", "")), float(last.get("cy", ""))) == points[-1]


def test_a_flat_or_empty_sparkline_still_draws() -> None:
    flat = _parse(sparkline([0, 0, 0], label="quiet"))
    assert _label(flat) == "quiet: 0 in 3 intervals, peak 0"
    assert _label(_parse(sparkline([], label="nothing"))) == "nothing: no data"


def test_a_sparkline_label_is_text_never_markup() -> None:
    markup = sparkline([1, 2], label=EVIL)
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert _label(_parse(markup)).startswith(EVIL)


# --- throughput -----------------------------------------------------------------------------------------


def test_the_throughput_chart_draws_a_bar_per_bucket_and_states_the_error_rate() -> None:
    finished, failed = [10, 0, 30, 40], [1, 0, 0, 4]
    root = _parse(throughput_chart(finished, failed, bucket_seconds=300, label="download"))
    assert _label(root) == (
        "download, last 20m 00s: 80 runs finished, 5 failed (6.2% error rate); peak 40 per 5m 00s"
    )
    finished_bars = root.findall(f".//{SVG}rect[@class='sw-bar sw-finished']")
    failed_bars = root.findall(f".//{SVG}rect[@class='sw-bar sw-failed']")
    assert len(finished_bars) == 4 and len(failed_bars) == 2
    heights = [float(bar.get("height", "")) for bar in finished_bars]
    assert heights[3] > heights[2] > heights[0] > heights[1] == 0


def test_each_throughput_bar_says_when_and_how_many_on_hover() -> None:
    root = _parse(throughput_chart([5, 7], [0, 2], bucket_seconds=300, label="publish"))
    titles = [bar.find(f"{SVG}title").text for bar in root.findall(f".//{SVG}rect")]  # type: ignore[union-attr]
    assert titles[0] == "10m 00s to 5m 00s ago: 5 finished, 0 failed"
    assert titles[-1] == "last 5m 00s: 7 finished, 2 failed"


def test_the_error_rate_line_joins_the_buckets_that_finished_runs() -> None:
    root = _parse(throughput_chart([10, 0, 10], [0, 0, 10], bucket_seconds=300, label="s", height=64))
    line = root.find(f"{SVG}polyline[@class='sw-error-rate']")
    assert line is not None
    (x1, y1), (x2, y2) = (tuple(map(float, p.split(","))) for p in line.get("points", "").split())
    assert y2 < y1 and x1 < x2  # 0% then 100%: the line rises; the empty bucket is skipped


def test_the_error_rate_scale_fits_the_worst_bucket_and_is_left_out_when_nothing_failed() -> None:
    root = _parse(throughput_chart([100, 100], [3, 1], bucket_seconds=300, label="s"))
    assert [t.text for t in root.findall(f"{SVG}text[@class='sw-scale']")] == ["5% errors"]
    clean = _parse(throughput_chart([100, 100], [0, 0], bucket_seconds=300, label="s"))
    assert clean.find(f"{SVG}polyline") is None and clean.find(f"{SVG}text[@class='sw-scale']") is None


def test_a_quiet_stage_has_no_error_rate_and_mismatched_series_are_refused() -> None:
    assert "no error rate" in _label(
        _parse(throughput_chart([0] * 12, [0] * 12, bucket_seconds=300, label="q"))
    )
    with pytest.raises(ValueError):
        throughput_chart([1, 2], [1], bucket_seconds=300, label="q")


# --- gantt ----------------------------------------------------------------------------------------------


def test_the_gantt_has_a_row_per_run_with_its_status_in_words() -> None:
    bars = [
        _bar("download", 1, "failed", T0, T0 + 3, error="TimeoutError: read timed out"),
        _bar("download", 2, "succeeded", T0 + 35, T0 + 41, worker="cloudrun-07"),
        _bar("process", 1, "running", T0 + 60, None, queued=T0 + 45),
    ]
    root = _parse(gantt(bars, now=T0 + 100))
    rows = root.findall(f"{SVG}g")
    assert len(rows) == 3
    assert [row.find(f"{SVG}text[@class='sw-status']").text for row in rows] == [  # type: ignore[union-attr]
        "✗ failed", "✓ succeeded", "▶ running",
    ]  # fmt: skip
    assert _label(root) == (
        "Runs: 3 runs over 1m 40s: download #1 failed after 3 s; download #2 succeeded after 6 s; "
        "process #1 running after 55 s"
    )


def test_a_run_still_going_reaches_now_and_its_queue_time_is_drawn() -> None:
    bars = [
        _bar("download", 1, "succeeded", T0, T0 + 10),
        _bar("process", 1, "running", T0 + 60, None, queued=T0 + 20),
    ]
    root = _parse(gantt(bars, now=T0 + 100, width=720))
    running = root.findall(f".//{SVG}rect[@class='sw-bar']")[-1]
    assert float(running.get("x", "")) + float(running.get("width", "")) == pytest.approx(720 - 92)
    queued = root.find(f".//{SVG}rect[@class='sw-queued']")
    assert queued is not None and queued.find(f"{SVG}title").text == "process #1 queued 40 s"  # type: ignore[union-attr]


def test_a_gap_between_runs_is_drawn_and_named() -> None:
    bars = [_bar("download", 1, "failed", T0, T0 + 3), _bar("download", 2, "succeeded", T0 + 35, T0 + 41)]
    gap = _parse(gantt(bars, now=T0 + 41)).find(f".//{SVG}line[@class='sw-gap']")
    assert gap is not None and gap.find(f"{SVG}title").text == "32 s between download #1 and download #2"  # type: ignore[union-attr]


def test_gantt_text_is_escaped_everywhere() -> None:
    bars = [_bar(EVIL, 1, "failed", T0, T0 + 3, worker=EVIL, error=EVIL)]
    markup = gantt(bars, now=T0 + 5, label=EVIL)
    assert "<script>" not in markup
    root = _parse(markup)
    assert EVIL in _label(root)
    assert EVIL in root.find(f".//{SVG}rect[@class='sw-bar']/{SVG}title").text  # type: ignore[union-attr,operator]


def test_an_item_without_runs_gets_an_empty_timeline_that_says_so() -> None:
    assert _label(_parse(gantt([], now=T0))) == "Runs: no runs yet"


def test_the_timeline_is_built_from_the_items_run_views() -> None:
    runs = [
        {"run_id": "r1", "stage": "webhook", "attempt": 1, "status": "succeeded", "enqueued_at": None,
         "started_at": None, "ended_at": "2027-01-15T08:00:00.000Z", "worker": None, "error": None},
        {"run_id": "r2", "stage": "download", "attempt": 1, "status": "queued",
         "enqueued_at": "2027-01-15T08:00:01.500Z", "started_at": None, "ended_at": None},
    ]  # fmt: skip
    bars = timeline(runs)
    assert [(b.lane, b.begins) for b in bars] == [("webhook #1", None), ("download #1", T0 + 1.5)]
    root = _parse(gantt(bars, now=T0 + 10))
    assert len(root.findall(f"{SVG}g")) == 2  # a run known only by its end is an instant; a queued one waits


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250 ms"), (42, "42 s"), (185, "3m 05s"), (7440, "2h 04m")],
)
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text
