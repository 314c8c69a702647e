"""Server-side SVG charts: pure functions from numbers to markup, so the dashboard needs no script or
chart library and every chart is in the HTML the server sends.

- ``sparkline``: a series of counts (an error group's failures per hour).
- ``throughput_chart``: runs finished per bucket as bars, the error rate as a line.
- ``gantt``: a video's runs on a time axis, queued and running parts, with the gaps between them.

Every chart is ``role="img"`` with an ``aria-label`` (and a ``<title>``, which browsers show on hover)
that states the data in words, so a screen reader gets what the picture shows. Every text that reaches
the markup is escaped. The results are ``Markup``, which Jinja inserts as is. Colours come from
presentation attributes that a stylesheet may override through the ``sw-*`` classes; status is also
written as text next to each run, so colour is never the only cue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from stagewatch.service.dashboard import TimelineBar

COLOURS = {
    "succeeded": "#2f855a", "failed": "#c53030", "timed_out": "#c05621", "cancelled": "#718096",
    "running": "#2b6cb0", "queued": "#a0aec0", "line": "#c53030", "bar": "#4a5568", "axis": "#a0aec0",
    "text": "#4a5568",
}  # fmt: skip
# Written next to each run, so the status reads without colour.
STATUS_TEXT = {
    "succeeded": "✓ succeeded", "failed": "✗ failed", "timed_out": "✗ timed out",
    "cancelled": "■ cancelled", "running": "▶ running", "queued": "… queued",
}  # fmt: skip


def _n(value: float) -> str:
    """A coordinate: short, and never ``-0``."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def duration(seconds: float) -> str:
    """A duration as people read it: 850 ms, 42 s, 3m 05s, 2h 04m."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def _svg(width: float, height: float, label: str, body: str, kind: str) -> Markup:
    label_text = escape(label)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sw-chart sw-{kind}" role="img" '
        f'aria-label="{label_text}" width="{_n(width)}" height="{_n(height)}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}"><title>{label_text}</title>{body}</svg>'
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", css: str = "sw-label") -> str:
    # The white outline under the letters (paint-order) keeps a label readable where it crosses a bar.
    return (
        f'<text class="{css}" x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="10" '
        f'fill="{COLOURS["text"]}" stroke="#fff" stroke-width="3" stroke-opacity="0.8" '
        f'paint-order="stroke">{escape(text)}</text>'
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, css: str, title: str, extra: str = "") -> str:
    return (
        f'<rect class="{escape(css)}" x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" '
        f'fill="{fill}"{extra}><title>{escape(title)}</title></rect>'
    )


# --- sparkline ------------------------------------------------------------------------------------------


def sparkline(values: Sequence[float], *, label: str, width: float = 120, height: float = 24) -> Markup:
    """``values`` (oldest first) as a line over a shaded area, the last point marked. ``label`` names
    the series ("TimeoutError at download, failures per hour"); the accessible name adds the figures."""
    total, peak = sum(values), max(values, default=0)
    words = f"{label}: {_count(total)} in {len(values)} intervals, peak {_count(peak)}"
    if not values:
        return _svg(width, height, f"{label}: no data", "", "sparkline")
    points = _spark_points(values, width, height, peak)
    line = " ".join(f"{_n(x)},{_n(y)}" for x, y in points)
    area = f"{_n(points[0][0])},{_n(height)} {line} {_n(points[-1][0])},{_n(height)}"
    last_x, last_y = points[-1]
    body = (
        f'<polygon class="sw-spark-area" points="{area}" fill="{COLOURS["line"]}" fill-opacity="0.12"/>'
        f'<polyline class="sw-spark-line" points="{line}" fill="none" stroke="{COLOURS["line"]}" '
        f'stroke-width="1.5" stroke-linejoin="round"/>'
        f'<circle class="sw-spark-last" cx="{_n(last_x)}" cy="{_n(last_y)}" r="2" fill="{COLOURS["line"]}"/>'
    )
    return _svg(width, height, words, body, "sparkline")


def _count(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _spark_points(
    values: Sequence[float], width: float, height: float, peak: float
) -> list[tuple[float, float]]:
    pad = 2.0  # room for the end marker and the stroke
    step = (width - 2 * pad) / max(1, len(values) - 1)
    scale = (height - 2 * pad) / peak if peak > 0 else 0.0
    return [(pad + i * step, height - pad - v * scale) for i, v in enumerate(values)]


# --- throughput and error rate ----------------------------------------------------------------------------


def throughput_chart(
    finished: Sequence[int],
    failed: Sequence[int],
    *,
    bucket_seconds: float,
    label: str,
    width: float = 240,
    height: float = 64,
) -> Markup:
    """Runs finished per bucket (oldest first) as bars, with the failed part of each bar in red, and
    the error rate (failed / finished) as a dashed line on the scale written at the top right (the
    smallest of ``RATE_SCALES`` that holds it). ``label`` names the stage."""
    count = len(finished)
    if count == 0 or len(failed) != count:
        raise ValueError("finished and failed need one value per bucket, the same number of each")
    top, bottom = 4.0, 14.0  # room under the bars for the time axis
    plot = height - top - bottom
    peak = max(max(finished), 1)
    slot = width / count
    bars = [
        _throughput_bar(
            i, finished[i], failed[i], slot, top, plot, peak, _bucket_name(i, count, bucket_seconds)
        )
        for i in range(count)
    ]
    body = (
        "".join(bars)
        + _error_line(finished, failed, slot, top, plot)
        + _time_axis(count, bucket_seconds, width, height)
    )
    return _svg(width, height, _throughput_words(finished, failed, bucket_seconds, label), body, "throughput")


def _bucket_name(i: float, count: int, bucket_seconds: float) -> str:
    start, end = (count - i) * bucket_seconds, (count - i - 1) * bucket_seconds
    return f"{duration(start)} to {duration(end)} ago" if end else f"last {duration(start)}"


def _throughput_bar(
    i: int, finished: int, failed: int, slot: float, top: float, plot: float, peak: int, when: str
) -> str:
    x, w = i * slot + 1, max(slot - 2, 1)
    height = plot * finished / peak
    title = f"{when}: {finished} finished, {failed} failed"
    parts = [_rect(x, top + plot - height, w, height, COLOURS["bar"], "sw-bar sw-finished", title)]
    if failed:
        failed_height = plot * failed / peak
        parts.append(
            _rect(
                x, top + plot - failed_height, w, failed_height, COLOURS["failed"], "sw-bar sw-failed", title
            )
        )
    return "".join(parts)


# The error rate's scale: the smallest of these that holds the worst bucket, so a 3% rate is a visible
# line rather than a flat one along the bottom of a 0-100% scale.
RATE_SCALES = (0.05, 0.1, 0.25, 0.5, 1.0)


def _error_line(finished: Sequence[int], failed: Sequence[int], slot: float, top: float, plot: float) -> str:
    rates = [(i, f / n) for i, (n, f) in enumerate(zip(finished, failed, strict=True)) if n]
    worst = max((rate for _, rate in rates), default=0.0)
    if len(rates) < 2 or worst == 0:  # nothing failed: the bars say it all
        return ""
    scale = next(s for s in RATE_SCALES if s >= worst)
    points = " ".join(f"{_n(i * slot + slot / 2)},{_n(top + plot * (1 - rate / scale))}" for i, rate in rates)
    return (
        f'<polyline class="sw-error-rate-halo" points="{points}" fill="none" stroke="#fff" '
        'stroke-width="3.5" stroke-opacity="0.8"/>'
        f'<polyline class="sw-error-rate" points="{points}" fill="none" stroke="{COLOURS["line"]}" '
        'stroke-width="1.5" stroke-dasharray="3 2"/>'
        + _text(slot * len(finished), top + 8, f"{scale:.0%} errors", anchor="end", css="sw-scale")
    )


def _time_axis(count: int, bucket_seconds: float, width: float, height: float) -> str:
    span = duration(count * bucket_seconds)
    return (
        f'<line class="sw-axis" x1="0" y1="{_n(height - 13)}" x2="{_n(width)}" y2="{_n(height - 13)}" '
        f'stroke="{COLOURS["axis"]}" stroke-width="1"/>'
        + _text(0, height - 2, f"{span} ago")
        + _text(width, height - 2, "now", anchor="end")
    )


def _throughput_words(
    finished: Sequence[int], failed: Sequence[int], bucket_seconds: float, label: str
) -> str:
    done, bad = sum(finished), sum(failed)
    rate = f"{bad / done:.1%} error rate" if done else "no error rate"
    return (
        f"{label}, last {duration(len(finished) * bucket_seconds)}: {done:,} runs finished, {bad:,} failed "
        f"({rate}); peak {max(finished):,} per {duration(bucket_seconds)}"
    )


# --- the video's timeline -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Axis:
    """Maps epoch seconds onto the plot's x coordinates."""

    t0: float
    t1: float
    x0: float
    x1: float

    def x(self, t: float) -> float:
        span = self.t1 - self.t0
        return self.x0 + (self.x1 - self.x0) * ((t - self.t0) / span if span > 0 else 0.0)


LANE_WIDTH, STATUS_WIDTH, ROW, AXIS = 110.0, 92.0, 22.0, 18.0


def gantt(bars: Sequence[TimelineBar], *, now: float, label: str = "Runs", width: float = 720) -> Markup:
    """One row per run (``service.dashboard.timeline``), in the order they began: the queued part light,
    the running part in its status colour (a run still going reaches ``now``), its status in words at
    the right, and a dashed line over each gap between one run's end and the next one's start (a
    backoff, a wait on a limit, or a stage nobody picked up yet)."""
    if not bars:
        return _svg(width, 24, f"{label}: no runs yet", _text(0, 16, "No runs yet."), "gantt")
    axis = _Axis(_first(bars), max(_last(bar, now) for bar in bars), LANE_WIDTH, width - STATUS_WIDTH)
    height = AXIS + ROW * len(bars) + 4
    rows = [_gantt_row(i, bar, bars[i - 1] if i else None, axis, now) for i, bar in enumerate(bars)]
    body = _gantt_axis(axis, height) + "".join(rows)
    return _svg(width, height, _gantt_words(bars, axis, label, now), body, "gantt")


def _first(bars: Sequence[TimelineBar]) -> float:
    return min(_start(bar) for bar in bars)


def _start(bar: TimelineBar) -> float:
    for t in (bar.queued_at, bar.started_at, bar.ended_at):
        if t is not None:
            return t
    raise ValueError(f"run {bar.run_id} has no time")


def _last(bar: TimelineBar, now: float) -> float:
    return bar.ended_at if bar.ended_at is not None else max(now, _start(bar))


def _gantt_axis(axis: _Axis, height: float) -> str:
    span = axis.t1 - axis.t0
    parts = []
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = axis.x0 + (axis.x1 - axis.x0) * share
        parts.append(
            f'<line class="sw-grid" x1="{_n(x)}" y1="{_n(AXIS - 4)}" x2="{_n(x)}" y2="{_n(height)}" '
            f'stroke="{COLOURS["axis"]}" stroke-opacity="0.4" stroke-width="1"/>'
        )
        anchor = "start" if share == 0 else "end" if share == 1 else "middle"
        parts.append(_text(x, AXIS - 7, f"+{duration(span * share)}" if share else "0", anchor=anchor))
    return "".join(parts)


def _gantt_row(i: int, bar: TimelineBar, before: TimelineBar | None, axis: _Axis, now: float) -> str:
    y = AXIS + i * ROW
    parts = [_text(4, y + ROW / 2 + 3, _clip(bar.lane, 18))]
    if before is not None:
        parts.append(_gap(before, bar, axis, y, now))
    parts.append(_queued_part(bar, axis, y, now))
    parts.append(_running_part(bar, axis, y, now))
    parts.append(
        _text(axis.x1 + 6, y + ROW / 2 + 3, STATUS_TEXT.get(bar.status, bar.status), css="sw-status")
    )
    return f'<g class="sw-run sw-status-{escape(bar.status)}">{"".join(parts)}</g>'


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def _queued_part(bar: TimelineBar, axis: _Axis, y: float, now: float) -> str:
    if bar.queued_at is None:
        return ""
    end = bar.started_at if bar.started_at is not None else _last(bar, now)
    x, w = axis.x(bar.queued_at), max(axis.x(end) - axis.x(bar.queued_at), 1)
    title = f"{bar.lane} queued {duration(max(0.0, end - bar.queued_at))}"
    return _rect(x, y + 7, w, ROW - 14, COLOURS["queued"], "sw-queued", title, ' fill-opacity="0.7"')


def _running_part(bar: TimelineBar, axis: _Axis, y: float, now: float) -> str:
    start = bar.started_at if bar.started_at is not None else bar.ended_at
    if start is None:  # queued only
        return ""
    end = _last(bar, now)
    x, w = axis.x(start), max(axis.x(end) - axis.x(start), 2)  # an instant run still shows
    return _rect(
        x, y + 4, w, ROW - 8, COLOURS.get(bar.status, COLOURS["bar"]), "sw-bar", _bar_title(bar, start, end)
    )


def _bar_title(bar: TimelineBar, start: float, end: float) -> str:
    words = f"{bar.lane}: {STATUS_TEXT.get(bar.status, bar.status)} after {duration(max(0.0, end - start))}"
    if bar.worker:
        words += f" on {bar.worker}"
    return f"{words} — {bar.error}" if bar.error else words


def _gap(before: TimelineBar, bar: TimelineBar, axis: _Axis, y: float, now: float) -> str:
    gap_from, gap_to = _last(before, now), _start(bar)
    if gap_to - gap_from < max(1.0, (axis.t1 - axis.t0) * 0.01):  # too short to see or to matter
        return ""
    x1, x2, mid = axis.x(gap_from), axis.x(gap_to), y + ROW / 2
    title = f"{duration(gap_to - gap_from)} between {before.lane} and {bar.lane}"
    return (
        f'<line class="sw-gap" x1="{_n(x1)}" y1="{_n(mid)}" x2="{_n(x2)}" y2="{_n(mid)}" '
        f'stroke="{COLOURS["axis"]}" stroke-width="1" stroke-dasharray="2 3">'
        f"<title>{escape(title)}</title></line>"
    )


def _gantt_words(bars: Sequence[TimelineBar], axis: _Axis, label: str, now: float) -> str:
    shown = [
        f"{bar.lane} {STATUS_TEXT.get(bar.status, bar.status).split(' ', 1)[-1]} after "
        f"{duration(max(0.0, _last(bar, now) - _start(bar)))}"
        for bar in bars[:12]
    ]
    more = f"; and {len(bars) - 12} more" if len(bars) > 12 else ""
    return f"{label}: {len(bars)} runs over {duration(axis.t1 - axis.t0)}: {'; '.join(shown)}{more}"
