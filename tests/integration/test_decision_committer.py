"""Decisions made together (the API's group commit on SQLite; one transaction each on PostgreSQL) end
exactly as if each had been made alone: limits hold across a group, a failing decision is undone alone,
and a decision sees the projection of the decisions before it in its group."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from stagewatch.domain.pipeline import ConcurrencyLimit, Pipeline, PipelineRegistry, instagram_preset
from stagewatch.errors import NotFound
from stagewatch.service import query
from stagewatch.service.control.begin import BeginRequest, decide
from stagewatch.service.control.committer import DecisionCommitter, Job
from stagewatch.service.control.completion import settle
from stagewatch.service.control.facts import Facts
from stagewatch.store.engine import Database
from tests.postgres_faults import events_insert_fails

T0 = 1_800_000_000.0


def _pipeline() -> Pipeline:
    base = instagram_preset()
    stages = tuple(
        replace(s, concurrency=(ConcurrencyLimit("{account}", 2),)) if s.name == "publish" else s
        for s in base.stages
    )
    return replace(base, stages=stages)


@pytest.fixture
def reg() -> PipelineRegistry:
    return PipelineRegistry.of([_pipeline()])


def _begin(reg: PipelineRegistry, item: str, at: float = T0, account: str = "42") -> Job[Any]:
    request = BeginRequest("publish", item, account=account)
    return Job(
        lambda facts: decide(facts, reg, request, now=at),
        lambda facts: facts.concern(item_id=item),
    )


def _complete(reg: PipelineRegistry, run_id: str, at: float = T0 + 1) -> Job[Any]:
    def make(facts: Facts) -> Any:
        return settle(facts, reg, run_id, "succeeded", now=at)

    return Job(make, lambda facts: facts.concern(run_id=run_id))


def _together(db: Database, reg: PipelineRegistry, jobs: Sequence[Job[Any]]) -> list[Any]:
    """Submit every job before any is made, as concurrent requests do; check that on SQLite they shared
    one transaction (PostgreSQL makes each alone)."""
    committer = DecisionCommitter(db, reg)

    async def submit_all() -> list[Any]:
        return await asyncio.gather(*(committer.decide(job) for job in jobs), return_exceptions=True)

    results = asyncio.run(submit_all())
    if not db.is_postgres:
        assert committer.stats.transactions == 1
    return results


def test_limits_hold_across_the_decisions_of_one_transaction(db: Database, reg: PipelineRegistry) -> None:
    results = _together(db, reg, [_begin(reg, f"v{i}") for i in range(5)])
    # In order on SQLite; on PostgreSQL they race, each in its own transaction, and two win.
    assert sorted(r.decision.action for r in results) == ["run", "run", "wait", "wait", "wait"]
    waiting = [f"v{i}" for i, r in enumerate(results) if r.decision.action == "wait"]
    for item in waiting:
        assert query.get_item(db, item)["status_reason"] == "concurrency publish account:42 2/2"


def _begin_then_fail(reg: PipelineRegistry, item: str) -> Job[Any]:
    def make(facts: Facts) -> Any:
        decide(facts, reg, BeginRequest("publish", item, account="7"), now=T0)
        raise RuntimeError("the worker thread broke after writing")

    return Job(make)


def test_a_failing_decision_is_undone_alone(db: Database, reg: PipelineRegistry) -> None:
    jobs = [_begin(reg, "v1"), _complete(reg, "no-such-run"), _begin_then_fail(reg, "v9"), _begin(reg, "v2")]
    results = _together(db, reg, jobs)
    assert isinstance(results[1], NotFound) and isinstance(results[2], RuntimeError)
    assert [results[0].decision.action, results[3].decision.action] == ["run", "run"]
    assert [query.get_item(db, item)["status"] for item in ("v1", "v2")] == ["running", "running"]
    # Nothing of the broken decision stayed: no lease holds v9, so it runs now as its first attempt.
    (again,) = _together(db, reg, [_begin(reg, "v9", account="7")])
    assert (again.decision.action, again.run_id) == ("run", "v9/publish/1")


def test_a_decision_sees_the_projection_of_those_before_it(db: Database, reg: PipelineRegistry) -> None:
    _together(db, reg, [_begin(reg, "a"), _begin(reg, "b")])
    # The same item three times in one group, blocked each time: its history records the wait once,
    # as when each begin commits alone (the second reads the item's projection written by the first).
    waits = _together(db, reg, [_begin(reg, "v3", T0 + i) for i in range(3)])
    assert {w.decision.action for w in waits} == {"wait"}
    history = query.get_item(db, "v3", with_history=True)["history"]
    assert [entry["type"] for entry in history].count("item.waiting") == 1


def test_a_run_begun_and_completed_in_one_group_ends_as_if_alone(db: Database, reg: PipelineRegistry) -> None:
    if db.is_postgres:  # each decision is its own concurrent transaction there: their order is not defined
        pytest.skip("PostgreSQL does not group decisions")
    (first,) = _together(db, reg, [_begin(reg, "v1")])
    done, again = _together(db, reg, [_complete(reg, first.run_id), _begin(reg, "v1", T0 + 2)])
    assert done.next == "done"
    assert again.decision.action == "skip" and "already succeeded" in again.decision.reason
    item = query.get_item(db, "v1")
    assert (item["status"], [run["status"] for run in item["runs"]]) == ("published", ["succeeded"])


def test_a_decision_postgresql_aborts_for_a_deadlock_is_made_again(
    db: Database, reg: PipelineRegistry
) -> None:
    if not db.is_postgres:
        pytest.skip("SQLite has one writer: no deadlock to retry")
    committer = DecisionCommitter(db, reg)
    with events_insert_fails(db, times=1) as tried:
        result = asyncio.run(committer.decide(_begin(reg, "v1")))
        assert tried() == 2
    assert result.decision.action == "run"
    assert query.get_item(db, "v1")["status"] == "running"
