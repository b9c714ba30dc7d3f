"""The AdminService through a real grpc.aio server over a real SQLite store: every
RPC, pagination, the once-only secret, rotation, authorization and tenant isolation."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from tests.admin_harness import (
    DENIED,
    INVALID,
    NOT_FOUND,
    World,
    admin_server,
    consumer,
    expect,
    tenant_admin,
    world,
)
from tests.helpers import bad_request_fields
from unigate.gateway.identity.keys import hash_secret, parse_key
from unigate.v1 import admin_pb2 as pb

__all__ = ["admin_server", "world"]  # fixtures, imported for pytest

DAY = 24 * 3600


# --- tenants and consumers -------------------------------------------------------------


async def test_tenant_create_get_list_update(world: World) -> None:
    created = (await world.call("CreateTenant", pb.CreateTenantRequest(name="carol"))).tenant
    assert created.id.startswith("ten_") and created.name == "carol"
    assert abs(created.create_time.ToSeconds() - time.time()) < 60
    got = (await world.call("GetTenant", pb.GetTenantRequest(tenant_id=created.id))).tenant
    assert got == created
    listed = (await world.call("ListTenants", pb.ListTenantsRequest())).tenants
    assert sorted(t.name for t in listed) == ["acme", "bobs", "carol"]
    renamed = await world.call(
        "UpdateTenant", pb.UpdateTenantRequest(tenant_id=created.id, name="caroline")
    )
    assert (renamed.tenant.name, renamed.tenant.disabled) == ("caroline", False)
    disabled = await world.call(
        "UpdateTenant", pb.UpdateTenantRequest(tenant_id=created.id, disabled=True)
    )
    assert (disabled.tenant.name, disabled.tenant.disabled) == ("caroline", True)


async def test_tenant_errors(world: World) -> None:
    await expect(
        world.call("CreateTenant", pb.CreateTenantRequest(name="acme")),
        grpc.StatusCode.ALREADY_EXISTS,
        "RESOURCE_ALREADY_EXISTS",
    )
    error = await expect(world.call("CreateTenant", pb.CreateTenantRequest(name=" ")), *INVALID)
    assert "name" in bad_request_fields(error)
    error = await expect(
        world.call("GetTenant", pb.GetTenantRequest(tenant_id="ten_nope")), *NOT_FOUND
    )
    assert error.details() == "tenant 'ten_nope' not found"
    await expect(world.call("GetTenant", pb.GetTenantRequest()), *INVALID)
    await expect(
        world.call("UpdateTenant", pb.UpdateTenantRequest(tenant_id="ten_nope", name="x")),
        *NOT_FOUND,
    )


async def test_consumer_create_get_list_update(world: World) -> None:
    created = await world.call(
        "CreateConsumer", pb.CreateConsumerRequest(tenant_id=world.a, name="a-app-3")
    )
    new = created.consumer
    assert (new.tenant_id, new.name, new.disabled) == (world.a, "a-app-3", False)
    assert (
        await world.call("GetConsumer", pb.GetConsumerRequest(consumer_id=new.id))
    ).consumer == new
    listed = await world.call("ListConsumers", pb.ListConsumersRequest(tenant_id=world.a))
    assert sorted(c.name for c in listed.consumers) == ["a-app-1", "a-app-2", "a-app-3"]
    updated = await world.call(
        "UpdateConsumer",
        pb.UpdateConsumerRequest(consumer_id=new.id, name="renamed", disabled=True),
    )
    assert (updated.consumer.name, updated.consumer.disabled) == ("renamed", True)
    await expect(
        world.call("CreateConsumer", pb.CreateConsumerRequest(tenant_id=world.a, name="a-app-1")),
        grpc.StatusCode.ALREADY_EXISTS,
        "RESOURCE_ALREADY_EXISTS",
    )
    # A global admin must name the tenant.
    error = await expect(world.call("ListConsumers", pb.ListConsumersRequest()), *INVALID)
    assert "tenant_id" in bad_request_fields(error)
    await expect(
        world.call("ListConsumers", pb.ListConsumersRequest(tenant_id="ten_nope")), *NOT_FOUND
    )


async def test_tenant_admin_manages_its_own_tenant(world: World) -> None:
    who = tenant_admin(world.a)
    created = await world.call("CreateConsumer", pb.CreateConsumerRequest(name="mine"), who)
    assert created.consumer.tenant_id == world.a  # the tenant defaults to the caller's
    listed = await world.call("ListConsumers", pb.ListConsumersRequest(), who)
    assert {c.tenant_id for c in listed.consumers} == {world.a}
    tenants = await world.call("ListTenants", pb.ListTenantsRequest(), who)
    assert [t.id for t in tenants.tenants] == [world.a]
    got = await world.call("GetTenant", pb.GetTenantRequest(tenant_id=world.a), who)
    assert got.tenant.name == "acme"


async def test_pagination_follows_tokens_and_checks_them(world: World) -> None:
    for index in range(5):
        await world.call("CreateTenant", pb.CreateTenantRequest(name=f"t{index}"))
    names: list[str] = []
    token, pages = "", 0
    while True:
        page = await world.call("ListTenants", pb.ListTenantsRequest(page_size=3, page_token=token))
        assert len(page.tenants) <= 3
        names += [t.name for t in page.tenants]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    # Ids sort by creation time to the millisecond; within one, in any order.
    assert pages == 3 and sorted(names) == ["acme", "bobs", "t0", "t1", "t2", "t3", "t4"]
    big = await world.call("ListTenants", pb.ListTenantsRequest(page_size=5000))
    assert len(big.tenants) == 7 and not big.next_page_token  # lowered to the maximum
    error = await expect(world.call("ListTenants", pb.ListTenantsRequest(page_size=-1)), *INVALID)
    assert "page_size" in bad_request_fields(error)
    error = await expect(
        world.call("ListTenants", pb.ListTenantsRequest(page_token="%%not-a-token")), *INVALID
    )
    assert "page_token" in bad_request_fields(error)
    # A token from one list is refused by another.
    first = await world.call("ListSubscriptions", pb.ListSubscriptionsRequest(page_size=1))
    assert first.next_page_token
    await expect(
        world.call("ListTenants", pb.ListTenantsRequest(page_token=first.next_page_token)),
        *INVALID,
    )


async def test_every_list_is_paginated(world: World) -> None:
    for index in range(3):
        await world.server.store.upsert_service(world.a, f"m{index}", requires_approval=False)
    lists: list[tuple[str, Any, str]] = [
        ("ListConsumers", pb.ListConsumersRequest(tenant_id=world.a), "consumers"),
        ("ListServices", pb.ListServicesRequest(tenant_id=world.a), "services"),
        ("ListApiKeys", pb.ListApiKeysRequest(), "api_keys"),
        ("ListSubscriptions", pb.ListSubscriptionsRequest(), "subscriptions"),
    ]
    for rpc, request, field in lists:
        everything = getattr(await world.call(rpc, request), field)
        seen: list[Any] = []
        request.page_size = 1
        while True:
            page = await world.call(rpc, request)
            assert len(getattr(page, field)) == 1, rpc
            seen += list(getattr(page, field))
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        assert seen == list(everything) and len(seen) >= 2, rpc


# --- keys ------------------------------------------------------------------------------


async def test_create_api_key_shows_the_secret_once(world: World) -> None:
    created = await world.call(
        "CreateApiKey", pb.CreateApiKeyRequest(consumer_id=world.a1, name="prod")
    )
    key = created.api_key
    assert (key.tenant_id, key.consumer_id, key.admin_id, key.name) == (
        world.a,
        world.a1,
        "",
        "prod",
    )
    assert not key.HasField("expire_time") and not key.HasField("revoke_time")
    parsed = parse_key(created.secret)
    assert parsed is not None and parsed[0] == key.id
    stored = await world.server.store.get_key(key.id)
    assert stored.secret_hash == hash_secret(parsed[1])  # only the hash is kept
    listed = await world.call("ListApiKeys", pb.ListApiKeysRequest(consumer_id=world.a1))
    assert key.id in [k.id for k in listed.api_keys]
    wire = listed.SerializeToString()
    assert parsed[1].encode() not in wire and stored.secret_hash.encode() not in wire
    assert "secret" not in pb.ApiKey.DESCRIPTOR.fields_by_name  # no field could ever carry it


async def test_create_api_key_for_admin_with_expiry(world: World) -> None:
    expiry = timestamp_pb2.Timestamp(seconds=int(time.time()) + DAY)
    created = await world.call(
        "CreateApiKey", pb.CreateApiKeyRequest(admin_id=world.a_admin, expire_time=expiry)
    )
    assert (created.api_key.admin_id, created.api_key.tenant_id) == (world.a_admin, world.a)
    assert created.api_key.expire_time == expiry
    past = timestamp_pb2.Timestamp(seconds=int(time.time()) - 10)
    error = await expect(
        world.call("CreateApiKey", pb.CreateApiKeyRequest(consumer_id=world.a1, expire_time=past)),
        *INVALID,
    )
    assert "expire_time" in bad_request_fields(error)
    error = await expect(world.call("CreateApiKey", pb.CreateApiKeyRequest(name="x")), *INVALID)
    assert "owner" in bad_request_fields(error)
    await expect(
        world.call("CreateApiKey", pb.CreateApiKeyRequest(consumer_id="con_nope")), *NOT_FOUND
    )


async def test_revoke_api_key(world: World) -> None:
    before = time.time()
    revoked = (
        await world.call("RevokeApiKey", pb.RevokeApiKeyRequest(key_id=world.a1_key))
    ).api_key
    assert before - 1 <= revoked.revoke_time.ToNanoseconds() / 1e9 <= time.time() + 1
    again = (await world.call("RevokeApiKey", pb.RevokeApiKeyRequest(key_id=world.a1_key))).api_key
    assert again.revoke_time == revoked.revoke_time  # revoking twice changes nothing
    await expect(world.call("RevokeApiKey", pb.RevokeApiKeyRequest(key_id="nope")), *NOT_FOUND)


async def test_rotate_api_key_keeps_the_old_one_for_the_grace_window(world: World) -> None:
    before = time.time()
    rotated = await world.call("RotateApiKey", pb.RotateApiKeyRequest(key_id=world.a1_key))
    after = time.time()
    new, old = rotated.api_key, rotated.previous_api_key
    assert new.id != old.id == world.a1_key
    assert (new.consumer_id, new.tenant_id, new.name) == (world.a1, world.a, "k")
    assert parse_key(rotated.secret) is not None and parse_key(rotated.secret)[0] == new.id
    revoke_at = old.revoke_time.ToNanoseconds() / 1e9
    assert before + DAY - 1 <= revoke_at <= after + DAY + 1  # the default grace: 24 h
    assert not new.HasField("revoke_time")
    stored = await world.server.store.get_key(world.a1_key)
    assert stored.revoked_at == pytest.approx(revoke_at, abs=1e-3)

    hour = duration_pb2.Duration(seconds=3600)
    again = await world.call(
        "RotateApiKey", pb.RotateApiKeyRequest(key_id=new.id, grace_period=hour)
    )
    at = again.previous_api_key.revoke_time.ToNanoseconds() / 1e9
    assert before + 3600 - 1 <= at <= time.time() + 3600 + 1

    now = await world.call(
        "RotateApiKey",
        pb.RotateApiKeyRequest(key_id=again.api_key.id, grace_period=duration_pb2.Duration()),
    )
    assert now.previous_api_key.revoke_time.ToNanoseconds() / 1e9 <= time.time()
    await expect(
        world.call("RotateApiKey", pb.RotateApiKeyRequest(key_id=again.api_key.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESOURCE_STATE_CONFLICT",
    )
    error = await expect(
        world.call(
            "RotateApiKey",
            pb.RotateApiKeyRequest(
                key_id=now.api_key.id, grace_period=duration_pb2.Duration(seconds=-1)
            ),
        ),
        *INVALID,
    )
    assert "grace_period" in bad_request_fields(error)


async def test_rotation_keeps_the_key_lifetime(world: World) -> None:
    expiry = timestamp_pb2.Timestamp(seconds=int(time.time()) + 7 * DAY)
    created = await world.call(
        "CreateApiKey", pb.CreateApiKeyRequest(consumer_id=world.a1, expire_time=expiry)
    )
    lifetime = created.api_key.expire_time.ToSeconds() - created.api_key.create_time.ToSeconds()
    rotated = await world.call("RotateApiKey", pb.RotateApiKeyRequest(key_id=created.api_key.id))
    new = rotated.api_key
    assert new.expire_time.ToSeconds() - new.create_time.ToSeconds() == pytest.approx(
        lifetime, abs=2
    )


# --- services and subscriptions ---------------------------------------------------------


async def test_services_list_and_upsert(world: World) -> None:
    listed = await world.call("ListServices", pb.ListServicesRequest(tenant_id=world.a))
    assert [(s.alias, s.requires_approval) for s in listed.services] == [
        ("free", False),
        ("gpt", True),
    ]
    upserted = await world.call(
        "UpsertService",
        pb.UpsertServiceRequest(tenant_id=world.a, alias="gpt", requires_approval=False),
    )
    assert (upserted.service.alias, upserted.service.requires_approval) == ("gpt", False)
    await expect(
        world.call("UpsertService", pb.UpsertServiceRequest(tenant_id="ten_nope", alias="x")),
        *NOT_FOUND,
    )
    error = await expect(
        world.call("UpsertService", pb.UpsertServiceRequest(tenant_id=world.a)), *INVALID
    )
    assert "alias" in bad_request_fields(error)
    await expect(world.call("ListServices", pb.ListServicesRequest()), *INVALID)


async def test_subscription_lifecycle(world: World) -> None:
    who = tenant_admin(world.a)
    pending = await world.call(
        "ListSubscriptions",
        pb.ListSubscriptionsRequest(statuses=[pb.SUBSCRIPTION_STATUS_PENDING]),
        who,
    )
    assert [s.id for s in pending.subscriptions] == [world.a1_sub]
    approved = (
        await world.call(
            "ApproveSubscription",
            pb.ApproveSubscriptionRequest(subscription_id=world.a1_sub, note="ok"),
            who,
        )
    ).subscription
    assert approved.status == pb.SUBSCRIPTION_STATUS_APPROVED
    assert (approved.decided_by, approved.note) == (f"adm_of_{world.a}", "ok")
    assert approved.HasField("decide_time")
    await expect(
        world.call(
            "ApproveSubscription", pb.ApproveSubscriptionRequest(subscription_id=world.a1_sub), who
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESOURCE_STATE_CONFLICT",
    )
    revoked = await world.call(
        "RevokeSubscription", pb.RevokeSubscriptionRequest(subscription_id=world.a1_sub), who
    )
    assert revoked.subscription.status == pb.SUBSCRIPTION_STATUS_REVOKED
    # The consumer asks again for itself; an admin rejects.
    again = await world.call(
        "RequestSubscription",
        pb.RequestSubscriptionRequest(alias="gpt"),
        consumer(world.a, world.a1),
    )
    assert (again.subscription.id, again.subscription.status) == (
        world.a1_sub,
        pb.SUBSCRIPTION_STATUS_PENDING,
    )
    rejected = await world.call(
        "RejectSubscription",
        pb.RejectSubscriptionRequest(subscription_id=world.a1_sub, note="no"),
        who,
    )
    assert rejected.subscription.status == pb.SUBSCRIPTION_STATUS_REJECTED
    await expect(
        world.call(
            "RevokeSubscription", pb.RevokeSubscriptionRequest(subscription_id=world.a1_sub)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESOURCE_STATE_CONFLICT",
    )


async def test_request_subscription(world: World) -> None:
    me = consumer(world.a, world.a2)
    free = await world.call("RequestSubscription", pb.RequestSubscriptionRequest(alias="free"), me)
    assert free.subscription.status == pb.SUBSCRIPTION_STATUS_APPROVED  # no approval needed
    assert free.subscription.consumer_id == world.a2
    await expect(
        world.call("RequestSubscription", pb.RequestSubscriptionRequest(alias="free"), me),
        grpc.StatusCode.ALREADY_EXISTS,
        "RESOURCE_ALREADY_EXISTS",
    )
    error = await expect(
        world.call("RequestSubscription", pb.RequestSubscriptionRequest(alias="nope"), me),
        *NOT_FOUND,
    )
    assert error.details() == "service 'nope' not found"
    # An admin requests for a consumer it administers; it must say which.
    by_admin = await world.call(
        "RequestSubscription",
        pb.RequestSubscriptionRequest(consumer_id=world.a2, alias="gpt"),
        tenant_admin(world.a),
    )
    assert by_admin.subscription.status == pb.SUBSCRIPTION_STATUS_PENDING
    error = await expect(
        world.call("RequestSubscription", pb.RequestSubscriptionRequest(alias="gpt")), *INVALID
    )
    assert "consumer_id" in bad_request_fields(error)


async def test_list_subscriptions_filters(world: World) -> None:
    await world.server.store.request_subscription(world.a2, "free")
    every = await world.call("ListSubscriptions", pb.ListSubscriptionsRequest())
    assert len(every.subscriptions) == 3
    of_a = await world.call("ListSubscriptions", pb.ListSubscriptionsRequest(tenant_id=world.a))
    assert {s.consumer_id for s in of_a.subscriptions} == {world.a1, world.a2}
    of_a2 = await world.call("ListSubscriptions", pb.ListSubscriptionsRequest(consumer_id=world.a2))
    assert [s.alias for s in of_a2.subscriptions] == ["free"]
    approved = await world.call(
        "ListSubscriptions",
        pb.ListSubscriptionsRequest(statuses=[pb.SUBSCRIPTION_STATUS_APPROVED]),
    )
    assert [s.consumer_id for s in approved.subscriptions] == [world.a2]
    error = await expect(
        world.call(
            "ListSubscriptions",
            pb.ListSubscriptionsRequest(statuses=[pb.SUBSCRIPTION_STATUS_UNSPECIFIED]),
        ),
        *INVALID,
    )
    assert "statuses[0]" in bad_request_fields(error)


async def test_create_admin(world: World) -> None:
    made = await world.call("CreateAdmin", pb.CreateAdminRequest(name="ops2", tenant_id=world.a))
    assert (made.admin.name, made.admin.tenant_id) == ("ops2", world.a)
    root = await world.call("CreateAdmin", pb.CreateAdminRequest(name="root2"))
    assert root.admin.tenant_id == ""
    by_tenant_admin = await world.call(
        "CreateAdmin", pb.CreateAdminRequest(name="ops3", tenant_id=world.a), tenant_admin(world.a)
    )
    assert by_tenant_admin.admin.tenant_id == world.a
    await expect(
        world.call("CreateAdmin", pb.CreateAdminRequest(name="root3"), tenant_admin(world.a)),
        *DENIED,
    )
    await expect(
        world.call("CreateAdmin", pb.CreateAdminRequest(name="x", tenant_id="ten_nope")), *NOT_FOUND
    )
