"""``stagewatch.config``: pipelines loaded from real TOML files, and every mistake named precisely."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stagewatch.config import load_pipelines, parse_duration, parse_pipelines
from stagewatch.domain.pipeline import ConcurrencyLimit, Pipeline, RateLimit, StagePolicy, instagram_preset
from stagewatch.domain.statuses import ItemStatus
from stagewatch.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "pipelines.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> tuple[Path, ConfigError]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_pipelines(path)
    return path, info.value


# --------------------------------------------------------------------------------------------- defaults


def test_no_path_and_no_file_in_cwd_gives_the_instagram_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = load_pipelines(None)
    assert registry.names() == ["instagram"]
    assert registry.default == "instagram"
    assert registry.pipelines["instagram"] == instagram_preset()
    assert registry.pipelines["instagram"].stage_names == (
        "webhook",
        "download",
        "enqueue",
        "process",
        "publish",
    )


def test_no_path_reads_stagewatch_toml_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, '[pipelines.mine]\n[[pipelines.mine.stages]]\nname = "only"\n', name="stagewatch.toml")
    monkeypatch.chdir(tmp_path)
    registry = load_pipelines(None)
    assert registry.names() == ["mine"]
    assert registry.pipelines["mine"].stages == (StagePolicy("only"),)


def test_no_path_reports_errors_in_cwd_file_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "default_pipelin = 'x'\n", name="stagewatch.toml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^stagewatch\.toml: default_pipelin: unknown key"):
        load_pipelines(None)


def test_file_without_pipelines_table_gives_the_preset(tmp_path: Path) -> None:
    registry = load_pipelines(write(tmp_path, "# nothing configured yet\n"))
    assert registry.names() == ["instagram"]
    assert registry.default == "instagram"
    assert registry.pipelines["instagram"] == instagram_preset()


def test_explicit_missing_path_is_an_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_pipelines(missing)
    assert str(info.value) == f"{missing}: the config file does not exist"
    assert info.value.source == str(missing)


def test_explicit_path_accepts_str(tmp_path: Path) -> None:
    path = write(tmp_path, '[pipelines.a]\npreset = "instagram"\n')
    assert load_pipelines(str(path)).names() == ["a"]


# --------------------------------------------------------------------------------------------- pipelines

FULL = """
default_pipeline = "shorts"

[pipelines.shorts]
description = "YouTube shorts"

[[pipelines.shorts.stages]]
name = "download"
max_attempts = 4
timeout = "15m"
heartbeat_timeout = 45
backoff_initial = "2.5s"
backoff_max = "1h30m"
dwell_slo = "30m"
depends_on = ["storage", "youtube-api"]
description = "fetch the file"
concurrency = [{ key = "{account}", limit = 3 }, { key = "global", limit = 20 }]
rate_limits = [{ key = "{account}", limit = 50, per = "24h" }]

[[pipelines.shorts.stages]]
name = "upload"
on_success = "published"

[pipelines.other]
[[pipelines.other.stages]]
name = "transcode"
on_success = "ready_to_publish"
"""


def test_full_custom_pipeline_parses_into_exact_dataclasses(tmp_path: Path) -> None:
    registry = load_pipelines(write(tmp_path, FULL))
    download = StagePolicy(
        name="download",
        max_attempts=4,
        timeout=900.0,
        heartbeat_timeout=45.0,
        backoff_initial=2.5,
        backoff_max=5400.0,
        dwell_slo=1800.0,
        depends_on=("storage", "youtube-api"),
        concurrency=(ConcurrencyLimit("{account}", 3), ConcurrencyLimit("global", 20)),
        rate_limits=(RateLimit("{account}", 50, 86400.0),),
        on_success=None,
        description="fetch the file",
    )
    upload = StagePolicy(name="upload", on_success=ItemStatus.PUBLISHED)
    assert registry.pipelines["shorts"] == Pipeline(
        "shorts", (download, upload), description="YouTube shorts"
    )
    other = Pipeline("other", (StagePolicy("transcode", on_success=ItemStatus.READY_TO_PUBLISH),))
    assert registry.pipelines["other"] == other
    assert registry.default == "shorts"
    assert registry.names() == ["other", "shorts"]


def test_parsed_values_have_the_dataclass_field_types(tmp_path: Path) -> None:
    stage = load_pipelines(write(tmp_path, FULL)).pipelines["shorts"].stage("download")
    # Integers in TOML must still become float seconds, and arrays tuples (the dataclasses are frozen).
    assert type(stage.heartbeat_timeout) is float
    assert type(stage.depends_on) is tuple
    assert type(stage.concurrency) is tuple
    upload = load_pipelines(write(tmp_path, FULL)).pipelines["shorts"].stage("upload")
    assert type(upload.on_success) is ItemStatus


def test_default_pipeline_is_the_first_declared_when_not_set(tmp_path: Path) -> None:
    text = '[pipelines.zeta]\npreset = "instagram"\n[pipelines.alpha]\npreset = "instagram"\n'
    registry = load_pipelines(write(tmp_path, text))
    assert registry.default == "zeta"
    assert registry.get(None) is registry.pipelines["zeta"]


def test_declared_pipelines_do_not_silently_include_the_preset(tmp_path: Path) -> None:
    text = '[pipelines.mine]\n[[pipelines.mine.stages]]\nname = "only"\n'
    assert load_pipelines(write(tmp_path, text)).names() == ["mine"]


def test_preset_override_changes_only_the_named_fields(tmp_path: Path) -> None:
    text = """
[pipelines.ig]
preset = "instagram"
[[pipelines.ig.stages]]
name = "publish"
max_attempts = 9
[[pipelines.ig.stages]]
name = "notify"
timeout = "2m"
"""
    pipeline = load_pipelines(write(tmp_path, text)).pipelines["ig"]
    preset = instagram_preset()
    assert preset.stage("publish").max_attempts == 5  # the override below must really change something
    assert pipeline.name == "ig"
    assert pipeline.description == preset.description
    assert pipeline.stage_names == (*preset.stage_names, "notify")
    assert pipeline.stage("publish") == dataclasses.replace(preset.stage("publish"), max_attempts=9)
    assert pipeline.stages[:4] == preset.stages[:4]
    assert pipeline.stage("notify") == StagePolicy("notify", timeout=120.0)


def test_preset_alone_and_description_override(tmp_path: Path) -> None:
    text = '[pipelines.instagram]\npreset = "instagram"\ndescription = "ours"\n'
    pipeline = load_pipelines(write(tmp_path, text)).pipelines["instagram"]
    assert pipeline.stages == instagram_preset().stages
    assert pipeline.description == "ours"


def test_parse_pipelines_is_pure_and_takes_a_mapping() -> None:
    data = {"pipelines": {"p": {"stages": [{"name": "a", "timeout": 10}, {"name": "b"}]}}}
    registry = parse_pipelines(data, "inline")
    assert registry.pipelines["p"].stages == (StagePolicy("a", timeout=10.0), StagePolicy("b"))
    with pytest.raises(ConfigError, match=r"^inline: pipelines\.p\.stages\[1\]\.name: must be a string"):
        parse_pipelines({"pipelines": {"p": {"stages": [{"name": "a"}, {"name": 3}]}}}, "inline")


# --------------------------------------------------------------------------------------------- errors

STAGE = '[pipelines.shorts]\n[[pipelines.shorts.stages]]\nname = "download"\n'
TWO_STAGES = STAGE + '[[pipelines.shorts.stages]]\nname = "upload"\n'

ERROR_CASES = [
    pytest.param(
        TWO_STAGES + "max_attempt = 3\n",
        "pipelines.shorts.stages[1].max_attempt",
        ["unknown key 'max_attempt'", "did you mean 'max_attempts'?", "allowed keys:", "'heartbeat_timeout'"],
        id="unknown-stage-key",
    ),
    pytest.param(
        "default_pipline = 'a'\n",
        "default_pipline",
        ["unknown key", "did you mean 'default_pipeline'?", "allowed keys: 'default_pipeline', 'pipelines'"],
        id="unknown-top-key",
    ),
    pytest.param(
        '[pipelines.shorts]\npreset = "instagram"\ndescriptoin = "x"\n',
        "pipelines.shorts.descriptoin",
        ["unknown key", "did you mean 'description'?", "'preset', 'description', 'stages'"],
        id="unknown-pipeline-key",
    ),
    pytest.param(
        STAGE + 'rate_limits = [{ key = "a", limit = 1, pre = "1h" }]\n',
        "pipelines.shorts.stages[0].rate_limits[0].pre",
        ["unknown key 'pre'", "did you mean 'per'?"],
        id="unknown-rate-limit-key",
    ),
    pytest.param(
        STAGE + 'max_attempts = "3"\n',
        "pipelines.shorts.stages[0].max_attempts",
        ['must be a whole number, not a string "3"'],
        id="int-as-string",
    ),
    pytest.param(
        STAGE + "max_attempts = 2.0\n",
        "pipelines.shorts.stages[0].max_attempts",
        ["must be a whole number, not a float 2.0"],
        id="int-as-float",
    ),
    pytest.param(
        STAGE + "max_attempts = true\n",
        "pipelines.shorts.stages[0].max_attempts",
        ["must be a whole number, not a boolean true"],
        id="int-as-bool",
    ),
    pytest.param(
        STAGE + "max_attempts = 0\n",
        "pipelines.shorts.stages[0].max_attempts",
        ["must be 1 or more, not 0"],
        id="zero-attempts",
    ),
    pytest.param(
        STAGE + "timeout = true\n",
        "pipelines.shorts.stages[0].timeout",
        ["must be a duration", "not a boolean true"],
        id="bool-duration",
    ),
    pytest.param(
        TWO_STAGES + 'timeout = "15x"\n',
        "pipelines.shorts.stages[1].timeout",
        ['"15x" is not a duration', '"1h30m"'],
        id="bad-duration-string",
    ),
    pytest.param(
        STAGE + "heartbeat_timeout = -5\n",
        "pipelines.shorts.stages[0].heartbeat_timeout",
        ["must be a duration above zero, not an integer -5"],
        id="negative-duration",
    ),
    pytest.param(
        STAGE + 'dwell_slo = "0s"\n',
        "pipelines.shorts.stages[0].dwell_slo",
        ['must be a duration above zero, not a string "0s"'],
        id="zero-duration",
    ),
    pytest.param(
        STAGE + 'backoff_initial = "1h"\n',
        "pipelines.shorts.stages[0].backoff_initial",
        ["is 3600s, longer than backoff_max (600s)"],
        id="backoff-initial-over-max",
    ),
    pytest.param(
        STAGE + 'depends_on = "storage"\n',
        "pipelines.shorts.stages[0].depends_on",
        ['must be an array, not a string "storage"'],
        id="depends-on-not-array",
    ),
    pytest.param(
        STAGE + 'depends_on = ["storage", 7]\n',
        "pipelines.shorts.stages[0].depends_on[1]",
        ["must be a string, not an integer 7"],
        id="depends-on-entry-type",
    ),
    pytest.param(
        STAGE + 'concurrency = [{ key = "{account}", limit = 0 }]\n',
        "pipelines.shorts.stages[0].concurrency[0].limit",
        ["must be 1 or more, not 0"],
        id="zero-concurrency",
    ),
    pytest.param(
        STAGE + 'concurrency = [{ key = "{account}" }]\n',
        "pipelines.shorts.stages[0].concurrency[0]",
        ["missing required key(s): 'limit'"],
        id="concurrency-missing-limit",
    ),
    pytest.param(
        STAGE + 'rate_limits = [{ key = "{account}", limit = 5, per = "-1h" }]\n',
        "pipelines.shorts.stages[0].rate_limits[0].per",
        ['"-1h" is not a duration'],
        id="rate-limit-bad-per",
    ),
    pytest.param(
        STAGE + 'rate_limits = { key = "{account}", limit = 5, per = "1h" }\n',
        "pipelines.shorts.stages[0].rate_limits",
        ["must be an array, not a table"],
        id="rate-limits-not-array",
    ),
    pytest.param(
        STAGE + 'on_success = "publishd"\n',
        "pipelines.shorts.stages[0].on_success",
        ["'publishd' is not a success status", "did you mean 'published'?", "'ready_to_publish'"],
        id="unknown-on-success",
    ),
    pytest.param(
        STAGE + 'on_success = "failed"\n',
        "pipelines.shorts.stages[0].on_success",
        ["'failed' is not a success status", "use one of: 'published', 'ready_to_publish'"],
        id="non-success-status",
    ),
    pytest.param(
        TWO_STAGES + '[[pipelines.shorts.stages]]\nname = "download"\n',
        "pipelines.shorts.stages[2].name",
        ["stage 'download' is declared twice (first at pipelines.shorts.stages[0])"],
        id="duplicate-stage",
    ),
    pytest.param(
        "[pipelines.shorts]\nstages = []\n",
        "pipelines.shorts.stages",
        ["is empty", "at least one stage"],
        id="empty-stages",
    ),
    pytest.param(
        '[pipelines.shorts]\ndescription = "no stages at all"\n',
        "pipelines.shorts",
        ["has no stages", "[[pipelines.shorts.stages]]"],
        id="missing-stages",
    ),
    pytest.param(
        "[pipelines]\n",
        "pipelines",
        ["declares no pipeline"],
        id="empty-pipelines-table",
    ),
    pytest.param(
        "[pipelines.shorts]\n[[pipelines.shorts.stages]]\nmax_attempts = 2\n",
        "pipelines.shorts.stages[0]",
        ["a stage needs a 'name'"],
        id="stage-without-name",
    ),
    pytest.param(
        '[pipelines.shorts]\n[[pipelines.shorts.stages]]\nname = " "\n',
        "pipelines.shorts.stages[0].name",
        ["must not be empty"],
        id="blank-stage-name",
    ),
    pytest.param(
        '[pipelines.shorts]\npreset = "instagam"\n',
        "pipelines.shorts.preset",
        ["unknown preset 'instagam'", "did you mean 'instagram'?", "available presets: 'instagram'"],
        id="unknown-preset",
    ),
    pytest.param(
        'default_pipeline = "shrots"\n' + STAGE,
        "default_pipeline",
        ["there is no pipeline named 'shrots'", "did you mean 'shorts'?", "declared: 'shorts'"],
        id="unknown-default-pipeline",
    ),
    pytest.param(
        'default_pipeline = "shorts"\n',
        "default_pipeline",
        ["there is no pipeline named 'shorts'", "declared: 'instagram'"],
        id="default-pipeline-without-pipelines",
    ),
    pytest.param(
        'pipelines = "shorts"\n',
        "pipelines",
        ['must be a table, not a string "shorts"'],
        id="pipelines-not-table",
    ),
    pytest.param(
        '[pipelines."a.b"]\n[[pipelines."a.b".stages]]\nname = "x"\ntimeout = "soon"\n',
        'pipelines."a.b".stages[0].timeout',
        ['"soon" is not a duration'],
        id="quoted-pipeline-name-in-path",
    ),
]


@pytest.mark.parametrize(("text", "key", "phrases"), ERROR_CASES)
def test_mistakes_name_the_file_the_key_and_the_problem(
    tmp_path: Path, text: str, key: str, phrases: list[str]
) -> None:
    path, error = load_error(tmp_path, text)
    message = str(error)
    assert message.startswith(f"{path}: {key}: "), message
    for phrase in phrases:
        assert phrase in message, message
    assert error.source == str(path)
    assert error.key == key


def test_invalid_toml_names_the_file_and_the_line_and_column(tmp_path: Path) -> None:
    path, error = load_error(tmp_path, '[pipelines.a]\npreset = "instagram"\nmax_attempts = \n')
    message = str(error)
    assert message.startswith(f"{path}: is not valid TOML: "), message
    assert "line 3, column 16" in message, message
    assert error.key is None


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_pipelines(path)


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot be read"):
        load_pipelines(tmp_path)


def test_preset_override_is_checked_against_the_merged_stage(tmp_path: Path) -> None:
    # The preset's publish stage backs off at most 600s; an override of backoff_initial alone must respect it.
    text = (
        '[pipelines.ig]\npreset = "instagram"\n'
        '[[pipelines.ig.stages]]\nname = "publish"\nbackoff_initial = "11m"\n'
    )
    path, error = load_error(tmp_path, text)
    assert (
        str(error)
        == f"{path}: pipelines.ig.stages[0].backoff_initial: is 660s, longer than backoff_max (600s)"
    )


# --------------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1h30m", 5400.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1d2h3m4s", 93784.0),
        ("1.5h", 5400.0),
        (" 10s ", 10.0),
        (45, 45.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration_accepts_numbers_and_unit_strings(value: object, seconds: float) -> None:
    assert parse_duration(value, source="f.toml", key="k") == seconds


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("", '"" is not a duration'),
        ("15", '"15" is not a duration'),
        ("30m1h", '"30m1h" is not a duration'),
        ("1h1h", '"1h1h" is not a duration'),
        ("500ms", '"500ms" is not a duration'),
        ("1 h", '"1 h" is not a duration'),
        (0, "must be a duration above zero, not an integer 0"),
        (-1.5, "must be a duration above zero, not a float -1.5"),
        (float("inf"), "must be a finite number of seconds"),
        (float("nan"), "must be a finite number of seconds"),
        (False, "not a boolean false"),
        ([1], "not an array"),
    ],
)
def test_parse_duration_rejects_bad_values(value: object, phrase: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, source="f.toml", key="pipelines.p.stages[0].timeout")
    message = str(info.value)
    assert message.startswith("f.toml: pipelines.p.stages[0].timeout: "), message
    assert phrase in message, message
