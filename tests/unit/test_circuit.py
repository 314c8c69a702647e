"""The dependency circuit breaker as pure functions: every transition, and properties over any sequence
of probe results."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stagewatch.domain.circuit import (
    DOWN,
    HALF_OPEN,
    UNKNOWN,
    UP,
    DependencySpec,
    DependencyState,
    Observation,
    Step,
    implicit_specs,
    observe,
    plan,
    recover,
)

T = 1_800_000_000.0
HTTP_SPEC = DependencySpec(
    "storage", "http", "http://x/health", interval=10, timeout=2, failure_threshold=3, recovery=30
)
EVENT_SPEC = DependencySpec("instagram-api", failure_threshold=2, recovery=60)


def fail(at: float, message: str = "connection refused") -> Observation:
    return Observation(False, at, message)


def ok(at: float, message: str = "HTTP 200 in 3 ms") -> Observation:
    return Observation(True, at, message)


def run(spec: DependencySpec, *seen: Observation, start: DependencyState | None = None) -> DependencyState:
    state = start or DependencyState(spec.name)
    for observation in seen:
        state = observe(state, spec, observation)
    return state


def opened(spec: DependencySpec = HTTP_SPEC, at: float = T) -> DependencyState:
    return run(spec, *(fail(at) for _ in range(spec.failure_threshold)))


# --------------------------------------------------------------------------------------------- up → down


def test_unknown_is_not_down_and_a_success_makes_it_up() -> None:
    state = DependencyState("storage")
    assert (state.state, state.is_down) == (UNKNOWN, False)
    up = observe(state, HTTP_SPEC, ok(T))
    assert (up.state, up.since, up.failures, up.checked_at) == (UP, T, 0, T)
    assert up.next_probe_at == T + HTTP_SPEC.interval
    assert up.message == "HTTP 200 in 3 ms"


def test_failures_below_the_threshold_keep_the_circuit_closed() -> None:
    up = run(HTTP_SPEC, ok(T))
    state = run(HTTP_SPEC, fail(T + 10), fail(T + 20), start=up)
    assert (state.state, state.failures, state.since, state.is_down) == (UP, 2, T, False)
    assert (state.checked_at, state.next_probe_at, state.message) == (T + 20, T + 30, "connection refused")


def test_the_threshold_th_consecutive_failure_opens_the_circuit() -> None:
    up = run(HTTP_SPEC, ok(T))
    down = run(HTTP_SPEC, fail(T + 10), fail(T + 20), fail(T + 30, "HTTP 503"), start=up)
    assert (down.state, down.failures, down.since, down.is_down) == (DOWN, 3, T + 30, True)
    assert (down.next_probe_at, down.message) == (T + 30 + HTTP_SPEC.recovery, "HTTP 503")


def test_a_success_between_failures_resets_the_count() -> None:
    state = run(HTTP_SPEC, fail(T), fail(T + 1), ok(T + 2), fail(T + 3), fail(T + 4))
    assert (state.state, state.failures) == (UP, 2)


def test_an_unknown_dependency_opens_after_the_threshold_too() -> None:
    state = run(HTTP_SPEC, fail(T), fail(T + 1))
    assert (state.state, state.failures) == (UNKNOWN, 2)
    assert run(HTTP_SPEC, fail(T + 2), start=state).state == DOWN


def test_more_failures_while_down_keep_since_and_push_the_half_open_probe_back() -> None:
    down = opened()
    later = observe(down, HTTP_SPEC, fail(T + 20, "still refused"))
    assert (later.state, later.since, later.failures) == (DOWN, T, 4)
    assert (later.next_probe_at, later.message) == (T + 20 + HTTP_SPEC.recovery, "still refused")


# ------------------------------------------------------------------------------------ down → half_open


def test_down_waits_until_recovery_has_passed() -> None:
    down = opened()
    assert plan(down, HTTP_SPEC, T + 29.9) == Step.IDLE
    assert recover(down, HTTP_SPEC, T + 29.9) == down


def test_down_goes_half_open_once_recovery_has_passed_and_work_still_waits() -> None:
    down = opened()
    assert plan(down, HTTP_SPEC, T + 30) == Step.HALF_OPEN
    half = recover(down, HTTP_SPEC, T + 30)
    assert (half.state, half.since, half.failures, half.is_down) == (HALF_OPEN, T + 30, 3, True)
    assert half.next_probe_at == T + 30 + HTTP_SPEC.timeout  # when a cut-short probe is retried


def test_half_open_closes_on_success() -> None:
    half = recover(opened(), HTTP_SPEC, T + 30)
    up = observe(half, HTTP_SPEC, ok(T + 31))
    assert (up.state, up.failures, up.since, up.is_down) == (UP, 0, T + 31, False)


def test_half_open_reopens_on_one_failure() -> None:
    half = recover(opened(), HTTP_SPEC, T + 30)
    down = observe(half, HTTP_SPEC, fail(T + 31))
    assert (down.state, down.since, down.failures) == (DOWN, T + 31, 4)
    assert down.next_probe_at == T + 31 + HTTP_SPEC.recovery


def test_a_half_open_probe_cut_short_is_retried_when_late() -> None:
    half = recover(opened(), HTTP_SPEC, T + 30)
    assert plan(half, HTTP_SPEC, T + 31) == Step.IDLE
    assert plan(half, HTTP_SPEC, T + 32) == Step.PROBE


def test_a_success_reported_while_down_closes_the_circuit() -> None:
    up = observe(opened(), HTTP_SPEC, ok(T + 5, "worker says it works"))
    assert (up.state, up.failures, up.since) == (UP, 0, T + 5)


# --------------------------------------------------------------------------------------------- planning


def test_probed_dependencies_are_probed_when_due() -> None:
    assert plan(DependencyState("storage"), HTTP_SPEC, T) == Step.PROBE
    up = run(HTTP_SPEC, ok(T))
    assert plan(up, HTTP_SPEC, T + 9.9) == Step.IDLE
    assert plan(up, HTTP_SPEC, T + 10) == Step.PROBE


def test_event_dependencies_are_never_probed() -> None:
    assert plan(DependencyState("instagram-api"), EVENT_SPEC, T) == Step.IDLE
    up = run(EVENT_SPEC, ok(T))
    assert up.next_probe_at is None
    assert plan(up, EVENT_SPEC, T + 10_000) == Step.IDLE


def test_an_event_dependency_closes_on_trial_after_recovery_and_the_next_failure_reopens_it() -> None:
    down = run(EVENT_SPEC, fail(T, "rate limited"), fail(T + 1, "rate limited"))
    assert (down.state, down.next_probe_at) == (DOWN, T + 61)
    assert plan(down, EVENT_SPEC, T + 60) == Step.IDLE
    assert plan(down, EVENT_SPEC, T + 61) == Step.TRIAL
    trial = recover(down, EVENT_SPEC, T + 61)
    assert (trial.state, trial.is_down, trial.since, trial.failures) == (UP, False, T + 61, 1)
    assert "on trial" in (trial.message or "")
    assert observe(trial, EVENT_SPEC, fail(T + 70)).state == DOWN
    assert observe(trial, EVENT_SPEC, ok(T + 70)).failures == 0


# --------------------------------------------------------------------------------------------- helpers


def test_undeclared_names_become_event_dependencies_with_default_settings() -> None:
    specs = implicit_specs([HTTP_SPEC], ["storage", "instagram-api", "storage"])
    assert specs["storage"] is HTTP_SPEC
    assert specs["instagram-api"] == DependencySpec("instagram-api", "event", "")
    assert not specs["instagram-api"].is_probed


# --------------------------------------------------------------------------------------------- properties

observations = st.lists(st.booleans(), max_size=40)
thresholds = st.integers(min_value=1, max_value=5)


@given(observations, thresholds)
def test_the_state_always_follows_the_latest_run_of_results(results: list[bool], threshold: int) -> None:
    """Up after a success; down once the trailing failures reach the threshold; never down otherwise
    (no time passes here, so nothing goes half-open)."""
    spec = DependencySpec("d", "tcp", "h:1", failure_threshold=threshold)
    state = run(spec, *(Observation(r, T + i) for i, r in enumerate(results)))
    trailing = len(results) - (max((i for i, r in enumerate(results) if r), default=-1) + 1)
    if results and results[-1]:
        assert (state.state, state.failures) == (UP, 0)
    elif trailing >= threshold:
        assert state.state == DOWN
    else:
        assert not state.is_down
    assert state.failures == trailing


@given(observations, thresholds, st.floats(min_value=0, max_value=100))
def test_since_never_moves_while_the_state_stays(results: list[bool], threshold: int, gap: float) -> None:
    spec = DependencySpec("d", "tcp", "h:1", failure_threshold=threshold, recovery=gap + 1)
    state = DependencyState("d")
    for i, result in enumerate(results):
        after = observe(state, spec, Observation(result, T + i * gap))
        if after.state == state.state:
            assert after.since == state.since
        state = after
