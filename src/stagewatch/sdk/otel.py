"""The OpenTelemetry bridge: each stagewatch run is also a real OTel span, so Cloud Trace, Jaeger or any
OTLP backend shows the pipeline's runs, with the SAME trace id and span id that stagewatch shows.

It is optional: without ``opentelemetry-sdk``, or when no SDK ``TracerProvider`` is configured (the
API's default is a no-op proxy), ``otel_available()`` is False and ``start_run_span`` returns None.

How the ids are made equal. The OTel SDK makes a span's ids itself: the trace id comes from the parent
(or, for a root span, from the tracer's ``IdGenerator``), the span id always from the ``IdGenerator``.
Two ways were possible:

- start the span first and let the run adopt the span id OTel chose. That changes when and where the
  run's ids are made (the run would wait for OTel), and a run whose trace came from
  ``item_created`` (no parent span to hang from) would need a made-up parent span that no backend has,
  which Cloud Trace and Jaeger show as a missing parent;
- keep the ids stagewatch made and hand them to OTel. This module does that: the tracer it uses
  (instrumentation scope ``stagewatch``, its own ``Tracer`` object, obtained from the configured
  provider) gets an ``IdGenerator`` that returns the ids pinned for the span being started, in a context
  variable, and otherwise defers to the generator the tracer had. Other tracers of the provider are not
  touched. A run continuing a ``traceparent`` becomes a child of the publisher's span; a run whose trace
  has no known parent span becomes a root span of that trace id.

Parent choice, in order: the current OTel span when it is in the run's trace (an enclosing run, or an
instrumented request handler that already continued the trace); else the ``parent`` traceparent when it
is in the run's trace (a remote parent, e.g. the Pub/Sub publisher; the span is then a CONSUMER span);
else none. A current span of another trace (e.g. Cloud Run's request span) is linked, not parented.

While the run is open its span is the current OTel span, so instrumented calls inside the stage
(httpx, database drivers) become its children.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from stagewatch.sdk.context import RunContext
from stagewatch.sdk.diagnostics import log, throttled
from stagewatch.sdk.errors import RunInterrupted
from stagewatch.sdk.payloads import MAX_MESSAGE, clip, error_type_name
from stagewatch.sdk.tracing import parse_traceparent

TRACER_NAME = "stagewatch"


@dataclass(slots=True)
class RunSpan:
    """An open OTel span for one run. ``trace_id`` and ``span_id`` are the span's ids in lowercase hex:
    equal to the run's ``context.trace_id`` and ``context.span_id``."""

    span: Any
    token: object
    trace_id: str
    span_id: str


# --- is OpenTelemetry there? -----------------------------------------------------------------------


@functools.cache
def _api() -> Any:
    """The OTel modules this bridge uses, imported on first use; None when they are not installed."""
    try:
        from opentelemetry import context, trace
        from opentelemetry.sdk.trace import TracerProvider
    except Exception:
        return None
    return SimpleNamespace(context=context, trace=trace, TracerProvider=TracerProvider)


def otel_available(provider: Any = None) -> bool:
    """True when ``opentelemetry-sdk`` is installed and ``provider`` (default: the global one set with
    ``trace.set_tracer_provider``) is an SDK ``TracerProvider`` that is not disabled."""
    return _tracer_for(provider) is not None


# --- a tracer whose ids stagewatch chooses -----------------------------------------------------------


class _Pin:
    """The ids of the span being started; each is used once."""

    __slots__ = ("span_id", "trace_id")

    def __init__(self, trace_id: int, span_id: int) -> None:
        self.trace_id: int | None = trace_id
        self.span_id: int | None = span_id


_pinned: ContextVar[_Pin | None] = ContextVar("stagewatch_otel_pin", default=None)


class PinnedIdGenerator:
    """An OTel ``IdGenerator`` that returns the ids pinned for the span being started by this bridge,
    and otherwise those of the generator it wraps."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    def generate_trace_id(self) -> int:
        pin = _pinned.get()
        if pin is None or pin.trace_id is None:
            return int(self.fallback.generate_trace_id())
        value, pin.trace_id = pin.trace_id, None
        return value

    def generate_span_id(self) -> int:
        pin = _pinned.get()
        if pin is None or pin.span_id is None:
            return int(self.fallback.generate_span_id())
        value, pin.span_id = pin.span_id, None
        return value

    def is_trace_id_random(self) -> bool:
        """stagewatch's trace ids are random (``os.urandom``), like the default generator's."""
        check = getattr(self.fallback, "is_trace_id_random", None)
        return bool(check()) if callable(check) else False


_tracers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_tracers_lock = threading.Lock()


def _tracer_for(provider: Any) -> Any:
    """This bridge's tracer from ``provider`` (default: the global one), with pinned ids; None when
    OTel is missing, the provider is not the SDK's, or the SDK is disabled."""
    api = _api()
    if api is None:
        return None
    provider = provider if provider is not None else api.trace.get_tracer_provider()
    if not isinstance(provider, api.TracerProvider):
        return None
    with _tracers_lock:
        if provider not in _tracers:
            _tracers[provider] = _pinned_tracer(provider)
        return _tracers[provider]


def _pinned_tracer(provider: Any) -> Any:
    tracer = provider.get_tracer(TRACER_NAME)
    if not hasattr(tracer, "id_generator"):  # OTEL_SDK_DISABLED=true gives a no-op tracer
        return None
    if not isinstance(tracer.id_generator, PinnedIdGenerator):
        tracer.id_generator = PinnedIdGenerator(tracer.id_generator)
    return tracer


# --- runs as spans ---------------------------------------------------------------------------------


def start_run_span(
    context: RunContext,
    name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent: str | None = None,
    provider: Any = None,
) -> RunSpan | None:
    """Start the OTel span of the run ``context`` and make it the current span. Its trace id and span id
    are the run's. ``name`` defaults to the stage; ``attributes`` (scalars) are added to the run's own
    (``stagewatch.item_id``, ``.run_id``, ``.stage``, ``.attempt``, ``.pipeline``); ``parent`` is the
    ``traceparent`` the run continues, if any. Returns None (no span) when OTel is not available, and
    never raises. End it with ``end_run_span``, in the same thread or task."""
    try:
        tracer = _tracer_for(provider)
        return None if tracer is None else _start(tracer, context, name, attributes, parent)
    except Exception:
        if throttled("otel.start"):
            log.exception("sdk.otel.start_failed run_id=%s: no OTel span for this run", context.run_id)
        return None


def end_run_span(handle: RunSpan | None, error: BaseException | None = None) -> None:
    """End a run's span: status OK on success; ERROR with the exception recorded when ``error`` is a
    failure; status left unset, with a ``stagewatch.interrupted`` event, when the control plane (or a
    cancel, or Ctrl-C) stopped the run. Restores the OTel context of before the run. Never raises."""
    if handle is None:
        return
    try:
        _set_outcome(handle.span, error)
        handle.span.end()
    except Exception:
        if throttled("otel.end"):
            log.exception("sdk.otel.end_failed span_id=%s", handle.span_id)
    finally:
        _detach(handle.token)


def _start(
    tracer: Any,
    context: RunContext,
    name: str | None,
    attributes: Mapping[str, Any] | None,
    parent: str | None,
) -> RunSpan:
    api = _api()
    parent_context, kind, links = _parent_of(api, context, parent)
    token = _pinned.set(_Pin(int(context.trace_id, 16), int(context.span_id, 16)))
    try:
        span = tracer.start_span(
            name or context.stage,
            context=parent_context,
            kind=kind,
            attributes=span_attributes(context, attributes),
            links=links,
        )
    finally:
        _pinned.reset(token)
    ids = span.get_span_context()
    attached = api.context.attach(api.trace.set_span_in_context(span))
    return RunSpan(span, attached, f"{ids.trace_id:032x}", f"{ids.span_id:016x}")


def _parent_of(api: Any, context: RunContext, parent: str | None) -> tuple[Any, Any, list[Any]]:
    """The OTel context to start the run's span in, its span kind, and its links (see the module doc)."""
    trace, kind = api.trace, api.trace.SpanKind
    current = trace.get_current_span().get_span_context()
    if current.is_valid and f"{current.trace_id:032x}" == context.trace_id:
        return api.context.get_current(), kind.INTERNAL, []
    links = [trace.Link(current)] if current.is_valid else []
    remote = parse_traceparent(parent)
    if remote is None or remote.trace_id != context.trace_id:
        return api.context.Context(), kind.INTERNAL, links
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if remote.sampled else trace.TraceFlags.DEFAULT)
    span_context = trace.SpanContext(int(remote.trace_id, 16), int(remote.span_id, 16), True, flags)
    return (
        trace.set_span_in_context(trace.NonRecordingSpan(span_context), api.context.Context()),
        kind.CONSUMER,
        links,
    )


def span_attributes(context: RunContext, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's span attributes: its ids, then ``extra``'s scalar values (others are left out)."""
    attributes: dict[str, Any] = {
        "stagewatch.item_id": context.item_id,
        "stagewatch.run_id": context.run_id,
        "stagewatch.stage": context.stage,
        "stagewatch.attempt": context.attempt,
    }
    if context.pipeline:
        attributes["stagewatch.pipeline"] = context.pipeline
    for key, value in (extra or {}).items():
        if isinstance(value, str | bool | int | float):
            attributes[str(key)] = value
    return attributes


def _set_outcome(span: Any, error: BaseException | None) -> None:
    trace = _api().trace
    if error is None:
        span.set_attribute("stagewatch.outcome", "succeeded")
        span.set_status(trace.Status(trace.StatusCode.OK))
    elif isinstance(error, RunInterrupted) or not isinstance(error, Exception):
        span.set_attribute("stagewatch.outcome", "cancelled")
        span.add_event(
            "stagewatch.interrupted",
            {"exception.type": error_type_name(error), "exception.message": str(error)},
        )
    else:
        span.set_attribute("stagewatch.outcome", "failed")
        span.record_exception(error)
        description = clip(f"{error_type_name(error)}: {error}", MAX_MESSAGE)
        span.set_status(trace.Status(trace.StatusCode.ERROR, description))


def _detach(token: object) -> None:
    # Ended in another context than it began in: OTel logs it, and there is nothing to undo here.
    with contextlib.suppress(Exception):
        _api().context.detach(token)
