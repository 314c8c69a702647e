"""Guarded runs against a scripted control plane (``httpx.MockTransport`` speaking the contract of
``docs/guardrails.md``): each decision of ``begin`` and what worker code sees, ``complete`` with the
outcome, failing open or closed, heartbeats that stop a run (``run.check()``, the asyncio task, child
processes), and the statuses a Pub/Sub push endpoint answers. ``test_guarded_live.py`` runs the same
flow against a real server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import pytest

import stagewatch
from stagewatch import AsyncClient, Client, current_run
from stagewatch.sdk import RunInterrupted
from stagewatch.sdk.pubsub import handle_push, handle_push_async

Body = dict[str, Any]

RUN_ANSWER: Body = {
    "decision": "run", "reason": "attempt 2 of 3", "run_id": "vid-1/process/2", "attempt": 2,
    "deadline": "2026-11-28T16:30:00.000Z", "deadline_in": 1800.0, "heartbeat_interval": 20.0,
    "heartbeat_timeout": 60.0,
}  # fmt: skip

WAIT: Body = {
    "decision": "wait", "reason": "concurrency account:42 3/3", "blocker": "concurrency account:42 3/3",
    "retry_after": 5.0,
}  # fmt: skip

REFUSALS: dict[str, tuple[Body, type[RunInterrupted]]] = {
    "skip": ({"decision": "skip", "reason": "already succeeded (run vid-1/process/1)"}, stagewatch.Skip),
    "wait": (WAIT, stagewatch.Wait),
    "dead_letter": (
        {"decision": "dead_letter", "reason": "attempts exhausted (3 of 3): ValueError: bad codec"},
        stagewatch.DeadLettered,
    ),
    "abort": ({"decision": "abort", "reason": "cancelled by alice: customer withdrew"}, stagewatch.Aborted),
}


@dataclass
class ControlPlane:
    """The server side of the contract, scripted: ``begin`` answers ``decision`` (a body, or a function
    of the request returning ``(status, body)``); a heartbeat answers ``continue`` except for the runs in
    ``stops``; every request is recorded."""

    decision: Body | Callable[[Body], tuple[int, Body]] = field(default_factory=lambda: dict(RUN_ANSWER))
    complete_status: int = 200
    stops: dict[str, str] = field(default_factory=dict)
    forget: set[str] = field(default_factory=set)  # runs the heartbeat answer leaves out
    requests: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path, body = request.url.raw_path.decode(), json.loads(request.content)  # run ids stay %-encoded
        with self.lock:
            self.requests.append((path, body))
        if path in ("/v1/events", "/v1/logs"):
            return httpx.Response(200, json={"accepted": len(body), "duplicate": 0, "rejected": 0})
        if path == "/v1/runs/begin":
            status, answer = self.decision(body) if callable(self.decision) else (200, self.decision)
            return httpx.Response(status, json=answer)
        if path == "/v1/runs/heartbeat":
            return httpx.Response(200, json={"runs": [self._action(b["run_id"]) for b in body["runs"]
                                                      if b["run_id"] not in self.forget]})  # fmt: skip
        if path.startswith("/v1/runs/") and path.endswith("/complete"):
            return httpx.Response(self.complete_status, json={"outcome": body["outcome"], "next": "done"})
        return httpx.Response(404, json={"detail": "Not Found"})

    def _action(self, run_id: str) -> Body:
        reason = self.stops.get(run_id)
        return {"run_id": run_id, "action": "stop" if reason else "continue", "reason": reason}

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [body for p, body in self.requests if p == path]

    def completes(self) -> list[tuple[str, Body]]:
        with self.lock:
            return [(p.split("/")[3], b) for p, b in self.requests if p.endswith("/complete")]

    def events(self, event_type: str | None = None) -> list[Body]:
        found = [event for batch in self.bodies("/v1/events") for event in batch]
        return [event for event in found if event_type is None or event["type"] == event_type]


@pytest.fixture
def plane() -> ControlPlane:
    return ControlPlane()


@pytest.fixture
def make_client(plane: ControlPlane) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(**options: Any) -> Client:
        settings: dict[str, Any] = {"spool_dir": False, "flush_interval": 0.02, "worker": "proc-svc"}
        client = Client("http://stagewatch.test", transport=httpx.MockTransport(plane.handle),
                        **{**settings, **options})  # fmt: skip
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=1)


def async_client(plane: ControlPlane, **options: Any) -> AsyncClient:
    return AsyncClient("http://stagewatch.test", transport=httpx.MockTransport(plane.handle), spool_dir=False,
                       **options)  # fmt: skip


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll until ``condition()``; the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.005)
    return time.monotonic() - started


def gone(pid: int) -> bool:
    """The process is over: no such pid, or only a zombie left for its parent to reap."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


# --- begin: the decision ------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "signal_type"), REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refusal_raises_its_signal_before_the_body_runs(
    plane: ControlPlane, make_client: Callable[..., Client], answer: Body, signal_type: type[Exception]
) -> None:
    plane.decision = answer
    client = make_client()
    body_ran = False
    with pytest.raises(signal_type) as caught, client.stage("process", "vid-1"):
        body_ran = True
    assert not body_ran and current_run() is None
    assert answer["reason"] in str(caught.value)
    if isinstance(caught.value, stagewatch.Wait):
        assert (caught.value.retry_after, caught.value.reason) == (5.0, "concurrency account:42 3/3")
    assert client.flush()
    assert plane.completes() == [] and plane.events() == []  # the server recorded the refusal itself


def test_a_run_takes_the_server_s_id_attempt_and_deadline_and_sends_no_run_started(
    plane: ControlPlane, make_client: Callable[..., Client]
) -> None:
    client = make_client(revision="rev-7")
    with client.stage("process", "vid-1", account="acct-42", key="vid-1:v2", payload={"url": "gs://b/v.mp4"},
                      attrs={"codec": "h264"}) as run:  # fmt: skip
        assert (run.run_id, run.attempt, run.guarded) == ("vid-1/process/2", 2, True)
        assert run.deadline is not None and run.deadline.isoformat() == "2026-11-28T16:30:00+00:00"
        assert current_run() is run and not run.stopped
        run.progress(0.5, "encoding")
    assert client.flush()
    (request,) = plane.bodies("/v1/runs/begin")
    assert request == {
        "stage": "process", "item_id": "vid-1", "key": "vid-1:v2", "payload": {"url": "gs://b/v.mp4"},
        "account": "acct-42", "trace_id": run.trace_id, "span_id": run.span_id, "worker": "proc-svc",
        "revision": "rev-7",
    }  # fmt: skip
    assert plane.completes() == [("vid-1%2Fprocess%2F2", {"outcome": "succeeded"})]
    assert plane.events("run.started") == [] and plane.events("run.succeeded") == []
    (progress,) = plane.events("run.progress")
    assert (progress["run_id"], progress["attempt"], progress["note"]) == ("vid-1/process/2", 2, "encoding")
    (annotated,) = plane.events("item.annotated")  # what begin does not carry, such as attrs
    assert annotated["attrs"] == {"codec": "h264"}


class GraphAPIError(Exception):
    def __init__(self, message: str, *, is_transient: bool) -> None:
        super().__init__(message)
        self.is_transient = is_transient


def test_a_failure_is_completed_with_its_error_and_still_reaches_the_caller(
    plane: ControlPlane, make_client: Callable[..., Client]
) -> None:
    client = make_client()
    boom = GraphAPIError("(#4) Application request limit reached", is_transient=True)
    with pytest.raises(GraphAPIError) as caught, client.stage("publish", "vid-1"):
        raise boom
    assert caught.value is boom
    with pytest.raises(stagewatch.Cancelled), client.stage("publish", "vid-2"):
        raise stagewatch.Cancelled("operator asked")
    (_, failed), (_, cancelled) = plane.completes()
    error = failed["error"]
    assert (failed["outcome"], error["type"], error["message"], error["retryable"]) == (
        "failed", "tests.sdk.test_guarded.GraphAPIError", "(#4) Application request limit reached", True,
    )  # fmt: skip
    assert "raise boom" in error["stack"]
    assert cancelled == {"outcome": "cancelled", "note": "stagewatch.sdk.errors.Cancelled: operator asked"}


def test_an_undelivered_complete_goes_out_as_the_terminal_event(
    plane: ControlPlane, make_client: Callable[..., Client]
) -> None:
    plane.complete_status = 503
    client = make_client()
    with pytest.raises(ValueError), client.stage("process", "vid-1"):
        raise ValueError("bad codec")
    assert len(plane.completes()) == 3  # tried, then retried twice, quickly
    assert client.flush()
    (failed,) = plane.events("run.failed")
    assert (failed["run_id"], failed["attempt"]) == ("vid-1/process/2", 2)
    assert failed["error"]["type"] == "ValueError"


def test_the_decorator_passes_guard_keywords_through(
    plane: ControlPlane, make_client: Callable[..., Client]
) -> None:
    plane.decision = REFUSALS["skip"][0]
    client = make_client()
    calls: list[str] = []

    @client.task("publish", item_id="video_id", key="publish:acct-1", payload={"caption": "hi"})
    def publish(video_id: str) -> None:
        calls.append(video_id)

    with pytest.raises(stagewatch.Skip):
        publish("vid-9")
    assert calls == []
    (request,) = plane.bodies("/v1/runs/begin")
    assert (request["key"], request["payload"]) == ("publish:acct-1", {"caption": "hi"})
    assert request["item_id"] == "vid-9"


def test_unguarded_and_disabled_clients_never_ask(
    plane: ControlPlane, make_client: Callable[..., Client]
) -> None:
    with make_client().stage("process", "vid-1", guarded=False, run_id="r-1", attempt=3) as run:
        assert (run.run_id, run.attempt, run.guarded) == ("r-1", 3, False)
    with make_client(guarded=False).stage("process", "vid-2"):
        pass
    disabled = Client("http://stagewatch.test", transport=httpx.MockTransport(plane.handle), enabled=False)
    with disabled.stage("process", "vid-3") as run:
        run.check()
    assert plane.bodies("/v1/runs/begin") == [] and plane.completes() == []


# --- begin: when the control plane cannot decide ------------------------------------------------------


def down(request: Body) -> tuple[int, Body]:
    raise httpx.ConnectError("connection refused")


def answering(status: int, body: Body) -> Callable[[Body], tuple[int, Body]]:
    return lambda request: (status, body)


FAILURES: dict[str, tuple[Callable[[Body], tuple[int, Body]], int]] = {
    "network error": (down, 3),
    "503": (answering(503, {"error": "the database is unavailable", "field": None}), 3),
    "older server (404)": (answering(404, {"detail": "Not Found"}), 1),
    "unknown stage (422)": (answering(422, {"error": "stage 'x' is not in pipeline", "field": "stage"}), 1),
    "not a decision": (answering(200, {"accepted": 1}), 1),
}


@pytest.mark.parametrize(("answer", "tries"), FAILURES.values(), ids=FAILURES.keys())
def test_fail_open_runs_unguarded_and_fail_closed_waits(
    plane: ControlPlane,
    make_client: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
    answer: Callable[[Body], tuple[int, Body]],
    tries: int,
) -> None:
    plane.decision = answer
    with caplog.at_level(logging.WARNING, "stagewatch.sdk"):
        client = make_client()
        with client.stage("process", "vid-1", run_id="r-open", attempt=2) as run:
            assert (run.run_id, run.attempt, run.guarded) == ("r-open", 2, False)
            run.check()
    assert len(plane.bodies("/v1/runs/begin")) == tries  # 5xx and no answer are retried, briefly
    assert client.flush()
    reported = plane.events("run.started") + plane.events("run.succeeded")
    assert [event["run_id"] for event in reported] == ["r-open", "r-open"]
    assert plane.completes() == []
    (warning,) = [r.message for r in caplog.records if "sdk.run.begin_failed" in r.message]
    assert "stage=process item_id=vid-1" in warning and "goes ahead unguarded" in warning

    closed = make_client()
    with pytest.raises(stagewatch.Wait) as caught, closed.stage("process", "vid-2", fail_open=False):
        pytest.fail("the body must not run")
    assert caught.value.retry_after > 0 and "the control plane did not decide" in caught.value.reason


def test_after_an_outage_begin_pauses_instead_of_delaying_every_stage(
    plane: ControlPlane, make_client: Callable[..., Client]
) -> None:
    plane.decision = down
    client = make_client()
    for vid in ("vid-1", "vid-2", "vid-3"):
        started = time.monotonic()
        with client.stage("process", vid):
            pass
    assert time.monotonic() - started < 0.05  # the third stage did not wait for the network
    assert len(plane.bodies("/v1/runs/begin")) == 3  # one stage's tries, then the pause


def test_an_async_begin_leaves_the_event_loop_free(plane: ControlPlane) -> None:
    def slow(request: Body) -> tuple[int, Body]:
        time.sleep(0.3)
        return 200, dict(RUN_ANSWER)

    plane.decision = slow

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        client = async_client(plane)
        async with client.stage("process", "vid-1") as run:
            assert run.run_id == "vid-1/process/2"
        await client.aclose()
        task.cancel()
        return ticks

    assert asyncio.run(main()) >= 10
    assert [outcome for _, outcome in plane.completes()] == [{"outcome": "succeeded"}]


def test_a_lease_won_after_the_task_was_cancelled_is_given_back(plane: ControlPlane) -> None:
    def slow(request: Body) -> tuple[int, Body]:
        time.sleep(0.3)
        return 200, dict(RUN_ANSWER)

    plane.decision = slow

    async def main() -> None:
        client = async_client(plane)
        entering = asyncio.create_task(client.stage("process", "vid-1").__aenter__())
        await asyncio.sleep(0.1)  # begin is in flight
        entering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await entering
        await asyncio.to_thread(wait_for, lambda: len(plane.completes()) == 1)  # not left to time out
        await client.aclose()

    asyncio.run(main())
    assert plane.completes() == [
        ("vid-1%2Fprocess%2F2", {"outcome": "cancelled", "note": "cancelled before the run began"})
    ]


# --- heartbeats and stop --------------------------------------------------------------------------------

INTERVAL = 0.2


def lease_answer(run_id: str) -> Body:
    return {**RUN_ANSWER, "run_id": run_id, "heartbeat_interval": INTERVAL}


def per_item(request: Body) -> tuple[int, Body]:
    return 200, lease_answer(f"{request['item_id']}/{request['stage']}/1")


def test_stop_at_a_heartbeat_makes_check_raise_within_one_interval(
    plane: ControlPlane, make_client: Callable[..., Client]
) -> None:
    plane.decision = per_item
    client = make_client(heartbeat_interval=30)  # the lease's 0.2 s wins
    with pytest.raises(stagewatch.Cancelled) as caught, client.stage("process", "vid-1") as run:
        run.progress(0.3, "encoding")
        wait_for(lambda: len(plane.bodies("/v1/runs/heartbeat")) >= 1)
        plane.stops[run.run_id] = "cancelled by alice: customer withdrew"
        asked = time.monotonic()
        while True:
            try:
                run.check()
            except stagewatch.Cancelled:
                assert time.monotonic() - asked < INTERVAL + 0.15
                raise
            time.sleep(0.005)
    assert str(caught.value) == "cancelled by alice: customer withdrew"
    assert (run.stopped, run.stop_reason) == (True, "cancelled by alice: customer withdrew")
    with pytest.raises(stagewatch.Cancelled):
        run.progress(0.9)
    with pytest.raises(stagewatch.Cancelled):
        run.subprocess([sys.executable, "-c", "pass"])
    beat = plane.bodies("/v1/runs/heartbeat")[0]["runs"][0]
    assert (beat["run_id"], beat["progress"], beat["note"]) == ("vid-1/process/1", 0.3, "encoding")
    assert beat["resources"]["rss_bytes"] > 1e6
    (_, completed) = plane.completes()[-1]
    assert completed["outcome"] == "cancelled" and completed["note"].endswith(f"Cancelled: {run.stop_reason}")


def test_one_heartbeat_request_for_all_guarded_runs_and_a_forgotten_run_stops(
    plane: ControlPlane, make_client: Callable[..., Client]
) -> None:
    plane.decision = per_item
    client = make_client(heartbeat_interval=30)
    with (
        client.stage("download", "vid-1") as first,
        client.stage("process", "vid-2") as second,
        client.stage("publish", "vid-3", guarded=False) as unguarded,
    ):
        wait_for(lambda: len(plane.bodies("/v1/runs/heartbeat")) >= 1)
        plane.forget.add(second.run_id)
        wait_for(lambda: second.stopped)
    (request,) = plane.bodies("/v1/runs/heartbeat")[:1]
    assert sorted(beat["run_id"] for beat in request["runs"]) == ["vid-1/download/1", "vid-2/process/1"]
    assert not first.stopped and "does not know this run" in (second.stop_reason or "")
    assert client.flush()  # an unguarded run beats at the client's own pace: not yet
    assert [e for e in plane.events("run.heartbeat") if e["run_id"] == unguarded.run_id] == []


def test_a_stop_cancels_the_asyncio_task_and_leaves_the_stage_as_cancelled(plane: ControlPlane) -> None:
    plane.decision = per_item

    async def main() -> tuple[str, int]:
        client = async_client(plane, heartbeat_interval=30)
        try:
            async with client.stage("process", "vid-1") as run:
                plane.stops[run.run_id] = "timeout: past its deadline (30m)"
                await asyncio.sleep(30)  # the work: cancelled at the next heartbeat
        except stagewatch.Cancelled as exc:
            reason = str(exc)
        task = asyncio.current_task()
        assert task is not None
        await asyncio.sleep(0)  # the task goes on: the cancel was withdrawn
        await client.aclose()
        return reason, task.cancelling()

    started = time.monotonic()
    reason, cancelling = asyncio.run(main())
    assert time.monotonic() - started < 5
    assert (reason, cancelling) == ("timeout: past its deadline (30m)", 0)
    assert plane.completes()[-1][1]["outcome"] == "cancelled"


def test_a_cancel_from_elsewhere_stays_a_cancelled_error(plane: ControlPlane) -> None:
    async def main() -> None:
        client = async_client(plane)

        async def work() -> None:
            async with client.stage("process", "vid-1"):
                await asyncio.sleep(30)

        task = asyncio.create_task(work())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()

    asyncio.run(main())
    assert plane.completes()[-1][1]["outcome"] == "cancelled"


# --- child processes ----------------------------------------------------------------------------------

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
STUBBORN = [
    sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    "time.sleep(60)",
]  # fmt: skip
PARENT = [
    sys.executable, "-c",
    f"import subprocess; child = subprocess.Popen({SLEEPER!r}); print(child.pid, flush=True); child.wait()",
]  # fmt: skip


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[Any]]]:
    started: list[subprocess.Popen[Any]] = []
    yield started
    for child in started:  # whatever a failing test left behind
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def test_a_stop_terminates_child_processes_and_their_children(
    plane: ControlPlane, make_client: Callable[..., Client], children: list[subprocess.Popen[Any]]
) -> None:
    plane.decision = per_item
    client = make_client(heartbeat_interval=30)
    with pytest.raises(stagewatch.Cancelled), client.stage("process", "vid-1") as run:
        sleeper = run.subprocess(SLEEPER)
        parent = run.subprocess(PARENT, stdout=subprocess.PIPE, text=True)
        children.extend([sleeper, parent])
        assert parent.stdout is not None
        grandchild = int(parent.stdout.readline())
        assert os.getpgid(sleeper.pid) == sleeper.pid != os.getpgid(0)  # its own process group
        plane.stops[run.run_id] = "cancelled by alice"
        wait_for(lambda: run.stopped)
        assert sleeper.wait(timeout=5) == -signal.SIGTERM
        assert parent.wait(timeout=5) == -signal.SIGTERM
        wait_for(lambda: gone(grandchild))
        run.check()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(
    plane: ControlPlane, make_client: Callable[..., Client], children: list[subprocess.Popen[Any]]
) -> None:
    plane.decision = per_item
    client = make_client(heartbeat_interval=30, kill_grace=0.5)
    with client.stage("process", "vid-1") as run:
        stubborn = run.subprocess(STUBBORN, stdout=subprocess.PIPE, text=True)
        children.append(stubborn)
        assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
        plane.stops[run.run_id] = "timeout: past its deadline"
        wait_for(lambda: run.stopped)
        stopped = time.monotonic()
        time.sleep(0.2)
        assert stubborn.poll() is None and psutil.pid_exists(stubborn.pid)  # SIGTERM ignored, grace running
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert time.monotonic() - stopped >= 0.45
    assert gone(stubborn.pid)


def test_children_are_terminated_when_the_stage_raises_and_kept_when_it_succeeds(
    make_client: Callable[..., Client], children: list[subprocess.Popen[Any]]
) -> None:
    client = make_client()
    with client.stage("process", "vid-1", guarded=False) as run:
        kept = run.subprocess(SLEEPER)
        children.append(kept)
    with pytest.raises(RuntimeError), client.stage("process", "vid-2", guarded=False) as run:
        failed = run.subprocess(SLEEPER)
        children.append(failed)
        raise RuntimeError("ffmpeg exited 1")
    assert failed.wait(timeout=5) == -signal.SIGTERM
    assert kept.poll() is None  # a successful stage may leave work running on purpose


# --- Pub/Sub push ---------------------------------------------------------------------------------------


def push_body(payload: Body) -> Body:
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    return {"message": {"data": data, "messageId": "m-1", "attributes": {}}, "deliveryAttempt": 4}


PUSH_STATUSES: dict[str, tuple[Body, int, dict[str, str]]] = {
    "skip": (REFUSALS["skip"][0], 200, {}),
    "dead_letter": (REFUSALS["dead_letter"][0], 200, {}),
    "abort": (REFUSALS["abort"][0], 200, {}),
    "wait": (REFUSALS["wait"][0], 429, {"Retry-After": "5"}),
}


@pytest.mark.parametrize(("answer", "status", "headers"), PUSH_STATUSES.values(), ids=PUSH_STATUSES.keys())
def test_a_push_endpoint_acks_refusals_and_nacks_waits_without_running_the_work(
    plane: ControlPlane,
    make_client: Callable[..., Client],
    answer: Body,
    status: int,
    headers: dict[str, str],
) -> None:
    plane.decision = answer
    worked: list[str] = []
    reply = handle_push(make_client(), push_body({"video_id": "vid-1"}), "process",
                        lambda m: m.json()["video_id"], lambda m, run: worked.append(run.run_id))  # fmt: skip
    assert reply == (status, headers) and worked == []
    (request,) = plane.bodies("/v1/runs/begin")
    assert request["payload"] == {"video_id": "vid-1"}  # kept for the dead-letter queue and replays


def test_a_push_run_stopped_midway_is_acked(plane: ControlPlane) -> None:
    plane.decision = per_item

    async def work(message: Any, run: stagewatch.Run) -> None:
        plane.stops[run.run_id] = "cancelled by alice"
        await asyncio.sleep(30)

    async def main() -> tuple[int, dict[str, str]]:
        async with async_client(plane, heartbeat_interval=30) as client:
            return await handle_push_async(client, push_body({"video_id": "vid-1"}), "process",
                                           lambda m: m.json()["video_id"], work)  # fmt: skip

    assert asyncio.run(main()) == (200, {})
