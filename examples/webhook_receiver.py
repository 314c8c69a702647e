"""A webhook receiver for submitted videos that reports to stagewatch: the first stage of the pipeline.

Each POST /webhook records the video (``client.item_created``: who submitted it, with which parameters)
and runs the ``webhook`` stage, which writes the video's row in your ``sources`` table together with
the run's ``traceparent``, so the downloader continues the same trace.

    STAGEWATCH_URL=http://127.0.0.1:8000 uvicorn examples.webhook_receiver:app --port 8081
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel

import stagewatch

app = FastAPI(title="webhook receiver")
client = stagewatch.Client()  # STAGEWATCH_URL and STAGEWATCH_TOKEN from the environment


class Submission(BaseModel):
    """What the submitting system (Airtable, Zapier, a CMS) posts."""

    video_id: str
    source_url: str
    account: str
    scenario: str = "reels"
    caption: str = ""


@app.post("/webhook", status_code=202)
def receive(submission: Submission, request: Request) -> dict[str, Any]:
    """Record the video and queue it for download. A plain ``def``: FastAPI runs it in a thread."""
    video_id = submission.video_id
    client.item_created(
        video_id,
        source=f"webhook:{request.headers.get('user-agent', 'unknown')}",
        actor=request.headers.get("x-submitted-by"),
        params=submission.model_dump(),
        account=submission.account,
        scenario=submission.scenario,
    )
    with client.stage("webhook", video_id, account=submission.account, scenario=submission.scenario) as run:
        run.log.info("received %s from %s", video_id, submission.source_url)
        save_source_row(submission, traceparent=run.traceparent)
    return {"video_id": video_id, "trace_id": run.trace_id}


def save_source_row(submission: Submission, *, traceparent: str) -> None:
    """Your ``INSERT INTO sources``: keep ``traceparent`` in the row, and have the downloader pass it to
    ``client.stage("download", video_id, traceparent=row.traceparent)``."""
