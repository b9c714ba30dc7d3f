"""InferenceService: decode, resolve the route, call the adapter, add gateway facts.

Thin on purpose: validation lives in validation.py, routing in routing/, vendor
translation in providers/, and errors become statuses in interceptors/errors.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from unigate.gateway import callstate
from unigate.gateway.interceptors.base import Context
from unigate.gateway.providers.base import UpstreamCall
from unigate.gateway.routing.router import Deployment, Router
from unigate.gateway.services import validation
from unigate.v1 import inference_pb2 as pb
from unigate.v1 import inference_pb2_grpc


class InferenceService(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, router: Router, default_deadline: float) -> None:
        self._router = router
        self._default_deadline = default_deadline

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
        return route.alias, deployment, call, time.perf_counter()

    async def Chat(self, request: pb.ChatRequest, context: Context) -> pb.ChatResponse:
        started = time.perf_counter()
        alias, deployment, call, upstream_started = self._upstream(
            request.model, validation.check_chat(request), context
        )
        response = await deployment.provider.chat(request, call)
        _gateway_facts(response.gateway, alias, deployment, started, upstream_started)
        return response

    async def StreamChat(
        self, request: pb.ChatRequest, context: Context
    ) -> AsyncIterator[pb.StreamChatResponse]:
        started = time.perf_counter()
        needs = (*validation.check_chat(request), "streaming")
        alias, deployment, call, upstream_started = self._upstream(request.model, needs, context)
        async with aclosing(deployment.provider.stream_chat(request, call)) as chunks:
            async for chunk in chunks:
                if chunk.finish_reason:
                    _gateway_facts(chunk.gateway, alias, deployment, started, upstream_started)
                yield chunk

    async def Complete(self, request: pb.CompleteRequest, context: Context) -> pb.CompleteResponse:
        started = time.perf_counter()
        alias, deployment, call, upstream_started = self._upstream(
            request.model, validation.check_complete(request), context
        )
        response = await deployment.provider.complete(request, call)
        _gateway_facts(response.gateway, alias, deployment, started, upstream_started)
        return response

    async def StreamComplete(
        self, request: pb.CompleteRequest, context: Context
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        started = time.perf_counter()
        needs = (*validation.check_complete(request), "streaming")
        alias, deployment, call, upstream_started = self._upstream(request.model, needs, context)
        async with aclosing(deployment.provider.stream_complete(request, call)) as chunks:
            async for chunk in chunks:
                if chunk.finish_reason:
                    _gateway_facts(chunk.gateway, alias, deployment, started, upstream_started)
                yield chunk

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        started = time.perf_counter()
        alias, deployment, call, upstream_started = self._upstream(
            request.model, validation.check_embed(request), context
        )
        response = await deployment.provider.embed(request, call)
        _gateway_facts(response.gateway, alias, deployment, started, upstream_started)
        return response

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
