"""Quotas and rate limits on every inference call, against every policy that fits it.

Before the call: one `admit` (one Redis round trip at most) counts the request,
takes concurrency slots and checks token and spend budgets. After it, however it
ends (answer, error, cancel): one `settle` adds the tokens and cost it used and
gives the slots back. A refusal is RESOURCE_EXHAUSTED with QuotaFailure and
RetryInfo; every answer carries x-ratelimit-* trailers for the tightest limit.

Policies come from the config and, with a `store`, from the store: the caller's
tenant's policy (scope tenant, match its id) and its consumer's (scope consumer,
match its id). Stored policies are cached per (tenant, consumer) for `cache_ttl`
seconds (5 s, as the key and access caches), so a change made in another process
applies within that bound; a store failure keeps the config policies only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import grpc

from unigate.gateway import callstate
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.interceptors.base import (
    INFERENCE,
    LIST_MODELS,
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)
from unigate.gateway.quota.base import (
    REFUSAL_REASONS,
    Decision,
    Kind,
    Lease,
    Limit,
    QuotaBackend,
    QuotaUnavailable,
)
from unigate.gateway.quota.policy import Policy, Price, cost_of, limits_for, subjects_of
from unigate.gateway.store.base import Store

log = logging.getLogger("unigate.quota")


def _headers(decision: Decision) -> list[tuple[str, str]]:
    state = decision.tightest
    if state is None:
        return []
    name = state.limit.name.replace("_", "-")
    return [
        (f"x-ratelimit-limit-{name}", f"{state.limit.limit:g}"),
        (f"x-ratelimit-remaining-{name}", f"{max(state.remaining, 0):g}"),
        (f"x-ratelimit-reset-{name}", f"{state.reset_after:.3f}"),
    ]


def _refusal(decision: Decision) -> GatewayError:
    first = decision.violated[0].limit
    described = [
        (s.limit.subject, f"{s.limit.name} {s.limit.limit:g} exceeded") for s in decision.violated
    ]
    retry = decision.retry_after
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        REFUSAL_REASONS[first.kind],
        f"{first.name} of {first.limit:g} for {first.subject} is used up; retry in {retry:.1f} s",
        metadata={"limit": first.name, "subject": first.subject},
        retry_after=retry,
        quota_violations=described,
    )


class QuotaInterceptor(HandlerInterceptor):
    def __init__(
        self,
        backend: QuotaBackend,
        policies: Sequence[Policy],
        prices: Mapping[str, Price],
        *,
        store: Store | None = None,
        cache_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._backend = backend
        self._policies = [p for p in policies if p.scope != "deployment"]
        # Checked once the service has picked the upstream deployment (on_deployment).
        self._deployment_policies = [p for p in policies if p.scope == "deployment"]
        self._prices = dict(prices)
        self._store = store
        self._cache_ttl = cache_ttl
        self._clock = clock
        # (tenant, consumer) -> (expires at, its stored policies)
        self._stored: dict[tuple[str, str | None], tuple[float, list[Policy]]] = {}
        self._settling: set[asyncio.Task[None]] = set()

    @property
    def backend(self) -> QuotaBackend:
        return self._backend

    @property
    def policies(self) -> Sequence[Policy]:
        return (*self._policies, *self._deployment_policies)

    async def _limits(self, request: Any) -> list[Limit]:
        principal = callstate.principal.get()
        subjects = subjects_of(principal, request.model, "")
        policies = self._policies
        if self._store is not None and principal is not None and principal.tenant_id:
            stored = await self._stored_policies(principal.tenant_id, principal.consumer_id)
            policies = [*policies, *stored]
        return limits_for(policies, subjects)

    async def _stored_policies(self, tenant_id: str, consumer_id: str | None) -> list[Policy]:
        """The tenant's and the consumer's stored policies, cached for `cache_ttl`."""
        assert self._store is not None
        now = self._clock()
        cached = self._stored.get((tenant_id, consumer_id))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            rows = await self._store.get_quota_policies(tenant_id, consumer_id)
        except Exception as exc:  # the store is down: the config policies still apply
            log.warning("cannot read the stored quota policies of %s: %r", tenant_id, exc)
            return cached[1] if cached is not None else []
        match = {"tenant": tenant_id, "consumer": consumer_id or ""}
        policies = [Policy(scope=scope, match=match[scope], **body) for scope, body in rows]
        if len(self._stored) > 10_000:  # drop the expired ones before growing further
            self._stored = {k: v for k, v in self._stored.items() if v[0] > now}
        self._stored[(tenant_id, consumer_id)] = (now + self._cache_ttl, policies)
        return policies

    async def _admit(self, limits: list[Limit]) -> Decision:
        try:
            decision = await self._backend.admit(limits)
        except QuotaUnavailable as exc:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                Reason.QUOTA_BACKEND_UNAVAILABLE,
                "quota counters are unreachable and the gateway is set to fail closed; retry",
            ) from exc
        trailers = callstate.trailers.get()
        if trailers is not None:
            trailers.extend(_headers(decision))
        if not decision.allowed:
            raise _refusal(decision)
        return decision

    def _settle(self, lease: Lease, alias: str, usage: Any) -> None:
        if all(limit.kind is Kind.REQUESTS for limit in lease.limits):
            return  # counted at admission; nothing to charge or give back
        tokens, cost = 0, 0.0
        if usage is not None:
            tokens = usage.input_tokens + usage.output_tokens
            cost = cost_of(
                self._prices,
                alias,
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens,
            )
        # A task of its own: it must run even when the call was cancelled.
        task = asyncio.ensure_future(self._backend.settle(lease, tokens=tokens, cost=cost))
        self._settling.add(task)
        task.add_done_callback(self._settled)

    async def close(self) -> None:
        """Let the charges of finished calls land, then close the backend."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self._backend.close()

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("quota settle failed: %r", task.exception())

    async def _begin(self, request: Any) -> list[Lease]:
        """Admit the call; arm the deployment check if any policy is per deployment."""
        leases: list[Lease] = []
        limits = await self._limits(request)
        if not self._deployment_policies:
            if limits:
                leases.append((await self._admit(limits)).lease)
            return leases

        # Deployment limits need the deployment the router picks: admit everything
        # together then, still in one round trip.
        async def on_deployment(name: str) -> None:
            scoped = [*limits, *limits_for(self._deployment_policies, {"deployment": name})]
            if scoped:
                leases.append((await self._admit(scoped)).lease)

        callstate.on_deployment.set(on_deployment)
        return leases

    def _end(self, leases: list[Lease], alias: str, usage: Any) -> None:
        for lease in leases:
            self._settle(lease, alias, usage)

    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        if not method.startswith(INFERENCE) or method == LIST_MODELS:
            return behavior

        async def unary(request: Any, context: Context) -> Any:
            leases = await self._begin(request)
            usage = None
            try:
                response = await behavior(request, context)
                usage = response.usage if response.HasField("usage") else None
                return response
            finally:
                self._end(leases, request.model, usage)

        return unary

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        if not method.startswith(INFERENCE):
            return behavior

        async def stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            leases = await self._begin(request)
            usage = None
            try:
                async with aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        if response.HasField("usage"):
                            usage = response.usage
                        yield response
            finally:
                self._end(leases, request.model, usage)

        return stream
