"""API keys: owners, tenants, revocation (now and scheduled), lookup with owner."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.store.conftest import FakeClock
from unigate.gateway.store.base import ConflictError, NotFoundError
from unigate.gateway.store.models import Admin, ApiKey, Consumer, KeyOwner, Tenant
from unigate.gateway.store.sql import SqlStore


@dataclass
class Owners:
    acme: Tenant
    globex: Tenant
    app: Consumer  # in acme
    rival: Consumer  # in globex
    root: Admin  # global
    ops: Admin  # acme's


async def make_key(
    store: SqlStore,
    key_id: str,
    tenant_id: str | None,
    *,
    consumer_id: str | None = None,
    admin_id: str | None = None,
) -> ApiKey:
    return await store.create_key(
        key_id=key_id,
        secret_hash="h",
        name="",
        tenant_id=tenant_id,
        consumer_id=consumer_id,
        admin_id=admin_id,
    )


@pytest.fixture
async def owners(store: SqlStore) -> Owners:
    acme = await store.create_tenant("acme")
    globex = await store.create_tenant("globex")
    return Owners(
        acme,
        globex,
        await store.create_consumer(acme.id, "app"),
        await store.create_consumer(globex.id, "app"),
        await store.create_admin("root", None),
        await store.create_admin("ops", acme.id),
    )


async def test_create_and_get_consumer_key(
    store: SqlStore, owners: Owners, clock: FakeClock
) -> None:
    key = await store.create_key(
        key_id="Abc123xyz789",
        secret_hash="sha256:deadbeef",
        name="ci",
        tenant_id=owners.acme.id,
        consumer_id=owners.app.id,
        expires_at=clock.now + 3600,
    )
    assert key == ApiKey(
        id="Abc123xyz789",
        tenant_id=owners.acme.id,
        consumer_id=owners.app.id,
        admin_id=None,
        name="ci",
        secret_hash="sha256:deadbeef",
        created_at=clock.now,
        expires_at=clock.now + 3600,
        revoked_at=None,
    )
    assert await store.get_key("Abc123xyz789") == key


async def test_admin_keys(store: SqlStore, owners: Owners) -> None:
    root_key = await store.create_key(
        key_id="root1", secret_hash="h", name="", tenant_id=None, admin_id=owners.root.id
    )
    ops_key = await store.create_key(
        key_id="ops1", secret_hash="h", name="", tenant_id=owners.acme.id, admin_id=owners.ops.id
    )
    assert (root_key.tenant_id, root_key.admin_id, root_key.consumer_id) == (
        None,
        owners.root.id,
        None,
    )
    assert await store.get_key("ops1") == ops_key
    assert ops_key.expires_at is None


async def test_duplicate_key_id(store: SqlStore, owners: Owners) -> None:
    await make_key(store, "k1", owners.acme.id, consumer_id=owners.app.id)
    with pytest.raises(ConflictError, match="k1"):
        await make_key(store, "k1", owners.acme.id, admin_id=owners.ops.id)
    assert (await store.get_key("k1")).consumer_id == owners.app.id


async def test_a_key_has_exactly_one_owner(store: SqlStore, owners: Owners) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        await store.create_key(key_id="k", secret_hash="h", name="", tenant_id=owners.acme.id)
    with pytest.raises(ValueError, match="exactly one"):
        await store.create_key(
            key_id="k",
            secret_hash="h",
            name="",
            tenant_id=owners.acme.id,
            consumer_id=owners.app.id,
            admin_id=owners.ops.id,
        )
    with pytest.raises(ValueError, match="secret hash"):
        await store.create_key(
            key_id="k", secret_hash="", name="", tenant_id=owners.acme.id, admin_id=owners.ops.id
        )
    assert (await store.list_keys()).items == []


async def test_key_owner_must_exist(store: SqlStore, owners: Owners) -> None:
    with pytest.raises(NotFoundError, match="con_nope"):
        await store.create_key(
            key_id="k", secret_hash="h", name="", tenant_id=owners.acme.id, consumer_id="con_nope"
        )
    with pytest.raises(NotFoundError, match="adm_nope"):
        await store.create_key(
            key_id="k", secret_hash="h", name="", tenant_id=None, admin_id="adm_nope"
        )


async def test_key_tenant_must_be_its_owners(store: SqlStore, owners: Owners) -> None:
    with pytest.raises(ValueError, match="belongs to tenant"):
        await store.create_key(
            key_id="k",
            secret_hash="h",
            name="",
            tenant_id=owners.globex.id,
            consumer_id=owners.app.id,
        )
    with pytest.raises(ValueError, match="belongs to tenant"):
        await store.create_key(
            key_id="k", secret_hash="h", name="", tenant_id=None, admin_id=owners.ops.id
        )
    with pytest.raises(ValueError, match="belongs to tenant"):
        await store.create_key(
            key_id="k", secret_hash="h", name="", tenant_id=owners.acme.id, admin_id=owners.root.id
        )
    with pytest.raises(NotFoundError):
        await store.get_key("k")


async def test_the_schema_refuses_a_key_in_another_tenant(
    store: SqlStore, owners: Owners, clock: FakeClock
) -> None:
    """Past the store's checks, the schema itself keeps a key in its owner's tenant."""
    with pytest.raises(NotFoundError):
        async with store._write() as conn:
            await conn.execute(
                "INSERT INTO api_keys (id, tenant_id, consumer_id, admin_id, name, secret_hash,"
                " created_at) VALUES ('k', ?, ?, NULL, '', 'h', ?)",
                owners.globex.id,
                owners.app.id,
                clock.now,
            )


async def test_missing_key(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="nokey"):
        await store.get_key("nokey")
    with pytest.raises(NotFoundError, match="nokey"):
        await store.get_key_with_owner("nokey")
    with pytest.raises(NotFoundError, match="nokey"):
        await store.revoke_key("nokey")


async def test_list_keys_filters(store: SqlStore, owners: Owners) -> None:
    a1 = await make_key(store, "a1", owners.acme.id, consumer_id=owners.app.id)
    a2 = await make_key(store, "a2", owners.acme.id, admin_id=owners.ops.id)
    g1 = await make_key(store, "g1", owners.globex.id, consumer_id=owners.rival.id)
    r1 = await make_key(store, "r1", None, admin_id=owners.root.id)
    assert (await store.list_keys()).items == [a1, a2, g1, r1]
    assert (await store.list_keys(tenant_id=owners.acme.id)).items == [a1, a2]
    assert (await store.list_keys(tenant_id=owners.globex.id)).items == [g1]
    assert (await store.list_keys(consumer_id=owners.app.id)).items == [a1]
    both = await store.list_keys(tenant_id=owners.globex.id, consumer_id=owners.app.id)
    assert both.items == []


async def test_revoke_now_and_scheduled(store: SqlStore, owners: Owners, clock: FakeClock) -> None:
    await make_key(store, "now", owners.acme.id, consumer_id=owners.app.id)
    await make_key(store, "later", owners.acme.id, consumer_id=owners.app.id)
    clock.advance(60)
    revoked = await store.revoke_key("now")
    assert revoked.revoked_at == clock.now
    assert (await store.get_key("now")).revoked_at == clock.now
    grace_end = clock.now + 300
    scheduled = await store.revoke_key("later", at=grace_end)
    assert scheduled.revoked_at == grace_end
    assert (await store.get_key("later")).revoked_at == grace_end


async def test_the_earlier_revocation_wins(
    store: SqlStore, owners: Owners, clock: FakeClock
) -> None:
    await make_key(store, "k", owners.acme.id, consumer_id=owners.app.id)
    await store.revoke_key("k", at=clock.now + 300)  # a rotation's grace window
    cut_short = await store.revoke_key("k")  # then revoked at once
    assert cut_short.revoked_at == clock.now
    postponed = await store.revoke_key("k", at=clock.now + 900)  # never postpones
    assert postponed.revoked_at == clock.now
    assert (await store.get_key("k")).revoked_at == clock.now


async def test_key_with_owner(store: SqlStore, owners: Owners) -> None:
    app_key = await make_key(store, "app", owners.acme.id, consumer_id=owners.app.id)
    root_key = await make_key(store, "root", None, admin_id=owners.root.id)
    ops_key = await make_key(store, "ops", owners.acme.id, admin_id=owners.ops.id)
    assert await store.get_key_with_owner("app") == KeyOwner(app_key, owners.acme, owners.app, None)
    assert await store.get_key_with_owner("root") == KeyOwner(root_key, None, None, owners.root)
    assert await store.get_key_with_owner("ops") == KeyOwner(ops_key, owners.acme, None, owners.ops)
    # it reads the owner as it is now: a disabled consumer or tenant shows at once
    await store.update_consumer(owners.app.id, disabled=True)
    await store.update_tenant(owners.acme.id, disabled=True)
    found = await store.get_key_with_owner("app")
    assert found.consumer is not None and found.consumer.disabled
    assert found.tenant is not None and found.tenant.disabled
