"""Probing the declared dependencies, and the ``DependencyProber`` loop that does it on the leader.

One probe per kind, each bounded by the dependency's ``timeout``:

- ``http``: ``GET url``; a 2xx answer is up, anything else (or no answer) is down;
- ``tcp``: a TCP connection to ``host:port`` opens;
- ``postgres``: a connection (``connect_timeout``) runs ``SELECT 1``.

A pass (``probe_pass``) reads every circuit, moves the ones whose ``recovery`` has passed (half-open, or
an ``event`` dependency closed on trial), probes the due ones at the same time, and stores each result
through the circuit breaker (``stagewatch.domain.circuit``). ``event`` dependencies are never probed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import httpx
import psycopg

from stagewatch.domain.circuit import (
    HTTP,
    POSTGRES,
    TCP,
    DependencySpec,
    DependencyState,
    Observation,
    Step,
    observe,
    plan,
    recover,
)
from stagewatch.service.dependencies import apply
from stagewatch.service.leader import Leadership, PeriodicTask
from stagewatch.store.dependencies import read_states
from stagewatch.store.engine import Database

log = logging.getLogger("stagewatch.probes")

MESSAGE_CAP = 300
# The prober wakes at least this often (or at its shortest interval or recovery): a pass that has
# nothing due only reads the circuits.
MAX_TICK = 1.0
MIN_TICK = 0.05


class ProbeFailed(Exception):
    """The dependency answered, but not as a healthy one does (e.g. HTTP 503)."""


Probe = Callable[[DependencySpec, httpx.AsyncClient], Awaitable[str]]


async def probe(spec: DependencySpec, http: httpx.AsyncClient) -> Observation:
    """Probe one dependency once: up with what was seen (``HTTP 200 in 12 ms``), or down with why."""
    started = time.monotonic()
    try:
        seen = await asyncio.wait_for(_PROBES[spec.kind](spec, http), spec.timeout)
    except TimeoutError:
        return Observation(False, time.time(), f"no answer within {spec.timeout:g}s")
    except Exception as exc:  # every way a probe can fail means the same: not healthy
        return Observation(False, time.time(), _reason(exc))
    return Observation(True, time.time(), f"{seen} in {(time.monotonic() - started) * 1000:.0f} ms")


async def probe_http(spec: DependencySpec, http: httpx.AsyncClient) -> str:
    response = await http.get(spec.target, timeout=spec.timeout)
    if not response.is_success:
        raise ProbeFailed(f"HTTP {response.status_code} {response.reason_phrase}".strip())
    return f"HTTP {response.status_code}"


async def probe_tcp(spec: DependencySpec, _http: httpx.AsyncClient) -> str:
    host, port = split_address(spec.target)
    _reader, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "connected"


async def probe_postgres(spec: DependencySpec, _http: httpx.AsyncClient) -> str:
    # libpq counts connect_timeout in whole seconds (at least 2); wait_for in probe() keeps the real bound.
    wait = max(2, math.ceil(spec.timeout))
    dsn = spec.target.replace("postgresql+psycopg://", "postgresql://", 1)
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=wait, autocommit=True) as conn:
        await conn.execute("SELECT 1")
    return "SELECT 1"


_PROBES: dict[str, Probe] = {HTTP: probe_http, TCP: probe_tcp, POSTGRES: probe_postgres}


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:6379`` for IPv6) as a host and a port number."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _reason(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    return (text or type(exc).__name__)[:MESSAGE_CAP]


async def probe_all(specs: Iterable[DependencySpec]) -> dict[str, Observation]:
    """Probe each of ``specs`` at the same time."""
    wanted = list(specs)
    async with httpx.AsyncClient(follow_redirects=False) as http:
        seen = await asyncio.gather(*(probe(spec, http) for spec in wanted))
    return {spec.name: observation for spec, observation in zip(wanted, seen, strict=True)}


# --------------------------------------------------------------------------------------------- the loop


def probe_pass(
    db: Database, specs: Mapping[str, DependencySpec], now: float | None = None
) -> dict[str, DependencyState]:
    """One turn of the prober (blocking: run it on a worker thread). Returns the circuits it changed."""
    now = time.time() if now is None else now
    with db.reader.connect() as conn:
        steps = {name: plan(state, specs[name], now) for name, state in read_states(conn, specs).items()}
    recovering = [specs[name] for name, step in steps.items() if step in (Step.HALF_OPEN, Step.TRIAL)]
    changed = {
        spec.name: apply(db, spec, functools.partial(recover, spec=spec, now=now)) for spec in recovering
    }
    due = [specs[name] for name, step in steps.items() if step in (Step.PROBE, Step.HALF_OPEN)]
    changed.update(_probe_and_store(db, due))
    return changed


def _probe_and_store(db: Database, due: list[DependencySpec]) -> dict[str, DependencyState]:
    if not due:
        return {}
    seen = asyncio.run(probe_all(due))
    return {
        spec.name: apply(db, spec, functools.partial(observe, spec=spec, seen=seen[spec.name]))
        for spec in due
    }


def default_tick(specs: Iterable[DependencySpec]) -> float:
    """How often the prober wakes: its shortest probe interval or recovery, at most ``MAX_TICK``."""
    periods = [MAX_TICK]
    for spec in specs:
        periods.append(spec.recovery)
        if spec.is_probed:
            periods.append(spec.interval)
    return max(MIN_TICK, min(periods))


class DependencyProber:
    """Probes every declared dependency on its interval, and moves open circuits on once their recovery
    has passed, on the leader only (``leadership``; None: always). ``start()`` in the event loop,
    ``await stop()`` at shutdown."""

    def __init__(
        self,
        db: Database,
        specs: Mapping[str, DependencySpec],
        leadership: Leadership | None = None,
        *,
        tick: float | None = None,
    ) -> None:
        self.specs = dict(specs)
        job = functools.partial(probe_pass, db, self.specs)
        every = tick or default_tick(self.specs.values())
        # The first pass comes one tick after start: the server is up before probes touch the database.
        task = PeriodicTask("prober", job, every, leadership, first_delay=every)
        self._task = task if self.specs else None

    def start(self) -> None:
        if self._task is not None:
            self._task.start()

    async def stop(self) -> None:
        if self._task is not None:
            await self._task.stop()
