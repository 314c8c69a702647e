"""The disk spool on real files: order, torn writes, the size cap, two processes sharing a directory,
and records left by a process that died being sent by the next one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stagewatch import Client
from stagewatch.sdk.spool import Spool, default_spool_dir
from stagewatch.sdk.transport import encode
from tests.conftest import LiveServer
from tests.sdk.conftest import get_item, new_id


def records(n: int, start: int = 0) -> bytes:
    """A batch of ``n`` events as the exporter spools it: the JSON array it would POST."""
    return encode(
        [{"id": f"e-{i}", "type": "item.created", "item_id": f"v-{i}"} for i in range(start, start + n)]
    )[0]


def replayed_ids(spool: Spool, channel: str = "events", delete: bool = True) -> list[str]:
    with spool.replay(channel) as segments:
        assert segments is not None
        ids = [str(r["id"]) for segment in segments for r in segment.records()]
        if delete:
            for segment in segments:
                segment.delete()
    return ids


def test_records_come_back_in_the_order_they_were_spooled_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=300)
    for start in range(0, 30, 5):
        assert spool.append("events", records(5, start))
    spool.append("logs", encode([{"id": "l-1", "message": "kept apart"}])[0])
    assert len(list(tmp_path.glob("events-*.jsonl"))) > 2 and spool.has_backlog("events")
    assert replayed_ids(spool) == [f"e-{i}" for i in range(30)]
    assert not spool.has_backlog("events") and spool.has_backlog("logs")
    assert replayed_ids(spool, "logs") == ["l-1"] and spool.size_bytes == 0


def test_a_torn_last_line_from_a_crash_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segment = tmp_path / "events-00000000000000000001-99999-000000.jsonl"
    segment.write_bytes(b'[{"id": "e-1", "type": "item.created", "item_id": "v"}]\n[{"id": "e-2", "ty')
    spool = Spool(tmp_path)
    assert spool.has_backlog("events")
    with caplog.at_level(logging.WARNING, "stagewatch.sdk"):
        assert replayed_ids(spool) == ["e-1"]
    assert any("sdk.spool.torn_line" in r.message for r in caplog.records)


def test_over_the_size_cap_the_oldest_segment_is_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=4000, segment_bytes=1000)
    for start in range(0, 200, 10):
        spool.append("events", records(10, start))
    assert spool.size_bytes <= 4000 and spool.dropped > 0
    kept = replayed_ids(spool)
    assert len(kept) + spool.dropped == 200
    assert kept == [f"e-{i}" for i in range(200 - len(kept), 200)], "the newest records are kept"


def test_a_segment_another_process_is_writing_is_not_replayed_until_sealed(tmp_path: Path) -> None:
    writer, replayer = Spool(tmp_path), Spool(tmp_path)  # flock: two open files conflict like two processes
    writer.append("events", records(3))
    assert replayed_ids(replayer) == []
    assert len(list(tmp_path.glob("*.jsonl"))) == 1
    writer.close()  # sealed: now anyone may send it
    assert replayed_ids(replayer) == ["e-0", "e-1", "e-2"]


def test_only_one_process_replays_a_directory_at_a_time(tmp_path: Path) -> None:
    first, second = Spool(tmp_path), Spool(tmp_path)
    first.append("events", records(2))
    first.close()
    with first.replay("events") as claimed:
        assert claimed is not None and len(claimed) == 1
        with second.replay("events") as blocked:
            assert blocked is None


def test_the_default_directory_is_per_server_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    one, two = default_spool_dir("http://a:8000", env), default_spool_dir("http://b:8000/", env)
    assert one != two and one.parent == tmp_path / "stagewatch" / "spool"
    assert default_spool_dir("http://a:8000/", env) == one
    assert default_spool_dir("http://a", {"STAGEWATCH_SPOOL_DIR": str(tmp_path / "s")}) == tmp_path / "s"


def test_records_left_by_a_process_that_died_are_sent_by_the_next_client(
    sdk_server: LiveServer, tmp_path: Path
) -> None:
    vid = new_id()
    dead = Spool(tmp_path)
    event = {"id": f"{vid}-1", "type": "item.created", "item_id": vid, "source": "webhook"}
    dead.append("events", encode([event])[0])
    dead.close()
    with Client(sdk_server.url, spool_dir=tmp_path, flush_interval=0.02) as client:
        assert client.flush()  # nothing new was emitted: the leftovers alone are replayed
        assert client.stats.sent == 1
    assert get_item(sdk_server, vid)["source"] == "webhook"
    assert not list(tmp_path.glob("*.jsonl"))
