"""Quota policies per tenant and per consumer: upsert, read both levels, delete,
validation and tenant isolation, on both backends."""

from __future__ import annotations

from typing import Any

import pytest

from unigate.gateway.store.base import NotFoundError
from unigate.gateway.store.sql import SqlStore


async def test_set_get_replace_delete(store: SqlStore) -> None:
    acme = await store.create_tenant("acme")
    app = await store.create_consumer(acme.id, "app")
    assert await store.get_quota_policies(acme.id, app.id) == []

    await store.set_quota_policy(acme.id, None, {"requests_per_minute": 600, "concurrent": 20})
    await store.set_quota_policy(acme.id, app.id, {"tokens_per_day": 1000})
    assert await store.get_quota_policies(acme.id, app.id) == [
        ("tenant", {"requests_per_minute": 600, "concurrent": 20}),
        ("consumer", {"tokens_per_day": 1000}),
    ]
    assert await store.get_quota_policies(acme.id, None) == [
        ("tenant", {"requests_per_minute": 600, "concurrent": 20})
    ]

    await store.set_quota_policy(acme.id, None, {"spend_per_month": 50.5})  # one row, replaced
    assert await store.get_quota_policies(acme.id, app.id) == [
        ("tenant", {"spend_per_month": 50.5}),
        ("consumer", {"tokens_per_day": 1000}),
    ]

    await store.delete_quota_policy(acme.id, None)
    assert await store.get_quota_policies(acme.id, app.id) == [
        ("consumer", {"tokens_per_day": 1000})
    ]
    await store.delete_quota_policy(acme.id, app.id)
    assert await store.get_quota_policies(acme.id, app.id) == []
    with pytest.raises(NotFoundError):
        await store.delete_quota_policy(acme.id, app.id)
    with pytest.raises(NotFoundError):
        await store.delete_quota_policy(acme.id, None)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"requests_per_minute": 0},
        {"concurrent": -1},
        {"requests_per_hour": 5},
        {"requests_per_minute": "lots"},
        {"scope": "global", "requests_per_minute": 5},
        {"match": "*", "requests_per_minute": 5},
    ],
)
async def test_invalid_bodies_are_refused(store: SqlStore, body: dict[str, Any]) -> None:
    acme = await store.create_tenant("acme")
    with pytest.raises(ValueError):
        await store.set_quota_policy(acme.id, None, body)
    assert await store.get_quota_policies(acme.id, None) == []


async def test_tenants_are_kept_apart(store: SqlStore) -> None:
    acme = await store.create_tenant("acme")
    globex = await store.create_tenant("globex")
    app = await store.create_consumer(acme.id, "app")
    spy = await store.create_consumer(globex.id, "spy")
    await store.set_quota_policy(acme.id, None, {"requests_per_minute": 2})
    await store.set_quota_policy(acme.id, app.id, {"requests_per_minute": 1})

    assert await store.get_quota_policies(globex.id, spy.id) == []
    assert await store.get_quota_policies(globex.id, app.id) == []  # not globex's consumer
    with pytest.raises(NotFoundError):
        await store.set_quota_policy(globex.id, app.id, {"requests_per_minute": 9})
    with pytest.raises(NotFoundError):
        await store.delete_quota_policy(globex.id, app.id)
    with pytest.raises(NotFoundError):
        await store.set_quota_policy("ten_missing", None, {"requests_per_minute": 9})
    with pytest.raises(NotFoundError):
        await store.set_quota_policy(acme.id, "con_missing", {"requests_per_minute": 9})
