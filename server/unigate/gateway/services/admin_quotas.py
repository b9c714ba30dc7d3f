"""The AdminService's quota RPCs (AdminService inherits them): a subject's usage
of every configured limit that applies to it, and resetting its counters; and
the quota policies kept in the store per tenant and per consumer.

A subject is a scope and an id, as in the `quotas.policies` configuration. A
tenant admin may name its own tenant and the consumers and keys of its tenant
(others are NOT_FOUND, as missing ones are); alias, deployment and global
subjects belong to no tenant and take a global admin. A global admin may also
name consumers and keys the store does not hold (e.g. JWT subjects).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from unigate.gateway.errors import FieldViolation, GatewayError, Reason, invalid_argument
from unigate.gateway.identity.principal import Principal
from unigate.gateway.interceptors.base import Context
from unigate.gateway.quota.base import Kind, Limit, LimitState, QuotaBackend, QuotaUnavailable
from unigate.gateway.quota.policy import LIMIT_FIELDS, Policy, limits_for
from unigate.gateway.services.admin_access import (
    administered_consumer,
    check_administers,
    not_found,
    require_admin,
    require_global_admin,
    required,
    store_errors,
)
from unigate.gateway.store.base import NotFoundError, Store
from unigate.v1 import admin_pb2 as pb
from unigate.v1 import admin_pb2_grpc

_SCOPES = {
    pb.QUOTA_SCOPE_KEY: "key",
    pb.QUOTA_SCOPE_CONSUMER: "consumer",
    pb.QUOTA_SCOPE_TENANT: "tenant",
    pb.QUOTA_SCOPE_ALIAS: "alias",
    pb.QUOTA_SCOPE_DEPLOYMENT: "deployment",
    pb.QUOTA_SCOPE_GLOBAL: "global",
}
_GLOBAL_ONLY = frozenset({"alias", "deployment", "global"})
_KINDS = {
    Kind.REQUESTS: pb.QUOTA_KIND_REQUESTS,
    Kind.TOKENS: pb.QUOTA_KIND_TOKENS,
    Kind.SPEND: pb.QUOTA_KIND_SPEND,
    Kind.CONCURRENCY: pb.QUOTA_KIND_CONCURRENCY,
}


@dataclass(frozen=True, slots=True)
class QuotaView:
    """The quota counters and the policies that give the limits to read from them."""

    backend: QuotaBackend
    policies: Sequence[Policy]


def _subject(request: pb.GetQuotaUsageRequest | pb.ResetQuotaUsageRequest) -> tuple[str, str]:
    """(scope, id) of the request, or INVALID_ARGUMENT."""
    scope = _SCOPES.get(request.scope)
    if scope is None:
        raise invalid_argument([FieldViolation("scope", "required: name the subject's scope")])
    ident = request.id
    if scope == "global":
        if ident not in ("", "*"):
            raise invalid_argument(
                [FieldViolation("id", "the global scope has no id: leave it empty")]
            )
        return scope, "*"
    if not ident:
        raise invalid_argument([FieldViolation("id", "required")])
    return scope, ident


def _usage_pb(state: LimitState) -> pb.QuotaUsage:
    usage = pb.QuotaUsage(
        subject=state.limit.subject,
        limit_name=state.limit.name,
        kind=_KINDS[state.limit.kind],
        limit=state.limit.limit,
        remaining=max(state.remaining, 0.0),
    )
    usage.reset_after.FromNanoseconds(int(max(state.reset_after, 0.0) * 1e9))
    return usage


class QuotaRpcs(admin_pb2_grpc.AdminServiceServicer):
    _store: Store
    _quotas: QuotaView | None

    async def GetQuotaUsage(
        self, request: pb.GetQuotaUsageRequest, context: Context
    ) -> pb.GetQuotaUsageResponse:
        view, limits, _ = await self._quota_subject(request)
        return pb.GetQuotaUsageResponse(usages=await _read(view, limits))

    async def ResetQuotaUsage(
        self, request: pb.ResetQuotaUsageRequest, context: Context
    ) -> pb.ResetQuotaUsageResponse:
        view, limits, subject = await self._quota_subject(request)
        try:
            await view.backend.reset(subject)
        except QuotaUnavailable as exc:
            raise _unavailable() from exc
        return pb.ResetQuotaUsageResponse(usages=await _read(view, limits))

    async def _quota_subject(
        self, request: pb.GetQuotaUsageRequest | pb.ResetQuotaUsageRequest
    ) -> tuple[QuotaView, list[Limit], str]:
        """The quotas, the subject's limits and its `<scope>:<id>`, once the caller
        is known to administer the subject."""
        principal = require_admin()
        scope, ident = _subject(request)
        if scope in _GLOBAL_ONLY:
            require_global_admin()
        else:
            await self._check_subject(principal, scope, ident)
        if self._quotas is None:
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.QUOTAS_NOT_CONFIGURED,
                "no quota policies are configured",
            )
        policies = [*self._quotas.policies, *await self._stored_policies(scope, ident)]
        limits = limits_for(policies, {scope: ident})
        return self._quotas, limits, f"{scope}:{ident}"

    async def _stored_policies(self, scope: str, ident: str) -> list[Policy]:
        """A tenant's or a consumer's own policy from the store, as the quota check sees it."""
        if scope == "tenant":
            tenant_id, consumer_id = ident, None
        elif scope == "consumer":
            try:
                consumer = await self._store.get_consumer(ident)
            except NotFoundError:
                return []
            tenant_id, consumer_id = consumer.tenant_id, ident
        else:
            return []
        rows = await self._store.get_quota_policies(tenant_id, consumer_id)  # [] for none
        match = {"tenant": tenant_id, "consumer": consumer_id or ""}
        return [Policy(scope=s, match=match[s], **body) for s, body in rows if s == scope]

    async def _check_subject(self, principal: Principal, scope: str, ident: str) -> None:
        """NOT_FOUND unless `principal` administers the tenant the subject is in."""
        if scope == "tenant":
            check_administers(principal, ident, "tenant", ident)
            return
        resource = "consumer" if scope == "consumer" else "api key"
        tenant_id: str | None
        try:
            if scope == "consumer":
                tenant_id = (await self._store.get_consumer(ident)).tenant_id
            else:
                tenant_id = (await self._store.get_key(ident)).tenant_id
        except NotFoundError:
            if principal.is_admin():
                return  # e.g. a JWT subject: counted, but not in the store
            raise not_found(resource, ident) from None
        check_administers(principal, tenant_id, resource, ident)


async def _read(view: QuotaView, limits: list[Limit]) -> list[pb.QuotaUsage]:
    if not limits:
        return []
    try:
        states = await view.backend.usage(limits)
    except QuotaUnavailable as exc:
        raise _unavailable() from exc
    return [_usage_pb(state) for state in states]


def _unavailable() -> GatewayError:
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        Reason.QUOTA_BACKEND_UNAVAILABLE,
        "quota counters are unreachable; retry",
    )


_POLICY_FIELDS = tuple(name for name, _, _ in LIMIT_FIELDS)

PolicyRequest = pb.SetQuotaPolicyRequest | pb.GetQuotaPolicyRequest | pb.DeleteQuotaPolicyRequest


def _policy_pb(body: dict[str, Any]) -> pb.QuotaPolicy:
    return pb.QuotaPolicy(**body)


def _body_of(policy: pb.QuotaPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in _POLICY_FIELDS if policy.HasField(name)}


class QuotaPolicyRpcs(admin_pb2_grpc.AdminServiceServicer):
    """Quota policies kept in the store, per tenant (global admins) or per consumer
    (also the tenant's admins, each limit no higher than the tenant's)."""

    _store: Store

    async def SetQuotaPolicy(
        self, request: pb.SetQuotaPolicyRequest, context: Context
    ) -> pb.SetQuotaPolicyResponse:
        principal = await self._policy_target(request, write=True)
        if not request.HasField("policy"):
            raise invalid_argument([FieldViolation("policy", "required")])
        body = _body_of(request.policy)
        consumer_id = request.consumer_id or None
        if consumer_id is not None and not principal.is_admin():
            await self._check_within_tenant(request.tenant_id, body)
        with store_errors("tenant", request.tenant_id, invalid_field="policy"):
            await self._store.set_quota_policy(request.tenant_id, consumer_id, body)
        return pb.SetQuotaPolicyResponse(policy=await self._stored_policy(request))

    async def GetQuotaPolicy(
        self, request: pb.GetQuotaPolicyRequest, context: Context
    ) -> pb.GetQuotaPolicyResponse:
        await self._policy_target(request, write=False)
        return pb.GetQuotaPolicyResponse(policy=await self._stored_policy(request))

    async def DeleteQuotaPolicy(
        self, request: pb.DeleteQuotaPolicyRequest, context: Context
    ) -> pb.DeleteQuotaPolicyResponse:
        await self._policy_target(request, write=True)
        what, ident = _named(request)
        with store_errors(what, ident):
            await self._store.delete_quota_policy(request.tenant_id, request.consumer_id or None)
        return pb.DeleteQuotaPolicyResponse()

    async def _policy_target(self, request: PolicyRequest, *, write: bool) -> Principal:
        """The caller, once it may read (or write) the policy the request names."""
        principal = require_global_admin() if write and not request.consumer_id else require_admin()
        required(tenant_id=request.tenant_id)
        check_administers(principal, request.tenant_id, "tenant", request.tenant_id)
        if request.consumer_id:
            consumer = await administered_consumer(self._store, principal, request.consumer_id)
            if consumer.tenant_id != request.tenant_id:
                raise not_found("consumer", request.consumer_id)
        return principal

    async def _stored_policy(self, request: PolicyRequest) -> pb.QuotaPolicy:
        consumer_id = request.consumer_id or None
        rows = await self._store.get_quota_policies(request.tenant_id, consumer_id)
        wanted = "tenant" if consumer_id is None else "consumer"
        for scope, body in rows:
            if scope == wanted:
                return _policy_pb(body)
        raise not_found(*_named(request))

    async def _check_within_tenant(self, tenant_id: str, body: dict[str, Any]) -> None:
        """INVALID_ARGUMENT for a consumer limit above the tenant's same limit."""
        tenant = dict(await self._store.get_quota_policies(tenant_id, None)).get("tenant", {})
        above = [
            FieldViolation(f"policy.{name}", f"above the tenant's {name} of {tenant[name]:g}")
            for name, value in body.items()
            if name in tenant and value > tenant[name]
        ]
        if above:
            raise invalid_argument(above)


def _named(request: PolicyRequest) -> tuple[str, str]:
    if request.consumer_id:
        return "quota policy of consumer", request.consumer_id
    return "quota policy of tenant", request.tenant_id
