"""Tracing: the call's span joins the caller's trace, attempts are its children, and
every upstream request names the span it belongs to (or forwards the caller's)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from unigate.gateway import callstate
from unigate.gateway.config import TracingSettings
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.observability.tracing import Tracing, finish
from unigate.gateway.providers.transport import HttpTransport, Target

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
UNSAMPLED = f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"
CHAT = "/unigate.v1.InferenceService/Chat"
TARGET = Target("openai-main", "primary", secrets=("sk-secret",))


@dataclass
class Upstream:
    """A loopback HTTP server that remembers the headers of every request."""

    url: str
    headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def traceparents(self) -> list[str | None]:
        return [h.get("traceparent") for h in self.headers]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    seen = Upstream("")

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.headers.append({k.lower(): v for k, v in request.headers.items()})
        if request.path == "/v1/stream":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: {}\n\ndata: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    seen.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield seen
    await runner.cleanup()


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exported: InMemorySpanExporter) -> Iterator[Tracing]:
    traced = Tracing(exported, batch=False)
    yield traced
    traced.shutdown()


def by_name(exported: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exported.get_finished_spans()}


def traceparent_of(span: ReadableSpan) -> str:
    """The header naming a sampled span of a trace the caller started."""
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"


async def send_both(transport: HttpTransport, upstream: Upstream) -> None:
    """One plain request and one stream, as adapters send them."""
    await transport.request("GET", f"{upstream.url}/v1/models", target=TARGET, timeout=5)
    async with transport.stream(
        f"{upstream.url}/v1/stream", target=TARGET, timeout=5, json={"stream": True}
    ) as response:
        await response.read()


def test_the_call_span_joins_the_callers_trace(
    tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    metadata = (("user-agent", "grpc-python"), ("traceparent", SAMPLED), ("tracestate", "k=v"))
    with tracing.call_span(CHAT, metadata) as span:
        span.set_attribute("unigate.alias", "gpt")
        finish(span, "OK", "")

    (call,) = exported.get_finished_spans()
    assert call.name == "unigate.v1.InferenceService/Chat"
    assert call.kind is SpanKind.SERVER
    assert f"{call.context.trace_id:032x}" == CALLER_TRACE
    assert call.parent is not None and call.parent.is_remote
    assert f"{call.parent.span_id:016x}" == CALLER_SPAN
    assert call.context.trace_state.get("k") == "v"
    assert dict(call.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "unigate.v1.InferenceService",
        "rpc.method": "Chat",
        "unigate.alias": "gpt",
        "rpc.grpc.status_code": 0,
    }
    assert call.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("metadata", [None, (("traceparent", "00-not-a-trace-01"),)])
def test_without_a_valid_traceparent_the_call_starts_a_trace(
    tracing: Tracing, exported: InMemorySpanExporter, metadata: tuple[tuple[str, str]] | None
) -> None:
    with tracing.call_span(CHAT, metadata) as span:
        finish(span, "OK")
    (call,) = exported.get_finished_spans()
    assert call.parent is None
    assert f"{call.context.trace_id:032x}" != CALLER_TRACE


def test_a_server_failure_is_an_error_with_its_reason(
    tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    with tracing.call_span(CHAT, ()) as span:
        tracing.finish(span, "UNAVAILABLE", "UPSTREAM_UNAVAILABLE")
    (call,) = exported.get_finished_spans()
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description == "UNAVAILABLE UPSTREAM_UNAVAILABLE"
    assert call.attributes is not None
    assert call.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert call.attributes["error.type"] == "UPSTREAM_UNAVAILABLE"


def test_a_callers_mistake_is_recorded_but_not_an_error(
    tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    with tracing.call_span(CHAT, ()) as span:
        tracing.finish(span, "RESOURCE_EXHAUSTED", "RATE_LIMITED")
    (call,) = exported.get_finished_spans()
    assert call.status.status_code is StatusCode.UNSET  # OTel's gRPC server conventions
    assert call.attributes is not None
    assert call.attributes["rpc.grpc.status_code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert call.attributes["error.type"] == "RATE_LIMITED"


def test_an_exception_leaving_an_unfinished_span_finishes_it(
    tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    with pytest.raises(GatewayError), tracing.call_span(CHAT, ()):
        raise GatewayError(grpc.StatusCode.NOT_FOUND, Reason.MODEL_NOT_FOUND, "no such alias")
    with pytest.raises(GatewayError), tracing.call_span(CHAT, ()) as span:
        finish(span, "UNAVAILABLE", "UPSTREAM_UNAVAILABLE")  # the caller's word stands
        raise GatewayError(grpc.StatusCode.NOT_FOUND, Reason.MODEL_NOT_FOUND, "no such alias")

    first, second = exported.get_finished_spans()
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["error.type"] == "MODEL_NOT_FOUND"
    assert first.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert second.attributes["error.type"] == "UPSTREAM_UNAVAILABLE"
    assert not first.events, "exceptions are not recorded: their chains can hold URLs"


def test_an_attempt_is_a_client_child_of_the_call(
    tracing: Tracing, exported: InMemorySpanExporter
) -> None:
    with tracing.call_span(CHAT, (("traceparent", SAMPLED),)) as call_span:
        with tracing.attempt_span("primary", "openai-main", "openai", "gpt-4o"):
            pass
        with (
            pytest.raises(GatewayError),
            tracing.attempt_span("backup", "anthropic", "anthropic", "claude"),
        ):
            raise GatewayError(grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_UNAVAILABLE, "down")
        finish(call_span, "OK")

    spans = by_name(exported)
    call, ok, failed = spans[CHAT[1:]], spans["upstream primary"], spans["upstream backup"]
    for attempt in (ok, failed):
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.parent is not None
        assert attempt.parent.span_id == call.context.span_id
        assert attempt.context.trace_id == call.context.trace_id
    assert dict(ok.attributes or {}) == {
        "unigate.deployment": "primary",
        "unigate.provider": "openai-main",
        "unigate.provider_kind": "openai",
        "gen_ai.request.model": "gpt-4o",
    }
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "UPSTREAM_UNAVAILABLE"


async def test_upstream_requests_name_the_attempt_span(
    tracing: Tracing, exported: InMemorySpanExporter, upstream: Upstream
) -> None:
    transport = HttpTransport(tracing=tracing)
    try:
        with tracing.call_span(CHAT, (("traceparent", SAMPLED),)) as span:
            with tracing.attempt_span("primary", "openai-main", "openai", "gpt-4o"):
                await send_both(transport, upstream)
            finish(span, "OK")
    finally:
        await transport.close()

    attempt = by_name(exported)["upstream primary"]
    assert f"{attempt.context.trace_id:032x}" == CALLER_TRACE
    assert upstream.traceparents == [traceparent_of(attempt)] * 2


async def test_attempt_spans_describe_the_request_without_query_or_headers(
    tracing: Tracing, exported: InMemorySpanExporter, upstream: Upstream
) -> None:
    transport = HttpTransport(tracing=tracing)
    try:
        with tracing.attempt_span("primary", "gemini", "gemini", "gemini-2.5-flash"):
            await transport.request(
                "POST",
                f"{upstream.url}/v1beta/models/x:generateContent?key=sk-secret",
                target=TARGET,
                timeout=5,
                headers={"x-goog-api-key": "sk-secret"},
                json={},
            )
    finally:
        await transport.close()

    (attempt,) = exported.get_finished_spans()
    attributes = dict(attempt.attributes or {})
    port = int(upstream.url.rpartition(":")[2])
    assert attributes["url.full"] == f"{upstream.url}/v1beta/models/x:generateContent"
    assert attributes["http.request.method"] == "POST"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == port
    assert attributes["http.response.status_code"] == 200
    assert not any("sk-secret" in str(v) for v in attributes.values())


async def test_with_tracing_off_the_callers_traceparent_is_forwarded_unchanged(
    upstream: Upstream,
) -> None:
    transport = HttpTransport()
    token = callstate.traceparent.set(UNSAMPLED)
    try:
        await send_both(transport, upstream)
    finally:
        callstate.traceparent.reset(token)
        await transport.close()
    assert upstream.traceparents == [UNSAMPLED, UNSAMPLED]


async def test_with_nothing_to_propagate_no_header_is_sent(upstream: Upstream) -> None:
    transport = HttpTransport()
    try:
        await send_both(transport, upstream)
    finally:
        await transport.close()
    assert upstream.traceparents == [None, None]
    assert not any("tracestate" in h for h in upstream.headers)


async def test_with_tracing_on_but_no_span_the_callers_traceparent_is_forwarded(
    tracing: Tracing, upstream: Upstream
) -> None:
    transport = HttpTransport(tracing=tracing)
    token = callstate.traceparent.set(SAMPLED)
    try:
        await send_both(transport, upstream)
    finally:
        callstate.traceparent.reset(token)
        await transport.close()
    assert upstream.traceparents == [SAMPLED, SAMPLED]


@pytest.mark.parametrize(
    ("incoming", "recorded", "flags"),
    [
        # A trace that starts here: ratio 0 keeps none. 02 is W3C level 2's "random
        # trace id" flag, which OpenTelemetry sets on the ids it makes; not sampled.
        (None, False, "02"),
        (UNSAMPLED, False, "00"),  # the caller did not sample: neither do we
        (SAMPLED, True, "01"),  # the caller sampled: followed, whatever the ratio
    ],
)
async def test_ratio_zero_follows_the_callers_sampling_decision(
    exported: InMemorySpanExporter,
    upstream: Upstream,
    incoming: str | None,
    recorded: bool,
    flags: str,
) -> None:
    tracing = Tracing(exported, sample_ratio=0.0, batch=False)
    transport = HttpTransport(tracing=tracing)
    metadata = (("traceparent", incoming),) if incoming else ()
    try:
        with tracing.call_span(CHAT, metadata) as span:
            with tracing.attempt_span("primary", "openai-main", "openai", "gpt-4o") as attempt:
                await transport.request(
                    "GET", f"{upstream.url}/v1/models", target=TARGET, timeout=5
                )
            finish(span, "OK")
    finally:
        await transport.close()
        tracing.shutdown()

    assert bool(exported.get_finished_spans()) is recorded
    (sent,) = upstream.traceparents
    assert sent is not None
    version, trace_id, span_id, sent_flags = sent.split("-")
    assert (version, sent_flags) == ("00", flags)
    assert int(sent_flags, 16) & 1 == recorded  # the sampled bit
    assert span_id == f"{attempt.get_span_context().span_id:016x}"
    if incoming:
        assert trace_id == CALLER_TRACE
    else:
        assert trace_id != "0" * 32


def test_settings_decide_whether_and_where_spans_go() -> None:
    assert Tracing.from_settings(TracingSettings(enabled=False)) is None
    for exporter in ("console", "otlp"):
        settings = TracingSettings(enabled=True, exporter=exporter, sample_ratio=0.5)
        tracing = Tracing.from_settings(settings)
        assert tracing is not None
        tracing.shutdown()
