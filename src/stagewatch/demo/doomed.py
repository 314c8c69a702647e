"""The Cloud Run instance that dies mid-run: a real child process that opens a ``process`` run with its
own SDK client, heartbeats every half second, and keeps transcoding until its parent kills it with
SIGKILL. Nothing runs after SIGKILL, so its run is never finished and its heartbeats really stop.

    python -m stagewatch.demo.doomed '{"url": ..., "video_id": ..., "attempt": 1, ...}'
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from stagewatch import Client, Run

READY = "running"


def main(argv: list[str]) -> None:
    spec: dict[str, Any] = json.loads(argv[1])
    client = Client(
        spec["url"],
        spec.get("token"),
        spool_dir=False,
        heartbeat_interval=0.5,
        flush_interval=0.1,
        pipeline="instagram",
        worker=spec.get("worker"),
        revision=spec.get("revision"),
    )
    with client.stage(
        "process",
        spec["video_id"],
        account=spec.get("account"),
        scenario=spec.get("scenario"),
        attempt=spec.get("attempt"),
        run_id=spec.get("run_id"),
        traceparent=spec.get("traceparent"),
    ) as run:
        run.log.info("instance pid %d picked up %s (delivery %s)", os.getpid(), run.item_id, run.attempt)
        run.progress(0.1, note="probe done; transcoding")
        client.flush(5)
        print(READY, flush=True)
        transcode_until_killed(run)


def transcode_until_killed(run: Run) -> None:
    """Transcode slowly, reporting progress, until the parent's SIGKILL ends the process."""
    done = 0.1
    while True:
        time.sleep(0.3)
        done = min(0.6, done + 0.03)
        run.progress(done, note="transcoding 1080x1920 h264")


if __name__ == "__main__":
    main(sys.argv)
