"""Services and subscriptions: the approval flow, its transitions, tenant isolation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from tests.store.conftest import FakeClock
from unigate.gateway.store.base import ConflictError, NotFoundError
from unigate.gateway.store.models import (
    Consumer,
    Service,
    Subscription,
    SubscriptionStatus,
    Tenant,
)
from unigate.gateway.store.sql import SqlStore

PENDING = SubscriptionStatus.PENDING
APPROVED = SubscriptionStatus.APPROVED
REJECTED = SubscriptionStatus.REJECTED
REVOKED = SubscriptionStatus.REVOKED


@dataclass
class World:
    acme: Tenant  # services: gpt (needs approval), embed (open)
    globex: Tenant  # services: claude (needs approval)
    app: Consumer  # in acme
    rival: Consumer  # in globex


@pytest.fixture
async def world(store: SqlStore) -> World:
    acme = await store.create_tenant("acme")
    globex = await store.create_tenant("globex")
    await store.upsert_service(acme.id, "gpt", requires_approval=True)
    await store.upsert_service(acme.id, "embed", requires_approval=False)
    await store.upsert_service(globex.id, "claude", requires_approval=True)
    return World(
        acme,
        globex,
        await store.create_consumer(acme.id, "app"),
        await store.create_consumer(globex.id, "app"),
    )


async def test_upsert_and_get_service(store: SqlStore, clock: FakeClock) -> None:
    acme = await store.create_tenant("acme")
    created = await store.upsert_service(acme.id, "gpt", requires_approval=True)
    assert created == Service(acme.id, "gpt", True, clock.now)
    clock.advance(30)
    changed = await store.upsert_service(acme.id, "gpt", requires_approval=False)
    assert changed == Service(acme.id, "gpt", False, created.created_at)  # one row, updated
    assert await store.get_service(acme.id, "gpt") == changed
    assert (await store.list_services(acme.id)).items == [changed]


async def test_service_errors(store: SqlStore, world: World) -> None:
    with pytest.raises(NotFoundError, match="ten_nope"):
        await store.upsert_service("ten_nope", "gpt", requires_approval=True)
    with pytest.raises(NotFoundError, match="nothing"):
        await store.get_service(world.acme.id, "nothing")
    with pytest.raises(ValueError, match="alias"):
        await store.upsert_service(world.acme.id, "", requires_approval=True)
    # another tenant's alias does not exist for this one
    with pytest.raises(NotFoundError, match="claude"):
        await store.get_service(world.acme.id, "claude")


async def test_services_are_per_tenant(store: SqlStore, world: World) -> None:
    acme = [s.alias for s in (await store.list_services(world.acme.id)).items]
    globex = [s.alias for s in (await store.list_services(world.globex.id)).items]
    assert (acme, globex) == (["embed", "gpt"], ["claude"])
    # the same alias in two tenants is two services
    await store.upsert_service(world.globex.id, "gpt", requires_approval=False)
    assert (await store.get_service(world.acme.id, "gpt")).requires_approval
    assert not (await store.get_service(world.globex.id, "gpt")).requires_approval


async def test_request_is_pending_when_approval_is_needed(
    store: SqlStore, world: World, clock: FakeClock
) -> None:
    sub = await store.request_subscription(world.app.id, "gpt")
    assert sub.id.startswith("sub_") and len(sub.id) == 30
    assert sub == Subscription(sub.id, world.acme.id, world.app.id, "gpt", PENDING, clock.now)
    assert await store.get_subscription(sub.id) == sub
    assert await store.find_subscription(world.app.id, "gpt") == sub


async def test_request_is_approved_at_once_when_no_approval_is_needed(
    store: SqlStore, world: World, clock: FakeClock
) -> None:
    sub = await store.request_subscription(world.app.id, "embed")
    assert (sub.status, sub.decided_by, sub.decided_at) == (APPROVED, None, clock.now)
    assert await store.find_subscription(world.app.id, "embed") == sub


async def test_decisions_record_who_and_when(
    store: SqlStore, world: World, clock: FakeClock
) -> None:
    sub = await store.request_subscription(world.app.id, "gpt")
    clock.advance(60)
    approved = await store.decide_subscription(sub.id, APPROVED, by="adm_1", note="ok")
    assert approved == Subscription(
        sub.id,
        world.acme.id,
        world.app.id,
        "gpt",
        APPROVED,
        sub.requested_at,
        "adm_1",
        clock.now,
        "ok",
    )
    assert await store.get_subscription(sub.id) == approved
    clock.advance(60)
    revoked = await store.decide_subscription(sub.id, REVOKED, by="adm_2")
    assert (revoked.status, revoked.decided_by, revoked.decided_at, revoked.note) == (
        REVOKED,
        "adm_2",
        clock.now,
        "",
    )


async def test_reject(store: SqlStore, world: World, clock: FakeClock) -> None:
    sub = await store.request_subscription(world.app.id, "gpt")
    rejected = await store.decide_subscription(sub.id, REJECTED, by="adm_1", note="no budget")
    assert (rejected.status, rejected.note) == (REJECTED, "no budget")
    assert await store.find_subscription(world.app.id, "gpt") == rejected


@pytest.mark.parametrize(
    ("path", "decision"),
    [
        ((APPROVED,), APPROVED),
        ((APPROVED,), REJECTED),
        ((REJECTED,), APPROVED),
        ((REJECTED,), REJECTED),
        ((REJECTED,), REVOKED),
        ((), REVOKED),  # pending
        ((APPROVED, REVOKED), REVOKED),
        ((APPROVED, REVOKED), APPROVED),
        ((APPROVED, REVOKED), REJECTED),
    ],
)
async def test_transitions_not_allowed(
    store: SqlStore,
    world: World,
    path: tuple[SubscriptionStatus, ...],
    decision: SubscriptionStatus,
) -> None:
    sub = await store.request_subscription(world.app.id, "gpt")
    for step in path:
        sub = await store.decide_subscription(sub.id, step, by="adm_1")
    with pytest.raises(ConflictError, match=f"is {sub.status.value}"):
        await store.decide_subscription(sub.id, decision, by="adm_2")
    assert await store.get_subscription(sub.id) == sub  # unchanged


async def test_bad_decisions(store: SqlStore, world: World) -> None:
    sub = await store.request_subscription(world.app.id, "gpt")
    with pytest.raises(ValueError, match="not a decision"):
        await store.decide_subscription(sub.id, PENDING, by="adm_1")
    with pytest.raises(ValueError, match="decided by"):
        await store.decide_subscription(sub.id, APPROVED, by="")
    with pytest.raises(NotFoundError, match="sub_nope"):
        await store.decide_subscription("sub_nope", APPROVED, by="adm_1")
    assert (await store.get_subscription(sub.id)).status == PENDING


@pytest.mark.parametrize("status", [PENDING, APPROVED])
async def test_one_live_subscription_per_consumer_and_alias(
    store: SqlStore, world: World, status: SubscriptionStatus
) -> None:
    sub = await store.request_subscription(world.app.id, "gpt")
    if status == APPROVED:
        sub = await store.decide_subscription(sub.id, APPROVED, by="adm_1")
    with pytest.raises(ConflictError, match=f"already has a {status.value}"):
        await store.request_subscription(world.app.id, "gpt")
    assert await store.get_subscription(sub.id) == sub


@pytest.mark.parametrize("path", [(REJECTED,), (APPROVED, REVOKED)])
async def test_request_again_after_rejection_or_revocation(
    store: SqlStore, world: World, clock: FakeClock, path: tuple[SubscriptionStatus, ...]
) -> None:
    first = await store.request_subscription(world.app.id, "gpt")
    for step in path:
        await store.decide_subscription(first.id, step, by="adm_1", note="why")
    clock.advance(100)
    again = await store.request_subscription(world.app.id, "gpt")
    assert again == Subscription(first.id, world.acme.id, world.app.id, "gpt", PENDING, clock.now)
    page = await store.list_subscriptions(consumer_id=world.app.id)
    assert page.items == [again]  # the same subscription, not a second one


async def test_request_again_on_an_open_service_approves(
    store: SqlStore, world: World, clock: FakeClock
) -> None:
    first = await store.request_subscription(world.app.id, "embed")
    await store.decide_subscription(first.id, REVOKED, by="adm_1")
    clock.advance(5)
    again = await store.request_subscription(world.app.id, "embed")
    assert (again.id, again.status, again.decided_by, again.decided_at) == (
        first.id,
        APPROVED,
        None,
        clock.now,
    )


async def test_request_errors(store: SqlStore, world: World) -> None:
    with pytest.raises(NotFoundError, match="con_nope"):
        await store.request_subscription("con_nope", "gpt")
    with pytest.raises(NotFoundError, match="nothing"):
        await store.request_subscription(world.app.id, "nothing")
    assert await store.find_subscription(world.app.id, "nothing") is None
    with pytest.raises(NotFoundError, match="sub_nope"):
        await store.get_subscription("sub_nope")


async def test_a_consumer_never_subscribes_to_another_tenants_service(
    store: SqlStore, world: World
) -> None:
    with pytest.raises(NotFoundError, match="claude"):
        await store.request_subscription(world.app.id, "claude")
    assert await store.find_subscription(world.app.id, "claude") is None
    assert (await store.list_subscriptions(tenant_id=world.globex.id)).items == []
    # the same alias in both tenants: the consumer gets its own tenant's
    await store.upsert_service(world.globex.id, "gpt", requires_approval=False)
    sub = await store.request_subscription(world.rival.id, "gpt")
    assert (sub.tenant_id, sub.status) == (world.globex.id, APPROVED)
    mine = await store.request_subscription(world.app.id, "gpt")
    assert (mine.tenant_id, mine.status) == (world.acme.id, PENDING)


async def test_the_schema_refuses_a_cross_tenant_subscription(
    store: SqlStore, world: World, clock: FakeClock
) -> None:
    """Past the store's checks, the schema itself keeps subscriptions in one tenant."""
    with pytest.raises(NotFoundError):
        async with store._write() as conn:
            await conn.execute(
                "INSERT INTO subscriptions (id, tenant_id, consumer_id, alias, status,"
                " requested_at, note) VALUES ('sub_x', ?, ?, 'claude', 'pending', ?, '')",
                world.globex.id,
                world.app.id,
                clock.now,
            )
    assert (await store.list_subscriptions()).items == []


async def test_list_subscriptions_filters(store: SqlStore, world: World) -> None:
    await store.upsert_service(world.acme.id, "mistral", requires_approval=True)
    gpt = await store.request_subscription(world.app.id, "gpt")
    embed = await store.request_subscription(world.app.id, "embed")  # approved
    mistral = await store.request_subscription(world.app.id, "mistral")
    mistral = await store.decide_subscription(mistral.id, REJECTED, by="adm_1")
    other = await store.create_consumer(world.acme.id, "batch")
    other_gpt = await store.request_subscription(other.id, "gpt")
    rival = await store.request_subscription(world.rival.id, "claude")

    async def ids(**filters: object) -> set[str]:
        page = await store.list_subscriptions(**filters)  # type: ignore[arg-type]
        return {s.id for s in page.items}

    assert await ids() == {gpt.id, embed.id, mistral.id, other_gpt.id, rival.id}
    assert await ids(tenant_id=world.acme.id) == {gpt.id, embed.id, mistral.id, other_gpt.id}
    assert await ids(tenant_id=world.globex.id) == {rival.id}
    assert await ids(consumer_id=world.app.id) == {gpt.id, embed.id, mistral.id}
    assert await ids(statuses=[PENDING]) == {gpt.id, other_gpt.id, rival.id}
    assert await ids(tenant_id=world.acme.id, statuses=[PENDING]) == {gpt.id, other_gpt.id}
    assert await ids(statuses=[APPROVED, REJECTED]) == {embed.id, mistral.id}
    assert await ids(consumer_id=world.app.id, statuses=[REVOKED]) == set()
    assert await ids(tenant_id=world.globex.id, consumer_id=world.app.id) == set()


async def test_concurrent_requests_make_one_subscription(store: SqlStore, world: World) -> None:
    results = await asyncio.gather(
        *(store.request_subscription(world.app.id, "gpt") for _ in range(5)),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, Subscription)]
    assert len(made) == 1
    assert all(isinstance(r, ConflictError) for r in results if r not in made)
    assert (await store.list_subscriptions()).items == made


async def test_concurrent_decisions_one_wins(store: SqlStore, world: World) -> None:
    sub = await store.request_subscription(world.app.id, "gpt")
    results = await asyncio.gather(
        store.decide_subscription(sub.id, APPROVED, by="adm_1"),
        store.decide_subscription(sub.id, REJECTED, by="adm_2"),
        store.decide_subscription(sub.id, APPROVED, by="adm_3"),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Subscription)]
    assert len(won) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == 2
    assert await store.get_subscription(sub.id) == won[0]
