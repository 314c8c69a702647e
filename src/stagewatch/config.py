"""Pipelines from ``stagewatch.toml``: read the file, check every key, build a ``PipelineRegistry``.

The format, in short (times are seconds or strings such as ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``,
``"1h30m"``)::

    default_pipeline = "shorts"             # optional; defaults to the first pipeline declared

    [pipelines.instagram]
    preset = "instagram"                    # start from a preset; same-named stages below override it

    [pipelines.shorts]
    description = "YouTube shorts"
    concurrency = [{ key = "global", limit = 100 }]     # over every stage of the pipeline
    [[pipelines.shorts.stages]]
    name = "download"
    max_attempts = 3
    timeout = "15m"
    heartbeat_timeout = "60s"
    backoff_initial = "5s"
    backoff_max = "10m"
    dwell_slo = "30m"
    depends_on = ["storage"]
    on_success = "ready_to_publish"
    description = "the video file is fetched to storage"
    concurrency = [{ key = "{account}", limit = 3 }]
    rate_limits = [{ key = "{account}", limit = 50, per = "24h" }]
    permanent_errors = ["ValueError"]       # exception type names never retried
    retryable_errors = ["TimeoutError"]     # ... and always retried (the SDK's `retryable` flag wins)
    replay = { kind = "http", address = "https://worker.example/push" }   # or "pubsub" / "callable"

    [dependencies.postgres]                 # what stages may list in depends_on
    kind = "postgres"                       # postgres | http | tcp | event
    dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
    [dependencies.storage]
    kind = "http"
    url = "http://127.0.0.1:9000/health"    # 2xx = up
    interval = "10s"                        # optional: probe period, probe timeout, consecutive failures
    timeout = "2s"                          # that open the circuit, and wait before a half-open probe
    failure_threshold = 3
    recovery = "30s"
    [dependencies.redis]
    kind = "tcp"
    address = "127.0.0.1:6379"
    [dependencies.instagram-api]
    kind = "event"                          # never probed: workers POST /v1/dependencies/NAME/health

A name in ``depends_on`` that no ``[dependencies.NAME]`` declares is an ``event`` dependency with the
default settings: up until workers report it down. (Declaring every name up front would make the preset
unusable without a config file, and a typo still shows, as a dependency nobody reports, in ``stagewatch
deps``.)

Without a ``[pipelines]`` table the registry holds only the ``instagram`` preset. Every mistake raises
``ConfigError`` naming the file, the dotted key path (``pipelines.shorts.stages[0].timeout``; array
positions count from 0) and the problem.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stagewatch.domain.circuit import DEPENDENCY_KINDS, EVENT, HTTP, POSTGRES, TCP, DependencySpec
from stagewatch.domain.pipeline import (
    PRESETS,
    REPLAY_KINDS,
    SUCCESS_STATUSES,
    ConcurrencyLimit,
    Pipeline,
    PipelineRegistry,
    RateLimit,
    ReplayTarget,
    StagePolicy,
    instagram_preset,
)
from stagewatch.domain.statuses import ItemStatus
from stagewatch.errors import ConfigError

DEFAULT_CONFIG_FILE = "stagewatch.toml"

_DURATION_NUMBER = r"(\d+(?:\.\d+)?)"
# Units must come largest first, each at most once: "1h30m" is fine, "30m1h" and "1h1h" are typos.
_DURATION = re.compile("".join(f"(?:{_DURATION_NUMBER}{unit})?" for unit in "dhms"))
_UNIT_SECONDS = (86400.0, 3600.0, 60.0, 1.0)
_DURATION_HELP = 'use seconds as a number or a string such as "90s", "15m", "2h", "1d" or "1h30m"'
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Dependency names appear in URLs (/v1/dependencies/NAME/health).
_DEPENDENCY_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_ERROR_NAME = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*")
_CALLABLE = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*:{_IDENTIFIER}(?:\.{_IDENTIFIER})*")
_PUBSUB_TOPIC = re.compile(r"projects/[^/\s]+/topics/[^/\s]+|[A-Za-z][\w.~+%-]*")


@dataclass(frozen=True, slots=True)
class _At:
    """Where a value sits: the file and the dotted key path, so every error can name both."""

    source: str
    key: str = ""

    def child(self, name: str) -> _At:
        # Quote names TOML would quote, so "a.b" as one key is not read as two.
        part = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
        return _At(self.source, f"{self.key}.{part}" if self.key else part)

    def item(self, index: int) -> _At:
        return _At(self.source, f"{self.key}[{index}]")

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, key=self.key or None)


# --------------------------------------------------------------------------------------------- loading


def load_pipelines(path: str | os.PathLike[str] | None = None) -> PipelineRegistry:
    """Load the pipelines from ``path``, or from ``./stagewatch.toml`` when ``path`` is None.

    With no path and no ``./stagewatch.toml``, the registry holds only the ``instagram`` preset. An explicit
    path that does not exist is an error.
    """
    file = _config_file(path)
    if file is None:
        return PipelineRegistry.of([instagram_preset()], "instagram")
    return parse_pipelines(_read_toml(file), str(file))


def _config_file(path: str | os.PathLike[str] | None) -> Path | None:
    if path is None:
        default = Path(DEFAULT_CONFIG_FILE)
        return default if default.exists() else None
    file = Path(path)
    if not file.exists():
        raise ConfigError("the config file does not exist", source=str(file))
    return file


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as stream:
            return tomllib.load(stream)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"is not valid TOML: {exc}", source=str(file)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not UTF-8 text: {exc}", source=str(file)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror or exc}", source=str(file)) from exc


# --------------------------------------------------------------------------------------------- registry


def parse_pipelines(data: Mapping[str, Any], source: str) -> PipelineRegistry:
    """Build the registry from already-parsed TOML ``data``; ``source`` names the file in errors."""
    at = _At(source)
    root = _table(data, at, ("default_pipeline", "pipelines", "dependencies"))
    if "pipelines" in root:
        pipelines = _pipelines(root["pipelines"], at.child("pipelines"))
    else:
        pipelines = [instagram_preset()]
    default = _default_pipeline(root, at.child("default_pipeline"), pipelines)
    dependencies = (
        _dependencies(root["dependencies"], at.child("dependencies")) if "dependencies" in root else []
    )
    return PipelineRegistry.of(pipelines, default, dependencies)


def _pipelines(value: object, at: _At) -> list[Pipeline]:
    table = _table(value, at, None)
    if not table:
        raise at.error("declares no pipeline; add a [pipelines.NAME] table or remove [pipelines]")
    return [_pipeline(name, body, at.child(name)) for name, body in table.items()]


def _default_pipeline(root: Mapping[str, Any], at: _At, pipelines: list[Pipeline]) -> str:
    if "default_pipeline" not in root:
        return pipelines[0].name
    name = _name(root["default_pipeline"], at)
    names = [p.name for p in pipelines]
    if name not in names:
        raise at.error(
            f"there is no pipeline named '{name}'{_suggest(name, names)}; declared: {_list(names)}"
        )
    return name


# --------------------------------------------------------------------------------------------- pipeline


def _pipeline(name: str, value: object, at: _At) -> Pipeline:
    table = _table(value, at, ("preset", "description", "stages", "concurrency"))
    if not name:
        raise at.error("a pipeline name must not be empty")
    base = _preset(table["preset"], at.child("preset")) if "preset" in table else None
    stages = _stages(table, at, base.stages if base else ())
    fallback = base.description if base else ""
    description = (
        _string(table["description"], at.child("description")) if "description" in table else fallback
    )
    limits = (
        _concurrency(table["concurrency"], at.child("concurrency"))
        if "concurrency" in table
        else (base.concurrency if base else ())
    )
    return Pipeline(name=name, stages=stages, description=description, concurrency=limits)


def _preset(value: object, at: _At) -> Pipeline:
    name = _name(value, at)
    if name not in PRESETS:
        raise at.error(
            f"unknown preset '{name}'{_suggest(name, PRESETS)}; available presets: {_list(PRESETS)}"
        )
    return PRESETS[name]()


def _stages(table: Mapping[str, Any], at: _At, base: tuple[StagePolicy, ...]) -> tuple[StagePolicy, ...]:
    if "stages" not in table:
        if base:
            return base
        hint = f'add [[{at.key}.stages]] entries or start from a preset (preset = "instagram")'
        raise at.error(f"has no stages; {hint}")
    entries = _array(table["stages"], at.child("stages"))
    if not entries:
        raise at.child("stages").error("is empty; a pipeline needs at least one stage")
    declared = _declared_stages(entries, at.child("stages"))
    return _merge(base, declared)


@dataclass(frozen=True, slots=True)
class _DeclaredStage:
    """One ``[[stages]]`` entry: its name and only the fields it sets, so it can patch a preset stage."""

    name: str
    fields: dict[str, Any]
    at: _At


def _declared_stages(entries: list[Any], at: _At) -> list[_DeclaredStage]:
    declared: dict[str, _DeclaredStage] = {}
    for index, entry in enumerate(entries):
        stage = _declared_stage(entry, at.item(index))
        if stage.name in declared:
            first = declared[stage.name].at.key
            raise stage.at.child("name").error(f"stage '{stage.name}' is declared twice (first at {first})")
        declared[stage.name] = stage
    return list(declared.values())


def _merge(base: tuple[StagePolicy, ...], declared: list[_DeclaredStage]) -> tuple[StagePolicy, ...]:
    # Preset stages keep their order; a declared stage with a preset stage's name patches it, others append.
    patches = {stage.name: stage for stage in declared}
    merged = [_build(patches[s.name], s) if s.name in patches else s for s in base]
    known = {s.name for s in base}
    merged += [_build(stage, None) for stage in declared if stage.name not in known]
    return tuple(merged)


def _build(stage: _DeclaredStage, base: StagePolicy | None) -> StagePolicy:
    policy = replace(base, **stage.fields) if base else StagePolicy(stage.name, **stage.fields)
    if policy.backoff_initial > policy.backoff_max:
        raise stage.at.child("backoff_initial").error(
            f"is {policy.backoff_initial:g}s, longer than backoff_max ({policy.backoff_max:g}s)"
        )
    both = [name for name in policy.retryable_errors if name in policy.permanent_errors]
    if both:
        raise stage.at.child("retryable_errors").error(
            f"{_list(both)} is also in permanent_errors; an error type is either retried or not"
        )
    return policy


# --------------------------------------------------------------------------------------------- stage


def _declared_stage(value: object, at: _At) -> _DeclaredStage:
    table = _table(value, at, _STAGE_KEYS)
    if "name" not in table:
        raise at.error("a stage needs a 'name'")
    name = _name(table["name"], at.child("name"))
    fields = {key: _STAGE_FIELDS[key](raw, at.child(key)) for key, raw in table.items() if key != "name"}
    return _DeclaredStage(name, fields, at)


def _on_success(value: object, at: _At) -> ItemStatus:
    name = _string(value, at)
    allowed = sorted(SUCCESS_STATUSES)
    if name not in allowed:
        raise at.error(
            f"'{name}' is not a success status{_suggest(name, allowed)}; use one of: {_list(allowed)}"
        )
    return ItemStatus(name)


def _concurrency(value: object, at: _At) -> tuple[ConcurrencyLimit, ...]:
    return tuple(_concurrency_limit(entry, at.item(i)) for i, entry in enumerate(_array(value, at)))


def _concurrency_limit(value: object, at: _At) -> ConcurrencyLimit:
    table = _table(value, at, ("key", "limit"))
    _require(table, at, ("key", "limit"))
    return ConcurrencyLimit(
        _name(table["key"], at.child("key")), _positive_int(table["limit"], at.child("limit"))
    )


def _rate_limits(value: object, at: _At) -> tuple[RateLimit, ...]:
    return tuple(_rate_limit(entry, at.item(i)) for i, entry in enumerate(_array(value, at)))


def _rate_limit(value: object, at: _At) -> RateLimit:
    table = _table(value, at, ("key", "limit", "per"))
    _require(table, at, ("key", "limit", "per"))
    key = _name(table["key"], at.child("key"))
    return RateLimit(
        key, _positive_int(table["limit"], at.child("limit")), _duration(table["per"], at.child("per"))
    )


def _error_names(value: object, at: _At) -> tuple[str, ...]:
    names = _strings(value, at)
    for index, name in enumerate(names):
        if not _ERROR_NAME.fullmatch(name):
            raise at.item(index).error(
                f"{json.dumps(name)} is not an exception type name such as "
                '"ValueError" or "mylib.errors.BadInput"'
            )
    return names


def _replay(value: object, at: _At) -> ReplayTarget:
    table = _table(value, at, ("kind", "address"))
    _require(table, at, ("kind", "address"))
    kind = _choice(table["kind"], at.child("kind"), REPLAY_KINDS, "replay kind")
    address = _REPLAY_ADDRESS[kind](table["address"], at.child("address"))
    return ReplayTarget(kind, address)


def _callable_path(value: object, at: _At) -> str:
    text = _name(value, at)
    if not _CALLABLE.fullmatch(text):
        raise at.error(f'{json.dumps(text)} is not a callable; use "package.module:function"')
    return text


def _pubsub_topic(value: object, at: _At) -> str:
    text = _name(value, at)
    if not _PUBSUB_TOPIC.fullmatch(text):
        raise at.error(
            f'{json.dumps(text)} is not a topic; use "projects/PROJECT/topics/TOPIC" or a topic id'
        )
    return text


# --------------------------------------------------------------------------------------------- dependencies

_TARGET_KEYS = {POSTGRES: "dsn", HTTP: "url", TCP: "address"}
_PROBE_ONLY_KEYS = ("interval", "timeout")


def _dependencies(value: object, at: _At) -> list[DependencySpec]:
    table = _table(value, at, None)
    return [_dependency(name, body, at.child(name)) for name, body in table.items()]


def _dependency(name: str, value: object, at: _At) -> DependencySpec:
    table = _table(value, at, _DEPENDENCY_KEYS)
    if not _DEPENDENCY_NAME.fullmatch(name):
        raise at.error("a dependency name may hold only letters, digits and '_', '-', '.'")
    _require(table, at, ("kind",))
    kind = _choice(table["kind"], at.child("kind"), DEPENDENCY_KINDS, "dependency kind")
    target = _target(table, kind, at)
    if kind == EVENT:
        _refuse(table, at, _PROBE_ONLY_KEYS, "does not apply to an event dependency: nothing probes it")
    settings: dict[str, Any] = {
        key: parse(table[key], at.child(key)) for key, parse in _DEPENDENCY_FIELDS.items() if key in table
    }
    return replace(DependencySpec(name, kind, target), **settings)


def _refuse(table: Mapping[str, Any], at: _At, keys: tuple[str, ...], why: str) -> None:
    for key in keys:
        if key in table:
            raise at.child(key).error(why)


def _target(table: Mapping[str, Any], kind: str, at: _At) -> str:
    """The probe's target, under the one key that fits ``kind`` (``dsn``, ``url`` or ``address``)."""
    wanted = _TARGET_KEYS.get(kind)
    for key in _TARGET_KEYS.values():
        if key in table and key != wanted:
            fits = f"it takes '{wanted}'" if wanted else "workers report it, nothing probes it"
            raise at.child(key).error(f"does not apply to {_an(kind)} dependency; {fits}")
    if wanted is None:
        return ""
    if wanted not in table:
        raise at.error(f"{_an(kind)} dependency needs '{wanted}'")
    return _TARGET_CHECKS[kind](table[wanted], at.child(wanted))


def _an(kind: str) -> str:
    return f"an {kind}" if kind in ("http", "event") else f"a {kind}"


def _http_url(value: object, at: _At) -> str:
    text = _name(value, at)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise at.error(f"{json.dumps(text)} is not an http:// or https:// URL")
    return text


def _tcp_address(value: object, at: _At) -> str:
    text = _name(value, at)
    host, _, port = text.rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise at.error(f'{json.dumps(text)} is not "host:port" (e.g. "127.0.0.1:6379", "[::1]:6379")')
    return text


def _postgres_dsn(value: object, at: _At) -> str:
    text = _name(value, at)
    is_url = text.startswith(("postgres://", "postgresql://", "postgresql+psycopg://"))
    if not is_url and "=" not in text:
        raise at.error(
            'is not a PostgreSQL DSN: use "postgresql://user@host:5432/db" or "host=... dbname=..."'
        )
    return text


def _choice(value: object, at: _At, allowed: tuple[str, ...], what: str) -> str:
    name = _string(value, at)
    if name not in allowed:
        raise at.error(f"unknown {what} '{name}'{_suggest(name, allowed)}; use one of: {_list(allowed)}")
    return name


# --------------------------------------------------------------------------------------------- values


def parse_duration(value: object, *, source: str, key: str) -> float:
    """Seconds from a config value: a positive number of seconds, or a string such as ``"90s"``,
    ``"15m"``, ``"2h"``, ``"1d"`` or ``"1h30m"`` (units d, h, m, s, largest first)."""
    at = _At(source, key)
    seconds = _duration_text(value, at) if isinstance(value, str) else _number(value, at)
    if seconds <= 0:
        raise at.error(f"must be a duration above zero, not {_describe(value)}")
    return seconds


def _duration(value: object, at: _At) -> float:
    return parse_duration(value, source=at.source, key=at.key)


def _duration_text(text: str, at: _At) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        raise at.error(f"{json.dumps(text)} is not a duration; {_DURATION_HELP}")
    return sum(float(n) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS, strict=True) if n)


def _number(value: object, at: _At) -> float:
    # bool is an int subclass in Python, but `timeout = true` is a mistake, not 1 second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise at.error(f"must be a duration ({_DURATION_HELP}), not {_describe(value)}")
    if not math.isfinite(value):
        raise at.error(f"must be a finite number of seconds, not {_describe(value)}")
    return float(value)


def _positive_int(value: object, at: _At) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise at.error(f"must be a whole number, not {_describe(value)}")
    if value < 1:
        raise at.error(f"must be 1 or more, not {value}")
    return value


def _string(value: object, at: _At) -> str:
    if not isinstance(value, str):
        raise at.error(f"must be a string, not {_describe(value)}")
    return value


def _name(value: object, at: _At) -> str:
    text = _string(value, at)
    if not text.strip():
        raise at.error("must not be empty")
    return text


def _strings(value: object, at: _At) -> tuple[str, ...]:
    return tuple(_name(entry, at.item(i)) for i, entry in enumerate(_array(value, at)))


def _array(value: object, at: _At) -> list[Any]:
    if not isinstance(value, list):
        raise at.error(f"must be an array, not {_describe(value)}")
    return value


def _table(value: object, at: _At, allowed: tuple[str, ...] | None) -> Mapping[str, Any]:
    """``value`` as a table whose keys are all in ``allowed`` (None: any key)."""
    if not isinstance(value, Mapping):
        raise at.error(f"must be a table, not {_describe(value)}")
    for key in value:
        if allowed is not None and key not in allowed:
            raise at.child(key).error(
                f"unknown key '{key}'{_suggest(key, allowed)}; allowed keys: {_list(allowed)}"
            )
    return value


def _require(table: Mapping[str, Any], at: _At, keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if key not in table]
    if missing:
        raise at.error(f"missing required key(s): {_list(missing)}")


_STAGE_FIELDS: dict[str, Callable[[object, _At], object]] = {
    "max_attempts": _positive_int,
    "timeout": _duration,
    "heartbeat_timeout": _duration,
    "backoff_initial": _duration,
    "backoff_max": _duration,
    "dwell_slo": _duration,
    "depends_on": _strings,
    "on_success": _on_success,
    "description": _string,
    "concurrency": _concurrency,
    "rate_limits": _rate_limits,
    "permanent_errors": _error_names,
    "retryable_errors": _error_names,
    "replay": _replay,
}
_STAGE_KEYS = ("name", *_STAGE_FIELDS)

_REPLAY_ADDRESS: dict[str, Callable[[object, _At], str]] = {
    "http": _http_url,
    "pubsub": _pubsub_topic,
    "callable": _callable_path,
}
_TARGET_CHECKS: dict[str, Callable[[object, _At], str]] = {
    POSTGRES: _postgres_dsn,
    HTTP: _http_url,
    TCP: _tcp_address,
}
_DEPENDENCY_FIELDS: dict[str, Callable[[object, _At], object]] = {
    "interval": _duration,
    "timeout": _duration,
    "failure_threshold": _positive_int,
    "recovery": _duration,
}
_DEPENDENCY_KEYS = ("kind", *_TARGET_KEYS.values(), *_DEPENDENCY_FIELDS)


# --------------------------------------------------------------------------------------------- messages


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _list(names: Iterable[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _describe(value: object) -> str:
    """A TOML-flavoured description of a value for error messages, e.g. ``a string "15x"``."""
    for kind, label in _TOML_KINDS:
        if isinstance(value, kind):
            return label if isinstance(value, list | Mapping) else f"{label} {_show(value)}"
    return f"a {type(value).__name__}"


def _show(value: object) -> str:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return json.dumps(value)


_TOML_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (Mapping, "a table"),
    ((datetime, date, time), "a date/time"),
)
