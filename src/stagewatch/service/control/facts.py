"""Writing what the control plane decides into the event log, in the decision's own transaction, so an
item's history and status show every decision next to the workers' own reports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from stagewatch.domain.events import Event, EventType
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.service.projector import store_events

# What the control plane writes as a note may be read by people: keep it to the Event's own limit.
MAX_NOTE = 10_000


def fact(event_type: EventType, item_id: str, at: float, **fields: Any) -> Event:
    """A control-plane event. Ids are random: each decision is a fact of its own."""
    note = fields.pop("note", None)
    return Event(
        id=f"sw-{uuid.uuid4().hex}",
        type=event_type,
        item_id=item_id,
        time=at,
        note=note[:MAX_NOTE] if isinstance(note, str) else note,
        **{name: value for name, value in fields.items() if value is not None},
    )


def record(conn: Connection, registry: PipelineRegistry, events: Sequence[Event], now: float) -> None:
    if events:
        store_events(conn, events, registry, now)
