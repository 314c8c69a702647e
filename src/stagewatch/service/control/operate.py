"""What an operator (or the dashboard) does to items and runs: cancel, resume from a stage, stop a run,
and replay or discard dead letters. Every action is audited in its own transaction: who (the token's
name), when, from where, why and with which parameters.

The events an action records (cancelled, resumed) go through ``decision_transaction``, as the control
plane's own decisions do: on SQLite they are projected through the writer's cache, so an operator's
action does not make the next ingest read back every video it had cached."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection

from stagewatch.domain.events import Event, EventType
from stagewatch.domain.guards import WorkState
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.errors import InvalidShape, NotFound
from stagewatch.service.control.delivery import Delivery, deliver
from stagewatch.service.control.facts import Facts, decision_transaction, fact
from stagewatch.store import audit, control, reads
from stagewatch.store.audit import Actor
from stagewatch.store.engine import Database

# Bulk actions work in chunks so one huge filter never holds the writer for long.
CHUNK = 500


def _audit(
    conn: Connection, who: Actor, action: str, target: str | None, reason: str | None, now: float,
    **params: Any,
) -> None:  # fmt: skip
    clean = {name: value for name, value in params.items() if value is not None}
    audit.record(
        conn, at=now, actor=who.name, action=action, target=target, params=clean or None, reason=reason,
        source=who.source,
    )  # fmt: skip


def _require_reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise InvalidShape("a reason is required: say why, it goes into the audit trail", field="reason")
    return reason.strip()


def _item_or_404(conn: Connection, item_id: str) -> Any:
    item = reads.item(conn, item_id)
    if item is None:
        raise NotFound(f"item {item_id!r} does not exist")
    return item


K = TypeVar("K")
V = TypeVar("V")


def _in_chunks(
    db: Database,
    registry: PipelineRegistry,
    keys: Sequence[K],
    now: float | None,
    act: Callable[[Facts, Sequence[K], float], list[V]],
) -> list[V]:
    """``act`` on each chunk of ``keys`` (with the chunk's time) in a decision transaction of its own;
    all it returned, in order. Chunks of ``CHUNK``: one huge filter never holds the writer for long."""
    done: list[V] = []
    for start in range(0, len(keys), CHUNK):
        stamp = time.time() if now is None else now
        with decision_transaction(db, registry) as facts:
            done.extend(act(facts, keys[start : start + CHUNK], stamp))
    return done


# --- cancel --------------------------------------------------------------------------------------------


def cancel_items(
    db: Database,
    registry: PipelineRegistry,
    item_ids: Sequence[str],
    reason: str | None,
    who: Actor,
    *,
    bulk_filter: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> list[str]:
    """Cancel items: queued work is refused at ``begin``, running work is told to stop at its next
    heartbeat. Returns the ids cancelled (unknown ids are an error when one id is given)."""
    why = _require_reason(reason)
    single = len(item_ids) == 1
    return _in_chunks(
        db, registry, item_ids, now,
        lambda facts, chunk, stamp: _cancel_chunk(facts, chunk, why, who, stamp, bulk_filter, single),
    )  # fmt: skip


def _cancel_chunk(
    facts: Facts,
    item_ids: Sequence[str],
    reason: str,
    who: Actor,
    now: float,
    bulk_filter: Mapping[str, Any] | None,
    single: bool,
) -> list[str]:
    conn = facts.conn
    events: list[Event] = []
    done: list[str] = []
    for item_id in item_ids:
        item = _item_or_404(conn, item_id) if single else reads.item(conn, item_id)
        if item is None:
            continue
        control.set_cancellation(conn, item_id, reason, who.name, now)
        events.append(
            fact(EventType.ITEM_CANCELLED, item_id, now, pipeline=item.pipeline, stage=item.stage,
                 actor=None, note=f"cancelled by {who.name}: {reason}")
        )  # fmt: skip
        _audit(
            conn, who, "item.cancel", item_id, reason, now, filter=dict(bulk_filter) if bulk_filter else None
        )
        done.append(item_id)
    for lease in control.live_leases_of_items(conn, done):
        control.request_stop(conn, lease["run_id"], f"cancelled by {who.name}: {reason}")
    facts.add(events, now)
    return done


# --- stop one run --------------------------------------------------------------------------------------


def stop_run(
    db: Database, run_id: str, reason: str | None, who: Actor, now: float | None = None
) -> dict[str, Any]:
    why = _require_reason(reason)
    now = time.time() if now is None else now
    with db.write() as conn:  # it records no event, and keeps the projection cache in use
        lease = control.lease(conn, run_id)
        if lease is None:
            raise NotFound(f"run {run_id!r} is not running (no live lease)")
        control.request_stop(conn, run_id, f"stopped by {who.name}: {why}")
        _audit(conn, who, "run.stop", lease["item_id"], why, now, run_id=run_id)
    return {"run_id": run_id, "item_id": lease["item_id"], "stop_requested": True}


# --- resume and replay ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rearmed:
    """A unit of work made runnable again, and what became of its re-delivery."""

    item_id: str
    stage: str
    dead_letter_id: int | None
    delivery: Delivery | None = None

    def view(self) -> dict[str, Any]:
        delivered = (
            None if self.delivery is None else {"ok": self.delivery.ok, "detail": self.delivery.detail}
        )
        return {
            "item_id": self.item_id, "stage": self.stage, "dead_letter_id": self.dead_letter_id,
            "delivery": delivered,
        }  # fmt: skip


def resume_item(
    db: Database,
    registry: PipelineRegistry,
    item_id: str,
    from_stage: str,
    reason: str | None,
    who: Actor,
    *,
    deliver_payload: bool = True,
    now: float | None = None,
) -> dict[str, Any]:
    """Lift a cancel, re-arm ``from_stage`` and every later stage (attempts start again, open dead
    letters of those stages count as replayed), then re-deliver ``from_stage``'s last payload."""
    now = time.time() if now is None else now
    with decision_transaction(db, registry) as facts:
        conn = facts.conn
        item = _item_or_404(conn, item_id)
        pipeline = registry.require(item.pipeline)
        if not pipeline.has_stage(from_stage):
            stages = ", ".join(pipeline.stage_names)
            raise InvalidShape(
                f"stage {from_stage!r} is not in pipeline {pipeline.name!r} ({stages})", field="from_stage"
            )
        later = {s for s in pipeline.stage_names if pipeline.index_of(s) >= pipeline.index_of(from_stage)}
        rows = [row for row in control.works_of_item(conn, item_id) if row["stage"] in later]
        _rearm(conn, rows, now)
        letters = [
            r for r in control.dead_letter_page(conn, item_id=item_id, limit=1000) if r["stage"] in later
        ]
        control.resolve_dead_letters(conn, [r["id"] for r in letters], "replayed", who.name, now)
        lifted = control.lift_cancellation(conn, item_id)
        note = f"resumed from {from_stage} by {who.name}" + (f": {reason}" if reason else "")
        facts.add([fact(EventType.ITEM_RESUMED, item_id, now, pipeline=pipeline.name, stage=from_stage,
                        note=note)], now)  # fmt: skip
        _audit(
            conn,
            who,
            "item.resume",
            item_id,
            reason,
            now,
            from_stage=from_stage,
            cancel_lifted=lifted or None,
        )
    first = next((row for row in rows if row["stage"] == from_stage), None)
    delivery = (
        deliver(pipeline.stage(from_stage).replay, first) if first is not None and deliver_payload else None
    )
    return Rearmed(item_id, from_stage, None, delivery).view()


def _rearm(conn: Connection, rows: Iterable[Mapping[str, Any]], now: float) -> None:
    for row in rows:
        control.update_work(
            conn, (row["pipeline"], row["stage"], row["work_key"]), state=WorkState.IDLE.value, attempts=0,
            next_attempt_at=None, updated_at=now,
        )  # fmt: skip


def replay_dead_letters(
    db: Database,
    registry: PipelineRegistry,
    ids: Sequence[int],
    reason: str | None,
    who: Actor,
    *,
    bulk_filter: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Re-arm the work of open dead letters and re-deliver each payload through its stage's target. A
    letter already replayed or discarded is left alone, so replaying twice delivers once."""
    replayed = _in_chunks(
        db, registry, ids, now,
        lambda facts, chunk, stamp: _replay_chunk(facts, chunk, reason, who, stamp, bulk_filter),
    )  # fmt: skip
    return [_deliver_letter(registry, letter) for letter in replayed]


def _replay_chunk(
    facts: Facts,
    ids: Sequence[int],
    reason: str | None,
    who: Actor,
    now: float,
    bulk_filter: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    conn = facts.conn
    letters = control.resolve_dead_letters(conn, ids, "replayed", who.name, now)
    _rearm(conn, letters, now)
    for letter in letters:
        _audit(conn, who, "dlq.replay", letter["item_id"], reason, now, dead_letter_id=letter["id"],
               stage=letter["stage"], filter=dict(bulk_filter) if bulk_filter else None)  # fmt: skip
    facts.add([_replayed_fact(letter, who, reason, now) for letter in letters], now)
    return letters


def _replayed_fact(letter: Mapping[str, Any], who: Actor, reason: str | None, now: float) -> Event:
    note = f"replayed from the dead-letter queue by {who.name}" + (f": {reason}" if reason else "")
    return fact(EventType.ITEM_RESUMED, letter["item_id"], now, pipeline=letter["pipeline"],
                stage=letter["stage"], note=note)  # fmt: skip


def _deliver_letter(registry: PipelineRegistry, letter: Mapping[str, Any]) -> dict[str, Any]:
    pipeline = registry.get(letter["pipeline"])
    target = (
        pipeline.stage(letter["stage"]).replay if pipeline and pipeline.has_stage(letter["stage"]) else None
    )
    return Rearmed(letter["item_id"], letter["stage"], int(letter["id"]), deliver(target, letter)).view()


def discard_dead_letters(
    db: Database,
    registry: PipelineRegistry,
    ids: Sequence[int],
    reason: str | None,
    who: Actor,
    *,
    bulk_filter: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> list[int]:
    """Give up on dead letters for good: they stay in the table (and the item dead-lettered) as a record."""
    why = _require_reason(reason)
    return _in_chunks(
        db, registry, ids, now,
        lambda facts, chunk, stamp: _discard_chunk(facts, chunk, why, who, stamp, bulk_filter),
    )  # fmt: skip


def _discard_chunk(
    facts: Facts,
    ids: Sequence[int],
    reason: str,
    who: Actor,
    now: float,
    bulk_filter: Mapping[str, Any] | None,
) -> list[int]:
    letters = control.resolve_dead_letters(facts.conn, ids, "discarded", who.name, now)
    for letter in letters:
        _audit(facts.conn, who, "dlq.discard", letter["item_id"], reason, now, dead_letter_id=letter["id"],
               filter=dict(bulk_filter) if bulk_filter else None)  # fmt: skip
    return [int(letter["id"]) for letter in letters]
