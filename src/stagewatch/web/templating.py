"""The dashboard's Jinja environment: templates shipped in the package, autoescaping on for everything,
and the small filters the pages share (times, durations, links to a video).

Every value a worker or an operator typed (video ids, log lines, error messages, reasons) reaches the
page through Jinja's autoescape: no template marks such a value ``safe``.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined

from stagewatch import __version__
from stagewatch.web import charts


def make_environment() -> Environment:
    env = Environment(
        loader=PackageLoader("stagewatch.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ago=ago, clock=clock, clock_ms=clock_ms, duration=duration, iso=iso_text, video_url=video_url,
        pretty_json=pretty_json, compact_json=compact_json, label=label, percent=percent, count=count,
    )  # fmt: skip
    env.globals.update(
        version=__version__, query=query_string, sparkline=charts.sparkline,
        throughput_chart=charts.throughput_chart, gantt=charts.gantt,
    )  # fmt: skip
    return env


def epoch(value: float | str | None) -> float | None:
    """Epoch seconds from what the services return: a number, or an ISO 8601 string."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def duration(seconds: float | None) -> str:
    """``4.2s``, ``3m 05s``, ``2h 07m``, ``3d 4h``; an em dash for none."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def ago(value: float | str | None, now: float | None = None) -> str:
    """How long ago, for people: ``12s ago``."""
    at = epoch(value)
    if at is None:
        return "—"
    return duration((time.time() if now is None else now) - at) + " ago"


def clock(value: float | str | None) -> str:
    """``2026-11-28 14:03:07 UTC``: one zone everywhere, as the CLI and the API show times."""
    at = epoch(value)
    if at is None:
        return "—"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock_ms(value: float | str | None) -> str:
    """``14:03:07.512``: the time of day to the millisecond, for events that follow each other closely."""
    at = epoch(value)
    if at is None:
        return "—"
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]


def iso_text(value: float | str | None) -> str:
    at = epoch(value)
    return "" if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def video_url(item_id: str) -> str:
    return "/videos/" + quote(item_id, safe="")


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def label(status: str | None) -> str:
    """A status as words: ``dead_lettered`` → ``dead-lettered``, ``ready_to_publish`` → ``ready to
    publish``."""
    if not status:
        return "—"
    return "dead-lettered" if status == "dead_lettered" else status.replace("_", " ")


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def count(value: int | None) -> str:
    return "0" if not value else f"{value:,}"


def query_string(params: dict[str, Any], **changes: Any) -> str:
    """``?a=1&b=2`` from ``params`` with ``changes`` applied; empty values are left out."""
    merged = {**params, **changes}
    pairs = [(k, v) for k, v in merged.items() if v not in (None, "", False)]
    return "?" + urlencode(pairs, doseq=True) if pairs else "?"
