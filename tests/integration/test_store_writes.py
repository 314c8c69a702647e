"""The projection's row writers, on SQLite and PostgreSQL: what they are given is what is read back,
including the values a batch mixes (an int among float times, enum statuses, empty JSON)."""

from __future__ import annotations

from stagewatch.domain.projection import RunState
from stagewatch.domain.statuses import RunStatus
from stagewatch.store import reads, writes
from stagewatch.store.engine import Database

T0 = 1_795_000_000.0


def test_runs_with_mixed_number_types_are_written_and_read_back(db: Database) -> None:
    runs = [
        RunState("v1/download/1", "v1", "download", 1, RunStatus.SUCCEEDED, started_at=T0, ended_at=T0 + 2.5),
        # Whole seconds as an int, beside floats in the same column of the same statement.
        RunState("v1/process/1", "v1", "process", 1, RunStatus.RUNNING, started_at=int(T0) + 3, progress=1),
        RunState(
            "v1/publish/1", "v1", "publish", 2, RunStatus.QUEUED, enqueued_at=T0 + 4, resources={"cpu": 1}
        ),
    ]
    with db.writer.begin() as conn:
        writes.upsert_runs(conn, runs)
        runs[1].status, runs[1].ended_at = RunStatus.FAILED, T0 + 9.25
        writes.upsert_runs(conn, runs[1:2])  # the same row again: an update
    with db.reader.connect() as conn:
        stored = {run.run_id: run for run in reads.runs_of(conn, "v1")}
    assert stored["v1/download/1"].ended_at == T0 + 2.5
    assert (stored["v1/process/1"].status, stored["v1/process/1"].started_at) == (RunStatus.FAILED, T0 + 3)
    assert (stored["v1/process/1"].ended_at, stored["v1/process/1"].progress) == (T0 + 9.25, 1.0)
    assert (stored["v1/publish/1"].attempt, stored["v1/publish/1"].resources) == (2, {"cpu": 1})
