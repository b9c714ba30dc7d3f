"""AdminService: tenants, consumers, admins, API keys, services, subscriptions,
quota usage, deployments.

Thin: who may do what is decided in admin_access.py (which also translates store
errors), messages are built in admin_convert.py, key issuing lives in
admin_keys.py, the services and subscriptions RPCs in admin_subscriptions.py, and
the quota RPCs in admin_quotas.py, the deployments' health in admin_routing.py.
Every failure is a GatewayError for interceptors/errors.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from unigate.gateway.errors import FieldViolation, invalid_argument
from unigate.gateway.identity.keys import generate_key
from unigate.gateway.identity.principal import Principal
from unigate.gateway.interceptors.base import Context
from unigate.gateway.routing.router import Router
from unigate.gateway.services import admin_convert as convert
from unigate.gateway.services.admin_access import (
    administered_consumer,
    check_administers,
    list_scope,
    require_admin,
    require_global_admin,
    required,
    state_conflict,
    store_errors,
)
from unigate.gateway.services.admin_calllogs import CallLogRpcs
from unigate.gateway.services.admin_keys import (
    DEFAULT_ROTATION_GRACE,
    BootstrapRefused,
    KeyFactory,
    KeyHolder,
    bootstrap_admin,
    is_live,
    revocation_time,
    rotated_expiry,
)
from unigate.gateway.services.admin_quotas import QuotaPolicyRpcs, QuotaRpcs, QuotaView
from unigate.gateway.services.admin_routing import RoutingRpcs
from unigate.gateway.services.admin_subscriptions import SubscriptionRpcs
from unigate.gateway.store.base import Store
from unigate.gateway.store.models import ApiKey
from unigate.v1 import admin_pb2 as pb

__all__ = ["AdminService", "BootstrapRefused", "QuotaView", "bootstrap_admin"]

_EXISTS = grpc.StatusCode.ALREADY_EXISTS


class AdminService(SubscriptionRpcs, QuotaRpcs, QuotaPolicyRpcs, CallLogRpcs, RoutingRpcs):
    def __init__(
        self,
        store: Store,
        key_factory: KeyFactory = generate_key,
        *,
        clock: Callable[[], float] = time.time,
        key_changed: Callable[[str], None] | None = None,
        quotas: QuotaView | None = None,
        call_logs: Store | None = None,
        router: Router | None = None,
    ) -> None:
        """`key_changed(key_id)` runs after a key is revoked or rotated, so this
        process's key cache can forget it at once (KeyAuthenticator.forget);
        other processes notice within their cache TTL. `quotas` (the quota
        interceptor's backend and policies) serves the quota RPCs; without it
        they answer FAILED_PRECONDITION, as ListDeployments does without `router`."""
        self._store = store
        self._new_key = key_factory
        self._clock = clock
        self._key_changed = key_changed or (lambda key_id: None)
        self._quotas = quotas
        self._call_logs = call_logs or store  # call_log.store_url, when it is another
        self._router = router

    # tenants

    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: Context
    ) -> pb.CreateTenantResponse:
        require_global_admin()
        convert.require_name(request.name)
        with store_errors("tenant", request.name, conflict=_EXISTS, invalid_field="name"):
            tenant = await self._store.create_tenant(request.name)
        return pb.CreateTenantResponse(tenant=convert.tenant_pb(tenant))

    async def GetTenant(
        self, request: pb.GetTenantRequest, context: Context
    ) -> pb.GetTenantResponse:
        principal = require_admin()
        required(tenant_id=request.tenant_id)
        check_administers(principal, request.tenant_id, "tenant", request.tenant_id)
        with store_errors("tenant", request.tenant_id):
            tenant = await self._store.get_tenant(request.tenant_id)
        return pb.GetTenantResponse(tenant=convert.tenant_pb(tenant))

    async def ListTenants(
        self, request: pb.ListTenantsRequest, context: Context
    ) -> pb.ListTenantsResponse:
        principal = require_admin()
        size = convert.page_size(request.page_size)
        if not principal.is_admin():
            # A tenant admin's list is its own tenant, one page long.
            if request.page_token or principal.tenant_id is None:
                return pb.ListTenantsResponse()
            with store_errors("tenant", principal.tenant_id):
                own = await self._store.get_tenant(principal.tenant_id)
            return pb.ListTenantsResponse(tenants=[convert.tenant_pb(own)])
        with store_errors("tenant", ""):
            page = await self._store.list_tenants(size, request.page_token)
        return pb.ListTenantsResponse(
            tenants=[convert.tenant_pb(t) for t in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateTenant(
        self, request: pb.UpdateTenantRequest, context: Context
    ) -> pb.UpdateTenantResponse:
        require_global_admin()
        required(tenant_id=request.tenant_id)
        name = request.name if request.HasField("name") else None
        if name is not None:
            convert.require_name(name)
        disabled = request.disabled if request.HasField("disabled") else None
        with store_errors("tenant", request.tenant_id, conflict=_EXISTS, invalid_field="name"):
            tenant = await self._store.update_tenant(
                request.tenant_id, name=name, disabled=disabled
            )
        return pb.UpdateTenantResponse(tenant=convert.tenant_pb(tenant))

    # consumers

    async def CreateConsumer(
        self, request: pb.CreateConsumerRequest, context: Context
    ) -> pb.CreateConsumerResponse:
        principal = require_admin()
        tenant_id = request.tenant_id or principal.tenant_id or ""
        required(tenant_id=tenant_id)
        convert.require_name(request.name)
        check_administers(principal, tenant_id, "tenant", tenant_id)
        with store_errors("tenant", tenant_id):
            await self._store.get_tenant(tenant_id)
        with store_errors("consumer", request.name, conflict=_EXISTS, invalid_field="name"):
            consumer = await self._store.create_consumer(tenant_id, request.name)
        return pb.CreateConsumerResponse(consumer=convert.consumer_pb(consumer))

    async def GetConsumer(
        self, request: pb.GetConsumerRequest, context: Context
    ) -> pb.GetConsumerResponse:
        principal = require_admin()
        consumer = await administered_consumer(self._store, principal, request.consumer_id)
        return pb.GetConsumerResponse(consumer=convert.consumer_pb(consumer))

    async def ListConsumers(
        self, request: pb.ListConsumersRequest, context: Context
    ) -> pb.ListConsumersResponse:
        principal = require_admin()
        tenant_id = list_scope(principal, request.tenant_id, required=True) or ""
        size = convert.page_size(request.page_size)
        with store_errors("tenant", tenant_id):
            await self._store.get_tenant(tenant_id)
            page = await self._store.list_consumers(tenant_id, size, request.page_token)
        return pb.ListConsumersResponse(
            consumers=[convert.consumer_pb(c) for c in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateConsumer(
        self, request: pb.UpdateConsumerRequest, context: Context
    ) -> pb.UpdateConsumerResponse:
        principal = require_admin()
        await administered_consumer(self._store, principal, request.consumer_id)
        name = request.name if request.HasField("name") else None
        if name is not None:
            convert.require_name(name)
        disabled = request.disabled if request.HasField("disabled") else None
        with store_errors("consumer", request.consumer_id, conflict=_EXISTS, invalid_field="name"):
            consumer = await self._store.update_consumer(
                request.consumer_id, name=name, disabled=disabled
            )
        return pb.UpdateConsumerResponse(consumer=convert.consumer_pb(consumer))

    # admins and keys

    async def CreateAdmin(
        self, request: pb.CreateAdminRequest, context: Context
    ) -> pb.CreateAdminResponse:
        principal = require_admin()
        convert.require_name(request.name)
        if not request.tenant_id:
            require_global_admin()
        else:
            check_administers(principal, request.tenant_id, "tenant", request.tenant_id)
            with store_errors("tenant", request.tenant_id):
                await self._store.get_tenant(request.tenant_id)
        with store_errors("admin", request.name, conflict=_EXISTS, invalid_field="name"):
            admin = await self._store.create_admin(request.name, request.tenant_id or None)
        return pb.CreateAdminResponse(admin=convert.admin_pb(admin))

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        principal = require_admin()
        problems = [] if not request.name else convert.check_name(request.name)
        expires_at = None
        if request.HasField("expire_time"):
            expires_at = convert.epoch_of(request.expire_time)
            if expires_at <= self._clock():
                problems.append(FieldViolation("expire_time", "must be in the future"))
        owner = request.WhichOneof("owner")
        if owner is None:
            problems.append(FieldViolation("owner", "set consumer_id or admin_id"))
        if problems:
            raise invalid_argument(problems)
        if owner == "consumer_id":
            consumer = await administered_consumer(self._store, principal, request.consumer_id)
            holder = KeyHolder(consumer.tenant_id, consumer_id=consumer.id)
        else:
            required(admin_id=request.admin_id)
            with store_errors("admin", request.admin_id):
                admin = await self._store.get_admin(request.admin_id)
            check_administers(principal, admin.tenant_id, "admin", request.admin_id)
            holder = KeyHolder(admin.tenant_id, admin_id=admin.id)
        key, secret = await self._issue(request.name, holder, expires_at)
        return pb.CreateApiKeyResponse(api_key=convert.api_key_pb(key), secret=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        principal = require_admin()
        tenant_id = list_scope(principal, request.tenant_id, required=False)
        size = convert.page_size(request.page_size)
        if request.consumer_id:
            await administered_consumer(self._store, principal, request.consumer_id)
        with store_errors("api key", ""):
            page = await self._store.list_keys(
                tenant_id=tenant_id,
                consumer_id=request.consumer_id or None,
                page_size=size,
                page_token=request.page_token,
            )
        return pb.ListApiKeysResponse(
            api_keys=[convert.api_key_pb(k) for k in page.items],
            next_page_token=page.next_page_token,
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        principal = require_admin()
        await self._administered_key(principal, request.key_id)
        with store_errors("api key", request.key_id):
            key = await self._store.revoke_key(request.key_id)
        self._key_changed(key.id)
        return pb.RevokeApiKeyResponse(api_key=convert.api_key_pb(key))

    async def RotateApiKey(
        self, request: pb.RotateApiKeyRequest, context: Context
    ) -> pb.RotateApiKeyResponse:
        principal = require_admin()
        grace = DEFAULT_ROTATION_GRACE
        problems = []
        if request.HasField("grace_period"):
            grace = convert.seconds_of(request.grace_period)
            if grace < 0:
                problems.append(FieldViolation("grace_period", "must not be negative"))
        now = self._clock()
        expires_at = None
        if request.HasField("expire_time"):
            expires_at = convert.epoch_of(request.expire_time)
            if expires_at <= now:
                problems.append(FieldViolation("expire_time", "must be in the future"))
        if problems:
            raise invalid_argument(problems)
        old = await self._administered_key(principal, request.key_id)
        if not is_live(old, now):
            raise state_conflict(
                "api key", old.id, "the key is revoked or expired; create a new key instead"
            )
        expiry = rotated_expiry(old, expires_at, now)
        new_key, secret = await self._issue(old.name, KeyHolder.of(old), expiry)
        with store_errors("api key", old.id):
            previous = await self._store.revoke_key(old.id, at=revocation_time(old, grace, now))
        self._key_changed(old.id)
        return pb.RotateApiKeyResponse(
            api_key=convert.api_key_pb(new_key),
            secret=secret,
            previous_api_key=convert.api_key_pb(previous),
        )

    async def _administered_key(self, principal: Principal, key_id: str) -> ApiKey:
        required(key_id=key_id)
        with store_errors("api key", key_id):
            key = await self._store.get_key(key_id)
        check_administers(principal, key.tenant_id, "api key", key_id)
        return key

    async def _issue(
        self, name: str, holder: KeyHolder, expires_at: float | None
    ) -> tuple[ApiKey, str]:
        """Store a new key for `holder`; return it and its whole string."""
        new = self._new_key()
        with store_errors("api key", new.key_id, conflict=_EXISTS, invalid_field="owner"):
            key = await self._store.create_key(
                key_id=new.key_id,
                secret_hash=new.secret_hash,
                name=name,
                tenant_id=holder.tenant_id,
                consumer_id=holder.consumer_id,
                admin_id=holder.admin_id,
                expires_at=expires_at,
            )
        return key, new.key
