"""Count the product calls in progress, and refuse new ones once draining.

grpc's own graceful stop waits for every open RPC, health Watch streams included,
and those never end on their own: a drain would always last the whole grace
period. So the gateway drains itself: it refuses new product calls with
UNAVAILABLE (clients retry elsewhere), waits for this count to reach zero or the
grace period to end, and only then stops the server, once, with no grace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import grpc

from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.interceptors.base import (
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self.refusing = False
        self._idle = asyncio.Event()
        self._idle.set()

    def refuse_new_calls(self) -> None:
        self.refusing = True

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


_DRAINING = GatewayError(
    grpc.StatusCode.UNAVAILABLE,
    Reason.DRAINING,
    "this gateway instance is shutting down; retry, another instance will answer",
).to_status()


async def _refuse(context: Context) -> None:
    await context.abort_with_status(_DRAINING)


class InFlightInterceptor(HandlerInterceptor):
    def __init__(self, inflight: InFlight) -> None:
        super().__init__()
        self._inflight = inflight

    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        inflight = self._inflight

        async def unary(request: Any, context: Context) -> Any:
            if inflight.refusing:
                await _refuse(context)
            inflight.enter()
            try:
                return await behavior(request, context)
            finally:
                inflight.leave()

        return unary

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        inflight = self._inflight

        async def stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            if inflight.refusing:
                await _refuse(context)
            inflight.enter()
            try:
                async with aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
            finally:
                inflight.leave()

        return stream
