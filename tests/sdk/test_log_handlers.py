"""Correlated logs: the stdlib handler and the structlog processor tag each line with the run it was
written in and ship it (found again through the real server's ``GET /v1/logs``); concurrent asyncio
tasks keep their own ids; the SDK's own lines never loop; the Cloud Logging formatter writes the JSON
fields Cloud Logging reads."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from stagewatch import AsyncClient, Client
from stagewatch.sdk.logs import (
    ID_FIELDS,
    CloudLoggingFormatter,
    StagewatchHandler,
    install,
    structlog_processor,
)
from tests.conftest import LiveServer
from tests.sdk.conftest import new_id


class CapturingClient(Client):
    """A real client that also keeps what ``emit_log`` received."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shipped: list[dict[str, Any]] = []

    def emit_log(self, record: Mapping[str, Any]) -> None:
        self.shipped.append(dict(record))
        super().emit_log(record)


class CapturingAsyncClient(AsyncClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shipped: list[dict[str, Any]] = []

    def emit_log(self, record: Mapping[str, Any]) -> None:
        self.shipped.append(dict(record))
        super().emit_log(record)


@pytest.fixture
def capturing(sdk_server: LiveServer, tmp_path: Path) -> Iterator[CapturingClient]:
    sdk = CapturingClient(
        sdk_server.url, spool_dir=tmp_path / "spool", flush_interval=0.02, worker="process-svc"
    )
    yield sdk
    sdk.close()


@pytest.fixture
def logger(capturing: CapturingClient) -> Iterator[logging.Logger]:
    """A fresh logger at DEBUG with a ``StagewatchHandler`` for ``capturing`` at INFO."""
    named = logging.getLogger(f"worker.{uuid.uuid4().hex[:8]}")
    named.setLevel(logging.DEBUG)
    handler = install(capturing, logging.INFO, named)
    yield named
    named.removeHandler(handler)


def search_logs(server: LiveServer, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/v1/logs", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["logs"]
    return found


# --- the stdlib handler ----------------------------------------------------------------------------


def test_an_error_logged_in_a_stage_carries_the_run_s_ids_end_to_end(
    capturing: CapturingClient, logger: logging.Logger, sdk_server: LiveServer
) -> None:
    video = new_id()
    with capturing.stage("process", video, pipeline="instagram") as run:
        try:
            raise OSError("moov atom not found")
        except OSError:
            logger.error("boom %s", 1, exc_info=True, extra={"frames": 120, "codec": "h264", "blob": [1]})
        logger.debug("below the handler's level: not shipped")
    (record,) = capturing.shipped
    assert {name: record[name] for name in ID_FIELDS} == {
        "item_id": video, "run_id": run.run_id, "stage": "process", "pipeline": "instagram",
        "trace_id": run.trace_id, "span_id": run.span_id,
    }  # fmt: skip
    assert (record["level"], record["message"], record["logger"]) == ("error", "boom 1", logger.name)
    assert record["attrs"] == {"frames": 120, "codec": "h264"} and record["worker"] == "process-svc"
    assert (
        record["exception"].startswith("Traceback") and "OSError: moov atom not found" in record["exception"]
    )

    assert capturing.flush()
    (stored,) = search_logs(sdk_server, item_id=video)
    assert (stored["message"], stored["level"], stored["run_id"], stored["trace_id"], stored["span_id"]) == (
        "boom 1", "error", run.run_id, run.trace_id, run.span_id,
    )  # fmt: skip
    assert "moov atom not found" in stored["exception"] and stored["attrs"] == {
        "frames": 120,
        "codec": "h264",
    }


def test_outside_a_run_lines_ship_without_ids_and_explicit_ids_win(
    capturing: CapturingClient, logger: logging.Logger
) -> None:
    logger.warning("no run here")
    with capturing.stage("download", new_id()):
        logger.info("about another video", extra={"item_id": "v-other", "run_id": "r-other"})
    plain, explicit = capturing.shipped
    assert "item_id" not in plain and "trace_id" not in plain and plain["level"] == "warning"
    assert (explicit["item_id"], explicit["run_id"]) == ("v-other", "r-other") and "trace_id" not in explicit


def test_the_sdk_s_own_lines_and_lines_run_log_shipped_are_not_shipped_again(
    capturing: CapturingClient,
) -> None:
    handler = install(capturing, logging.INFO)  # the root logger sees everything
    sdk_logger, run_logger = logging.getLogger("stagewatch.sdk"), logging.getLogger("stagewatch.run")
    levels = sdk_logger.level, run_logger.level
    sdk_logger.setLevel(logging.INFO)
    run_logger.setLevel(logging.INFO)
    try:
        with capturing.stage("process", new_id()) as run:
            sdk_logger.error("sdk.export.failed: would feed itself")
            logging.getLogger("stagewatch.sdk.spool").error("sdk.spool.torn_line")
            run.log.info("shipped by run.log itself")
            on_sdk_thread = threading.Thread(
                target=logging.getLogger("httpx").warning, args=("HTTP Request: POST",)
            )
            on_sdk_thread.name = "stagewatch-exporter"
            on_sdk_thread.start()
            on_sdk_thread.join()
        assert install(capturing, logging.INFO) is handler  # installing twice gives the same handler
        assert capturing.shipped == []
    finally:
        logging.getLogger().removeHandler(handler)
        sdk_logger.setLevel(levels[0])
        run_logger.setLevel(levels[1])


class ReentrantClient(CapturingClient):
    """A client whose shipping logs to the logger it ships from, and then fails."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__(enabled=False)
        self.target = target

    def emit_log(self, record: Mapping[str, Any]) -> None:
        super().emit_log(record)
        self.target.warning("logged while shipping")
        raise RuntimeError("the sink is broken")


def test_shipping_never_recurses_and_never_raises_into_the_caller(capsys: pytest.CaptureFixture[str]) -> None:
    target = logging.getLogger(f"reentrant.{uuid.uuid4().hex[:8]}")
    target.propagate = False
    client = ReentrantClient(target)
    target.addHandler(StagewatchHandler(client))
    target.error("first %s %s", "only one arg")  # bad %-arguments too
    assert [record["message"] for record in client.shipped] == ["first %s %s ('only one arg',)"]
    assert "--- Logging error ---" not in capsys.readouterr().err  # the handler never reported a failure


def test_non_scalar_and_non_finite_extras_stay_out_of_attrs(
    capturing: CapturingClient, logger: logging.Logger
) -> None:
    logger.info(
        "x", extra={"ok": True, "n": None, "nan": math.nan, "ratio": 0.5, "path": Path("/tmp"), "d": {}}
    )
    assert capturing.shipped[0]["attrs"] == {"ok": True, "n": None, "ratio": 0.5}


def test_two_concurrent_asyncio_tasks_log_with_their_own_ids(sdk_server: LiveServer, tmp_path: Path) -> None:
    client = CapturingAsyncClient(sdk_server.url, spool_dir=tmp_path / "async", flush_interval=0.02)
    named = logging.getLogger(f"tasks.{uuid.uuid4().hex[:8]}")
    named.setLevel(logging.INFO)
    install(client, logging.INFO, named)
    turns = asyncio.Event()

    async def worker(video: str) -> str:
        async with client.stage("process", video) as run:
            for step in range(3):
                named.info("step %d of %s", step, video)
                turns.set()
                await asyncio.sleep(0.01)  # let the other task log in between
        return run.run_id

    async def main() -> list[str]:
        runs = await asyncio.gather(worker(new_id("a")), worker(new_id("b")))
        assert await client.flush()
        await client.aclose()
        return list(runs)

    run_ids = asyncio.run(main())
    order = [record["run_id"] for record in client.shipped]
    assert order != sorted(order)  # the two tasks really interleaved
    for record in client.shipped:
        assert record["message"].endswith(record["item_id"])
        assert record["run_id"] == run_ids[0 if record["item_id"].startswith("a-") else 1]
    for run_id in run_ids:
        stored = search_logs(sdk_server, run_id=run_id)
        assert len(stored) == 3 and len({line["item_id"] for line in stored}) == 1


# --- structlog -------------------------------------------------------------------------------------


def test_the_structlog_processor_tags_the_event_and_ships_it(
    capturing: CapturingClient, sdk_server: LiveServer
) -> None:
    out = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            structlog.processors.add_log_level,
            structlog_processor(capturing),
            structlog.processors.JSONRenderer(),
        ],
    )
    video = new_id()
    with capturing.stage("publish", video) as run:
        log.info("container created", container_id="1789", polls=3, payload={"a": 1})
        try:
            raise TimeoutError("status_code IN_PROGRESS after 300 s")
        except TimeoutError:
            log.exception("publish failed", item_id="explicit")
    log.warning("outside")

    rendered = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {name: rendered[0][name] for name in ("item_id", "run_id", "stage", "trace_id", "span_id")} == {
        "item_id": video, "run_id": run.run_id, "stage": "publish", "trace_id": run.trace_id,
        "span_id": run.span_id,
    }  # fmt: skip
    assert rendered[1]["item_id"] == "explicit" and "run_id" not in rendered[2]
    info, failure, outside = capturing.shipped
    assert (info["level"], info["message"], info["run_id"], "pipeline" in info) == (
        "info", "container created", run.run_id, False,
    )  # fmt: skip
    assert info["attrs"] == {"container_id": "1789", "polls": 3}
    assert failure["level"] == "error" and failure["item_id"] == "explicit"
    assert "TimeoutError: status_code IN_PROGRESS" in failure["exception"]
    assert "run_id" not in outside and outside["level"] == "warning"

    assert capturing.flush()
    stored = search_logs(sdk_server, item_id=video)
    assert [line["message"] for line in stored] == ["container created"]  # the other went to "explicit"


# --- Cloud Logging JSON lines ----------------------------------------------------------------------


def cloud_lines(formatter: CloudLoggingFormatter, emit: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    named = logging.getLogger(f"cloud.{uuid.uuid4().hex[:8]}")
    named.propagate = False
    named.setLevel(1)  # custom levels below DEBUG pass too
    named.addHandler(handler)
    emit(named)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_cloud_logging_formatter_writes_one_json_line_with_the_special_fields() -> None:
    client = Client(enabled=False)

    def emit(named: logging.Logger) -> None:
        with client.stage("download", "v-7", pipeline="instagram"):
            try:
                raise ValueError("bad\nframe")
            except ValueError:
                named.error("boom %s", 1, exc_info=True, extra={"bytes": 1024, "ratio": math.inf})

    (line,) = cloud_lines(CloudLoggingFormatter(project="reels-prod"), emit)
    with client.stage("download", "v-7") as run:
        pass
    assert line["severity"] == "ERROR" and line["message"].startswith("boom 1\nTraceback")
    assert "ValueError: bad\nframe" in line["message"]
    assert datetime.fromisoformat(line["time"].replace("Z", "+00:00")).tzinfo is not None
    assert line["time"].endswith("Z")
    assert line["logging.googleapis.com/trace"] == f"projects/reels-prod/traces/{line['trace_id']}"
    assert line["trace_id"] == run.trace_id  # the item's trace, continued by the second run
    assert (
        len(line["logging.googleapis.com/spanId"]) == 16
        and line["logging.googleapis.com/trace_sampled"] is True
    )
    assert (line["item_id"], line["stage"], line["pipeline"], line["bytes"], line["ratio"]) == (
        "v-7", "download", "instagram", 1024, "inf",
    )  # fmt: skip
    assert line["logging.googleapis.com/sourceLocation"]["function"] == "emit"
    assert len(line["run_id"]) == 32
    client.close()


def test_severities_project_from_the_environment_and_lines_outside_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-env")

    def emit(named: logging.Logger) -> None:
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL, 5):
            named.log(level, "level %d", level)

    lines = cloud_lines(CloudLoggingFormatter(), emit)
    assert [line["severity"] for line in lines] == ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "DEBUG"]
    assert not any("logging.googleapis.com/trace" in line or "item_id" in line for line in lines)

    client = Client(enabled=False)
    with client.stage("process", "v-8"):
        (inside,) = cloud_lines(CloudLoggingFormatter(), lambda named: named.info("in"))
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT")
    with client.stage("process", "v-8"):
        (no_project,) = cloud_lines(CloudLoggingFormatter(), lambda named: named.info("in"))
    assert inside["logging.googleapis.com/trace"].startswith("projects/from-env/traces/")
    assert "logging.googleapis.com/trace" not in no_project and len(no_project["trace_id"]) == 32
    client.close()
