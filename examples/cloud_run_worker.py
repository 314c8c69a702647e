"""A Cloud Run worker behind a Pub/Sub push subscription that reports to stagewatch: the ``process``
stage of the pipeline.

Pub/Sub POSTs each message wrapped in an envelope. ``handle_push`` decodes it, opens the ``process``
run (continuing the publisher's trace from the ``googclient_traceparent`` attribute, and counting
``deliveryAttempt`` as the attempt), runs ``process_video`` inside it, and gives the status to answer:
204 acks the message, 500 nacks it so Pub/Sub redelivers it after the subscription's backoff.

    STAGEWATCH_URL=http://127.0.0.1:8000 uvicorn examples.cloud_run_worker:app --port 8080
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Response

import stagewatch
from stagewatch.sdk.pubsub import PushMessage, handle_push

app = FastAPI(title="video worker")
client = stagewatch.Client()  # STAGEWATCH_URL from the environment; K_SERVICE and K_REVISION on Cloud Run


@app.post("/")
def push(envelope: dict[str, Any]) -> Response:
    """The push endpoint. A plain ``def``: FastAPI runs it in a thread, so the work may block."""
    status, headers = handle_push(client, envelope, "process", video_id_of, process_video)
    return Response(status_code=status, headers=headers)


def video_id_of(message: PushMessage) -> str:
    """The message's data is JSON: ``{"video_id": ..., "gcs_uri": ...}``."""
    return str(message.json()["video_id"])


def process_video(message: PushMessage, run: stagewatch.Run) -> None:
    """Transcode the video. Replace the sleeps with your ffmpeg call; an exception fails the run (with
    its stack in stagewatch) and nacks the message."""
    payload = message.json()
    run.log.info("processing %s (delivery attempt %s)", payload["video_id"], message.delivery_attempt or 1)
    if payload.get("fail"):
        raise RuntimeError(f"ffmpeg exited with status 1: {payload['gcs_uri']}: Invalid data found")
    for step in range(1, 5):
        time.sleep(0.25)
        run.progress(step / 4, note=f"transcoding pass {step} of 4")
    run.add_cost("cloud_run_vcpu_seconds", 2.0)
    run.log.info("ready to publish")
