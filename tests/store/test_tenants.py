"""Tenants, consumers and admins, on both backends."""

from __future__ import annotations

import re
import time

import pytest

from tests.store.conftest import FakeClock, NewStore
from unigate.gateway.store.base import ConflictError, NotFoundError
from unigate.gateway.store.models import Admin, Consumer, Tenant
from unigate.gateway.store.sql import SqlStore

ID = r"[0-9a-z]{26}"


async def test_create_and_get_tenant(store: SqlStore, clock: FakeClock) -> None:
    tenant = await store.create_tenant("acme")
    assert re.fullmatch(f"ten_{ID}", tenant.id)
    assert tenant == Tenant(tenant.id, "acme", clock.now, disabled=False)
    assert await store.get_tenant(tenant.id) == tenant


async def test_ids_are_unique_and_random(store: SqlStore) -> None:
    tenants = [await store.create_tenant(f"t{i}") for i in range(20)]
    ids = {t.id for t in tenants}
    assert len(ids) == 20
    # same clock reading for all: the random part alone must tell them apart
    assert len({i[-16:] for i in ids}) == 20


async def test_tenant_names_are_unique(store: SqlStore) -> None:
    await store.create_tenant("acme")
    with pytest.raises(ConflictError, match="acme"):
        await store.create_tenant("acme")
    other = await store.create_tenant("globex")
    with pytest.raises(ConflictError, match="acme"):
        await store.update_tenant(other.id, name="acme")
    assert (await store.get_tenant(other.id)).name == "globex"


async def test_empty_names_are_refused(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="tenant name"):
        await store.create_tenant("  ")
    tenant = await store.create_tenant("acme")
    with pytest.raises(ValueError, match="consumer name"):
        await store.create_consumer(tenant.id, "")
    with pytest.raises(ValueError, match="tenant name"):
        await store.update_tenant(tenant.id, name="")


async def test_update_tenant(store: SqlStore, clock: FakeClock) -> None:
    tenant = await store.create_tenant("acme")
    clock.advance(10)
    renamed = await store.update_tenant(tenant.id, name="acme corp")
    assert renamed == Tenant(tenant.id, "acme corp", tenant.created_at, disabled=False)
    disabled = await store.update_tenant(tenant.id, disabled=True)
    assert disabled.disabled and disabled.name == "acme corp"
    assert await store.get_tenant(tenant.id) == disabled
    assert await store.update_tenant(tenant.id) == disabled  # nothing to change
    enabled = await store.update_tenant(tenant.id, name="acme corp", disabled=False)
    assert not enabled.disabled


async def test_missing_tenant(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="ten_nope"):
        await store.get_tenant("ten_nope")
    with pytest.raises(NotFoundError):
        await store.update_tenant("ten_nope", name="x")
    with pytest.raises(NotFoundError):
        await store.create_consumer("ten_nope", "app")
    with pytest.raises(NotFoundError):
        await store.create_admin("ops", "ten_nope")


async def test_consumers(store: SqlStore, clock: FakeClock) -> None:
    acme = await store.create_tenant("acme")
    globex = await store.create_tenant("globex")
    clock.advance(5)
    app = await store.create_consumer(acme.id, "app")
    assert re.fullmatch(f"con_{ID}", app.id)
    assert app == Consumer(app.id, acme.id, "app", clock.now, disabled=False)
    assert await store.get_consumer(app.id) == app
    # names are unique within a tenant only
    with pytest.raises(ConflictError, match="app"):
        await store.create_consumer(acme.id, "app")
    twin = await store.create_consumer(globex.id, "app")
    assert twin.tenant_id == globex.id
    assert (await store.list_consumers(acme.id)).items == [app]
    assert (await store.list_consumers(globex.id)).items == [twin]


async def test_update_consumer(store: SqlStore) -> None:
    acme = await store.create_tenant("acme")
    app = await store.create_consumer(acme.id, "app")
    batch = await store.create_consumer(acme.id, "batch")
    updated = await store.update_consumer(app.id, name="web", disabled=True)
    assert updated == Consumer(app.id, acme.id, "web", app.created_at, disabled=True)
    assert await store.get_consumer(app.id) == updated
    with pytest.raises(ConflictError, match="web"):
        await store.update_consumer(batch.id, name="web")
    with pytest.raises(NotFoundError):
        await store.update_consumer("con_nope", disabled=True)
    with pytest.raises(NotFoundError, match="con_nope"):
        await store.get_consumer("con_nope")


async def test_admins(store: SqlStore, clock: FakeClock) -> None:
    assert await store.count_admins() == 0
    root = await store.create_admin("root", None)
    assert re.fullmatch(f"adm_{ID}", root.id)
    assert root == Admin(root.id, None, "root", clock.now)
    acme = await store.create_tenant("acme")
    ops = await store.create_admin("ops", acme.id)
    assert ops.tenant_id == acme.id
    assert await store.get_admin(ops.id) == ops
    assert await store.get_admin(root.id) == root
    assert await store.count_admins() == 2
    with pytest.raises(NotFoundError, match="adm_nope"):
        await store.get_admin("adm_nope")


async def test_default_clock_is_wall_time(new_store: NewStore) -> None:
    before = time.time()
    store = await new_store(clock=time.time)
    tenant = await store.create_tenant("acme")
    assert before <= tenant.created_at <= time.time()
    assert (await store.get_tenant(tenant.id)).created_at == tenant.created_at
