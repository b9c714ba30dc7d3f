"""InferenceService: decode, resolve the route, call the adapter, add gateway facts.

Thin on purpose: validation lives in validation.py, routing in routing/ (where each
attempt goes, retries and fallbacks in routing/resilience.py), vendor translation in
providers/, and errors become statuses in interceptors/errors.py.

The quota hook (`callstate.on_deployment`) is called once per call, with the first
deployment picked: deployment-scoped limits count a call against that deployment,
not against those its retries or fallbacks go to.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING, TypeVar

from unigate.gateway import callstate
from unigate.gateway.errors import GatewayError
from unigate.gateway.interceptors.base import Context
from unigate.gateway.interceptors.calllog import client_address, forwarded_for
from unigate.gateway.observability.tracing import Tracing
from unigate.gateway.providers.base import Provider, UpstreamCall
from unigate.gateway.routing.health import Outcome
from unigate.gateway.routing.resilience import (
    DEPLOYMENT_FAULTS,
    Failover,
    attempt_label,
)
from unigate.gateway.routing.router import Deployment, Route, Router
from unigate.gateway.services import validation
from unigate.v1 import inference_pb2 as pb
from unigate.v1 import inference_pb2_grpc

if TYPE_CHECKING:
    from unigate.gateway.observability.metrics import Metrics

log = logging.getLogger("unigate.upstream")

Request = TypeVar("Request", pb.ChatRequest, pb.CompleteRequest, pb.EmbedRequest)
Reply = TypeVar("Reply", pb.ChatResponse, pb.CompleteResponse, pb.EmbedResponse)
Chunk = TypeVar("Chunk", pb.StreamChatResponse, pb.StreamCompleteResponse)
StreamMethod = Callable[[Request, UpstreamCall], AsyncGenerator[Chunk, None]]


class _Attempt:
    """One upstream attempt under way: when it began, when its first chunk came."""

    __slots__ = ("first", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first = 0.0


class InferenceService(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        router: Router,
        default_deadline: float,
        tracing: Tracing | None = None,
        *,
        metrics: Metrics | None = None,
        trust_forwarded_for: bool = False,
    ) -> None:
        self._router = router
        self._default_deadline = default_deadline
        self._tracing = tracing
        self._metrics = metrics
        self._trust_forwarded_for = trust_forwarded_for
        self._rng = random.Random()

    def _failover(self, model: str, needs: tuple[str, ...], context: Context) -> Failover:
        route = self._router.resolve(model, needs)
        remaining = context.time_remaining()
        budget = self._default_deadline if remaining is None else remaining
        if (facts := callstate.call.get()) is not None:
            facts.alias = route.alias
            # Whether bodies are logged is the requested alias's say, whichever answers.
            facts.log_bodies = route.log_bodies
        return Failover(
            self._router,
            route,
            needs,
            lambda chosen: self._balancer_key(chosen, context),
            time.monotonic() + budget,
            self._rng,
            caller_deadline=remaining is not None,
        )

    def _balancer_key(self, route: Route, context: Context) -> str:
        """What a consistent-hash route hashes: a metadata value, or the caller's address."""
        if route.hash_key != "peer":
            name = route.hash_key.removeprefix("metadata:").lower()
            for key, value in context.invocation_metadata() or ():
                if key == name and isinstance(value, str) and value:
                    return value
        address = client_address(context.peer() or "")
        if self._trust_forwarded_for:
            return forwarded_for(context) or address
        return address

    @staticmethod
    def _first(failover: Failover) -> Deployment:
        try:
            return failover.first()
        except GatewayError:
            _note_route(failover)
            raise

    @staticmethod
    async def _retry(failover: Failover, error: GatewayError) -> Deployment:
        """The next attempt's deployment, after its backoff; raises the error the call
        ends with when there is to be no next attempt."""
        try:
            delay = failover.retry_delay(error)
            if delay:
                await asyncio.sleep(delay)
            return failover.next()
        except GatewayError:
            _note_route(failover)
            raise

    @staticmethod
    def _call(failover: Failover, deployment: Deployment) -> UpstreamCall:
        return UpstreamCall(
            deployment=deployment.name,
            model=deployment.model,
            timeout=failover.time_left(),
            request_id=callstate.request_id.get(),
        )

    @contextmanager
    def _attempt(self, failover: Failover, deployment: Deployment) -> Iterator[_Attempt]:
        """One upstream attempt on a claimed deployment: its span (when tracing), its
        call-log facts, a log line when the upstream failed on its side (the request id
        comes with it), and how it ended, told to the deployment's health and metrics."""
        attempt = _Attempt()
        alias = failover.route.alias
        facts = callstate.call.get()
        error: BaseException | None = None
        try:
            if facts is not None:
                _note_attempt(facts, failover, deployment, attempt.started)
            if self._metrics is not None:
                self._metrics.deployment_picked(alias, deployment.name)
            if self._tracing is None:
                yield attempt
            else:
                provider = deployment.provider
                with self._tracing.attempt_span(
                    deployment.name, provider.name, provider.kind, deployment.model
                ):
                    yield attempt
        except BaseException as exc:
            error = exc
            if isinstance(exc, GatewayError) and exc.reason in DEPLOYMENT_FAULTS:
                log.warning(
                    "upstream attempt failed: %s",
                    exc.message,
                    extra={"deployment": deployment.name, "reason": exc.reason},
                )
            raise
        finally:
            ended = time.perf_counter()
            if error is None:
                # A stream's latency is its first chunk's: comparable whatever its length.
                latency = (attempt.first or ended) - attempt.started
                deployment.health.end(Outcome.SUCCESS, latency)
            else:
                deployment.health.end(failover.outcome(error), None)
            if self._metrics is not None:
                self._metrics.attempt_finished(alias, deployment.name, attempt_label(error))
            if facts is not None:
                facts.upstream_ended = ended

    async def _unary(
        self,
        request: Request,
        needs: tuple[str, ...],
        context: Context,
        method: Callable[[Provider], Callable[[Request, UpstreamCall], Awaitable[Reply]]],
    ) -> Reply:
        started = time.perf_counter()
        failover = self._failover(request.model, needs, context)
        deployment = self._first(failover)
        await _admit(deployment)
        while True:
            call = self._call(failover, deployment)
            try:
                with self._attempt(failover, deployment) as attempt:
                    response = await method(deployment.provider)(request, call)
            except GatewayError as exc:
                deployment = await self._retry(failover, exc)
                continue
            _gateway_facts(response.gateway, failover, deployment, started, attempt.started)
            return response

    async def _stream(
        self,
        request: Request,
        needs: tuple[str, ...],
        context: Context,
        method: Callable[
            [Provider], Callable[[Request, UpstreamCall], AsyncGenerator[Chunk, None]]
        ],
    ) -> AsyncGenerator[Chunk, None]:
        started = time.perf_counter()
        failover = self._failover(request.model, (*needs, "streaming"), context)
        deployment = self._first(failover)
        await _admit(deployment)
        while True:
            call = self._call(failover, deployment)
            try:
                with self._attempt(failover, deployment) as attempt:
                    async with aclosing(method(deployment.provider)(request, call)) as chunks:
                        async for chunk in chunks:
                            if not attempt.first:
                                attempt.first = time.perf_counter()
                            if chunk.finish_reason:
                                _gateway_facts(
                                    chunk.gateway, failover, deployment, started, attempt.started
                                )
                            yield chunk
                return
            except GatewayError as exc:
                if attempt.first:
                    raise  # the caller has part of an answer: never a second one
                deployment = await self._retry(failover, exc)

    async def Chat(self, request: pb.ChatRequest, context: Context) -> pb.ChatResponse:
        needs = validation.check_chat(request)
        return await self._unary(request, needs, context, lambda p: p.chat)

    async def StreamChat(
        self, request: pb.ChatRequest, context: Context
    ) -> AsyncIterator[pb.StreamChatResponse]:
        needs = validation.check_chat(request)
        stream = self._stream(request, needs, context, lambda p: p.stream_chat)
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                yield chunk

    async def Complete(self, request: pb.CompleteRequest, context: Context) -> pb.CompleteResponse:
        needs = validation.check_complete(request)
        return await self._unary(request, needs, context, lambda p: p.complete)

    async def StreamComplete(
        self, request: pb.CompleteRequest, context: Context
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        needs = validation.check_complete(request)
        stream = self._stream(request, needs, context, lambda p: p.stream_complete)
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                yield chunk

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        needs = validation.check_embed(request)
        return await self._unary(request, needs, context, lambda p: p.embed)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        return self._router.list_models()


async def _admit(deployment: Deployment) -> None:
    """The quota check of deployment-scoped limits, once per call, on its first
    deployment; a refusal gives the claimed deployment back untouched."""
    if (admit := callstate.on_deployment.get()) is not None:
        try:
            await admit(deployment.name)
        except BaseException:
            deployment.health.end(Outcome.NEUTRAL, None)
            raise


def _note_attempt(
    facts: callstate.CallFacts, failover: Failover, deployment: Deployment, started: float
) -> None:
    provider = deployment.provider
    facts.alias = failover.route.alias
    facts.provider, facts.provider_kind = provider.name, provider.kind
    facts.deployment, facts.vendor_model = deployment.name, deployment.model
    facts.upstream_started = started
    facts.retries = failover.attempts - 1
    if failover.fallbacks:
        facts.fallbacks = list(failover.fallbacks)


def _note_route(failover: Failover) -> None:
    """The call ends without another attempt: the alias it ended on, and what it tried."""
    if (facts := callstate.call.get()) is not None:
        facts.alias = failover.route.alias
        facts.retries = max(failover.attempts - 1, 0)
        facts.fallbacks = list(failover.fallbacks)


def _gateway_facts(
    info: pb.GatewayInfo,
    failover: Failover,
    deployment: Deployment,
    started: float,
    upstream_started: float,
) -> None:
    info.request_id = callstate.request_id.get()
    info.alias = failover.route.alias
    info.deployment = deployment.name
    info.attempts = failover.attempts
    if failover.fallbacks:
        info.fallbacks.extend(failover.fallbacks)
    now = time.perf_counter()
    info.latency.FromNanoseconds(int((now - started) * 1e9))
    info.upstream_latency.FromNanoseconds(int((now - upstream_started) * 1e9))
