"""Dependency health for the API: workers' health reports, the list of circuits, and what ``/readyz``
shows. Every change of a circuit goes through ``apply``: one short transaction per dependency, logged
when the state changes (``dependency.changed``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stagewatch.domain.circuit import DependencySpec, DependencyState, Observation, observe
from stagewatch.domain.events import iso
from stagewatch.domain.pipeline import PipelineRegistry
from stagewatch.errors import NotFound
from stagewatch.store.dependencies import change_state, read_states
from stagewatch.store.engine import Database

log = logging.getLogger("stagewatch.dependencies")

MESSAGE_CAP = 500
READY_NOTE = (
    "dependencies that are down are reported, not fatal: the server stays ready, and work that needs one "
    "waits at begin until its circuit closes"
)
_PASSWORD_OPTION = re.compile(r"(password\s*=\s*)(\S+)")


def apply(
    db: Database, spec: DependencySpec, change: Callable[[DependencyState], DependencyState]
) -> DependencyState:
    """Move one dependency's circuit with a pure transition, atomically, and log a change of state."""
    with db.writer.begin() as conn:
        before, after = change_state(conn, spec.name, change)
    if before.state != after.state:
        log.info(
            "dependency.changed name=%s from=%s to=%s failures=%d message=%s",
            spec.name, before.state, after.state, after.failures, after.message,
        )  # fmt: skip
    return after


def report(
    db: Database,
    specs: Mapping[str, DependencySpec],
    name: str,
    seen: Observation,
    reporter: str = "anonymous",
) -> DependencyState:
    """A worker's health report on ``name``: the same transition as a probe result."""
    spec = specs.get(name)
    if spec is None:
        known = ", ".join(sorted(specs)) or "none"
        raise NotFound(f"no dependency {name!r}; configured: {known}")
    capped = Observation(seen.ok, seen.at, (seen.message or "")[:MESSAGE_CAP] or None)
    log.debug("dependency.reported name=%s ok=%s by=%s", name, seen.ok, reporter)
    return apply(db, spec, lambda state: observe(state, spec, capped))


def list_dependencies(db: Database, registry: PipelineRegistry, now: float) -> dict[str, Any]:
    """Every configured dependency (declared, or only named by a stage) with its circuit."""
    specs = registry.dependencies
    with db.reader.connect() as conn:
        states = read_states(conn, sorted(specs))
    users = needed_by(registry)
    views = [dependency_view(specs[name], state, users.get(name, [])) for name, state in states.items()]
    return {"dependencies": views, "generated_at": iso(now)}


def readiness(db: Database, specs: Mapping[str, DependencySpec]) -> dict[str, Any]:
    """The ``dependencies`` part of ``/readyz``: each circuit, and which are down."""
    with db.reader.connect() as conn:
        states = read_states(conn, sorted(specs))
    return {
        "down": [name for name, state in states.items() if state.is_down],
        "note": READY_NOTE,
        "states": {name: _state_fields(state) for name, state in states.items()},
    }


def dependency_view(spec: DependencySpec, state: DependencyState, users: list[str]) -> dict[str, Any]:
    return {
        "name": spec.name,
        "kind": spec.kind,
        "target": redact(spec.target),
        **_state_fields(state),
        "next_probe_at": iso(state.next_probe_at),
        "failure_threshold": spec.failure_threshold,
        "needed_by": users,
    }


def _state_fields(state: DependencyState) -> dict[str, Any]:
    return {
        "state": state.state,
        "down": state.is_down,
        "since": iso(state.since) if state.since else None,
        "failures": state.failures,
        "message": state.message,
        "checked_at": iso(state.checked_at),
    }


def needed_by(registry: PipelineRegistry) -> dict[str, list[str]]:
    """For each dependency, the stages that need it, as ``pipeline.stage``."""
    users: dict[str, list[str]] = {}
    for pipeline in registry.pipelines.values():
        for stage in pipeline.stages:
            for name in stage.depends_on:
                users.setdefault(name, []).append(f"{pipeline.name}.{stage.name}")
    return users


def redact(target: str) -> str:
    """A probe target without its password, for showing: URLs and ``key=value`` DSNs alike."""
    parts = urlsplit(target)
    if parts.password:
        host = parts.netloc.rsplit("@", 1)[1]
        netloc = f"{parts.username}:***@{host}"
        return urlunsplit(parts._replace(netloc=netloc))
    return _PASSWORD_OPTION.sub(r"\1***", target)
