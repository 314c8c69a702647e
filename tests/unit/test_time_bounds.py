"""Time bounds of filters (since, until, updated_since): one parser for every endpoint, and an error that
names the field and says what it must be."""

from __future__ import annotations

from typing import Any

import pytest

from stagewatch.errors import InvalidShape
from stagewatch.service.logs import parse_time
from stagewatch.service.time_bounds import time_bound


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (None, None),
        ("", None),
        ("1795870800.5", 1795870800.5),
        (1795870800, 1795870800.0),
        ("2026-11-28T13:00:00Z", 1795870800.0),
        ("2026-11-28T14:00:00+01:00", 1795870800.0),
        ("2026-11-28T13:00:00", 1795870800.0),  # no zone: UTC
    ],
)
def test_a_bound_is_epoch_seconds(given: Any, seconds: float | None) -> None:
    assert time_bound(given, "since") == seconds


@pytest.mark.parametrize("given", ["yesterday", "nan", float("inf"), True])
def test_a_bad_bound_names_its_field_and_what_it_must_be(given: Any) -> None:
    with pytest.raises(InvalidShape) as raised:
        time_bound(given, "filter.updated_since")
    assert raised.value.field == "filter.updated_since"
    assert str(raised.value).startswith("filter.updated_since must be")


def test_a_stricter_parser_is_used_where_given() -> None:
    assert time_bound("1795870800000", "until") == 1795870800000.0
    with pytest.raises(InvalidShape, match="until must be epoch seconds between 2000 and 2200"):
        time_bound("1795870800000", "until", parse_time)  # milliseconds, by mistake
