"""W3C trace context for the pipeline: carry one video's trace from the webhook, through Pub/Sub, to the
Cloud Run worker that publishes it to Instagram.

    # publisher, inside a run: put the run's trace on the Pub/Sub message
    publisher.publish(topic, data, **inject({}))

    # push endpoint: continue it
    with client.stage("process", video_id, traceparent=extract(message["attributes"])):
        ...

The header is ``00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>``
(https://www.w3.org/TR/trace-context/#traceparent-header). Over Pub/Sub, the official client libraries
write it to the message attribute ``googclient_traceparent`` (their OpenTelemetry setter prefixes every
propagated key with ``googclient_``); other publishers often use a plain ``traceparent`` attribute.
``inject`` writes both, ``extract`` reads ``googclient_traceparent`` first.

A malformed header is ignored (the trace restarts), never raised: a bad attribute must not cost a video.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import NamedTuple, Protocol

from stagewatch.sdk.context import RunContext, current_context

PUBSUB_ATTRIBUTE = "googclient_traceparent"
"""Where the official Pub/Sub client libraries put the W3C ``traceparent`` of the publish."""

PLAIN_ATTRIBUTE = "traceparent"
"""The plain W3C name, used by publishers that propagate the trace by hand."""

# version "-" trace-id "-" parent-id "-" trace-flags, all lowercase hex; a higher version may append
# "-"-separated fields, which are not parsed (W3C "Versioning of traceparent").
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
_INVALID_VERSION = "ff"
_OWS = " \t"


class TraceParent(NamedTuple):
    """What a valid ``traceparent`` says: the trace, the caller's span and whether the caller sampled."""

    trace_id: str
    span_id: str
    sampled: bool


class HasRunContext(Protocol):
    """Anything that knows its run's ids, such as ``stagewatch.Run``."""

    @property
    def context(self) -> RunContext: ...


def parse_traceparent(value: str | bytes | None) -> TraceParent | None:
    """The trace id, parent span id and sampled flag of a W3C ``traceparent``; None when it is absent or
    invalid. Version 00 must be exactly 55 characters of lowercase hex with non-zero ids; version ff is
    invalid; a higher version is read forward-compatibly (its first four fields, extra fields after a
    dash). Surrounding spaces and tabs (HTTP optional whitespace) are allowed. Never raises."""
    text = _as_text(value)
    match = _TRACEPARENT.fullmatch(text.strip(_OWS)) if text else None
    if match is None:
        return None
    version, trace, span, flags, rest = match.groups()
    if version == _INVALID_VERSION or (version == "00" and rest is not None):
        return None
    if _all_zero(trace) or _all_zero(span):
        return None
    return TraceParent(trace, span, bool(int(flags, 16) & 1))


def format_traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    """The version-00 ``traceparent`` naming span ``span_id`` of trace ``trace_id`` as the parent.
    Raises ``ValueError`` for ids that receivers would have to ignore (wrong length, not lowercase hex,
    all zero), so a bad header is caught where it is made, not silently dropped downstream."""
    header = f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"
    if parse_traceparent(header) is None:
        raise ValueError(f"not a valid W3C trace id / span id pair: {trace_id!r}, {span_id!r}")
    return header


def inject(
    attributes: MutableMapping[str, str] | None = None,
    run_or_context: HasRunContext | RunContext | None = None,
) -> MutableMapping[str, str]:
    """Write the run's ``traceparent`` into ``attributes`` (Pub/Sub message attributes, HTTP headers) as
    both ``googclient_traceparent`` and ``traceparent``, and return the same mapping (a new dict when
    ``attributes`` is None). The run is ``run_or_context`` (a ``Run`` or ``RunContext``) or else the
    current one; outside any run, ``attributes`` is returned unchanged."""
    carrier: MutableMapping[str, str] = {} if attributes is None else attributes
    context = _context_of(run_or_context)
    if context is not None:
        header = format_traceparent(context.trace_id, context.span_id)
        carrier[PUBSUB_ATTRIBUTE] = header
        carrier[PLAIN_ATTRIBUTE] = header
    return carrier


def extract(attributes: Mapping[str, str] | None) -> str | None:
    """The ``traceparent`` to continue from message ``attributes``: ``googclient_traceparent`` when it is
    valid, else ``traceparent``, else None. It comes back in version-00 form, ready to pass to
    ``client.stage(..., traceparent=...)``. Never raises."""
    if not isinstance(attributes, Mapping):
        return None
    for name in (PUBSUB_ATTRIBUTE, PLAIN_ATTRIBUTE):
        parsed = parse_traceparent(attributes.get(name))
        if parsed is not None:
            return format_traceparent(*parsed)
    return None


def _context_of(run_or_context: HasRunContext | RunContext | None) -> RunContext | None:
    if run_or_context is None:
        return current_context()
    if isinstance(run_or_context, RunContext):
        return run_or_context
    return run_or_context.context


def _as_text(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _all_zero(hex_id: str) -> bool:
    return hex_id.strip("0") == ""
