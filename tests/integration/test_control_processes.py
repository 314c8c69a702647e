"""Limits and leases with real processes: two servers on one PostgreSQL hammered by fifty workers on
one key, and a worker killed with SIGKILL whose slot frees itself after the heartbeat timeout."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import _empty_postgres, start_server, stop_server
from tests.integration.test_control_api import _begin, _complete, _config

# --- two servers, one PostgreSQL --------------------------------------------------------------------------


@pytest.mark.postgres
def test_two_servers_and_fifty_workers_never_run_more_than_the_limit(
    postgres_url: str, tmp_path: Path
) -> None:
    _empty_postgres(postgres_url)
    config = str(_config(tmp_path))
    servers = [start_server(postgres_url, tmp_path / f"s{i}.log", "--config", config) for i in range(2)]
    lock, running, peak, runs_done = threading.Lock(), [0], [0], [0]

    def worker(number: int) -> None:
        base = servers[number % 2].url
        rng = random.Random(number)
        with httpx.Client(timeout=30) as http:
            for round_ in range(2):
                item = f"w{number}-{round_}"
                while (answer := _begin(http, base, item, account="hot"))["decision"] == "wait":
                    time.sleep(rng.uniform(0.005, 0.03))
                assert answer["decision"] == "run"
                with lock:
                    running[0] += 1
                    peak[0] = max(peak[0], running[0])
                time.sleep(rng.uniform(0.05, 0.1))  # long enough for the holders to overlap
                with lock:
                    running[0] -= 1
                    runs_done[0] += 1
                _complete(http, servers[(number + round_) % 2].url, answer["run_id"])

    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert runs_done[0] == 100
        assert peak[0] <= 3, f"{peak[0]} runs held the key at once; the limit is 3"
        assert peak[0] == 3  # the key was contended, so the limit was really exercised
    finally:
        for server in servers:
            stop_server(server)


# --- a worker killed with SIGKILL -----------------------------------------------------------------------

WORKER = """
import sys, time, httpx
base = sys.argv[1]
body = {"stage": "work", "item_id": "doomed", "account": "one"}
answer = httpx.post(base + "/v1/runs/begin", json=body).json()
assert answer["decision"] == "run", answer
print(answer["run_id"], flush=True)
while True:
    httpx.post(base + "/v1/runs/heartbeat", json={"runs": [{"run_id": answer["run_id"]}]})
    time.sleep(0.2)
"""


def test_a_worker_killed_with_sigkill_frees_its_slot_after_the_heartbeat_timeout(
    database_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "one.toml"
    config.write_text(_config(tmp_path, "2s").read_text().replace("limit = 3", "limit = 1"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STAGEWATCH_WATCHDOG_INTERVAL", "0.5")
        server = start_server(database_url, tmp_path / "server.log", "--config", str(config))
    try:
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, server.url], stdout=subprocess.PIPE, text=True
        )
        assert worker.stdout is not None
        run_id = worker.stdout.readline().strip()
        with httpx.Client() as http:
            time.sleep(2.5)  # alive and beating past one heartbeat timeout: the slot stays taken
            blocked = _begin(http, server.url, "next", account="one")
            assert blocked["decision"] == "wait" and blocked["reason"] == "concurrency work account:one 1/1"
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            killed_at = time.monotonic()
            while (answer := _begin(http, server.url, "next", account="one"))["decision"] == "wait":
                assert time.monotonic() - killed_at < 10, "the dead worker's slot was never freed"
                time.sleep(0.1)
            assert answer["decision"] == "run"
            assert time.monotonic() - killed_at >= 1.5  # freed by the timeout, not by anything else
            deadline = time.monotonic() + 15
            while http.get(f"{server.url}/v1/items/doomed").json()["runs"][0]["status"] != "timed_out":
                assert time.monotonic() < deadline, "the watchdog never timed the dead run out"
                time.sleep(0.2)
            assert run_id == "doomed/work/1"
    finally:
        stop_server(server)
