"""Background loops that run on one replica at a time: ``Leadership`` says whether this process leads,
``PeriodicTask`` runs a job every few seconds while it does.

Use them together (the dependency prober, retention and the watchdog do)::

    leadership = Leadership(db, "background")          # one per process, shared by its loops
    task = PeriodicTask("watchdog", lambda: sweep(db), interval=5.0, leadership=leadership)
    task.start()                                       # inside the running event loop
    ...
    await task.stop()                                  # waits for a job in progress to finish
    leadership.close()                                 # lets another replica take over at once

On PostgreSQL the leader is the replica holding a session advisory lock (``pg_try_advisory_lock``) on a
connection of its own, kept open. Every ``is_leader()`` checks the connection still answers; if it died
(the database restarted, the session was killed), the lock went with it, so the lock is taken again on a
fresh connection when no other replica got it first. On SQLite there is one server, always the leader.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg.rows import TupleRow
from sqlalchemy.engine import make_url

from stagewatch.store.engine import Database

log = logging.getLogger("stagewatch.leader")

CONNECT_TIMEOUT = 5
# How long ``PeriodicTask.stop`` waits for a job in progress before leaving it to finish on its own.
STOP_GRACE = 30.0


def lock_key(name: str) -> int:
    """The advisory lock key for ``name``: a stable signed 64-bit number, the same in every replica."""
    digest = hashlib.blake2b(f"stagewatch:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Leadership:
    """Whether this process is the one replica that runs the background loops named ``name``.

    Thread-safe: loops on worker threads may ask at the same time. ``close()`` gives up the lead.
    """

    def __init__(self, db: Database, name: str) -> None:
        self.name = name
        self.key = lock_key(name)
        self._dsn = _libpq_dsn(db.url) if db.is_postgres else None
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._held = False
        self._closed = False
        self._lock = threading.Lock()

    def is_leader(self) -> bool:
        """True while this process holds the lead; tries to take it when it does not. Never raises: a
        database that does not answer means not leading (logged)."""
        if self._dsn is None:
            return not self._closed
        with self._lock:
            if self._closed:
                return False
            try:
                return self._check()
            except psycopg.Error as exc:
                self._lost(exc)
            try:  # the lock died with its connection: take it again if nobody else did
                return self._check()
            except psycopg.Error as exc:
                self._lost(exc)
                return False

    def close(self) -> None:
        """Give up the lead (unlock, close the connection) and never take it again."""
        with self._lock:
            self._closed = True
            if self._conn is None:
                return
            try:
                if self._held:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                    log.info("leader.released name=%s key=%d", self.name, self.key)
            except psycopg.Error:
                pass  # closing the session releases the lock anyway
            finally:
                self._drop()

    def _check(self) -> bool:
        conn = self._connection()
        if self._held:
            conn.execute("SELECT 1")  # the session lives, so its lock does
            return True
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        self._held = bool(row and row[0])
        if self._held:
            log.info("leader.acquired name=%s key=%d", self.name, self.key)
        return self._held

    def _connection(self) -> psycopg.Connection[TupleRow]:
        if self._conn is None or self._conn.closed:
            assert self._dsn is not None
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        return self._conn

    def _lost(self, exc: Exception) -> None:
        if self._held:
            log.warning("leader.lost name=%s key=%d error=%s", self.name, self.key, type(exc).__name__)
        else:
            log.warning("leader.unavailable name=%s error=%s", self.name, exc)
        self._drop()

    def _drop(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            conn.close()


def _libpq_dsn(url: str) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://...``) as a libpq URL psycopg connects with."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PeriodicTask:
    """Runs ``job`` (a plain function) on a worker thread every ``interval`` seconds, first after
    ``first_delay``, but only while ``leadership`` says this process leads (None: always). A job that
    raises is logged (``NAME.failed``) and the loop goes on. Runs never overlap.

    ``stopping`` is set when ``stop()`` is called: a long job may check it to end early.
    """

    def __init__(
        self,
        name: str,
        job: Callable[[], object],
        interval: float,
        leadership: Leadership | None = None,
        *,
        first_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.interval = interval
        self.stopping = threading.Event()
        self._job = job
        self._leadership = leadership
        self._first_delay = first_delay
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"stagewatch-{self.name}")

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """End the loop; wait up to ``grace`` seconds for a job in progress to finish."""
        self.stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._running is not None and not self._running.done():
            await asyncio.wait([self._running], timeout=grace)

    async def run_once(self) -> bool:
        """One turn: run the job if this process leads. True when the job ran (even if it failed)."""
        if not await self._leading():
            return False
        self._running = asyncio.ensure_future(asyncio.to_thread(self._call))
        # Shielded: cancelling the loop must not abandon the job's thread while stop() waits for it.
        await asyncio.shield(self._running)
        return True

    def _call(self) -> None:
        started = time.monotonic()
        try:
            self._job()
        except Exception:
            log.exception("%s.failed seconds=%.2f", self.name, time.monotonic() - started)

    async def _loop(self) -> None:
        await asyncio.sleep(self._first_delay)
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval)

    async def _leading(self) -> bool:
        if self._leadership is None:
            return True
        try:
            return await asyncio.to_thread(self._leadership.is_leader)
        except Exception:
            log.exception("%s.leader_check_failed", self.name)
            return False
