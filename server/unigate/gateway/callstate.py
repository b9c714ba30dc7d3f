"""Per-call state that travels with the call's task, for every layer to read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unigate.gateway.identity.principal import Principal

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
