"""Pipelines as data: an ordered list of stages, each with its policy.

A pipeline is declared in ``stagewatch.toml`` (see ``stagewatch.config``) or built in Python. The preset
``instagram`` is the seed's pipeline: ``webhook → download → enqueue → process → publish``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from stagewatch.domain.circuit import DependencySpec, implicit_specs
from stagewatch.domain.statuses import ItemStatus

# Item statuses a stage may declare as its business outcome on success.
SUCCESS_STATUSES = frozenset({ItemStatus.READY_TO_PUBLISH, ItemStatus.PUBLISHED})


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """At most ``limit`` runs at once for each value of ``key`` (a template such as ``{account}``)."""

    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` runs started per ``key`` in any rolling window of ``per_seconds``."""

    key: str
    limit: int
    per_seconds: float


@dataclass(frozen=True, slots=True)
class ReplayTarget:
    """Where a replay re-delivers a stage's payload: ``http`` (a push in the Pub/Sub envelope format to
    ``address``, a worker URL), ``pubsub`` (publish to the topic ``address``; needs the
    ``google-cloud-pubsub`` extra) or ``callable`` (``address`` is ``package.module:function``)."""

    kind: str
    address: str


REPLAY_KINDS = ("http", "pubsub", "callable")


@dataclass(frozen=True, slots=True)
class StagePolicy:
    """One stage and the rules it runs under. Times are in seconds."""

    name: str
    max_attempts: int = 3
    timeout: float = 3600.0
    heartbeat_timeout: float = 60.0
    backoff_initial: float = 5.0
    backoff_max: float = 600.0
    dwell_slo: float | None = None
    depends_on: tuple[str, ...] = ()
    concurrency: tuple[ConcurrencyLimit, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    on_success: ItemStatus | None = None
    description: str = ""
    # Exception type names (as the SDK reports them, e.g. "ValueError" or "mylib.errors.BadInput") that
    # never deserve a retry, and those that always do; the SDK's ``retryable`` flag wins over both.
    permanent_errors: tuple[str, ...] = ()
    retryable_errors: tuple[str, ...] = ()
    replay: ReplayTarget | None = None


@dataclass(frozen=True, slots=True)
class Pipeline:
    """An ordered list of stages. Stage names are unique within a pipeline."""

    name: str
    stages: tuple[StagePolicy, ...]
    description: str = ""
    # Limits over every stage of the pipeline: ``{"key": "global", "limit": 100}`` caps all runs at once.
    concurrency: tuple[ConcurrencyLimit, ...] = ()
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {stage.name: i for i, stage in enumerate(self.stages)})

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def has_stage(self, name: str) -> bool:
        return name in self._index

    def index_of(self, name: str) -> int:
        """Position of a stage; unknown stages sort after every known one."""
        return self._index.get(name, len(self.stages))

    def stage(self, name: str) -> StagePolicy:
        return self.stages[self._index[name]]

    def next_stage(self, name: str) -> str | None:
        i = self._index.get(name)
        if i is None or i + 1 >= len(self.stages):
            return None
        return self.stages[i + 1].name

    def is_last(self, name: str) -> bool:
        return self._index.get(name) == len(self.stages) - 1


@dataclass(frozen=True, slots=True)
class PipelineRegistry:
    """The configured pipelines and the one used when an event names none, with the dependencies their
    stages need: the declared ones, plus an ``event`` dependency (up until workers report it down) for
    every name a stage's ``depends_on`` lists without declaring it."""

    pipelines: Mapping[str, Pipeline]
    default: str
    dependencies: Mapping[str, DependencySpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        needed = (name for p in self.pipelines.values() for stage in p.stages for name in stage.depends_on)
        object.__setattr__(self, "dependencies", implicit_specs(self.dependencies.values(), needed))

    @classmethod
    def of(
        cls,
        pipelines: Iterable[Pipeline],
        default: str | None = None,
        dependencies: Iterable[DependencySpec] = (),
    ) -> PipelineRegistry:
        by_name = {p.name: p for p in pipelines}
        specs = {spec.name: spec for spec in dependencies}
        return cls(pipelines=by_name, default=default or next(iter(by_name)), dependencies=specs)

    def get(self, name: str | None) -> Pipeline | None:
        return self.pipelines.get(name or self.default)

    def require(self, name: str | None) -> Pipeline:
        """The named (or default) pipeline; callers have validated that it exists."""
        pipeline = self.get(name)
        if pipeline is None:
            raise KeyError(f"pipeline {name!r} is not configured")
        return pipeline

    def names(self) -> list[str]:
        return sorted(self.pipelines)


def instagram_preset() -> Pipeline:
    """The seed's pipeline: a webhook receives a video, it is downloaded, queued on Pub/Sub, processed on
    Cloud Run (then it is *ready to publish*) and published to Instagram (container, polling, publish)."""
    return Pipeline(
        name="instagram",
        description="webhook → download → Pub/Sub → Cloud Run → Instagram",
        stages=(
            StagePolicy(
                "webhook",
                max_attempts=1,
                timeout=30,
                heartbeat_timeout=30,
                description="the submitted video is recorded in `sources`",
            ),
            StagePolicy(
                "download",
                max_attempts=3,
                timeout=900,
                heartbeat_timeout=60,
                dwell_slo=1800,
                depends_on=("storage",),
                description="the video file is fetched to storage",
            ),
            StagePolicy(
                "enqueue",
                max_attempts=5,
                timeout=60,
                heartbeat_timeout=30,
                dwell_slo=600,
                description="a Pub/Sub message is published for the worker",
            ),
            StagePolicy(
                "process",
                max_attempts=3,
                timeout=1800,
                heartbeat_timeout=60,
                dwell_slo=3600,
                depends_on=("database",),
                on_success=ItemStatus.READY_TO_PUBLISH,
                description="the Cloud Run worker prepares the video (`preparedVideos`)",
            ),
            StagePolicy(
                "publish",
                max_attempts=5,
                timeout=1800,
                heartbeat_timeout=120,
                dwell_slo=1800,
                depends_on=("instagram-api",),
                on_success=ItemStatus.PUBLISHED,
                rate_limits=(RateLimit("{account}", 50, 86400),),
                description="Instagram media container, status polling and media_publish",
            ),
        ),
    )


PRESETS = {"instagram": instagram_preset}
