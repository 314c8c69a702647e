"""Guarded runs: what a run asks the control plane and how the SDK acts on the answers. ``admit`` turns
the decision of ``begin`` into a lease or a signal (``Skip``, ``Wait``, ``DeadLettered``, ``Aborted``),
``complete`` reports the end, ``beat`` sends the heartbeats of guarded runs and stops the runs the
server says to stop.

The control plane failing is never the worker's failure: a run then goes ahead unguarded
(``fail_open=True``, telemetry as before) or is told to wait (``fail_open=False``), with a throttled
warning either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stagewatch.sdk.context import RunContext
from stagewatch.sdk.control import ControlPlane, ControlUnavailable
from stagewatch.sdk.decisions import DEFAULT_WAIT, Lease, refusal
from stagewatch.sdk.diagnostics import log, warn_throttled
from stagewatch.sdk.errors import Wait
from stagewatch.sdk.payloads import Record, compact
from stagewatch.sdk.run import Run
from stagewatch.sdk.spec import StageSpec


class Guard:
    """The control plane as one client's runs use it. ``where`` is the worker and revision."""

    def __init__(self, control: ControlPlane, where: Mapping[str, Any]) -> None:
        self.control = control
        self._where = dict(where)
        self._throttle = f"guard.{id(self)}"  # per client: one client's outage does not mute another's

    def admit(self, spec: StageSpec, context: RunContext) -> Lease | None:
        """The lease for a run the server lets go ahead; None to run it unguarded (the control plane
        failed and ``fail_open``). Raises the signal of a refusal, or ``Wait`` when the control plane
        failed and not ``fail_open``."""
        try:
            decision = self.control.begin(begin_request(spec, context, self._where))
        except ControlUnavailable as exc:
            return self._unavailable(spec, exc.detail, exc.retry_after)
        except Exception as exc:  # a bug here must not stop the worker's pipeline
            log.exception("sdk.guard.begin_crashed stage=%s item_id=%s", spec.name, context.item_id)
            return self._unavailable(spec, f"{type(exc).__name__}: {exc}", 0.0)
        signal = refusal(decision)
        if signal is not None:
            log.info("sdk.run.refused stage=%s item_id=%s decision=%s reason=%s",
                     spec.name, context.item_id, decision.kind, decision.reason)  # fmt: skip
            raise signal
        return decision.lease

    def complete(self, run: Run, outcome: str, fields: Record) -> bool:
        """Tell the server how ``run`` ended: ``outcome`` is ``succeeded``, ``failed`` or ``cancelled``,
        ``fields`` those of the terminal event (``error``, ``note``). False when the server did not take
        it: the caller then queues the terminal event instead."""
        body = compact({"outcome": outcome, "error": fields.get("error"), "note": fields.get("note")})
        try:
            self.control.complete(run.run_id, body)
        except ControlUnavailable as exc:
            warn_throttled(f"{self._throttle}.complete", "sdk.run.complete_failed run_id=%s detail=%s: "
                           "the outcome goes out as an event instead", run.run_id, exc.detail)  # fmt: skip
            return False
        return True

    def give_back(self, lease: Lease) -> None:
        """Complete a lease no run used (blocking; call it off the event loop)."""
        body = {"outcome": "cancelled", "note": "cancelled before the run began"}
        try:
            self.control.complete(lease.run_id, body)
        except ControlUnavailable as exc:
            log.warning("sdk.run.give_back_failed run_id=%s detail=%s: the lease times out instead",
                        lease.run_id, exc.detail)  # fmt: skip

    def beat(self, runs: list[Run], resources: Record) -> None:
        """One heartbeat request for ``runs``; stop each run the answer says to stop."""
        try:
            actions = self.control.heartbeat([heartbeat_of(run, resources) for run in runs])
        except ControlUnavailable as exc:
            warn_throttled(f"{self._throttle}.heartbeat", "sdk.run.heartbeat_failed runs=%d detail=%s",
                           len(runs), exc.detail)  # fmt: skip
            return
        for run in runs:
            action = actions.get(run.run_id)
            if action is not None and action.stop and run._stopper.stop(action.reason):
                log.info("sdk.run.stopped run_id=%s reason=%s", run.run_id, action.reason)

    def _unavailable(self, spec: StageSpec, detail: str, retry_after: float) -> Lease | None:
        then = "the run goes ahead unguarded" if spec.fail_open else "the run is told to wait"
        warn_throttled(f"{self._throttle}.begin", "sdk.run.begin_failed stage=%s item_id=%s detail=%s: %s",
                       spec.name, spec.item_id, detail, then)  # fmt: skip
        if spec.fail_open:
            return None
        raise Wait(retry_after or DEFAULT_WAIT, f"the control plane did not decide: {detail}")


def begin_request(spec: StageSpec, context: RunContext, where: Mapping[str, Any]) -> Record:
    """The body of ``POST /v1/runs/begin`` for a run about to start with ``context``'s trace ids."""
    return compact(
        {
            "stage": spec.name,
            "item_id": context.item_id,
            "pipeline": context.pipeline,
            "key": spec.key,
            "payload": spec.payload,
            "run_id": spec.run_id,
            "account": spec.account,
            "scenario": spec.scenario,
            "trace_id": context.trace_id,
            "span_id": context.span_id,
            **where,
        }
    )


def heartbeat_of(run: Run, resources: Record) -> Record:
    """One run's entry in ``POST /v1/runs/heartbeat``."""
    fields = {"progress": run.last_progress, "note": run.last_note, "resources": resources or None}
    return compact({"run_id": run.run_id, **fields})
