"""Who may call what on the AdminService, and tenant isolation for every call: tenant
A's admin (or consumer) gets NOT_FOUND for tenant B's records, with the very answer
a record that does not exist gets, and lists that show only tenant A."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from tests.admin_harness import (
    DENIED,
    NOT_FOUND,
    World,
    admin_server,
    consumer,
    expect,
    tenant_admin,
    world,
)
from unigate.gateway.store.models import SubscriptionStatus
from unigate.v1 import admin_pb2 as pb

__all__ = ["admin_server", "world"]  # fixtures, imported for pytest

SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"]
ALL_RPCS = sorted(SERVICE.methods_by_name)
CONSUMER_RPCS = {"RequestSubscription", "ListSubscriptions", "ListServices"}
GLOBAL_ONLY_RPCS = {"CreateTenant", "UpdateTenant", "UpsertService", "ListDeployments"}


def empty_request(rpc: str) -> Any:
    return getattr(pb, SERVICE.methods_by_name[rpc].input_type.name)()


@pytest.mark.parametrize("rpc", ALL_RPCS)
async def test_every_rpc_needs_credentials(world: World, rpc: str) -> None:
    await expect(
        world.call(rpc, empty_request(rpc), who=None),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


@pytest.mark.parametrize("rpc", sorted(set(ALL_RPCS) - CONSUMER_RPCS))
async def test_consumers_may_not_administer(world: World, rpc: str) -> None:
    error = await expect(world.call(rpc, empty_request(rpc), consumer(world.a, world.a1)), *DENIED)
    assert "admin" in (error.details() or "")


GLOBAL_ONLY: dict[str, Callable[[World], Any]] = {
    "CreateTenant": lambda w: pb.CreateTenantRequest(name="mine"),
    "UpdateTenant": lambda w: pb.UpdateTenantRequest(tenant_id=w.a, disabled=True),
    "UpsertService": lambda w: pb.UpsertServiceRequest(tenant_id=w.a, alias="o1"),
    "ListDeployments": lambda w: pb.ListDeploymentsRequest(alias="gpt"),
}
assert set(GLOBAL_ONLY) == GLOBAL_ONLY_RPCS


@pytest.mark.parametrize("rpc", sorted(GLOBAL_ONLY))
async def test_tenant_admins_may_not_call_global_rpcs(world: World, rpc: str) -> None:
    """Even for their own tenant: tenants, their services and the upstream deployments
    are the platform's."""
    await expect(world.call(rpc, GLOBAL_ONLY[rpc](world), tenant_admin(world.a)), *DENIED)


async def test_consumer_may_request_and_list_its_own(world: World) -> None:
    me = consumer(world.a, world.a1)
    mine = await world.call("ListSubscriptions", pb.ListSubscriptionsRequest(), me)
    assert [s.id for s in mine.subscriptions] == [world.a1_sub]
    services = await world.call("ListServices", pb.ListServicesRequest(), me)
    assert {s.tenant_id for s in services.services} == {world.a}
    asked = await world.call("RequestSubscription", pb.RequestSubscriptionRequest(alias="free"), me)
    assert asked.subscription.consumer_id == world.a1
    named = await world.call(
        "ListSubscriptions", pb.ListSubscriptionsRequest(consumer_id=world.a1), me
    )
    assert len(named.subscriptions) == 2


# Tenant A's admin naming tenant B's records: (rpc, request from the world and an id).
# Each is also sent with an id that exists nowhere; both answers must be the same.
Ids = Callable[[World], str]
Build = Callable[[World, str], Any]
A_ADMIN_CASES: dict[str, tuple[str, Ids, Build]] = {
    "get tenant": ("GetTenant", lambda w: w.b, lambda w, i: pb.GetTenantRequest(tenant_id=i)),
    "create consumer": (
        "CreateConsumer",
        lambda w: w.b,
        lambda w, i: pb.CreateConsumerRequest(tenant_id=i, name="x"),
    ),
    "get consumer": (
        "GetConsumer",
        lambda w: w.b1,
        lambda w, i: pb.GetConsumerRequest(consumer_id=i),
    ),
    "update consumer": (
        "UpdateConsumer",
        lambda w: w.b1,
        lambda w, i: pb.UpdateConsumerRequest(consumer_id=i, name="x"),
    ),
    "list consumers": (
        "ListConsumers",
        lambda w: w.b,
        lambda w, i: pb.ListConsumersRequest(tenant_id=i),
    ),
    "create admin": (
        "CreateAdmin",
        lambda w: w.b,
        lambda w, i: pb.CreateAdminRequest(tenant_id=i, name="x"),
    ),
    "key for consumer": (
        "CreateApiKey",
        lambda w: w.b1,
        lambda w, i: pb.CreateApiKeyRequest(consumer_id=i),
    ),
    "key for admin": (
        "CreateApiKey",
        lambda w: w.b_admin,
        lambda w, i: pb.CreateApiKeyRequest(admin_id=i),
    ),
    "key for global admin": (
        "CreateApiKey",
        lambda w: w.global_admin,
        lambda w, i: pb.CreateApiKeyRequest(admin_id=i),
    ),
    "list keys of tenant": (
        "ListApiKeys",
        lambda w: w.b,
        lambda w, i: pb.ListApiKeysRequest(tenant_id=i),
    ),
    "list keys of consumer": (
        "ListApiKeys",
        lambda w: w.b1,
        lambda w, i: pb.ListApiKeysRequest(consumer_id=i),
    ),
    "revoke key": (
        "RevokeApiKey",
        lambda w: w.b1_key,
        lambda w, i: pb.RevokeApiKeyRequest(key_id=i),
    ),
    "revoke global key": (
        "RevokeApiKey",
        lambda w: w.global_key,
        lambda w, i: pb.RevokeApiKeyRequest(key_id=i),
    ),
    "rotate key": (
        "RotateApiKey",
        lambda w: w.b1_key,
        lambda w, i: pb.RotateApiKeyRequest(key_id=i),
    ),
    "rotate admin key": (
        "RotateApiKey",
        lambda w: w.b_admin_key,
        lambda w, i: pb.RotateApiKeyRequest(key_id=i),
    ),
    "list services": (
        "ListServices",
        lambda w: w.b,
        lambda w, i: pb.ListServicesRequest(tenant_id=i),
    ),
    "request subscription": (
        "RequestSubscription",
        lambda w: w.b1,
        lambda w, i: pb.RequestSubscriptionRequest(consumer_id=i, alias="gpt"),
    ),
    "approve": (
        "ApproveSubscription",
        lambda w: w.b1_sub,
        lambda w, i: pb.ApproveSubscriptionRequest(subscription_id=i),
    ),
    "reject": (
        "RejectSubscription",
        lambda w: w.b1_sub,
        lambda w, i: pb.RejectSubscriptionRequest(subscription_id=i),
    ),
    "revoke subscription": (
        "RevokeSubscription",
        lambda w: w.b1_sub,
        lambda w, i: pb.RevokeSubscriptionRequest(subscription_id=i),
    ),
    "list subscriptions of tenant": (
        "ListSubscriptions",
        lambda w: w.b,
        lambda w, i: pb.ListSubscriptionsRequest(tenant_id=i),
    ),
    "list subscriptions of consumer": (
        "ListSubscriptions",
        lambda w: w.b1,
        lambda w, i: pb.ListSubscriptionsRequest(consumer_id=i),
    ),
    "list call logs of tenant": (
        "ListCallLogs",
        lambda w: w.b,
        lambda w, i: pb.ListCallLogsRequest(tenant_id=i),
    ),
    "usage stats of tenant": (
        "GetUsageStats",
        lambda w: w.b,
        lambda w, i: pb.GetUsageStatsRequest(tenant_id=i),
    ),
}

_POLICY = pb.QuotaPolicy(requests_per_minute=1)
# Quota policies: tenant B's, or B's consumer named under A's tenant or under B's.
QUOTA_POLICY_CASES: dict[str, tuple[str, Ids, Build]] = {
    "get policy of tenant": (
        "GetQuotaPolicy",
        lambda w: w.b,
        lambda w, i: pb.GetQuotaPolicyRequest(tenant_id=i),
    ),
    "get policy of consumer": (
        "GetQuotaPolicy",
        lambda w: w.b1,
        lambda w, i: pb.GetQuotaPolicyRequest(tenant_id=w.a, consumer_id=i),
    ),
    "get policy of consumer in its tenant": (
        "GetQuotaPolicy",
        lambda w: w.b,
        lambda w, i: pb.GetQuotaPolicyRequest(tenant_id=i, consumer_id=w.b1),
    ),
    "set policy of consumer": (
        "SetQuotaPolicy",
        lambda w: w.b1,
        lambda w, i: pb.SetQuotaPolicyRequest(tenant_id=w.a, consumer_id=i, policy=_POLICY),
    ),
    "set policy of consumer in its tenant": (
        "SetQuotaPolicy",
        lambda w: w.b,
        lambda w, i: pb.SetQuotaPolicyRequest(tenant_id=i, consumer_id=w.b1, policy=_POLICY),
    ),
    "delete policy of consumer": (
        "DeleteQuotaPolicy",
        lambda w: w.b1,
        lambda w, i: pb.DeleteQuotaPolicyRequest(tenant_id=w.a, consumer_id=i),
    ),
    "delete policy of consumer in its tenant": (
        "DeleteQuotaPolicy",
        lambda w: w.b,
        lambda w, i: pb.DeleteQuotaPolicyRequest(tenant_id=i, consumer_id=w.b1),
    ),
}

# A consumer of tenant A naming other consumers' or tenant B's records.
CONSUMER_CASES: dict[str, tuple[str, Ids, Build]] = {
    "services of tenant B": A_ADMIN_CASES["list services"],
    "subscriptions of tenant B": A_ADMIN_CASES["list subscriptions of tenant"],
    "subscriptions of B's consumer": A_ADMIN_CASES["list subscriptions of consumer"],
    "subscriptions of a neighbour": (
        "ListSubscriptions",
        lambda w: w.a2,
        lambda w, i: pb.ListSubscriptionsRequest(consumer_id=i),
    ),
    "request for B's consumer": A_ADMIN_CASES["request subscription"],
    "request for a neighbour": (
        "RequestSubscription",
        lambda w: w.a2,
        lambda w, i: pb.RequestSubscriptionRequest(consumer_id=i, alias="gpt"),
    ),
}

MISSING = "zz_0000000000missing"


async def _same_as_missing(world: World, case: tuple[str, Ids, Build], who: str) -> None:
    rpc, ident, build = case
    other = ident(world)
    hidden = await expect(world.call(rpc, build(world, other), who), *NOT_FOUND)
    missing = await expect(world.call(rpc, build(world, MISSING), who), *NOT_FOUND)
    assert (hidden.details() or "").replace(other, "<id>") == (missing.details() or "").replace(
        MISSING, "<id>"
    )


@pytest.mark.parametrize("case", sorted(A_ADMIN_CASES))
async def test_tenant_admin_cannot_see_another_tenant(world: World, case: str) -> None:
    await _same_as_missing(world, A_ADMIN_CASES[case], tenant_admin(world.a))
    await _b_is_untouched(world)


B_POLICIES = [
    ("tenant", {"requests_per_minute": 100.0}),
    ("consumer", {"requests_per_minute": 10.0}),
]


@pytest.mark.parametrize("case", sorted(QUOTA_POLICY_CASES))
async def test_tenant_admin_cannot_see_another_tenants_quota_policies(
    world: World, case: str
) -> None:
    store = world.server.store
    await store.set_quota_policy(world.b, None, dict(B_POLICIES[0][1]))
    await store.set_quota_policy(world.b, world.b1, dict(B_POLICIES[1][1]))
    await _same_as_missing(world, QUOTA_POLICY_CASES[case], tenant_admin(world.a))
    assert await store.get_quota_policies(world.b, world.b1) == B_POLICIES


@pytest.mark.parametrize("rpc", ["SetQuotaPolicy", "DeleteQuotaPolicy"])
async def test_tenant_policies_take_a_global_admin(world: World, rpc: str) -> None:
    """A tenant admin may not change its own tenant's limits, let alone another's."""
    build = {
        "SetQuotaPolicy": lambda t: pb.SetQuotaPolicyRequest(tenant_id=t, policy=_POLICY),
        "DeleteQuotaPolicy": lambda t: pb.DeleteQuotaPolicyRequest(tenant_id=t),
    }[rpc]
    for tenant in (world.a, world.b):
        await expect(world.call(rpc, build(tenant), tenant_admin(world.a)), *DENIED)


@pytest.mark.parametrize("case", sorted(CONSUMER_CASES))
async def test_consumer_cannot_see_others(world: World, case: str) -> None:
    await _same_as_missing(world, CONSUMER_CASES[case], consumer(world.a, world.a1))


async def _b_is_untouched(world: World) -> None:
    store = world.server.store
    assert (await store.get_subscription(world.b1_sub)).status == SubscriptionStatus.PENDING
    assert (await store.get_key(world.b1_key)).revoked_at is None
    assert (await store.get_key(world.global_key)).revoked_at is None
    assert (await store.get_consumer(world.b1)).name == "b-app-1"
    assert [c.name for c in (await store.list_consumers(world.b)).items] == ["b-app-1"]
    assert {k.id for k in (await store.list_keys(tenant_id=world.b)).items} == {
        world.b1_key,
        world.b_admin_key,
    }


async def test_tenant_admin_lists_show_only_its_tenant(world: World) -> None:
    who = tenant_admin(world.a)
    tenants = await world.call("ListTenants", pb.ListTenantsRequest(), who)
    assert [t.id for t in tenants.tenants] == [world.a]
    consumers = await world.call("ListConsumers", pb.ListConsumersRequest(), who)
    assert {c.id for c in consumers.consumers} == {world.a1, world.a2}
    await world.call("CreateApiKey", pb.CreateApiKeyRequest(admin_id=world.a_admin), who)
    keys = await world.call("ListApiKeys", pb.ListApiKeysRequest(), who)
    assert {k.tenant_id for k in keys.api_keys} == {world.a}
    assert world.global_key not in {k.id for k in keys.api_keys}
    services = await world.call("ListServices", pb.ListServicesRequest(), who)
    assert {s.tenant_id for s in services.services} == {world.a}
    subscriptions = await world.call("ListSubscriptions", pb.ListSubscriptionsRequest(), who)
    assert [s.id for s in subscriptions.subscriptions] == [world.a1_sub]
    # Naming its own tenant explicitly is the same as leaving it out.
    explicit = await world.call(
        "ListSubscriptions", pb.ListSubscriptionsRequest(tenant_id=world.a), who
    )
    assert explicit == subscriptions


async def test_global_admin_sees_every_tenant(world: World) -> None:
    keys = await world.call("ListApiKeys", pb.ListApiKeysRequest())
    assert {world.a1_key, world.b1_key, world.global_key} <= {k.id for k in keys.api_keys}
    for rpc, request in (
        ("GetConsumer", pb.GetConsumerRequest(consumer_id=world.b1)),
        ("ApproveSubscription", pb.ApproveSubscriptionRequest(subscription_id=world.b1_sub)),
        ("RevokeApiKey", pb.RevokeApiKeyRequest(key_id=world.b1_key)),
    ):
        await world.call(rpc, request)


async def test_tenant_b_admin_can_act_on_its_own(world: World) -> None:
    who = tenant_admin(world.b)
    approved = await world.call(
        "ApproveSubscription", pb.ApproveSubscriptionRequest(subscription_id=world.b1_sub), who
    )
    assert approved.subscription.status == pb.SUBSCRIPTION_STATUS_APPROVED
    rotated = await world.call("RotateApiKey", pb.RotateApiKeyRequest(key_id=world.b1_key), who)
    assert rotated.api_key.tenant_id == world.b
