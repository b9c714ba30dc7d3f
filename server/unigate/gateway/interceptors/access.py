"""Approved access: an inference call passes only for an alias the caller's tenant
has as a service and the caller holds an approved subscription to.

It runs after authentication (callstate.principal is set) and before the service,
so the service never learns who the caller is; ListModels answers are narrowed to
the caller's tenant's aliases here too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from unigate.gateway import callstate
from unigate.gateway.identity.access import AccessPolicy
from unigate.gateway.identity.errors import AuthError, AuthReason
from unigate.gateway.identity.principal import Principal
from unigate.gateway.interceptors.base import (
    INFERENCE,
    LIST_MODELS,
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)
from unigate.v1 import inference_pb2 as pb


def _principal() -> Principal:
    """The caller; the auth interceptor runs first, so its absence is a wiring bug and
    must fail closed."""
    principal = callstate.principal.get()
    if principal is None:
        raise AuthError(AuthReason.MISSING_CREDENTIALS, "this call needs credentials")
    return principal


class AccessInterceptor(HandlerInterceptor):
    def __init__(self, policy: AccessPolicy) -> None:
        super().__init__()
        self._policy = policy

    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        if not method.startswith(INFERENCE):
            return behavior
        policy = self._policy
        if method == LIST_MODELS:

            async def list_models(request: Any, context: Context) -> Any:
                principal = _principal()
                listing: pb.ListModelsResponse = await behavior(request, context)
                visible = await policy.visible_aliases(principal)
                return pb.ListModelsResponse(
                    models=[m for m in listing.models if m.alias in visible]
                )

            return list_models

        async def unary(request: Any, context: Context) -> Any:
            await policy.check(_principal(), request.model)
            return await behavior(request, context)

        return unary

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        if not method.startswith(INFERENCE):
            return behavior
        policy = self._policy

        async def stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            await policy.check(_principal(), request.model)
            async with aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response

        return stream
