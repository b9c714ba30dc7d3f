"""The AdminService's services and subscriptions RPCs (AdminService inherits them).

A consumer may list its tenant's services, request subscriptions for itself and
list its own; deciding on a subscription takes an admin of its tenant.
"""

from __future__ import annotations

import grpc

from unigate.gateway.interceptors.base import Context
from unigate.gateway.services import admin_convert as convert
from unigate.gateway.services.admin_access import (
    administered_consumer,
    caller,
    check_administers,
    is_any_admin,
    list_scope,
    not_found,
    require_admin,
    require_global_admin,
    required,
    store_errors,
)
from unigate.gateway.store.base import Store
from unigate.gateway.store.models import Subscription, SubscriptionStatus
from unigate.v1 import admin_pb2 as pb
from unigate.v1 import admin_pb2_grpc

_EXISTS = grpc.StatusCode.ALREADY_EXISTS


class SubscriptionRpcs(admin_pb2_grpc.AdminServiceServicer):
    _store: Store

    # services

    async def ListServices(
        self, request: pb.ListServicesRequest, context: Context
    ) -> pb.ListServicesResponse:
        principal = caller()
        tenant_id = list_scope(principal, request.tenant_id, required=True) or ""
        size = convert.page_size(request.page_size)
        with store_errors("tenant", tenant_id):
            if principal.is_admin():
                await self._store.get_tenant(tenant_id)
            page = await self._store.list_services(tenant_id, size, request.page_token)
        return pb.ListServicesResponse(
            services=[convert.service_pb(s) for s in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpsertService(
        self, request: pb.UpsertServiceRequest, context: Context
    ) -> pb.UpsertServiceResponse:
        require_global_admin()
        required(tenant_id=request.tenant_id, alias=request.alias)
        convert.require_name(request.alias, "alias")
        with store_errors("tenant", request.tenant_id, invalid_field="alias"):
            await self._store.get_tenant(request.tenant_id)
            service = await self._store.upsert_service(
                request.tenant_id, request.alias, requires_approval=request.requires_approval
            )
        return pb.UpsertServiceResponse(service=convert.service_pb(service))

    # subscriptions

    async def RequestSubscription(
        self, request: pb.RequestSubscriptionRequest, context: Context
    ) -> pb.RequestSubscriptionResponse:
        principal = caller()
        consumer_id = request.consumer_id or principal.consumer_id or ""
        required(consumer_id=consumer_id, alias=request.alias)
        with store_errors("consumer", consumer_id):
            consumer = await self._store.get_consumer(consumer_id)
        if consumer_id != principal.consumer_id:
            # Only admins act for other consumers; to anyone else they do not exist.
            if not is_any_admin(principal):
                raise not_found("consumer", consumer_id)
            check_administers(principal, consumer.tenant_id, "consumer", consumer_id)
        elif consumer.tenant_id != principal.tenant_id:
            raise not_found("consumer", consumer_id)
        with store_errors("service", request.alias):
            await self._store.get_service(consumer.tenant_id, request.alias)
        with store_errors("subscription", request.alias, conflict=_EXISTS):
            subscription = await self._store.request_subscription(consumer_id, request.alias)
        return pb.RequestSubscriptionResponse(subscription=convert.subscription_pb(subscription))

    async def ApproveSubscription(
        self, request: pb.ApproveSubscriptionRequest, context: Context
    ) -> pb.ApproveSubscriptionResponse:
        decided = await self._decide(request, SubscriptionStatus.APPROVED)
        return pb.ApproveSubscriptionResponse(subscription=convert.subscription_pb(decided))

    async def RejectSubscription(
        self, request: pb.RejectSubscriptionRequest, context: Context
    ) -> pb.RejectSubscriptionResponse:
        decided = await self._decide(request, SubscriptionStatus.REJECTED)
        return pb.RejectSubscriptionResponse(subscription=convert.subscription_pb(decided))

    async def RevokeSubscription(
        self, request: pb.RevokeSubscriptionRequest, context: Context
    ) -> pb.RevokeSubscriptionResponse:
        decided = await self._decide(request, SubscriptionStatus.REVOKED)
        return pb.RevokeSubscriptionResponse(subscription=convert.subscription_pb(decided))

    async def _decide(
        self,
        request: pb.ApproveSubscriptionRequest
        | pb.RejectSubscriptionRequest
        | pb.RevokeSubscriptionRequest,
        status: SubscriptionStatus,
    ) -> Subscription:
        principal = require_admin()
        subscription_id = request.subscription_id
        required(subscription_id=subscription_id)
        with store_errors("subscription", subscription_id):
            found = await self._store.get_subscription(subscription_id)
        check_administers(principal, found.tenant_id, "subscription", subscription_id)
        with store_errors("subscription", subscription_id, invalid_field="note"):
            return await self._store.decide_subscription(
                subscription_id,
                status,
                by=principal.admin_id or principal.subject,
                note=request.note,
            )

    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: Context
    ) -> pb.ListSubscriptionsResponse:
        principal = caller()
        tenant_id = list_scope(principal, request.tenant_id, required=False)
        statuses = convert.statuses_of(request.statuses)
        size = convert.page_size(request.page_size)
        consumer_id = request.consumer_id or None
        if not is_any_admin(principal):
            own = principal.consumer_id
            if own is None or (consumer_id is not None and consumer_id != own):
                raise not_found("consumer", consumer_id or "")
            consumer_id = own
        elif consumer_id is not None:
            await administered_consumer(self._store, principal, consumer_id)
        with store_errors("subscription", ""):
            page = await self._store.list_subscriptions(
                tenant_id=tenant_id,
                consumer_id=consumer_id,
                statuses=statuses,
                page_size=size,
                page_token=request.page_token,
            )
        return pb.ListSubscriptionsResponse(
            subscriptions=[convert.subscription_pb(s) for s in page.items],
            next_page_token=page.next_page_token,
        )
