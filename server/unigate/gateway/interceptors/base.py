"""Wrapping method handlers, the one way an interceptor sees requests and responses.

grpc.aio's ServerInterceptor only sees the method name and metadata; to see the
request, the response and the outcome, each interceptor wraps the handler's
behaviour by cardinality. Wrapped handlers are built once per method and cached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]

# Services that are plumbing, not product: never logged, metered or authenticated.
PLUMBING_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses implement `wrap_unary` and `wrap_stream` for one concern."""

    def __init__(self) -> None:
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(PLUMBING_PREFIXES):
            return handler
        wrapped = self._wrap(handler, method)
        self._cache[method] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self.wrap_unary(handler.unary_unary, method), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self.wrap_stream(handler.unary_stream, method), **kwargs
            )
        # Client-streaming methods are not part of the contract; leave them as they are.
        return handler

    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        raise NotImplementedError

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        raise NotImplementedError
