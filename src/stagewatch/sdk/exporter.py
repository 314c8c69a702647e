"""The batch exporter: the part of the SDK that decides *when* to send (the transport decides *how*).

Worker threads hand records to ``submit_event`` / ``submit_log``: an append to a bounded in-memory
deque, no I/O, no JSON, no lock. One background thread, the sender, wakes every ``flush_interval``
seconds (or as soon as a full batch waits) and ships everything in batches of ``batch_size``:

- 2xx: done; duplicates and rejections are counted, each rejection logged once.
- 408, 429, 5xx, network error: the batch stays at the head of the line and is retried with
  exponential backoff and full jitter (honouring ``Retry-After``). After ``max_tries`` failures, or on
  ``flush()`` during an outage, the line moves to the disk spool, and while the spool holds anything,
  new batches are appended behind it (first in, first out). When the server answers again, the spool
  is replayed oldest first, each segment deleted only after a 2xx.
- another 4xx: the batch is dropped with an error log; re-sending a malformed batch forever would be
  the endless retry this product exists to prevent. 413 splits the batch in halves first.

When the queue passes half of ``max_queue`` (the server is down, or slower than the workers), a second
thread, the spiller, moves it to the spool, so the sender's slow requests never make the queue
overflow. Without a spool, a full queue drops new records and counts them.

Nothing here raises into the caller: a failed round is logged to ``stagewatch.sdk`` and the thread goes
on.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from pathlib import Path

from stagewatch.sdk.backoff import Backoff
from stagewatch.sdk.diagnostics import log, throttled, warn_throttled
from stagewatch.sdk.flushing import FlushRequest, Marker, settle_all
from stagewatch.sdk.lanes import Lane
from stagewatch.sdk.payloads import Record
from stagewatch.sdk.spool import Spool, parse_batch
from stagewatch.sdk.stats import Counters, Stats
from stagewatch.sdk.transport import Answer, HttpSender, Verdict, encode

MAX_LOGGED_REJECTIONS = 20


class BatchExporter:
    """Ships events to ``/v1/events`` and log records to ``/v1/logs`` from one daemon thread."""

    def __init__(
        self,
        sender: HttpSender,
        spool: Spool | None,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_tries: int = 3,
        backoff: Backoff | None = None,
    ) -> None:
        self._sender = sender
        self._spool = spool
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_tries = max_tries
        self._backoff = backoff or Backoff()
        self._high_water = max(batch_size, max_queue // 2)
        self._events = Lane("events", "/v1/events", optional=False)
        self._logs = Lane("logs", "/v1/logs", optional=True)
        self._lanes = (self._events, self._logs)
        self._counters = Counters()
        self._closed = False
        self._reset_threading()
        _on_fork_in_child(self)
        if spool is not None and any(spool.has_backlog(lane.name) for lane in self._lanes):
            self._start()  # records left by an earlier process: replay them without waiting for new ones

    # --- the worker's side: must cost microseconds ---------------------------------------------------

    def submit_event(self, record: Record) -> None:
        """Queue one event for sending; never blocks, never raises."""
        self._offer(self._events, record)

    def submit_log(self, record: Record) -> None:
        """Queue one log record for ``/v1/logs``; never blocks, never raises."""
        self._offer(self._logs, record)

    def _offer(self, lane: Lane, record: Record) -> None:
        queue = lane.queue
        if len(queue) >= self._max_queue or self._closed or lane.disabled:
            if not lane.disabled:
                self._drop(1, "closed" if self._closed else "queue_full")
            return
        queue.append(record)
        if self._thread is None:
            self._start()
        waiting = len(queue)
        if waiting % self._batch_size == 0:
            self._wake.set()
            if waiting >= self._high_water and self._spool is not None:
                self._spill_soon()

    def _drop(self, count: int, reason: str) -> None:
        self._counters.add(dropped=count)
        warn_throttled(
            f"export.drop.{reason}",
            "sdk.export.dropped reason=%s count=%d: telemetry was lost to protect the worker "
            "(stats.dropped has the total)",
            reason,
            count,
        )

    # --- the caller's controls -------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Send everything queued before this call, trying the spool now rather than after the backoff.
        Waits at most ``timeout`` seconds. True once all of it reached the server; False when the time
        ran out or the server did not answer (what is unsent is then in the spool, if there is one)."""
        if self._closed:
            return self._clear()
        if self._thread is None:
            self._start()
        lanes = [lane for lane in self._lanes if not lane.disabled]
        request = FlushRequest(len(lanes), time.monotonic() + timeout)
        for lane in lanes:
            lane.put_marker(Marker(request))
        with self._cond:
            self._flushes.append(request)
        self._wake.set()
        return request.done.wait(timeout) and request.delivered

    def close(self, timeout: float = 5.0) -> bool:
        """Flush, then stop the threads; later submissions are dropped. True if everything was sent."""
        if self._closed:
            return self._clear()
        deadline = time.monotonic() + timeout
        delivered = self.flush(timeout)
        self.stop()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return delivered

    def stop(self) -> None:
        """Ask the sender to make its last delivery attempt and exit, without waiting for it."""
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._spill_wake.set()
        if self._thread is None:
            self._release()

    def stats(self) -> Stats:
        """A snapshot of the delivery counters."""
        spool = self._spool
        queued = sum(lane.in_memory() for lane in self._lanes)
        return self._counters.snapshot(
            queued, spool.size_bytes if spool else 0, spool.dropped if spool else 0
        )

    def _clear(self) -> bool:
        return all(lane.disabled or (not self._blocked(lane) and not lane.queue) for lane in self._lanes)

    # --- the sender thread -----------------------------------------------------------------------------

    def _reset_threading(self) -> None:
        self._wake = threading.Event()
        self._spill_wake = threading.Event()
        self._cond = threading.Condition()
        self._start_lock = threading.Lock()
        self._counters.lock = threading.Lock()
        self._flushes: list[FlushRequest] = []
        self._stalled = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._spiller: threading.Thread | None = None

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._loop, name="stagewatch-exporter", daemon=True)
                thread.start()
                self._thread = thread

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._idle_time())
            self._wake.clear()
            stopping = self._stopping
            try:
                self._round(forced=stopping or self._flush_waiting())
            except Exception:
                if throttled("export.round"):
                    log.exception("sdk.export.round_failed: the sender thread goes on")
            if stopping:
                self._release()
                return

    def _flush_waiting(self) -> bool:
        with self._cond:
            self._flushes = [request for request in self._flushes if request.waiting]
            return bool(self._flushes)

    def _idle_time(self) -> float:
        if self._flush_waiting():
            return 0.0  # a flush waits: go on while there is progress (a stall answers it)
        wait, now = self._flush_interval, time.monotonic()
        for lane in self._lanes:
            if not lane.disabled and self._blocked(lane):
                wait = min(wait, lane.next_try - now)
        return max(wait, 0.001)

    def _round(self, forced: bool) -> None:
        """One pass over the lanes. ``forced`` (a flush waits, or the client closes): try the head of
        the line now, and if the server does not answer, spool everything and answer the flushes."""
        for lane in self._lanes:
            self._stalled = False
            self._pump(lane, forced)
            if forced and self._stalled:
                lane.settle_everything(delivered=False)

    def _pump(self, lane: Lane, forced: bool) -> None:
        if lane.disabled:
            self._discard(lane)
            return
        if self._blocked(lane) and (forced or time.monotonic() >= lane.next_try):
            self._retry_head(lane)
        if not self._blocked(lane):
            self._send_queued(lane, len(lane.queue))
        if lane.in_memory() and self._blocked(lane) and self._should_spill(lane, forced):
            self._spill(lane)

    def _blocked(self, lane: Lane) -> bool:
        """Something older than the queue waits to be sent: the head batch, or the spool."""
        return lane.pending is not None or (self._spool is not None and self._spool.has_backlog(lane.name))

    def _should_spill(self, lane: Lane, forced: bool) -> bool:
        if self._spool is None:
            return False  # no spool: records wait in memory and new ones are dropped when it is full
        return forced or self._spool.has_backlog(lane.name) or len(lane.queue) >= self._high_water

    def _send_queued(self, lane: Lane, count: int) -> None:
        while count > 0 and not self._blocked(lane):
            with lane.lock:
                batch, markers = lane.take(min(self._batch_size, count))
            if not batch and not markers:
                return  # the spiller took them
            count -= len(batch) + len(markers)
            if self._deliver(lane, batch):
                settle_all(markers, delivered=True)
            else:
                lane.pending, lane.pending_markers = batch, markers
                self._failed(lane, len(batch))

    def _retry_head(self, lane: Lane) -> None:
        if lane.pending is not None:
            if not self._deliver(lane, lane.pending):
                self._failed(lane, len(lane.pending))
                return
            lane.pending, lane.failures = None, 0
            settle_all(lane.pending_markers, delivered=True)
        if self._spool is not None and self._spool.has_backlog(lane.name):
            self._replay(lane, self._spool)

    def _replay(self, lane: Lane, spool: Spool) -> None:
        with spool.replay(lane.name) as segments:
            if segments is None:  # another process is replaying this directory right now
                lane.next_try = time.monotonic() + self._flush_interval
                self._stalled = True
                return
            for segment in segments:
                for body in segment.batches():
                    if not self._deliver_spooled(lane, body):
                        self._failed(lane, len(parse_batch(body)))
                        return
                segment.delete()
                lane.settle_replayed(segment.path)
        lane.failures = 0
        self._settle_gone(lane, spool)

    def _settle_gone(self, lane: Lane, spool: Spool) -> None:
        # Segments replayed by another process, or dropped over the size cap, are gone too.
        for path, marker in lane.spooled_markers:
            if not path.exists():
                marker.settle(path not in spool.lost)
        lane.spooled_markers = [(p, m) for p, m in lane.spooled_markers if not m.settled]

    def _failed(self, lane: Lane, count: int) -> None:
        self._stalled = True
        lane.failures += 1
        self._counters.add(retried=count)
        delay = self._backoff.delay(lane.failures, lane.retry_after)
        lane.next_try = time.monotonic() + delay
        warn_throttled(
            f"export.retry.{lane.name}",
            "sdk.export.retrying channel=%s failures=%d next_try_s=%.1f detail=%s",
            lane.name,
            lane.failures,
            delay,
            lane.last_detail,
            every=30.0,
        )
        if lane.pending is not None and lane.failures >= self._max_tries and self._spool is not None:
            with lane.lock:
                self._park(lane)

    # --- the spool side ------------------------------------------------------------------------------

    def _spill(self, lane: Lane, *, park: bool = True) -> None:
        """Move the lane's line to the spool: the head batch first (only the sender thread, which owns
        it, may move it), then the queue. Left in memory, the head batch is still sent first."""
        with lane.lock:
            if park and lane.pending is not None:
                self._park(lane)
            for _ in range(-(-len(lane.queue) // self._batch_size)):
                records, markers = lane.take(self._batch_size)
                self._to_spool(lane, records, markers)

    def _park(self, lane: Lane) -> None:
        # The head batch goes to the spool. If the spiller already put newer records there (a failure
        # during an overload), it lands behind them: out of order, which the server is built for, but
        # nothing is lost or doubled.
        assert lane.pending is not None
        self._to_spool(lane, lane.pending, lane.pending_markers)
        lane.pending, lane.pending_markers = None, []

    def _to_spool(self, lane: Lane, records: list[Record], markers: list[Marker]) -> None:
        assert self._spool is not None
        body, records = self._encodable(lane, records)
        if not records:
            self._wait_for_segment(lane, self._spool.last_segment(lane.name), markers, written=True)
            return
        path = self._spool.append(lane.name, body)
        if path is not None:
            self._counters.add(spooled=len(records))
        else:
            self._drop(len(records), "spool_failed")
        self._wait_for_segment(lane, path, markers, written=path is not None)

    def _wait_for_segment(self, lane: Lane, path: Path | None, markers: list[Marker], written: bool) -> None:
        if not written:
            settle_all(markers, delivered=False)
        elif path is None or not path.exists():
            settle_all(markers, delivered=True)  # everything before them was delivered already
        else:
            lane.spooled_markers.extend((path, marker) for marker in markers)

    def _spill_soon(self) -> None:
        if self._spiller is None:
            with self._start_lock:
                if self._spiller is None:
                    self._spiller = threading.Thread(
                        target=self._spill_loop, name="stagewatch-spiller", daemon=True
                    )
                    self._spiller.start()
        self._spill_wake.set()

    def _spill_loop(self) -> None:
        """The spiller: while the sender waits on the network, keep the queue under the high-water mark
        by moving it to the spool (the sender then sends from the spool, in order)."""
        while not self._stopping:
            self._spill_wake.wait()
            self._spill_wake.clear()
            for lane in self._lanes:
                if not lane.disabled and not self._stopping and len(lane.queue) >= self._high_water:
                    try:
                        self._spill(lane, park=False)
                    except Exception:
                        if throttled("export.spill"):
                            log.exception("sdk.export.spill_failed channel=%s", lane.name)

    # --- one batch, one answer -------------------------------------------------------------------------

    def _deliver(self, lane: Lane, records: list[Record]) -> bool:
        """Send one batch. True when the server has settled it (or it can never be sent); False when
        it must be tried again."""
        if lane.disabled:
            return True
        body, records = self._encodable(lane, records)
        return self._send(lane, body) if records else True

    def _deliver_spooled(self, lane: Lane, body: bytes) -> bool:
        """Send one spooled batch as it was written."""
        return True if lane.disabled else self._send(lane, body)

    def _encodable(self, lane: Lane, records: list[Record]) -> tuple[bytes, list[Record]]:
        body, records, unsendable = encode(records)
        if unsendable:
            self._counters.add(rejected=len(unsendable))
            log.error(
                "sdk.export.unencodable channel=%s count=%d: not JSON, dropped", lane.name, len(unsendable)
            )
        return body, records

    def _send(self, lane: Lane, body: bytes) -> bool:
        """POST one body and act on the answer; False when it must be tried again."""
        answer = self._sender.post(lane.path, body)
        verdict = answer.verdict
        lane.retry_after, lane.last_detail = answer.retry_after, answer.detail
        if verdict is Verdict.RETRY:
            return False
        if verdict is Verdict.DELIVERED:
            self._count_delivered(lane, answer)
        elif verdict is Verdict.TOO_LARGE and len(records := parse_batch(body)) > 1:
            half = len(records) // 2
            return self._deliver(lane, records[:half]) and self._deliver(lane, records[half:])
        elif verdict is Verdict.MISSING and lane.optional:
            self._disable(lane, answer)
        else:
            records = parse_batch(body)  # parsed only on this rare path, to count
            self._counters.add(rejected=len(records))
            log.error(
                "sdk.export.refused channel=%s count=%d detail=%s: the batch was dropped "
                "(sending it again would fail again)",
                lane.name,
                len(records),
                answer.detail,
            )
        return True

    def _count_delivered(self, lane: Lane, answer: Answer) -> None:
        self._counters.add(sent=answer.accepted, duplicate=answer.duplicate, rejected=answer.rejected)
        for error in answer.errors[:MAX_LOGGED_REJECTIONS]:
            log.warning(
                "sdk.export.rejected channel=%s id=%s field=%s error=%s",
                lane.name,
                error.get("id"),
                error.get("field"),
                error.get("error"),
            )
        if len(answer.errors) > MAX_LOGGED_REJECTIONS:
            extra = len(answer.errors) - MAX_LOGGED_REJECTIONS
            log.warning("sdk.export.rejected channel=%s: and %d more in the same batch", lane.name, extra)

    def _disable(self, lane: Lane, answer: Answer) -> None:
        lane.disabled = True
        self._discard(lane)
        log.warning(
            "sdk.export.unsupported channel=%s detail=%s: the server has no %s (an older version); "
            "these records are dropped from now on",
            lane.name,
            answer.detail,
            lane.path,
        )

    def _discard(self, lane: Lane) -> None:
        lane.settle_everything(delivered=True)  # nothing of this lane can be delivered: do not wait
        with lane.lock:
            lane.queue.clear()

    # --- process life ----------------------------------------------------------------------------------

    def _release(self) -> None:
        self._spill_wake.set()  # let the spiller see _stopping and end
        if self._spiller is not None:
            self._spiller.join(1.0)
        for lane in self._lanes:
            lane.settle_everything(delivered=False)
        lost = sum(lane.in_memory() for lane in self._lanes if not lane.disabled)
        if lost:
            self._drop(lost, "closed")
        for lane in self._lanes:
            lane.forget()
        self._sender.close()
        if self._spool is not None:
            self._spool.close()

    def _after_fork(self) -> None:
        # The child has no sender thread and the locks may have been held mid-fork: start afresh. What
        # the parent had queued is the parent's to send.
        self._reset_threading()
        for lane in self._lanes:
            lane.forget()
        self._sender.after_fork()
        if self._spool is not None:
            self._spool.after_fork()


def _on_fork_in_child(exporter: BatchExporter) -> None:
    ref = weakref.ref(exporter)

    def after_fork() -> None:
        alive = ref()
        if alive is not None and not alive._closed:
            alive._after_fork()

    os.register_at_fork(after_in_child=after_fork)
