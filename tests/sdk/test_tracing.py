"""W3C trace context (parse, format, inject, extract) and the OpenTelemetry bridge: a run's OTel span has
the run's trace and span ids, hangs from the right parent, and ends with the right status."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import stagewatch
from stagewatch import Client
from stagewatch.sdk import ids
from stagewatch.sdk.context import RunContext
from stagewatch.sdk.otel import end_run_span, otel_available, start_run_span
from stagewatch.sdk.tracing import (
    PLAIN_ATTRIBUTE,
    PUBSUB_ATTRIBUTE,
    TraceParent,
    extract,
    format_traceparent,
    inject,
    parse_traceparent,
)
from tests.conftest import LiveServer
from tests.sdk.conftest import get_item, new_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
SPEC_EXAMPLE = f"00-{TRACE}-{SPAN}-01"


# --- parsing and formatting ------------------------------------------------------------------------


def test_the_spec_examples_parse() -> None:
    assert parse_traceparent(SPEC_EXAMPLE) == TraceParent(TRACE, SPAN, True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == (TRACE, SPAN, False)
    trace_id, span_id, sampled = parse_traceparent(SPEC_EXAMPLE) or ("", "", False)
    assert (trace_id, span_id, sampled) == (TRACE, SPAN, True)


@pytest.mark.parametrize("sampled", [True, False])
def test_format_and_parse_round_trip(sampled: bool) -> None:
    for _ in range(200):
        trace_id, span_id = ids.trace_id(), ids.span_id()
        header = format_traceparent(trace_id, span_id, sampled)
        assert len(header) == 55
        assert parse_traceparent(header) == (trace_id, span_id, sampled)


@pytest.mark.parametrize(
    ("flags", "sampled"),
    [("01", True), ("00", False), ("03", True), ("02", False), ("09", True), ("ff", True)],
)
def test_only_the_sampled_bit_of_the_flags_counts(flags: str, sampled: bool) -> None:
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-{flags}") == (TRACE, SPAN, sampled)


@pytest.mark.parametrize(
    "header",
    [
        f"01-{TRACE}-{SPAN}-01",  # a higher version of exactly 55 characters
        f"cc-{TRACE}-{SPAN}-01-what-the-future-adds",  # a higher version with more fields
        f"  {SPEC_EXAMPLE}\t",  # HTTP optional whitespace around the value
        SPEC_EXAMPLE.encode(),  # bytes, as some frameworks give header values
    ],
)
def test_valid_variants_are_read(header: str | bytes) -> None:
    assert parse_traceparent(header) == (TRACE, SPAN, True)


BAD_HEADERS = {
    "none": None,
    "empty": "",
    "spaces": "   ",
    "garbage": "garbage",
    "uppercase trace-id": f"00-{TRACE.upper()}-{SPAN}-01",
    "uppercase span-id": f"00-{TRACE}-{SPAN.upper()}-01",
    "uppercase flags": f"00-{TRACE}-{SPAN}-0A",
    "uppercase version": f"0A-{TRACE}-{SPAN}-01",
    "version ff": f"ff-{TRACE}-{SPAN}-01",
    "version 00 with an extra field": f"{SPEC_EXAMPLE}-extra",
    "higher version, junk after flags": f"01-{TRACE}-{SPAN}-01x",
    "all-zero trace-id": f"00-{'0' * 32}-{SPAN}-01",
    "all-zero span-id": f"00-{TRACE}-{'0' * 16}-01",
    "short trace-id": f"00-{TRACE[:-1]}-{SPAN}-01",
    "long trace-id": f"00-{TRACE}0-{SPAN}-01",
    "short span-id": f"00-{TRACE}-{SPAN[:-1]}-01",
    "long span-id": f"00-{TRACE}-{SPAN}0-01",
    "one-digit flags": f"00-{TRACE}-{SPAN}-1",
    "three-digit flags": f"00-{TRACE}-{SPAN}-001",
    "missing flags": f"00-{TRACE}-{SPAN}",
    "one-digit version": f"0-{TRACE}-{SPAN}-01",
    "non-hex letter": f"00-{TRACE[:-1]}g-{SPAN}-01",
    "non-ascii digits": f"00-{'٣' * 32}-{SPAN}-01",
    "underscores": f"00_{TRACE}_{SPAN}_01",
    "trailing newline": f"{SPEC_EXAMPLE}\n",
    "space inside": f"00- {TRACE}-{SPAN}-01",
    "junk before": f"x00-{TRACE}-{SPAN}-01",
    "cloud trace format": f"{TRACE}/12345;o=1",
    "non-ascii bytes": b"\xff\xfe",
    "an int": 42,
    "a list": [SPEC_EXAMPLE],
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_every_bad_header_shape_is_ignored_never_raised(header: object) -> None:
    assert parse_traceparent(header) is None  # type: ignore[arg-type]
    assert extract({PUBSUB_ATTRIBUTE: header}) is None  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("trace_id", "span_id"), [("0" * 32, SPAN), (TRACE, "0" * 16), (TRACE.upper(), SPAN), ("x", "y")]
)
def test_format_refuses_ids_receivers_would_ignore(trace_id: str, span_id: str) -> None:
    with pytest.raises(ValueError, match="not a valid W3C"):
        format_traceparent(trace_id, span_id)


# --- inject and extract ----------------------------------------------------------------------------


def test_inject_writes_both_attributes_from_the_current_run() -> None:
    client = Client(enabled=False)
    assert inject({"video": "v-1"}) == {"video": "v-1"}  # outside any run: unchanged
    with client.stage("enqueue", "v-1") as run:
        attributes = {"video": "v-1"}
        assert inject(attributes) is attributes
        assert attributes == {
            "video": "v-1",
            PUBSUB_ATTRIBUTE: run.traceparent,
            PLAIN_ATTRIBUTE: run.traceparent,
        }
        assert inject() == {PUBSUB_ATTRIBUTE: run.traceparent, PLAIN_ATTRIBUTE: run.traceparent}
    client.close()


def test_inject_uses_a_given_run_or_context_over_the_current_one() -> None:
    client = Client(enabled=False)
    with client.stage("download", "v-1") as first:
        pass
    with client.stage("process", "v-2") as current:
        assert inject({}, first)[PUBSUB_ATTRIBUTE] == first.traceparent
        assert inject({}, first.context)[PLAIN_ATTRIBUTE] == first.traceparent
        assert inject({})[PLAIN_ATTRIBUTE] == current.traceparent
    client.close()


def test_extract_prefers_the_pubsub_client_attribute_then_the_plain_one() -> None:
    other = format_traceparent(ids.trace_id(), ids.span_id())
    assert extract({PUBSUB_ATTRIBUTE: SPEC_EXAMPLE, PLAIN_ATTRIBUTE: other}) == SPEC_EXAMPLE
    assert extract({PLAIN_ATTRIBUTE: other}) == other
    assert extract({PUBSUB_ATTRIBUTE: "garbage", PLAIN_ATTRIBUTE: other}) == other  # first valid one
    assert extract({PUBSUB_ATTRIBUTE: f"cc-{TRACE}-{SPAN}-01-more"}) == SPEC_EXAMPLE  # re-emitted as 00
    assert extract({}) is None and extract(None) is None
    assert extract("not a mapping") is None  # type: ignore[arg-type]


def test_inject_then_extract_continues_the_trace_in_another_client(tmp_path: Path) -> None:
    publisher, worker = Client(enabled=False), Client(enabled=False)
    with publisher.stage("enqueue", "v-9") as run:
        attributes = inject({})
    with worker.stage("process", "v-9", traceparent=extract(attributes)) as child:
        assert child.trace_id == run.trace_id and child.span_id != run.span_id
    publisher.close()
    worker.close()


# --- the OpenTelemetry bridge ----------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def run_context(stage: str = "process", trace_id: str | None = None) -> RunContext:
    return RunContext(
        new_id(), ids.run_id(), stage, trace_id or ids.trace_id(), ids.span_id(), 2, "instagram"
    )


def hex_ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    assert span.context is not None
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}", parent


def test_otel_is_available_only_with_an_sdk_provider(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = spans
    assert otel_available(provider)
    assert not otel_available(trace.NoOpTracerProvider())
    assert not otel_available()  # this process never set a global provider: the API's no-op proxy
    assert start_run_span(run_context()) is None
    end_run_span(None, None)  # a run without a span ends quietly


def test_a_root_run_span_has_the_run_s_trace_and_span_ids(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    context = run_context()
    handle = start_run_span(context, attributes={"account": "acct-1", "bad": [1]}, provider=provider)
    assert handle is not None and (handle.trace_id, handle.span_id) == (context.trace_id, context.span_id)
    assert trace.get_current_span() is handle.span  # instrumented calls inside the stage are its children
    end_run_span(handle, None)
    assert not trace.get_current_span().get_span_context().is_valid  # the OTel context is restored
    (span,) = exporter.get_finished_spans()
    assert hex_ids(span) == (context.trace_id, context.span_id, None)
    assert (span.name, span.kind, span.status.status_code) == ("process", SpanKind.INTERNAL, StatusCode.OK)
    assert dict(span.attributes or {}) == {
        "stagewatch.item_id": context.item_id, "stagewatch.run_id": context.run_id,
        "stagewatch.stage": "process", "stagewatch.attempt": 2, "stagewatch.pipeline": "instagram",
        "account": "acct-1", "stagewatch.outcome": "succeeded",
    }  # fmt: skip


def test_a_run_continuing_a_traceparent_is_a_consumer_child_of_the_publisher_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    publisher_span = ids.span_id()
    context = run_context(trace_id=TRACE)
    handle = start_run_span(context, parent=format_traceparent(TRACE, publisher_span), provider=provider)
    end_run_span(handle, None)
    (span,) = exporter.get_finished_spans()
    assert hex_ids(span) == (TRACE, context.span_id, publisher_span)
    assert span.kind == SpanKind.CONSUMER and span.parent is not None and span.parent.is_remote


def test_an_unsampled_parent_gives_no_recorded_span_but_the_same_ids(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    context = run_context(trace_id=TRACE)
    handle = start_run_span(context, parent=format_traceparent(TRACE, SPAN, sampled=False), provider=provider)
    assert handle is not None and (handle.trace_id, handle.span_id) == (TRACE, context.span_id)
    end_run_span(handle, None)
    assert exporter.get_finished_spans() == ()


def test_nested_runs_nest_and_failures_and_interruptions_set_the_status(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    outer_context = run_context("publish")
    outer = start_run_span(outer_context, provider=provider)
    failing_context = run_context("publish", trace_id=outer_context.trace_id)
    failing = start_run_span(failing_context, "publish.media_publish", provider=provider)
    end_run_span(failing, ValueError("media container status ERROR"))
    skipped = start_run_span(run_context("publish", trace_id=outer_context.trace_id), provider=provider)
    end_run_span(skipped, stagewatch.Skip("already published"))
    end_run_span(outer, None)
    failed, interrupted, parent = exporter.get_finished_spans()
    assert hex_ids(failed) == (outer_context.trace_id, failing_context.span_id, outer_context.span_id)
    assert failed.name == "publish.media_publish" and failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "ValueError: media container status ERROR"
    assert [event.name for event in failed.events] == ["exception"]
    assert interrupted.status.status_code == StatusCode.UNSET
    assert [event.name for event in interrupted.events] == ["stagewatch.interrupted"]
    assert (interrupted.attributes or {})["stagewatch.outcome"] == "cancelled"
    assert hex_ids(parent)[2] is None


def test_a_current_span_of_another_trace_is_linked_not_parented(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    request_tracer = provider.get_tracer("http.server")
    with request_tracer.start_as_current_span("POST /pubsub/process") as request_span:
        context = run_context(trace_id=TRACE)
        handle = start_run_span(context, parent=format_traceparent(TRACE, SPAN), provider=provider)
        end_run_span(handle, None)
    run_span, request = exporter.get_finished_spans()
    assert hex_ids(run_span) == (TRACE, context.span_id, SPAN)
    assert [link.context.span_id for link in run_span.links] == [request_span.get_span_context().span_id]
    assert f"{request.context.trace_id:032x}" != TRACE  # other tracers keep their own random ids


def test_the_otel_span_and_the_server_show_the_same_trace(
    client: Client, sdk_server: LiveServer, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    vid, publisher = new_id(), format_traceparent(ids.trace_id(), ids.span_id())
    with client.stage("process", vid, traceparent=publisher) as run:
        handle = start_run_span(run.context, parent=publisher, provider=provider)
    end_run_span(handle, None)
    assert client.flush()
    (server_run,) = get_item(sdk_server, vid)["runs"]
    (span,) = exporter.get_finished_spans()
    assert hex_ids(span) == (server_run["trace_id"], server_run["span_id"], publisher[36:52])


GLOBAL_PROVIDER = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from stagewatch.sdk import ids
from stagewatch.sdk.context import RunContext
from stagewatch.sdk.otel import end_run_span, otel_available, start_run_span

before = otel_available()
trace.set_tracer_provider(TracerProvider())
context = RunContext("v-1", ids.run_id(), "process", ids.trace_id(), ids.span_id())
handle = start_run_span(context)
end_run_span(handle, None)
same = handle is not None and (handle.trace_id, handle.span_id) == (context.trace_id, context.span_id)
print(json.dumps([before, otel_available(), same]))
"""

WITHOUT_OPTIONAL_PACKAGES = """
import json, logging, sys

class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"opentelemetry", "structlog"}:
            raise ImportError(f"{name} is not installed")
        return None

sys.meta_path.insert(0, Missing())
import stagewatch
from stagewatch.sdk import ids, logs, otel, pubsub, tracing
from stagewatch.sdk.context import RunContext

context = RunContext("v-1", ids.run_id(), "process", ids.trace_id(), ids.span_id())
shipped = []

class Sink:
    def emit_log(self, record):
        shipped.append(record)

processor = logs.structlog_processor(Sink())
processor(None, "info", {"event": "hello"})
print(json.dumps([otel.otel_available(), otel.start_run_span(context) is None, len(shipped),
                  "opentelemetry" in sys.modules, "structlog" in sys.modules]))
"""


def run_script(script: str) -> list[object]:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: list[object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_global_tracer_provider_is_used_once_it_is_set() -> None:
    assert run_script(GLOBAL_PROVIDER) == [False, True, True]


def test_without_opentelemetry_and_structlog_the_bridges_are_quietly_off() -> None:
    assert run_script(WITHOUT_OPTIONAL_PACKAGES) == [False, True, 1, False, False]


_STAGE_SPAN_SCRIPT = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import stagewatch

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
client = stagewatch.Client(enabled=False)
try:
    with client.stage("process", "v-otel") as run:
        raise RuntimeError("ffmpeg exited 1")
except RuntimeError:
    pass
(span,) = exporter.get_finished_spans()
ctx = span.get_span_context()
print(format(ctx.trace_id, "032x") == run.trace_id, format(ctx.span_id, "016x") == run.span_id,
      span.status.status_code.name)
"""


def test_a_stage_run_is_also_an_opentelemetry_span_with_the_same_ids() -> None:
    import subprocess
    import sys

    # A fresh process: OpenTelemetry's global provider can be set only once per process.
    out = subprocess.run(
        [sys.executable, "-c", _STAGE_SPAN_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "ERROR"]
