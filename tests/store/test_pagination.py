"""Keyset pagination: every list, page sizes, opaque tokens, bad tokens."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.store.conftest import FakeClock
from unigate.gateway.store.base import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from unigate.gateway.store.models import Page
from unigate.gateway.store.sql import SqlStore

Lister = Callable[[int, str], Awaitable[Page[Any]]]


async def walk(lister: Lister, page_size: int, token: str = "") -> tuple[list[Any], list[int]]:
    """Every item from `token` on, following tokens; and the size of each page."""
    items: list[Any] = []
    sizes: list[int] = []
    while True:
        page = await lister(page_size, token)
        items += page.items
        sizes.append(len(page.items))
        if not page.next_page_token:
            return items, sizes
        token = page.next_page_token
        assert len(sizes) < 100, "pagination does not end"


async def test_walk_tenants_in_pages(store: SqlStore, clock: FakeClock) -> None:
    made = []
    for i in range(7):
        clock.advance(0.01)  # ids sort by creation time
        made.append(await store.create_tenant(f"t{i}"))
    items, sizes = await walk(store.list_tenants, 3)
    assert sizes == [3, 3, 1]
    assert items == made
    assert [t.id for t in items] == sorted(t.id for t in made)


async def test_an_exact_multiple_ends_without_an_empty_page(store: SqlStore) -> None:
    for i in range(4):
        await store.create_tenant(f"t{i}")
    _, sizes = await walk(store.list_tenants, 2)
    assert sizes == [2, 2]
    assert (await store.list_tenants()).next_page_token == ""


async def test_every_list_pages(store: SqlStore, clock: FakeClock) -> None:
    acme = await store.create_tenant("acme")
    consumers = []
    for i in range(5):
        clock.advance(0.01)
        consumers.append(await store.create_consumer(acme.id, f"c{i}"))
        await store.upsert_service(acme.id, f"m{i}", requires_approval=True)
        await store.create_key(
            key_id=f"k{i}", secret_hash="h", name="", tenant_id=acme.id, consumer_id=consumers[0].id
        )
    for consumer in consumers:
        for alias in ("m0", "m1"):
            await store.request_subscription(consumer.id, alias)
    listers: dict[str, tuple[Lister, int]] = {
        "consumers": (lambda n, t: store.list_consumers(acme.id, n, t), 5),
        "services": (lambda n, t: store.list_services(acme.id, n, t), 5),
        "keys": (lambda n, t: store.list_keys(tenant_id=acme.id, page_size=n, page_token=t), 5),
        "subscriptions": (
            lambda n, t: store.list_subscriptions(tenant_id=acme.id, page_size=n, page_token=t),
            10,
        ),
    }
    for name, (lister, count) in listers.items():
        everything = (await lister(0, "")).items
        assert len(everything) == count, name
        items, sizes = await walk(lister, 2)
        assert items == everything, name
        assert sizes == [2] * (count // 2) + [count % 2] * (count % 2), name


async def test_services_page_by_alias_bytewise_on_both_backends(store: SqlStore) -> None:
    acme = await store.create_tenant("acme")
    aliases = ["b", "B", "a-1", "a_1", "A.1", "z", "Z9", "gpt-4o", "gpt-4o-mini", "gpt_4o"]
    for alias in aliases:
        await store.upsert_service(acme.id, alias, requires_approval=False)
    items, _ = await walk(lambda n, t: store.list_services(acme.id, n, t), 3)
    assert [s.alias for s in items] == sorted(aliases)


async def test_filtered_pages_stay_in_the_tenant(store: SqlStore) -> None:
    acme = await store.create_tenant("acme")
    globex = await store.create_tenant("globex")
    for i in range(5):
        await store.create_consumer(acme.id, f"a{i}")
        await store.create_consumer(globex.id, f"g{i}")
    items, sizes = await walk(lambda n, t: store.list_consumers(acme.id, n, t), 2)
    assert sizes == [2, 2, 1]
    assert {c.tenant_id for c in items} == {acme.id}


async def test_records_added_while_walking_are_not_repeated(
    store: SqlStore, clock: FakeClock
) -> None:
    for i in range(4):
        clock.advance(0.01)
        await store.create_tenant(f"t{i}")
    first = await store.list_tenants(2)
    clock.advance(1)
    late = await store.create_tenant("late")
    rest, _ = await walk(store.list_tenants, 2, first.next_page_token)
    seen = [t.id for t in first.items + rest]
    assert len(seen) == len(set(seen)) == 5
    assert seen[-1] == late.id


async def test_default_page_size(store: SqlStore) -> None:
    await _bulk_tenants(store, DEFAULT_PAGE_SIZE + 1)
    first = await store.list_tenants(0)
    assert len(first.items) == DEFAULT_PAGE_SIZE
    assert first.next_page_token
    assert len((await store.list_tenants(0, first.next_page_token)).items) == 1


async def test_page_size_is_capped(store: SqlStore) -> None:
    await _bulk_tenants(store, MAX_PAGE_SIZE + 5)
    first = await store.list_tenants(MAX_PAGE_SIZE * 10)
    assert len(first.items) == MAX_PAGE_SIZE
    assert len((await store.list_tenants(MAX_PAGE_SIZE * 10, first.next_page_token)).items) == 5


async def test_negative_page_size(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="page_size"):
        await store.list_tenants(-1)


async def test_tokens_are_opaque(store: SqlStore) -> None:
    tenants = [await store.create_tenant(f"t{i}") for i in range(3)]
    token = (await store.list_tenants(1)).next_page_token
    assert token
    assert not any(t.id in token for t in tenants)
    assert all(c.isalnum() or c in "-_" for c in token)  # safe in a URL or a header


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "%%%%",
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),  # not UTF-8
        base64.urlsafe_b64encode(b"con_0123").decode(),  # another list's
        "=",
    ],
)
async def test_bad_tokens(store: SqlStore, token: str) -> None:
    await store.create_tenant("acme")
    with pytest.raises(ValueError, match="invalid page_token"):
        await store.list_tenants(1, token)


async def test_a_token_of_one_list_is_refused_by_another(store: SqlStore) -> None:
    acme = await store.create_tenant("acme")
    await store.create_tenant("globex")
    for i in range(2):
        await store.create_consumer(acme.id, f"c{i}")
    tenants_token = (await store.list_tenants(1)).next_page_token
    consumers_token = (await store.list_consumers(acme.id, 1)).next_page_token
    with pytest.raises(ValueError, match="invalid page_token"):
        await store.list_consumers(acme.id, 1, tenants_token)
    with pytest.raises(ValueError, match="invalid page_token"):
        await store.list_subscriptions(page_size=1, page_token=consumers_token)


async def _bulk_tenants(store: SqlStore, count: int) -> None:
    """Many tenants in one transaction (creating them one by one is slow on PostgreSQL)."""
    async with store._write() as conn:
        for i in range(count):
            await conn.execute(
                "INSERT INTO tenants (id, name, disabled, created_at) VALUES (?, ?, ?, 0)",
                f"ten_{i:05d}",
                f"t{i}",
                False,
            )
