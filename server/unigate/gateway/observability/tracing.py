"""OpenTelemetry spans: one SERVER span per call, one CLIENT span per upstream attempt.

Each gateway owns its TracerProvider (the global one is never set, so several
gateways can run in one process). The caller's W3C `traceparent`/`tracestate`
become the call span's parent; the transport injects the current span into every
upstream request (`inject`). Sampling is ParentBased(TraceIdRatioBased(ratio)):
a caller's sampling decision is followed either way, and `sample_ratio` decides
only for traces that start here.

Spans never carry secrets: no headers, and URLs as scheme, host and path only.
Exceptions are not recorded as events (their stack traces chain aiohttp errors,
whose text can hold a URL with its query string); a failure sets `error.type` to
the ErrorInfo reason (or the exception's class) and the span's status to ERROR.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import grpc
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from unigate.gateway.errors import status_of

if TYPE_CHECKING:
    from unigate.gateway.config import TracingSettings

# gRPC metadata: a tuple of pairs, or grpc.aio.Metadata (a collection of pairs).
Metadata = Collection[tuple[str, str | bytes]]
_GRPC_CODES = {code.name: code.value[0] for code in grpc.StatusCode}
_STATUS_ATTRIBUTE = "rpc.grpc.status_code"


class _MetadataGetter(Getter[Metadata]):
    """Reads W3C headers from gRPC metadata (lower-case keys, str or bytes values)."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        values = [v if isinstance(v, str) else v.decode("latin-1") for k, v in carrier if k == key]
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [k for k, _ in carrier]


_METADATA = _MetadataGetter()


class Tracing:
    def __init__(
        self,
        exporter: SpanExporter,
        *,
        service_name: str = "unigate",
        sample_ratio: float = 1.0,
        batch: bool = True,
    ) -> None:
        """`batch=False` exports each span as it ends (tests, with an in-memory exporter)."""
        self._provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
            resource=Resource.create({"service.name": service_name}),
        )
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer("unigate.gateway")
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> Tracing | None:
        """The configured tracing, or None when it is switched off."""
        if not settings.enabled:
            return None
        exporter: SpanExporter
        if settings.exporter == "console":
            exporter = ConsoleSpanExporter()
        else:
            # Imported here: grpc's exporter is heavy and only needed when configured.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            insecure = urlsplit(settings.endpoint).scheme == "http"
            exporter = OTLPSpanExporter(endpoint=settings.endpoint, insecure=insecure)
        return cls(exporter, service_name=settings.service_name, sample_ratio=settings.sample_ratio)

    def shutdown(self) -> None:
        """Export what is buffered and stop. Blocks (up to the exporter's timeout)."""
        self._provider.shutdown()

    @contextmanager
    def call_span(self, method: str, metadata: Metadata | None) -> Iterator[Span]:
        """The SERVER span of one RPC (`method` as gRPC names it: /pkg.Service/Method),
        child of the caller's traceparent if any, current until the block ends.

        Call `finish(span, code, reason)` before leaving; an exception that leaves
        the block unfinished finishes it from the exception.
        """
        parent = self._propagator.extract(metadata or (), getter=_METADATA)
        service, _, name = method.lstrip("/").rpartition("/")
        with self._tracer.start_as_current_span(
            f"{service}/{name}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                if isinstance(span, ReadableSpan) and _STATUS_ATTRIBUTE not in (
                    span.attributes or {}
                ):
                    finish(span, *status_of(exc))
                raise

    @contextmanager
    def attempt_span(
        self, deployment: str, provider: str, kind: str, vendor_model: str
    ) -> Iterator[Span]:
        """The CLIENT span of one upstream attempt, child of the current span and
        current itself while open: keep the whole attempt (a stream's reading too)
        inside the block, in the same task."""
        with self._tracer.start_as_current_span(
            f"upstream {deployment}",
            kind=SpanKind.CLIENT,
            attributes={
                "unigate.deployment": deployment,
                "unigate.provider": provider,
                "unigate.provider_kind": kind,
                "gen_ai.request.model": vendor_model,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                code, reason = status_of(exc)
                span.set_attribute("error.type", reason or code)
                span.set_status(Status(StatusCode.ERROR, f"{code} {reason}".strip()))
                raise

    @staticmethod
    def finish(span: Span, code: str, reason: str = "") -> None:
        """Record a call's gRPC outcome on its span (see the module's `finish`)."""
        finish(span, code, reason)

    # --- for the transport ---------------------------------------------------------

    def inject(self, headers: dict[str, str]) -> None:
        """Add `traceparent` (and `tracestate`) naming the current span, if there is one."""
        self._propagator.inject(headers)

    @staticmethod
    def note_request(method: str, url: str) -> None:
        """Describe the HTTP request on the current attempt span (no query, no headers)."""
        span = get_current_span()
        if not (span.is_recording() and getattr(span, "kind", None) is SpanKind.CLIENT):
            return
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host  # userinfo left out with the query
        if parts.port:
            netloc += f":{parts.port}"
        span.set_attributes(
            {
                "http.request.method": method,
                "url.full": f"{parts.scheme}://{netloc}{parts.path}",
                "server.address": host,
                "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            }
        )

    @staticmethod
    def note_response(status: int) -> None:
        span = get_current_span()
        if span.is_recording() and getattr(span, "kind", None) is SpanKind.CLIENT:
            span.set_attribute("http.response.status_code", status)


# OpenTelemetry's gRPC conventions: a server span is an error only for the codes
# that say the server failed; a caller's mistake (NOT_FOUND, INVALID_ARGUMENT,
# RESOURCE_EXHAUSTED...) leaves the status unset, with the code still recorded.
SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


def finish(span: Span, code: str, reason: str = "") -> None:
    """Record a call's gRPC outcome: the status code, `error.type` unless OK, and
    ERROR status for the codes that mean the server failed (SERVER_ERRORS)."""
    span.set_attribute(_STATUS_ATTRIBUTE, _GRPC_CODES.get(code, _GRPC_CODES["UNKNOWN"]))
    if code != "OK":
        span.set_attribute("error.type", reason or code)
    if code in SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, f"{code} {reason}".strip()))
