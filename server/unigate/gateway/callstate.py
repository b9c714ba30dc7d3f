"""Per-call state that travels with the call's task, for every layer to read."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unigate.gateway.identity.principal import Principal

request_id: ContextVar[str] = ContextVar("unigate_request_id", default="")
principal: ContextVar[Principal | None] = ContextVar("unigate_principal", default=None)
# Trailing metadata that inner layers add (x-ratelimit-*); the request-id interceptor
# sends it with the answer, the error interceptor with a failure.
trailers: ContextVar[list[tuple[str, str]] | None] = ContextVar("unigate_trailers", default=None)
