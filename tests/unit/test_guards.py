"""Every guard as a pure function of a snapshot, and the chain's order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stagewatch.domain.circuit import DependencyState
from stagewatch.domain.guards import (
    Action,
    Cancellation,
    RateUse,
    SlotUse,
    Snapshot,
    Work,
    WorkState,
    decide,
)
from stagewatch.domain.guards.cancellation import cancellation
from stagewatch.domain.guards.dependencies import dependency_health
from stagewatch.domain.guards.idempotency import idempotency
from stagewatch.domain.guards.limits import concurrency, rate, render_key
from stagewatch.domain.guards.retry import after_failure, backoff, is_retryable, retry_budget
from stagewatch.domain.pipeline import StagePolicy

NOW = 1_800_000_000.0
POLICY = StagePolicy(
    "publish", max_attempts=3, backoff_initial=5, backoff_max=60, depends_on=("instagram-api",)
)


def snap(**fields: object) -> Snapshot:
    return Snapshot(now=NOW, policy=fields.pop("policy", POLICY), **fields)  # type: ignore[arg-type]


# --- idempotency -----------------------------------------------------------------------------------------


def test_a_succeeded_work_is_skipped_naming_its_run() -> None:
    decision = idempotency(snap(work=Work(WorkState.SUCCEEDED, 1, "r1")))
    assert decision is not None and decision.action is Action.SKIP and "r1" in decision.reason


def test_a_work_held_by_a_live_lease_is_skipped() -> None:
    decision = idempotency(snap(work=Work(WorkState.RUNNING, 1, "r1", lease_live=True)))
    assert decision is not None and decision.action is Action.SKIP and "running" in decision.reason


def test_a_work_whose_lease_expired_is_not_a_duplicate() -> None:
    assert idempotency(snap(work=Work(WorkState.RUNNING, 1, "r1", lease_live=False))) is None
    assert idempotency(snap()) is None


# --- cancellation ----------------------------------------------------------------------------------------


def test_a_cancelled_item_aborts_with_who_and_why() -> None:
    decision = cancellation(snap(cancellation=Cancellation("customer withdrew", "alice", NOW - 5)))
    assert decision is not None and decision.action is Action.ABORT
    assert decision.reason == "cancelled by alice: customer withdrew"
    assert cancellation(snap()) is None


# --- retries ---------------------------------------------------------------------------------------------

TRANSIENT = {"type": "TimeoutError", "message": "read timed out", "retryable": None}


def test_backing_off_waits_until_the_next_attempt_is_due() -> None:
    work = Work(WorkState.FAILED, 1, "r1", next_attempt_at=NOW + 8, last_error=TRANSIENT)
    decision = retry_budget(snap(work=work))
    assert decision is not None and decision.action is Action.WAIT
    assert decision.retry_after == 8 and decision.blocker == "retry backoff before attempt 2"


def test_a_due_retry_may_run() -> None:
    work = Work(WorkState.FAILED, 1, "r1", next_attempt_at=NOW - 1, last_error=TRANSIENT)
    assert retry_budget(snap(work=work)) is None
    assert decide(snap(work=work)).attempt == 2


def test_exhausted_attempts_dead_letter_and_ask_to_enqueue() -> None:
    work = Work(WorkState.FAILED, 3, "r3", next_attempt_at=NOW - 1, last_error=TRANSIENT)
    decision = retry_budget(snap(work=work))
    assert decision is not None and decision.action is Action.DEAD_LETTER and decision.enqueue_dead_letter
    assert "3 of 3" in decision.reason


def test_an_item_already_in_the_queue_is_dead_lettered_without_enqueueing_again() -> None:
    decision = retry_budget(snap(work=Work(WorkState.DEAD, 3, "r3", last_error=TRANSIENT)))
    assert decision is not None and decision.action is Action.DEAD_LETTER
    assert not decision.enqueue_dead_letter


def test_the_workers_retryable_flag_wins_over_the_stage_lists() -> None:
    policy = StagePolicy("s", permanent_errors=("ValueError",))
    assert not is_retryable(policy, {"type": "ValueError"})
    assert is_retryable(policy, {"type": "ValueError", "retryable": True})
    assert not is_retryable(StagePolicy("s"), {"type": "TimeoutError", "retryable": False})


def test_permanent_errors_match_the_short_or_dotted_type_name() -> None:
    policy = StagePolicy("s", permanent_errors=("BadInput",))
    assert not is_retryable(policy, {"type": "mylib.errors.BadInput"})
    assert is_retryable(policy, {"type": "mylib.errors.Other"})


def test_a_retryable_allowlist_makes_everything_else_permanent() -> None:
    policy = StagePolicy("s", retryable_errors=("TimeoutError",))
    assert is_retryable(policy, {"type": "TimeoutError"})
    assert not is_retryable(policy, {"type": "KeyError"})


def test_a_permanent_error_dead_letters_on_the_first_attempt() -> None:
    verdict = after_failure(POLICY, 1, {"type": "ValueError", "message": "bad codec", "retryable": False})
    assert not verdict.retry and verdict.reason == "permanent error: ValueError: bad codec"


@given(attempts=st.integers(1, 100), fraction=st.floats(0, 1))
def test_backoff_grows_but_stays_within_half_and_all_of_its_cap(attempts: int, fraction: float) -> None:
    cap = min(POLICY.backoff_max, POLICY.backoff_initial * 2 ** (attempts - 1))
    assert cap / 2 <= backoff(POLICY, attempts, fraction) <= cap


# --- dependencies ----------------------------------------------------------------------------------------


def test_a_needed_dependency_down_makes_begin_wait_naming_it_and_since_when() -> None:
    down = DependencyState("instagram-api", "down", 3, since=NOW - 60, next_probe_at=NOW + 12, message="503")
    decision = dependency_health(snap(dependencies={"instagram-api": down}))
    assert decision is not None and decision.action is Action.WAIT
    assert decision.reason.startswith("dependency instagram-api down since ")
    assert decision.retry_after == 12


def test_unknown_or_healthy_or_unneeded_dependencies_do_not_block() -> None:
    assert (
        dependency_health(snap(dependencies={"instagram-api": DependencyState("instagram-api", "up")}))
        is None
    )
    assert dependency_health(snap(dependencies={"instagram-api": DependencyState("instagram-api")})) is None
    assert dependency_health(snap(dependencies={"storage": DependencyState("storage", "down")})) is None


# --- limits ----------------------------------------------------------------------------------------------


def test_key_templates_render_per_field_and_skip_unknown_fields() -> None:
    assert render_key("{account}", {"account": "42"}) == "account:42"
    assert render_key("global", {}) == "global"
    assert render_key("{stage}-{account}", {"stage": "publish", "account": "42"}) == "publish-42"
    assert render_key("{account}", {"account": None}) is None


def test_a_full_concurrency_slot_waits_naming_the_key_and_its_use() -> None:
    decision = concurrency(snap(concurrency=(SlotUse("publish account:42", 3, 3),)))
    assert decision is not None and decision.reason == "concurrency publish account:42 3/3"
    assert concurrency(snap(concurrency=(SlotUse("publish account:42", 3, 2),))) is None


def test_a_spent_rate_limit_waits_until_the_oldest_start_leaves_the_window() -> None:
    use = RateUse("publish account:42", 50, 86400, 50, oldest_at=NOW - 86000)
    decision = rate(snap(rates=(use,)))
    assert decision is not None and decision.reason == "rate publish account:42 50/50 per 1d"
    assert decision.retry_after == 400


# --- the chain -------------------------------------------------------------------------------------------


def test_nothing_objecting_means_run_with_the_next_attempt() -> None:
    decision = decide(snap())
    assert decision.action is Action.RUN and decision.attempt == 1


def test_a_duplicate_is_skipped_even_after_a_cancel_and_a_cancel_beats_a_full_slot() -> None:
    cancelled = Cancellation("stop", "alice", NOW)
    done = Work(WorkState.SUCCEEDED, 1, "r1")
    assert decide(snap(work=done, cancellation=cancelled)).action is Action.SKIP
    full = (SlotUse("global", 1, 1),)
    assert decide(snap(cancellation=cancelled, concurrency=full)).action is Action.ABORT
    assert decide(snap(concurrency=full)).action is Action.WAIT


# --- stage overrides -------------------------------------------------------------------------------------


def test_a_paused_stage_waits_naming_who_paused_it_and_why() -> None:
    from stagewatch.domain.guards import StageOverride
    from stagewatch.domain.guards.overrides import stage_override

    paused = StageOverride(paused=True, reason="Instagram incident", actor="alice")
    decision = stage_override(snap(override=paused))
    assert decision is not None and decision.action is Action.WAIT
    assert decision.reason == "stage publish paused by alice: Instagram incident"
    assert decision.blocker == "stage publish paused"
    assert stage_override(snap()) is None


def test_a_capped_stage_waits_only_while_the_cap_is_reached() -> None:
    from stagewatch.domain.guards import StageOverride
    from stagewatch.domain.guards.overrides import stage_override

    capped = StageOverride(max_running=2, actor="bob")
    assert stage_override(snap(override=capped, stage_running=1)) is None
    decision = stage_override(snap(override=capped, stage_running=2))
    assert decision is not None and decision.reason == "stage publish capped at 2 running by bob (2 now)"


def test_a_pause_outranks_limits_but_not_a_cancel() -> None:
    from stagewatch.domain.guards import StageOverride

    paused = StageOverride(paused=True, reason="r", actor="alice")
    assert decide(snap(override=paused, concurrency=(SlotUse("global", 1, 1),))).reason.startswith(
        "stage publish paused"
    )
    assert decide(snap(override=paused, cancellation=Cancellation("x", "bob", NOW))).action is Action.ABORT
