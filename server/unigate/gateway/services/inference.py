"""InferenceService: decode, resolve the route, call the adapter, add gateway facts.

Thin on purpose: validation lives in validation.py, routing in routing/, vendor
translation in providers/, and errors become statuses in interceptors/errors.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from typing import TypeVar

from unigate.gateway import callstate
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.interceptors.base import Context
from unigate.gateway.observability.tracing import Tracing
from unigate.gateway.providers.base import Provider, UpstreamCall
from unigate.gateway.routing.router import Deployment, Router
from unigate.gateway.services import validation
from unigate.v1 import inference_pb2 as pb
from unigate.v1 import inference_pb2_grpc

log = logging.getLogger("unigate.upstream")

# Failures on the vendor's side, worth an operator's attention (a caller's bad
# request is the caller's to fix, and is in the call log either way).
_UPSTREAM_TROUBLE = frozenset(
    {
        Reason.UPSTREAM_UNAVAILABLE,
        Reason.UPSTREAM_TIMEOUT,
        Reason.UPSTREAM_RATE_LIMITED,
        Reason.UPSTREAM_QUOTA_EXHAUSTED,
        Reason.UPSTREAM_AUTH_FAILED,
        Reason.UPSTREAM_PROTOCOL_ERROR,
        Reason.UPSTREAM_ERROR,
    }
)

Request = TypeVar("Request", pb.ChatRequest, pb.CompleteRequest, pb.EmbedRequest)
Reply = TypeVar("Reply", pb.ChatResponse, pb.CompleteResponse, pb.EmbedResponse)
Chunk = TypeVar("Chunk", pb.StreamChatResponse, pb.StreamCompleteResponse)
StreamMethod = Callable[[Request, UpstreamCall], AsyncGenerator[Chunk, None]]


class InferenceService(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self, router: Router, default_deadline: float, tracing: Tracing | None = None
    ) -> None:
        self._router = router
        self._default_deadline = default_deadline
        self._tracing = tracing

    @contextmanager
    def _attempt(self, deployment: Deployment) -> Iterator[None]:
        """One upstream attempt: its span (when tracing), when it ended, and a log
        line when the upstream failed on its side (the request id comes with it)."""
        try:
            if self._tracing is None:
                yield
            else:
                provider = deployment.provider
                with self._tracing.attempt_span(
                    deployment.name, provider.name, provider.kind, deployment.model
                ):
                    yield
        except GatewayError as exc:
            if exc.reason in _UPSTREAM_TROUBLE:
                log.warning(
                    "upstream attempt failed: %s",
                    exc.message,
                    extra={"deployment": deployment.name, "reason": exc.reason},
                )
            raise
        finally:
            if (facts := callstate.call.get()) is not None:
                facts.upstream_ended = time.perf_counter()

    def _upstream(
        self, model: str, needs: tuple[str, ...], context: Context
    ) -> tuple[str, Deployment, UpstreamCall, float]:
        route = self._router.resolve(model, needs)
        deployment = route.pick()
        remaining = context.time_remaining()
        call = UpstreamCall(
            deployment=deployment.name,
            model=deployment.model,
            timeout=self._default_deadline if remaining is None else remaining,
            request_id=callstate.request_id.get(),
        )
        started = time.perf_counter()
        if (facts := callstate.call.get()) is not None:
            provider = deployment.provider
            facts.alias = route.alias
            facts.provider, facts.provider_kind = provider.name, provider.kind
            facts.deployment, facts.vendor_model = deployment.name, deployment.model
            facts.log_bodies = route.log_bodies
            facts.upstream_started = started
        return route.alias, deployment, call, started

    async def _unary(
        self,
        request: Request,
        needs: tuple[str, ...],
        context: Context,
        method: Callable[[Provider], Callable[[Request, UpstreamCall], Awaitable[Reply]]],
    ) -> Reply:
        started = time.perf_counter()
        alias, deployment, call, upstream_started = self._upstream(request.model, needs, context)
        if (admit := callstate.on_deployment.get()) is not None:
            await admit(deployment.name)
        with self._attempt(deployment):
            response = await method(deployment.provider)(request, call)
        _gateway_facts(response.gateway, alias, deployment, started, upstream_started)
        return response

    async def _stream(
        self,
        request: Request,
        needs: tuple[str, ...],
        context: Context,
        method: Callable[
            [Provider], Callable[[Request, UpstreamCall], AsyncGenerator[Chunk, None]]
        ],
    ) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        alias, deployment, call, upstream_started = self._upstream(
            request.model, (*needs, "streaming"), context
        )
        if (admit := callstate.on_deployment.get()) is not None:
            await admit(deployment.name)
        with self._attempt(deployment):
            async with aclosing(method(deployment.provider)(request, call)) as chunks:
                async for chunk in chunks:
                    if chunk.finish_reason:
                        _gateway_facts(chunk.gateway, alias, deployment, started, upstream_started)
                    yield chunk

    async def Chat(self, request: pb.ChatRequest, context: Context) -> pb.ChatResponse:
        needs = validation.check_chat(request)
        return await self._unary(request, needs, context, lambda p: p.chat)

    async def StreamChat(
        self, request: pb.ChatRequest, context: Context
    ) -> AsyncIterator[pb.StreamChatResponse]:
        needs = validation.check_chat(request)
        async for chunk in self._stream(request, needs, context, lambda p: p.stream_chat):
            yield chunk

    async def Complete(self, request: pb.CompleteRequest, context: Context) -> pb.CompleteResponse:
        needs = validation.check_complete(request)
        return await self._unary(request, needs, context, lambda p: p.complete)

    async def StreamComplete(
        self, request: pb.CompleteRequest, context: Context
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        needs = validation.check_complete(request)
        async for chunk in self._stream(request, needs, context, lambda p: p.stream_complete):
            yield chunk

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        needs = validation.check_embed(request)
        return await self._unary(request, needs, context, lambda p: p.embed)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        return self._router.list_models()


def _gateway_facts(
    info: pb.GatewayInfo,
    alias: str,
    deployment: Deployment,
    started: float,
    upstream_started: float,
) -> None:
    info.request_id = callstate.request_id.get()
    info.alias = alias
    info.deployment = deployment.name
    info.attempts = 1
    now = time.perf_counter()
    info.latency.FromNanoseconds(int((now - started) * 1e9))
    info.upstream_latency.FromNanoseconds(int((now - upstream_started) * 1e9))
