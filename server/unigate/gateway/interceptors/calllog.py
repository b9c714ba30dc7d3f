"""Record every call: the access log line, metrics, the call's span, and for
inference calls the call-log record.

One interceptor for all of them, so a call is wrapped once: it sits inside the
error interceptor and outside auth, so it sees every outcome (an unknown key is
logged as UNAUTHENTICATED, a refused quota as RESOURCE_EXHAUSTED) as the
GatewayError the inner layers raised. The layers inside describe the call in a
`callstate.CallFacts` (the alias, the deployment and provider that served it,
when the upstream answered); the response gives the usage. Writing is never on
the call's path: each sink queues what it gets (observability/calllog.py,
observability/access.py) or only bumps counters (observability/metrics.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractContextManager, aclosing
from typing import Any

import orjson

from unigate.gateway import callstate
from unigate.gateway.errors import status_of
from unigate.gateway.interceptors.base import (
    INFERENCE,
    LIST_MODELS,
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)
from unigate.gateway.observability.access import AccessLog
from unigate.gateway.observability.calllog import MAX_BODY_CHARS, Bodies, CallLogWriter
from unigate.gateway.observability.metrics import Metrics
from unigate.gateway.observability.tracing import Tracing
from unigate.gateway.quota.policy import Price, cost_of
from unigate.gateway.store.models import CallLog

log = logging.getLogger("unigate.calllog")

_NO_SPAN = contextlib.nullcontext()


def client_address(peer: str) -> str:
    """The IP address in a grpc peer string: ipv4:1.2.3.4:5, ipv6:[::1]:5, unix:/p."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer


def forwarded_for(context: Context) -> str:
    """The first address of `x-forwarded-for` (the client, as the proxy saw it)."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-forwarded-for" and isinstance(value, str):
            return value.split(",", 1)[0].strip()
    return ""


MAX_KEPT_BYTES = 2 * MAX_BODY_CHARS
"""Bytes of a call's messages kept for its logged bodies; beyond, a marker says how
many (a queue of records waiting for a slow store must not hold whole prompts)."""


def _bodies(record: CallLog, call: _Call) -> Bodies | None:
    size = call.request.ByteSize()
    if size > MAX_KEPT_BYTES:
        record.request_body = orjson.dumps({"omitted": f"request of {size} bytes"}).decode()
        record.response_body = orjson.dumps({"omitted": "the request was too large"}).decode()
        return None
    return Bodies(call.request, call.messages or [])


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class _Method:
    """A method's names, split once when its handler is wrapped."""

    __slots__ = ("full", "rpc", "service")

    def __init__(self, full: str) -> None:
        self.full = full  # /unigate.v1.InferenceService/Chat
        self.service, _, self.rpc = full[1:].rpartition("/")


class _Call:
    """One call in flight: when it began, what it has sent so far."""

    __slots__ = (
        "facts",
        "first",
        "kept",
        "messages",
        "peer",
        "request",
        "started",
        "t0",
        "usage",
    )

    def __init__(
        self,
        request: Any,
        context: Context,
        facts: callstate.CallFacts | None,
        forwarded: bool = False,
    ):
        self.request = request
        # Read now: at the end the call may be gone from under the context (a server
        # stopping cancels its calls, and asking a released call its peer crashes).
        self.peer = ""
        if facts is not None:
            self.peer = client_address(context.peer() or "")
            if forwarded:
                self.peer = forwarded_for(context) or self.peer
        self.facts = facts
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.first = 0.0  # perf_counter of the first streamed content
        self.usage: Any = None
        self.messages: list[Any] | None = None  # kept only for aliases that log bodies
        self.kept = 0  # their size in bytes

    def sent(self, message: Any) -> None:
        if not self.first and (message.text or message.tool_calls):
            self.first = time.perf_counter()
        if message.HasField("usage"):
            self.usage = message.usage
        facts = self.facts
        if facts is not None and facts.log_bodies:
            if self.messages is None:
                self.messages, self.kept = [], 0
            if self.kept <= MAX_KEPT_BYTES:  # what is kept waits in the queue: bound it
                self.messages.append(message)
                self.kept += message.ByteSize()


class CallLogInterceptor(HandlerInterceptor):
    def __init__(
        self,
        *,
        access_log: AccessLog | None = None,
        writer: CallLogWriter | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        prices: Mapping[str, Price] | None = None,
        trust_forwarded_for: bool = False,
    ) -> None:
        super().__init__()
        self._forwarded = trust_forwarded_for
        self._access = access_log
        self._writer = writer
        self._metrics = metrics
        self._tracing = tracing
        self._prices = dict(prices or {})
        # Inference calls need facts when a record or metrics will be made of them.
        self._facts = writer is not None or metrics is not None or tracing is not None

    def _span(self, method: str, context: Context) -> AbstractContextManager[Any]:
        if self._tracing is None:
            return _NO_SPAN
        return self._tracing.call_span(method, context.invocation_metadata() or ())

    def _begin(self, request: Any, context: Context, inference: bool) -> _Call:
        facts = None
        if inference and self._facts:
            facts = callstate.CallFacts()
            callstate.call.set(facts)
        return _Call(request, context, facts, self._forwarded)

    def _finish(self, method: _Method, call: _Call, exc: BaseException | None, span: Any) -> None:
        """Record the call; a failure here is logged, never the call's own outcome."""
        try:
            self._record_all(method, call, exc, span)
        except Exception:
            log.exception("cannot record the call", extra={"method": method.full})

    def _record_all(
        self, method: _Method, call: _Call, exc: BaseException | None, span: Any
    ) -> None:
        code, reason = status_of(exc)
        now = time.perf_counter()
        latency = now - call.t0
        facts = call.facts
        if self._access is not None:
            self._access.record(
                {
                    "request_id": callstate.request_id.get(),
                    "method": method.full,
                    "code": code,
                    "reason": reason,
                    "latency_ms": _ms(latency),
                    **({"alias": facts.alias} if facts is not None and facts.alias else {}),
                }
            )
        if self._metrics is not None:
            self._metrics.call_finished(method.service, method.rpc, code, latency)
        record = self._record(method, call, code, reason, latency) if facts else None
        if record is not None:
            if self._writer is not None:
                bodies = None
                if facts is not None and facts.log_bodies:
                    bodies = _bodies(record, call)
                self._writer.record(record, bodies)
            if self._metrics is not None:
                self._metrics.inference_finished(record)
        if span is not None and self._tracing is not None:
            span.set_attribute("unigate.request_id", callstate.request_id.get())
            if record is not None:
                span.set_attribute("unigate.alias", record.alias)
                if record.tenant_id:
                    span.set_attribute("unigate.tenant", record.tenant_id)
            self._tracing.finish(span, code, reason)

    def _record(
        self, method: _Method, call: _Call, code: str, reason: str, latency: float
    ) -> CallLog:
        facts = call.facts
        assert facts is not None
        request = call.request
        principal = callstate.principal.get()
        usage = call.usage
        input_tokens = output_tokens = cached = 0
        if usage is not None:
            input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
            cached = usage.cached_input_tokens
        upstream = None
        if facts.upstream_started and facts.upstream_ended:
            upstream = _ms(facts.upstream_ended - facts.upstream_started)
        alias = facts.alias or request.model
        return CallLog(
            request_id=callstate.request_id.get(),
            ts=call.started,
            method=method.rpc,
            code=code,
            reason=reason,
            tenant_id=principal.tenant_id if principal is not None else None,
            consumer_id=principal.consumer_id if principal is not None else None,
            key_id=principal.subject
            if principal is not None and principal.via == "api_key"
            else None,
            alias=alias,
            provider=facts.provider,
            deployment=facts.deployment,
            vendor_model=facts.vendor_model,
            latency_ms=_ms(latency),
            upstream_latency_ms=upstream,
            ttft_ms=_ms(call.first - call.t0) if call.first else None,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached,
            cost=cost_of(self._prices, alias, input_tokens, output_tokens, cached),
            cache_hit=facts.cache_hit,
            retries=facts.retries,
            fallbacks=",".join(facts.fallbacks),
            client_address=call.peer,
            end_user=getattr(request, "user", ""),
        )

    def wrap_unary(self, behavior: UnaryBehavior, full: str) -> UnaryBehavior:
        inference = full.startswith(INFERENCE) and full != LIST_MODELS
        method = _Method(full)
        finish = self._finish

        async def unary(request: Any, context: Context) -> Any:
            call = self._begin(request, context, inference)
            with self._span(full, context) as span:
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    finish(method, call, exc, span)
                    raise
                if inference:
                    if response.HasField("usage"):
                        call.usage = response.usage
                    if call.facts is not None and call.facts.log_bodies:
                        call.messages = [response]
                finish(method, call, None, span)
                return response

        return unary

    def wrap_stream(self, behavior: StreamBehavior, full: str) -> StreamBehavior:
        inference = full.startswith(INFERENCE)
        method = _Method(full)
        finish = self._finish

        async def stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            call = self._begin(request, context, inference)
            with self._span(full, context) as span:
                try:
                    async with aclosing(behavior(request, context)) as responses:
                        async for response in responses:
                            if inference:
                                call.sent(response)
                            yield response
                except BaseException as exc:
                    finish(method, call, exc, span)
                    raise
                finish(method, call, None, span)

        return stream
