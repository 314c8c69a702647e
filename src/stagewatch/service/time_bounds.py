"""Time bounds given to a filter (``since``, ``until``, ``updated_since``): epoch seconds or ISO 8601
text. A bad one is refused naming its field, with what it must be."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from stagewatch.domain.events import parse_time_text
from stagewatch.errors import InvalidShape


def time_bound(
    value: str | float | None, field: str, parse: Callable[[Any], float] | None = None
) -> float | None:
    """``value`` as epoch seconds; None when it is absent or empty. ``parse`` may be stricter than the
    default (numbers as they are, text by ``parse_time_text``)."""
    if value is None or value == "":
        return None
    try:
        return (parse or _default)(value)
    except ValueError as exc:
        raise InvalidShape(f"{field} {exc}", field=field) from None


def _default(value: str | float) -> float:
    if isinstance(value, str):
        return parse_time_text(value)
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError("must be a finite number of epoch seconds or an ISO 8601 time")
    return float(value)
