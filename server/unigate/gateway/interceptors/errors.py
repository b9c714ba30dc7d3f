"""Turn failures into gRPC statuses, once, for every method.

An expected GatewayError becomes its status with google.rpc details. Anything
else is a bug: logged once with the request id and reported as INTERNAL, so the
caller learns nothing of the internals and the server keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, NoReturn

import grpc

from unigate.gateway import callstate
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.interceptors.base import (
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)
from unigate.gateway.interceptors.request_id import HEADER

log = logging.getLogger("unigate.errors")


async def _abort(context: Context, exc: Exception, method: str) -> NoReturn:
    if not isinstance(exc, GatewayError):
        rid = callstate.request_id.get()
        log.exception("unexpected error in %s", method, extra={"request_id": rid})
        exc = GatewayError(
            grpc.StatusCode.INTERNAL,
            Reason.INTERNAL,
            f"internal error; quote request id {rid} when reporting it",
        )
    status = exc.to_status()
    trailers = (
        *status.trailing_metadata,
        (HEADER, callstate.request_id.get()),
        *(callstate.trailers.get() or ()),
    )
    await context.abort(status.code, status.details, trailers)
    raise AssertionError("abort returned")  # pragma: no cover


class ErrorInterceptor(HandlerInterceptor):
    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        async def unary(request: Any, context: Context) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, exc, method)

        return unary

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        async def stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            try:
                async with aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, exc, method)

        return stream
