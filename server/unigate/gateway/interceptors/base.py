"""Wrapping method handlers, the one way an interceptor sees requests and responses.

grpc.aio's ServerInterceptor only sees the method name and metadata; to see the
request, the response and the outcome, each interceptor wraps the handler's
behaviour by cardinality. Wrapped handlers are built once per method and cached.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

if TYPE_CHECKING:  # generic only in the type stubs
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncGenerator[Any, None]]

# Services that are plumbing, not product: never logged, metered or authenticated.
PLUMBING_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
# The inference methods, which access, quota and the call log are about.
INFERENCE = "/unigate.v1.InferenceService/"
LIST_MODELS = INFERENCE + "ListModels"


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses implement `wrap_unary` and `wrap_stream` for one concern."""

    def __init__(self) -> None:
        self._cache: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
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

    def _wrap(self, handler: Handler, method: str) -> Handler:
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self.wrap_unary(handler.unary_unary, method),  # type: ignore[arg-type]
                **kwargs,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self.wrap_stream(handler.unary_stream, method),  # type: ignore[arg-type]
                **kwargs,
            )
        # Client-streaming methods are not part of the contract; leave them as they are.
        return handler

    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        raise NotImplementedError

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        raise NotImplementedError
