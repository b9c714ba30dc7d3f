"""Give every call a request id: the caller's `x-request-id`, or a new one.

The id goes into a contextvar for every later layer (logs, upstream headers, the
call log, the response's gateway facts) and back to the caller as `x-request-id`:

- streaming answers: in initial metadata (response headers), sent just before
  the first message;
- unary answers: in trailing metadata, which arrives with the response; or in
  the headers with `server.request_id_in_headers: true`;
- failed calls: in the metadata of the status (interceptors/errors.py); a call
  that fails before any message is a trailers-only response, whose one HTTP/2
  header block carries it.

Nothing is sent before the handler has produced something, because response
headers commit a call: a client's retry policy may only retry an UNAVAILABLE
that arrives before any headers. Why unary answers use trailers by default:
grpc.aio sends explicit initial metadata as a batch of its own (it cannot be
queued to go out with the message), which costs ~95 µs per call on this machine
(bench/chain_overhead.py: gateway overhead 55 µs → 150 µs) — more than the whole
policy chain.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from unigate.gateway import callstate
from unigate.gateway.interceptors.base import (
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)

HEADER = "x-request-id"
TRACEPARENT = "traceparent"
_MAX_LENGTH = 128


def _incoming(context: Context) -> str:
    """The caller's request id, or a new one. The same pass over the metadata keeps
    the caller's `traceparent` for the transport to forward upstream, whatever else
    is recorded or traced."""
    rid = ""
    for key, value in context.invocation_metadata() or ():
        if key == HEADER:
            if isinstance(value, str) and 0 < len(value) <= _MAX_LENGTH and value.isprintable():
                rid = value
        elif key == TRACEPARENT and isinstance(value, str):
            callstate.traceparent.set(value)
    return rid or uuid.uuid4().hex


class RequestIdInterceptor(HandlerInterceptor):
    def __init__(self, *, in_headers: bool = False) -> None:
        super().__init__()
        self._in_headers = in_headers

    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        in_headers = self._in_headers

        async def unary(request: Any, context: Context) -> Any:
            rid = _incoming(context)
            callstate.request_id.set(rid)
            extra: list[tuple[str, str]] = []
            callstate.trailers.set(extra)
            response = await behavior(request, context)
            if in_headers:
                await context.send_initial_metadata(((HEADER, rid),))
            else:
                extra.insert(0, (HEADER, rid))
            if extra:
                context.set_trailing_metadata(tuple(extra))
            return response

        return unary

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        async def stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            rid = _incoming(context)
            callstate.request_id.set(rid)
            extra: list[tuple[str, str]] = []
            callstate.trailers.set(extra)
            first = True
            async with aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    if first:
                        await context.send_initial_metadata(((HEADER, rid),))
                        first = False
                    yield response
            if extra:
                context.set_trailing_metadata(tuple(extra))

        return stream
