"""Count the product calls in progress, so that a drain ends when they are done.

grpc's own graceful stop waits for every open RPC, health Watch streams included,
and those never end on their own: a drain would always last the whole grace
period. The gateway waits for this count to reach zero instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from unigate.gateway.interceptors.base import (
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


class InFlightInterceptor(HandlerInterceptor):
    def __init__(self, inflight: InFlight) -> None:
        super().__init__()
        self._inflight = inflight

    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        inflight = self._inflight

        async def unary(request: Any, context: Context) -> Any:
            inflight.enter()
            try:
                return await behavior(request, context)
            finally:
                inflight.leave()

        return unary

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        inflight = self._inflight

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            inflight.enter()
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                inflight.leave()

        return stream
