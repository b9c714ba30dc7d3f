"""Quota policies kept in the store, set through the AdminService of the real
server, limit that tenant's calls and no other tenant's."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.conftest import StartGateway
from tests.helpers import error_info
from tests.integration.test_auth_gateway import REQUEST, config
from unigate.gateway.identity.keys import generate_key
from unigate.gateway.store.models import SubscriptionStatus
from unigate.v1 import admin_pb2, admin_pb2_grpc


async def test_a_stored_tenant_policy_limits_that_tenant_only(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    running = await start_gateway(config(tmp_path))
    store = running.gateway.security.store
    assert store is not None

    async def consumer_key(tenant: str) -> str:
        consumer = await store.create_consumer(tenant, "app")
        await store.upsert_service(tenant, "mock", requires_approval=False)
        sub = await store.request_subscription(consumer.id, "mock")
        assert sub.status == SubscriptionStatus.APPROVED
        new = generate_key()
        await store.create_key(
            key_id=new.key_id,
            secret_hash=new.secret_hash,
            name="k",
            tenant_id=tenant,
            consumer_id=consumer.id,
        )
        return new.key

    acme = (await store.create_tenant("acme")).id
    globex = (await store.create_tenant("globex")).id
    acme_key, globex_key = await consumer_key(acme), await consumer_key(globex)
    root = await store.create_admin("root", None)
    admin_key = generate_key()
    await store.create_key(
        key_id=admin_key.key_id,
        secret_hash=admin_key.secret_hash,
        name="root",
        tenant_id=None,
        admin_id=root.id,
    )

    admin = admin_pb2_grpc.AdminServiceStub(running.channel)
    policy = admin_pb2.QuotaPolicy(requests_per_minute=2)
    answer = await admin.SetQuotaPolicy(
        admin_pb2.SetQuotaPolicyRequest(tenant_id=acme, policy=policy),
        metadata=(("authorization", f"Bearer {admin_key.key}"),),
    )
    assert answer.policy == policy

    def as_(key: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"),)

    for _ in range(2):
        await running.stub.Chat(REQUEST, metadata=as_(acme_key))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Chat(REQUEST, metadata=as_(acme_key))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "RATE_LIMITED"
    for _ in range(4):  # another tenant: no stored policy, no limit
        await running.stub.Chat(REQUEST, metadata=as_(globex_key))

    # The admin sees the stored limit used up, and can reset it.
    admin_md = (("authorization", f"Bearer {admin_key.key}"),)
    usage = await admin.GetQuotaUsage(
        admin_pb2.GetQuotaUsageRequest(scope=admin_pb2.QUOTA_SCOPE_TENANT, id=acme),
        metadata=admin_md,
    )
    [row] = [u for u in usage.usages if u.limit_name == "requests_per_minute"]
    assert (row.limit, row.remaining) == (2, 0)
    await admin.ResetQuotaUsage(
        admin_pb2.ResetQuotaUsageRequest(scope=admin_pb2.QUOTA_SCOPE_TENANT, id=acme),
        metadata=admin_md,
    )
    assert (await running.stub.Chat(REQUEST, metadata=as_(acme_key))).message.content
