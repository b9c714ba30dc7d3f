"""One access log line per call: method, outcome, latency, request id."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from unigate.gateway import callstate
from unigate.gateway.errors import GatewayError
from unigate.gateway.interceptors.base import (
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)
from unigate.gateway.observability.access import AccessLog


def _outcome(exc: BaseException | None) -> tuple[str, str]:
    if exc is None:
        return "OK", ""
    if isinstance(exc, GatewayError):
        return exc.code.name, exc.reason
    if not isinstance(exc, Exception):
        return "CANCELLED", ""
    return "INTERNAL", "INTERNAL"


def _fields(
    method: str, started: float, exc: BaseException | None, messages: int
) -> dict[str, object]:
    code, reason = _outcome(exc)
    return {
        "request_id": callstate.request_id.get(),
        "method": method,
        "code": code,
        "reason": reason,
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        "messages": messages,
    }


class AccessLogInterceptor(HandlerInterceptor):
    def __init__(self, sink: AccessLog) -> None:
        super().__init__()
        self._sink = sink

    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        record = self._sink.record

        async def unary(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                record(_fields(method, started, exc, 0))
                raise
            record(_fields(method, started, None, 1))
            return response

        return unary

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        record = self._sink.record

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            sent = 0
            try:
                async for response in behavior(request, context):
                    sent += 1
                    yield response
            except BaseException as exc:
                record(_fields(method, started, exc, sent))
                raise
            record(_fields(method, started, None, sent))

        return stream
