"""Mixed load on one server: is anything refused when every kind of writer works on the same videos?

    python benchmarks/soak.py [--seconds 40] [--backend sqlite|postgres|both]

Starts ``stagewatch serve`` on a fresh database with the watchdog sweeping every second, then, for
``--seconds``, on the same 20,000 videos at once:

- 2 threads POST 200,000 events in batches of 500 (``POST /v1/events``; the events are dated a year back, so
  every sweep also marks the videos still in flight stuck: a worst case for the watchdog);
- 4 threads make decisions: ``POST /v1/runs/begin`` on a random video, then ``complete``;
- 1 operator cancels ten videos by id prefix (``POST /v1/items/cancel``) and resumes three of them,
  five times a second.

Prints what each kind of request got done, every answer of 500 or more (there should be none), and how
many transactions the server tried again after PostgreSQL aborted them (deadlocks: no client sees
those). Exits 1 when any request was refused with a 5xx.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from _common import backends, batches_of, fresh_database, make_events, start_server, stop_server, temp_dir

VIDEOS = 20_000


class Tally:
    """What the load got done, and what was refused, by kind of request; shared by the threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done: Counter[str] = Counter()
        self.refused: list[str] = []

    def count(self, kind: str, response: httpx.Response) -> None:
        with self._lock:
            if response.status_code >= 500:
                self.refused.append(f"{kind}: {response.status_code} {response.text[:200]}")
            else:
                self.done[kind] += 1


def _ingester(url: str, bodies: list[bytes], until: float, tally: Tally) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        for body in bodies:
            if time.time() > until:
                return
            answer = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
            tally.count("ingest batches", answer)


def _decider(url: str, seed: int, until: float, tally: Tally) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=120) as client:
        while time.time() < until:
            # A new account each time, so the publish rate limit (50 a day per account) never says wait.
            body = {"stage": "publish", "item_id": _video(rng), "account": f"acct-{rng.randrange(10**6)}"}
            answer = client.post("/v1/runs/begin", json=body)
            tally.count("begins", answer)
            if answer.status_code == 200 and answer.json()["decision"] == "run":
                done = client.post(
                    f"/v1/runs/{answer.json()['run_id']}/complete", json={"outcome": "succeeded"}
                )
                tally.count("completes", done)


def _operator(url: str, until: float, tally: Tally) -> None:
    rng = random.Random(0)
    with httpx.Client(base_url=url, timeout=120) as client:
        while time.time() < until:
            prefix = f"vid-{rng.randrange(VIDEOS // 10):06d}"  # ten videos
            filter_ = {"prefix": prefix}
            tally.count(
                "cancels", client.post("/v1/items/cancel", json={"filter": filter_, "reason": "soak"})
            )
            for digit in range(3):
                resume = {"from_stage": "download", "reason": "soak"}
                answer = client.post(f"/v1/items/{prefix}{digit}/resume", json=resume)
                if answer.status_code != 404:  # a video no event has created yet
                    tally.count("resumes", answer)
            time.sleep(0.2)


def _video(rng: random.Random) -> str:
    return f"vid-{rng.randrange(VIDEOS):07d}"


def soak(backend: str, seconds: float) -> bool:
    """One run on a fresh database; True when nothing was refused."""
    events = make_events(VIDEOS, VIDEOS * 10, seed=3)
    bodies = [orjson.dumps(list(batch)) for batch in batches_of(events, 500)]
    tally = Tally()
    os.environ["STAGEWATCH_WATCHDOG_INTERVAL"] = "1"  # read by the server process
    with temp_dir() as tmp, fresh_database(backend, tmp, "soak") as url:
        server = start_server(url, tmp / "server.log")
        until = time.time() + seconds
        loads: list[tuple[Callable[..., None], tuple[object, ...]]] = [
            (_ingester, (server.url, bodies[0::2], until, tally)),
            (_ingester, (server.url, bodies[1::2], until, tally)),
            *((_decider, (server.url, seed, until, tally)) for seed in range(4)),
            (_operator, (server.url, until, tally)),
        ]
        threads = [threading.Thread(target=target, args=args) for target, args in loads]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop_server(server)
        retried = Path(server.log_path).read_text(errors="replace").count(".transient_retry")
    done = ", ".join(f"{kind} {n:,}" for kind, n in sorted(tally.done.items()))
    print(f"{backend:10s} {seconds:.0f} s: {done}")
    print(f"           refused (5xx): {len(tally.refused)}; transactions the server tried again: {retried}")
    for refusal in tally.refused[:10]:
        print(f"             {refusal}")
    return not tally.refused


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    results = [soak(backend, args.seconds) for backend in backends(args.backend)]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
