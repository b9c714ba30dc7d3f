"""Per-call state that travels with the call's task, for every layer to read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unigate.gateway.identity.principal import Principal


@dataclass(slots=True)
class CallFacts:
    """What the layers inside learn about an inference call, for its call log record,
    metrics and span: the router and service fill it, the call-log interceptor reads
    it when the call ends."""

    alias: str = ""
    provider: str = ""
    provider_kind: str = ""
    deployment: str = ""
    vendor_model: str = ""
    upstream_started: float = 0.0  # perf_counter of the last attempt's start
    upstream_ended: float = 0.0  # perf_counter of its end (answer or last chunk)
    retries: int = 0
    fallbacks: list[str] = field(default_factory=list)
    cache_hit: bool = False
    log_bodies: bool = False


request_id: ContextVar[str] = ContextVar("unigate_request_id", default="")
principal: ContextVar[Principal | None] = ContextVar("unigate_principal", default=None)
# Trailing metadata that inner layers add (x-ratelimit-*); the request-id interceptor
# sends it with the answer, the error interceptor with a failure.
trailers: ContextVar[list[tuple[str, str]] | None] = ContextVar("unigate_trailers", default=None)
# Set by the quota interceptor when deployment-scoped limits exist: the service calls
# it with the upstream deployment it picked, before calling it (the one seam where
# routing tells policy which vendor account serves the call).
on_deployment: ContextVar[Callable[[str], Awaitable[None]] | None] = ContextVar(
    "unigate_on_deployment", default=None
)
# Set by the call-log interceptor for each inference call; None for other calls.
call: ContextVar[CallFacts | None] = ContextVar("unigate_call", default=None)
# The caller's W3C traceparent, as it arrived; the transport forwards it upstream
# unchanged when tracing is off (with tracing on, it injects the attempt's span).
traceparent: ContextVar[str] = ContextVar("unigate_traceparent", default="")
