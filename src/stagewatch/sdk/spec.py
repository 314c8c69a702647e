"""``StageSpec``: the arguments of one ``client.stage(...)`` call, as the run lifecycle needs them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StageSpec:
    """The arguments of one ``client.stage(...)`` call. ``key``, ``payload`` and ``fail_open`` only
    matter to a guarded run (``guarded=True``)."""

    name: str
    item_id: str
    account: str | None = None
    scenario: str | None = None
    attrs: Mapping[str, Any] | None = None
    attempt: int | None = None
    run_id: str | None = None
    pipeline: str | None = None
    traceparent: str | None = None
    key: str | None = None
    payload: Any = None
    guarded: bool = False
    fail_open: bool = True
