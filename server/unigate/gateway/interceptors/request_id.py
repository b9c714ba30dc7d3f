"""Give every call a request id: the caller's `x-request-id`, or a new one.

The id is returned in initial metadata and put in a contextvar for every later
layer (logs, upstream headers, the response's gateway facts).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from unigate.gateway import callstate
from unigate.gateway.interceptors.base import (
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)

HEADER = "x-request-id"
_MAX_LENGTH = 128


def _incoming(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == HEADER and isinstance(value, str) and 0 < len(value) <= _MAX_LENGTH:
            return value if value.isprintable() else uuid.uuid4().hex
    return uuid.uuid4().hex


class RequestIdInterceptor(HandlerInterceptor):
    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        async def unary(request: Any, context: Context) -> Any:
            rid = _incoming(context)
            callstate.request_id.set(rid)
            await context.send_initial_metadata(((HEADER, rid),))
            return await behavior(request, context)

        return unary

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            rid = _incoming(context)
            callstate.request_id.set(rid)
            await context.send_initial_metadata(((HEADER, rid),))
            async for response in behavior(request, context):
                yield response

        return stream
