"""Pub/Sub push: the envelope exactly as Pub/Sub POSTs it, sent over real HTTP to a FastAPI endpoint on
loopback whose handler runs the stage with ``handle_push`` and a real client reporting to a real
``stagewatch serve``. The run continues the publisher's trace, counts the delivery attempt, and the
endpoint's status acks or nacks as Pub/Sub reads it."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

import stagewatch
from stagewatch import AsyncClient, Client, Run
from stagewatch.sdk import ids
from stagewatch.sdk.pubsub import (
    ACK_STATUSES,
    InvalidPushEnvelope,
    PushMessage,
    decode_push,
    handle_push,
    handle_push_async,
    is_ack,
    push_stage,
    response_for,
    status_for,
    status_for_invalid_envelope,
)
from stagewatch.sdk.tracing import PUBSUB_ATTRIBUTE, format_traceparent, inject
from tests.conftest import LiveServer, free_port
from tests.sdk.conftest import get_item, new_id

SUBSCRIPTION = "projects/reels-prod/subscriptions/process-push"


def envelope(
    payload: dict[str, Any],
    attributes: dict[str, str],
    delivery_attempt: int | None = 1,
    *,
    snake: bool = False,
) -> dict[str, Any]:
    """A push request body as Pub/Sub sends it: both spellings of the ids and times (``snake=True``
    gives only the snake_case ones), base64 data, and ``deliveryAttempt`` when there is a dead-letter
    policy."""
    message: dict[str, Any] = {
        "attributes": attributes,
        "data": base64.b64encode(json.dumps(payload).encode()).decode(),
        "message_id": "13647852357498821",
        "publish_time": "2026-11-28T13:00:00.123Z",
    }
    body: dict[str, Any] = {"message": message, "subscription": SUBSCRIPTION}
    if not snake:
        message.update(messageId=message["message_id"], publishTime=message["publish_time"])
    if delivery_attempt is not None:
        body["delivery_attempt" if snake else "deliveryAttempt"] = delivery_attempt
    return body


# --- decoding --------------------------------------------------------------------------------------


def test_decode_reads_the_documented_camel_case_envelope() -> None:
    header = format_traceparent(ids.trace_id(), ids.span_id())
    body = envelope({"video_id": "v-1"}, {PUBSUB_ATTRIBUTE: header, "account": "acct-1"}, 5)
    body["message"]["orderingKey"] = "acct-1"
    message = decode_push(json.dumps(body).encode())
    assert message == PushMessage(
        data=b'{"video_id": "v-1"}', message_id="13647852357498821",
        attributes={PUBSUB_ATTRIBUTE: header, "account": "acct-1"}, publish_time="2026-11-28T13:00:00.123Z",
        delivery_attempt=5, subscription=SUBSCRIPTION, ordering_key="acct-1", traceparent=header,
    )  # fmt: skip
    assert message.json() == {"video_id": "v-1"} and message.text() == '{"video_id": "v-1"}'


def test_decode_reads_snake_case_text_and_parsed_bodies_alike() -> None:
    body = envelope({"video_id": "v-2"}, {}, 2, snake=True)
    for form in (body, json.dumps(body), json.dumps(body).encode()):
        message = decode_push(form)
        assert (message.message_id, message.delivery_attempt, message.publish_time) == (
            "13647852357498821", 2, "2026-11-28T13:00:00.123Z",
        )  # fmt: skip
        assert message.traceparent is None


def test_decode_fills_what_pubsub_may_leave_out() -> None:
    message = decode_push({"message": {"messageId": "1", "attributes": {"kind": "ping"}}})
    assert (message.data, message.delivery_attempt, message.subscription, message.publish_time) == (
        b"", None, None, None,
    )  # fmt: skip
    assert decode_push({"message": {"messageId": "1"}, "deliveryAttempt": "3"}).delivery_attempt == 3


BAD_ENVELOPES: dict[str, tuple[Any, str]] = {
    "not JSON": (b"{not json", "body"),
    "a JSON array": ("[]", "body"),
    "a number": (b"42", "body"),
    "no message": ({"subscription": SUBSCRIPTION}, "message"),
    "message is a string": ({"message": "hi"}, "message"),
    "data not base64": ({"message": {"messageId": "1", "data": "***"}}, "message.data"),
    "data a number": ({"message": {"messageId": "1", "data": 7}}, "message.data"),
    "attributes a list": ({"message": {"messageId": "1", "attributes": ["a"]}}, "message.attributes"),
    "attribute not a string": (
        {"message": {"messageId": "1", "attributes": {"n": 1}}},
        "message.attributes.n",
    ),
    "no message id": ({"message": {"data": ""}}, "message.messageId"),
    "empty message id": ({"message": {"messageId": ""}}, "message.messageId"),
    "message id a number": ({"message": {"messageId": 1}}, "message.messageId"),
    "publish time a number": ({"message": {"messageId": "1", "publishTime": 1}}, "message.publishTime"),
    "attempt zero": ({"message": {"messageId": "1"}, "deliveryAttempt": 0}, "deliveryAttempt"),
    "attempt negative": ({"message": {"messageId": "1"}, "delivery_attempt": -2}, "deliveryAttempt"),
    "attempt a boolean": ({"message": {"messageId": "1"}, "deliveryAttempt": True}, "deliveryAttempt"),
    "attempt a word": ({"message": {"messageId": "1"}, "deliveryAttempt": "two"}, "deliveryAttempt"),
    "subscription a number": ({"message": {"messageId": "1"}, "subscription": 3}, "subscription"),
}


@pytest.mark.parametrize(("body", "field"), BAD_ENVELOPES.values(), ids=BAD_ENVELOPES.keys())
def test_a_malformed_envelope_names_the_bad_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidPushEnvelope) as caught:
        decode_push(body)
    assert caught.value.field == field and field in str(caught.value)
    assert isinstance(caught.value, ValueError)


# --- statuses --------------------------------------------------------------------------------------

OUTCOMES: dict[str, tuple[BaseException | None, int]] = {
    "success": (None, 204),
    "skip": (stagewatch.Skip("already published"), 200),
    "dead letter": (stagewatch.DeadLettered("5 attempts"), 200),
    "aborted": (stagewatch.Aborted("item cancelled"), 200),
    "cancelled": (stagewatch.Cancelled("operator"), 200),
    "wait": (stagewatch.Wait(12.5, "concurrency account:42 3/3"), 429),
    "failure": (RuntimeError("ffmpeg exited 1"), 500),
    "keyboard interrupt": (KeyboardInterrupt(), 500),
}


@pytest.mark.parametrize(("outcome", "status"), OUTCOMES.values(), ids=OUTCOMES.keys())
def test_each_outcome_maps_to_its_status(outcome: BaseException | None, status: int) -> None:
    assert status_for(outcome) == status
    assert is_ack(status) == (status in {200, 204})


def test_wait_says_when_to_retry_and_only_documented_statuses_ack(caplog: pytest.LogCaptureFixture) -> None:
    assert response_for(stagewatch.Wait(12.5, "rate limit")) == (429, {"Retry-After": "13"})
    assert response_for(stagewatch.Wait(0)) == (429, {"Retry-After": "0"})
    assert response_for(None) == (204, {})
    assert all(is_ack(status) for status in (102, 200, 201, 202, 204)) and len(ACK_STATUSES) == 5
    assert not any(is_ack(status) for status in (100, 203, 301, 400, 404, 409, 429, 500, 503))
    with caplog.at_level(logging.ERROR, "stagewatch.pubsub"):
        assert status_for_invalid_envelope(InvalidPushEnvelope("message.data", "is not valid base64")) == 204
    assert "message.data is not valid base64" in caplog.text


# --- over real HTTP --------------------------------------------------------------------------------


def work(message: PushMessage, run: Run) -> None:
    """What the worker does for each message; the message's ``outcome`` says how it ends."""
    outcome = message.json().get("outcome", "ok")
    run.progress(0.5)
    if outcome != "ok":
        raise OUTCOMES[outcome][0] or RuntimeError(outcome)


async def async_work(message: PushMessage, run: Run) -> None:
    await asyncio.sleep(0.01)
    work(message, run)


def video_of(message: PushMessage) -> str:
    video: str = message.json()["video_id"]
    return video


def push_app(client: Client, async_client: AsyncClient) -> FastAPI:
    app = FastAPI()

    @app.post("/push/process")
    async def process(request: Request) -> Response:
        body = await request.body()
        status, headers = await run_in_threadpool(handle_push, client, body, "process", video_of, work)
        return Response(status_code=status, headers=headers)

    @app.post("/push/publish")
    async def publish(request: Request) -> Response:
        body = await request.json()
        status, headers = await handle_push_async(async_client, body, "publish", video_of, async_work)
        return Response(status_code=status, headers=headers)

    return app


@pytest.fixture
def async_client(sdk_server: LiveServer, tmp_path: Path) -> Iterator[AsyncClient]:
    # Unguarded, like the ``client`` fixture: these runs count Pub/Sub's delivery attempts, where a guarded
    # run takes the server's count (guarded push endpoints: test_guarded.py).
    sdk = AsyncClient(sdk_server.url, spool_dir=tmp_path / "async-spool", flush_interval=0.02, guarded=False)
    yield sdk
    asyncio.run(sdk.aclose())


@pytest.fixture
def endpoint(client: Client, async_client: AsyncClient) -> Iterator[str]:
    """The push endpoint: uvicorn serving ``push_app`` in a thread on a free loopback port."""
    port = free_port()
    config = uvicorn.Config(push_app(client, async_client), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def publish_from(sdk_server: LiveServer, tmp_path: Path, video: str) -> tuple[str, dict[str, str]]:
    """A publisher in another process's shoes: its own client, a run of ``enqueue``, and the message
    attributes the official Pub/Sub client would carry (``googclient_traceparent`` only)."""
    with Client(sdk_server.url, spool_dir=tmp_path / "publisher") as publisher:
        with publisher.stage("enqueue", video) as run:
            attributes = {PUBSUB_ATTRIBUTE: inject({})[PUBSUB_ATTRIBUTE], "account": "acct-1"}
        assert publisher.flush()
    return run.trace_id, attributes


def the_run(sdk_server: LiveServer, video: str, stage: str) -> dict[str, Any]:
    (run,) = [run for run in get_item(sdk_server, video)["runs"] if run["stage"] == stage]
    found: dict[str, Any] = run
    return found


def test_a_pushed_message_continues_the_publisher_trace_with_its_delivery_attempt(
    endpoint: str, client: Client, sdk_server: LiveServer, tmp_path: Path
) -> None:
    video = new_id()
    trace, attributes = publish_from(sdk_server, tmp_path, video)
    response = httpx.post(f"{endpoint}/push/process", json=envelope({"video_id": video}, attributes, 3))
    assert response.status_code == 204 and is_ack(response.status_code)
    assert client.flush()
    run = the_run(sdk_server, video, "process")
    assert (run["trace_id"], run["attempt"], run["status"]) == (trace, 3, "succeeded")
    assert run["span_id"] != the_run(sdk_server, video, "enqueue")["span_id"]


def test_a_snake_case_envelope_with_a_plain_traceparent_works_too(
    endpoint: str, client: Client, sdk_server: LiveServer
) -> None:
    video, trace = new_id(), ids.trace_id()
    attributes = {"traceparent": format_traceparent(trace, ids.span_id())}
    body = envelope({"video_id": video}, attributes, 2, snake=True)
    assert httpx.post(f"{endpoint}/push/process", json=body).status_code == 204
    assert client.flush()
    run = the_run(sdk_server, video, "process")
    assert (run["trace_id"], run["attempt"]) == (trace, 2)


def test_without_a_dead_letter_policy_the_attempt_is_one_and_a_new_trace_begins(
    endpoint: str, client: Client, sdk_server: LiveServer
) -> None:
    video = new_id()
    body = envelope({"video_id": video}, {"traceparent": "garbage"}, None)
    assert httpx.post(f"{endpoint}/push/process", content=json.dumps(body)).status_code == 204
    assert client.flush()
    run = the_run(sdk_server, video, "process")
    assert run["attempt"] == 1 and len(run["trace_id"]) == 32


@pytest.mark.parametrize(
    ("outcome", "run_status"),
    [("skip", "cancelled"), ("dead letter", "cancelled"), ("cancelled", "cancelled"), ("wait", "cancelled"),
     ("failure", "failed")],
)  # fmt: skip
def test_each_outcome_answers_pubsub_over_http(
    endpoint: str, client: Client, sdk_server: LiveServer, outcome: str, run_status: str
) -> None:
    video = new_id()
    body = envelope({"video_id": video, "outcome": outcome}, {}, 4)
    response = httpx.post(f"{endpoint}/push/process", json=body)
    assert response.status_code == OUTCOMES[outcome][1]
    assert response.headers.get("retry-after") == ("13" if outcome == "wait" else None)
    assert client.flush()
    run = the_run(sdk_server, video, "process")
    assert (run["status"], run["attempt"]) == (run_status, 4)


def test_poison_messages_are_acked_and_logged_not_redelivered_forever(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "stagewatch.pubsub"):
        assert httpx.post(f"{endpoint}/push/process", content=b"{not json").status_code == 204
        no_video = envelope({"caption": "no video id"}, {}, 1)
        assert httpx.post(f"{endpoint}/push/process", json=no_video).status_code == 204
    assert "pubsub.invalid_envelope" in caplog.text and "body is not JSON" in caplog.text
    assert "pubsub.unreadable_message message_id=13647852357498821" in caplog.text


def test_the_async_handler_reports_through_an_async_client(
    endpoint: str, async_client: AsyncClient, sdk_server: LiveServer
) -> None:
    video, trace = new_id(), ids.trace_id()
    attributes = {PUBSUB_ATTRIBUTE: format_traceparent(trace, ids.span_id())}
    assert (
        httpx.post(f"{endpoint}/push/publish", json=envelope({"video_id": video}, attributes, 6)).status_code
        == 204
    )
    failing = envelope({"video_id": video, "outcome": "failure"}, attributes, 7)
    assert httpx.post(f"{endpoint}/push/publish", json=failing).status_code == 500
    assert asyncio.run(async_client.flush())
    runs = sorted(get_item(sdk_server, video)["runs"], key=lambda run: run["attempt"])
    assert [(r["attempt"], r["status"], r["trace_id"]) for r in runs] == [
        (6, "succeeded", trace), (7, "failed", trace),
    ]  # fmt: skip


def test_push_stage_lets_the_caller_override_what_the_message_says(client: Client) -> None:
    header = format_traceparent(ids.trace_id(), ids.span_id())
    message = decode_push(envelope({"video_id": "v"}, {PUBSUB_ATTRIBUTE: header}, 3))
    with push_stage(client, message, "process", new_id()) as run:
        assert (run.attempt, run.trace_id) == (3, header[3:35])
    with push_stage(client, message, "process", new_id(), attempt=9, account="acct-1") as run:
        assert run.attempt == 9
