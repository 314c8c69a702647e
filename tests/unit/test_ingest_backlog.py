"""The group committer's backlog: what it counts, when it refuses, and the wait it asks for."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from stagewatch.errors import Overloaded
from stagewatch.service.ingest import OVERLOAD_LOG_INTERVAL, RETRY_AFTER_SECONDS, BatchCommitter, BatchOutcome


@dataclass(frozen=True)
class Record:
    id: str


def records(prefix: str, n: int) -> list[Record]:
    return [Record(f"{prefix}{i}") for i in range(n)]


class HeldCommit:
    """A commit function that waits until released, then accepts everything (or fails)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.fail = False

    def __call__(self, batches: Sequence[Sequence[Record]]) -> list[BatchOutcome]:
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("the disk is full")
        return [BatchOutcome(len(batch), 0) for batch in batches]


async def until(condition: object, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def test_the_backlog_counts_records_until_they_are_answered_and_refuses_past_its_limit() -> None:
    async def scenario() -> None:
        commit = HeldCommit()
        committer = BatchCommitter(commit, max_records=1000, max_backlog=50)
        committer.start()
        try:
            first = asyncio.ensure_future(committer.submit(records("a", 30)))
            second = asyncio.ensure_future(committer.submit(records("b", 30)))
            await until(lambda: committer.backlog == 60)
            with pytest.raises(Overloaded) as refused:
                committer.check_room()
            assert refused.value.retry_after == RETRY_AFTER_SECONDS
            assert "60 events are waiting to be written (the limit is 50)" in str(refused.value)
            assert committer.stats.shed == 1
            commit.release.set()
            assert [o.accepted for o in await asyncio.gather(first, second)] == [30, 30]
            assert committer.backlog == 0
            committer.check_room()  # room again
        finally:
            await committer.stop()

    asyncio.run(scenario())


def test_a_failed_commit_leaves_the_backlog_too() -> None:
    async def scenario() -> None:
        commit = HeldCommit()
        commit.fail = True
        commit.release.set()
        committer = BatchCommitter(commit, max_records=1000, max_backlog=50)
        committer.start()
        try:
            outcomes = await asyncio.gather(
                committer.submit(records("a", 5)), committer.submit(records("b", 5)), return_exceptions=True
            )
            assert all(isinstance(o, RuntimeError) for o in outcomes)
            assert committer.backlog == 0, "each batch, retried alone and failed, was answered"
        finally:
            await committer.stop()

    asyncio.run(scenario())


def test_no_limit_means_no_refusal() -> None:
    committer = BatchCommitter(HeldCommit(), max_records=10)
    committer._backlog = 10**9  # as if a flood were waiting
    committer.check_room()


def test_a_flood_of_refusals_is_logged_once_per_interval_with_its_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    committer = BatchCommitter(HeldCommit(), max_records=10, max_backlog=5)
    committer._backlog = 5
    with caplog.at_level(logging.WARNING, "stagewatch.ingest"):
        for _ in range(300):
            with pytest.raises(Overloaded):
                committer.check_room()
        committer._overload_logged_at -= OVERLOAD_LOG_INTERVAL  # as if the interval had passed
        with pytest.raises(Overloaded):
            committer.check_room()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "ingest.overloaded backlog=5 limit=5 refused=1",
        "ingest.overloaded backlog=5 limit=5 refused=300",
    ]
    assert committer.stats.shed == 301


def test_a_refusal_is_remembered_for_the_overview_for_a_while() -> None:
    committer = BatchCommitter(HeldCommit(), max_records=10, max_backlog=5)
    assert not committer.refused_within(60)
    committer._backlog = 5
    with pytest.raises(Overloaded):
        committer.check_room()
    assert committer.refused_within(60)
    committer._refused_at -= 61  # type: ignore[operator]  # as if a minute had passed
    assert not committer.refused_within(60)
