"""``stagewatch.config`` for the control plane: dependencies, error classes, replay targets and
pipeline-wide concurrency, read from real TOML files, and every mistake named by file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagewatch.config import load_pipelines
from stagewatch.domain.circuit import DependencySpec
from stagewatch.domain.pipeline import ConcurrencyLimit, PipelineRegistry, ReplayTarget
from stagewatch.errors import ConfigError

STAGE = '[pipelines.p]\n[[pipelines.p.stages]]\nname = "s"\n'


def load(tmp_path: Path, text: str) -> PipelineRegistry:
    path = tmp_path / "stagewatch.toml"
    path.write_text(text, encoding="utf-8")
    return load_pipelines(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


# --------------------------------------------------------------------------------------------- dependencies


def test_every_kind_of_dependency_is_read_with_its_settings(tmp_path: Path) -> None:
    registry = load(
        tmp_path,
        STAGE
        + """depends_on = ["postgres", "storage"]
[dependencies.postgres]
kind = "postgres"
dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
[dependencies.storage]
kind = "http"
url = "http://127.0.0.1:9000/health"
interval = "5s"
timeout = 1.5
failure_threshold = 2
recovery = "1m"
[dependencies.redis]
kind = "tcp"
address = "127.0.0.1:6379"
[dependencies.instagram-api]
kind = "event"
recovery = "2m"
""",
    )
    deps = registry.dependencies
    assert deps["postgres"] == DependencySpec(
        "postgres", "postgres", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    assert deps["storage"] == DependencySpec(
        "storage", "http", "http://127.0.0.1:9000/health", 5.0, 1.5, 2, 60.0
    )
    assert deps["redis"] == DependencySpec("redis", "tcp", "127.0.0.1:6379")
    assert deps["instagram-api"] == DependencySpec("instagram-api", "event", "", recovery=120.0)


def test_names_a_stage_needs_without_declaring_them_are_event_dependencies(tmp_path: Path) -> None:
    registry = load(tmp_path, STAGE + 'depends_on = ["queue"]\n')
    assert registry.dependencies == {"queue": DependencySpec("queue", "event", "")}


def test_the_preset_needs_its_dependencies_as_events_without_any_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    deps = load_pipelines(None).dependencies
    assert sorted(deps) == ["database", "instagram-api", "storage"]
    assert {spec.kind for spec in deps.values()} == {"event"}


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ('kind = "http"', "dependencies.d", "an http dependency needs 'url'"),
        ('url = "http://x"', "dependencies.d", "missing required key(s): 'kind'"),
        (
            'kind = "htp"\nurl = "http://x"',
            "dependencies.d.kind",
            "unknown dependency kind 'htp' (did you mean 'http'?)",
        ),
        ('kind = "http"\nurl = "ftp://x/health"', "dependencies.d.url", "is not an http:// or https:// URL"),
        (
            'kind = "http"\ndsn = "postgresql://x"',
            "dependencies.d.dsn",
            "does not apply to an http dependency; it takes 'url'",
        ),
        ('kind = "tcp"\naddress = "localhost"', "dependencies.d.address", 'is not "host:port"'),
        ('kind = "tcp"\naddress = "localhost:70000"', "dependencies.d.address", 'is not "host:port"'),
        ('kind = "postgres"\ndsn = "mysql://x"', "dependencies.d.dsn", "is not a PostgreSQL DSN"),
        ('kind = "event"\nurl = "http://x"', "dependencies.d.url", "workers report it, nothing probes it"),
        (
            'kind = "event"\ninterval = "5s"',
            "dependencies.d.interval",
            "does not apply to an event dependency",
        ),
        (
            'kind = "tcp"\naddress = "h:1"\ntimeout = "0s"',
            "dependencies.d.timeout",
            "must be a duration above zero",
        ),
        (
            'kind = "tcp"\naddress = "h:1"\nfailure_threshold = 0',
            "dependencies.d.failure_threshold",
            "must be 1 or more",
        ),
        (
            'kind = "tcp"\naddress = "h:1"\nrecover = "1m"',
            "dependencies.d.recover",
            "(did you mean 'recovery'?)",
        ),
    ],
)
def test_dependency_mistakes_name_the_file_and_the_key(
    tmp_path: Path, body: str, key: str, problem: str
) -> None:
    message = error_of(tmp_path, f"[dependencies.d]\n{body}\n")
    assert message.startswith(f"{tmp_path / 'stagewatch.toml'}: {key}: ")
    assert problem in message


def test_a_dependency_name_must_fit_in_a_url(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[dependencies."a b"]\nkind = "event"\n')
    assert 'dependencies."a b": a dependency name may hold only' in message


def test_ipv6_tcp_addresses_and_libpq_dsns_are_accepted(tmp_path: Path) -> None:
    text = (
        '[dependencies.r]\nkind = "tcp"\naddress = "[::1]:6379"\n'
        '[dependencies.pg]\nkind = "postgres"\ndsn = "host=127.0.0.1 port=5432 user=postgres"\n'
    )
    deps = load(tmp_path, text).dependencies
    assert (deps["r"].target, deps["pg"].target) == ("[::1]:6379", "host=127.0.0.1 port=5432 user=postgres")


# --------------------------------------------------------------------------------------------- stages


def test_error_classes_and_a_replay_target_are_read(tmp_path: Path) -> None:
    text = STAGE + (
        'permanent_errors = ["ValueError", "mylib.errors.BadInput"]\n'
        'retryable_errors = ["TimeoutError"]\n'
        'replay = { kind = "http", address = "https://worker.example/push" }\n'
    )
    stage = load(tmp_path, text).pipelines["p"].stage("s")
    assert stage.permanent_errors == ("ValueError", "mylib.errors.BadInput")
    assert stage.retryable_errors == ("TimeoutError",)
    assert stage.replay == ReplayTarget("http", "https://worker.example/push")


@pytest.mark.parametrize(
    "replay",
    [
        '{ kind = "pubsub", address = "projects/acme/topics/videos" }',
        '{ kind = "pubsub", address = "videos" }',
        '{ kind = "callable", address = "workers.replay:redeliver" }',
    ],
)
def test_every_replay_kind_is_accepted(tmp_path: Path, replay: str) -> None:
    stage = load(tmp_path, STAGE + f"replay = {replay}\n").pipelines["p"].stage("s")
    assert stage.replay is not None and stage.replay.kind in ("pubsub", "callable")


@pytest.mark.parametrize(
    ("line", "key", "problem"),
    [
        ('permanent_errors = ["Value Error"]', "permanent_errors[0]", "is not an exception type name"),
        ('retryable_errors = "TimeoutError"', "retryable_errors", "must be an array"),
        (
            'permanent_errors = ["E"]\nretryable_errors = ["E"]',
            "retryable_errors",
            "'E' is also in permanent_errors",
        ),
        ('replay = { kind = "sqs", address = "q" }', "replay.kind", "unknown replay kind 'sqs'"),
        ('replay = { kind = "http" }', "replay", "missing required key(s): 'address'"),
        (
            'replay = { kind = "http", address = "worker" }',
            "replay.address",
            "is not an http:// or https:// URL",
        ),
        ('replay = { kind = "callable", address = "mod.fn" }', "replay.address", '"package.module:function"'),
        ('replay = { kind = "pubsub", address = "projects/a/topics" }', "replay.address", "is not a topic"),
        ('replay = { kind = "http", address = "http://w", url = "x" }', "replay.url", "unknown key 'url'"),
    ],
)
def test_stage_mistakes_name_the_file_and_the_key(tmp_path: Path, line: str, key: str, problem: str) -> None:
    message = error_of(tmp_path, STAGE + line + "\n")
    assert f"stagewatch.toml: pipelines.p.stages[0].{key}: " in message
    assert problem in message


# --------------------------------------------------------------------------------------------- pipeline


def test_pipeline_wide_concurrency_is_read_and_a_preset_keeps_its_own(tmp_path: Path) -> None:
    text = (
        '[pipelines.mine]\nconcurrency = [{ key = "global", limit = 100 }]\n'
        '[[pipelines.mine.stages]]\nname = "s"\n'
        '[pipelines.ig]\npreset = "instagram"\n'
    )
    registry = load(tmp_path, text)
    assert registry.pipelines["mine"].concurrency == (ConcurrencyLimit("global", 100),)
    assert registry.pipelines["ig"].concurrency == ()


def test_pipeline_concurrency_mistakes_are_named(tmp_path: Path) -> None:
    text = (
        '[pipelines.p]\nconcurrency = [{ key = "global", limit = 0 }]\n[[pipelines.p.stages]]\nname = "s"\n'
    )
    assert "pipelines.p.concurrency[0].limit: must be 1 or more" in error_of(tmp_path, text)
