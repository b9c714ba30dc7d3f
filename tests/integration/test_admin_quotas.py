"""GetQuotaUsage and ResetQuotaUsage through a real grpc.aio AdminService over a
real SQLite store and a real MemoryQuota: usage after calls, reset, authorization
and tenant isolation, and the answers without quotas or counters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest

from tests.admin_harness import (
    DENIED,
    INVALID,
    NOT_FOUND,
    AdminServer,
    World,
    consumer,
    expect,
    start_admin_server,
    tenant_admin,
    world,
)
from unigate.gateway import admin_cli
from unigate.gateway.identity.keys import generate_key
from unigate.gateway.quota.base import Decision, Lease, Limit, LimitState, QuotaUnavailable
from unigate.gateway.quota.memory import MemoryQuota
from unigate.gateway.quota.policy import Policy, limits_for
from unigate.gateway.services.admin import QuotaView
from unigate.v1 import admin_pb2 as pb

__all__ = ["world"]  # the fixture, imported for pytest

POLICIES = (
    Policy(scope="tenant", requests_per_minute=10, tokens_per_day=1000),
    Policy(scope="consumer", requests_per_minute=5),
    Policy(scope="key", concurrent=2),
    Policy(scope="alias", match="gpt", requests_per_minute=50),
    Policy(scope="global", requests_per_minute=100),
)
TENANT = pb.QUOTA_SCOPE_TENANT
CONSUMER = pb.QUOTA_SCOPE_CONSUMER


@pytest.fixture
def quota() -> MemoryQuota:
    return MemoryQuota()


@pytest.fixture
async def admin_server(tmp_path: Any, quota: MemoryQuota) -> AsyncIterator[AdminServer]:
    """The harness's server, with quotas (overrides the harness fixture `world` uses)."""
    server, handle = await start_admin_server(
        str(tmp_path / "unigate.db"), QuotaView(quota, POLICIES)
    )
    yield handle
    await handle.channel.close()
    await server.stop(0)
    await handle.store.close()


async def spend(quota: MemoryQuota, calls: int, tokens: int = 0, **subjects: str) -> None:
    """`calls` calls' worth of admit + settle, as the quota interceptor charges them."""
    limits = limits_for(POLICIES, subjects)
    for _ in range(calls):
        decision = await quota.admit(limits)
        assert decision.allowed
        await quota.settle(decision.lease, tokens=tokens)


def by_name(usages: Sequence[pb.QuotaUsage]) -> dict[str, pb.QuotaUsage]:
    return {u.limit_name: u for u in usages}


def usage_of(scope: int, ident: str = "") -> pb.GetQuotaUsageRequest:
    return pb.GetQuotaUsageRequest(scope=scope, id=ident)  # type: ignore[arg-type]


def reset_of(scope: int, ident: str = "") -> pb.ResetQuotaUsageRequest:
    return pb.ResetQuotaUsageRequest(scope=scope, id=ident)  # type: ignore[arg-type]


async def test_usage_after_calls_and_reset(world: World, quota: MemoryQuota) -> None:
    await spend(quota, 3, tokens=40, tenant=world.a, consumer=world.a1)
    got = by_name((await world.call("GetQuotaUsage", usage_of(TENANT, world.a))).usages)
    assert set(got) == {"requests_per_minute", "tokens_per_day"}
    rpm = got["requests_per_minute"]
    assert (rpm.subject, rpm.kind, rpm.limit, rpm.remaining) == (
        f"tenant:{world.a}",
        pb.QUOTA_KIND_REQUESTS,
        10,
        10 - 3,
    )
    assert rpm.reset_after.ToNanoseconds() == 0  # there is room
    tokens = got["tokens_per_day"]
    assert (tokens.kind, tokens.limit, tokens.remaining) == (pb.QUOTA_KIND_TOKENS, 1000, 880)

    consumer_usage = (await world.call("GetQuotaUsage", usage_of(CONSUMER, world.a1))).usages
    assert [(u.subject, u.remaining) for u in consumer_usage] == [(f"consumer:{world.a1}", 2)]

    reset = await world.call("ResetQuotaUsage", reset_of(TENANT, world.a))
    assert {u.limit_name: u.remaining for u in reset.usages} == {
        "requests_per_minute": 10,
        "tokens_per_day": 1000,
    }
    again = (await world.call("GetQuotaUsage", usage_of(TENANT, world.a))).usages
    assert {u.limit_name: u.remaining for u in again} == {
        "requests_per_minute": 10,
        "tokens_per_day": 1000,
    }
    # Only that subject's counters were cleared.
    consumer_usage = (await world.call("GetQuotaUsage", usage_of(CONSUMER, world.a1))).usages
    assert consumer_usage[0].remaining == 2


async def test_used_up_limit_shows_zero_and_a_reset_time(world: World, quota: MemoryQuota) -> None:
    await spend(quota, 5, consumer=world.a1)
    (usage,) = (await world.call("GetQuotaUsage", usage_of(CONSUMER, world.a1))).usages
    assert usage.remaining == 0
    assert 0 < usage.reset_after.ToNanoseconds() / 1e9 <= 60


async def test_key_alias_and_global_subjects(world: World, quota: MemoryQuota) -> None:
    await spend(quota, 4, alias="gpt")
    keyed = (await world.call("GetQuotaUsage", usage_of(pb.QUOTA_SCOPE_KEY, world.a1_key))).usages
    assert [(u.limit_name, u.kind, u.remaining) for u in keyed] == [
        ("concurrent", pb.QUOTA_KIND_CONCURRENCY, 2)
    ]
    alias = (await world.call("GetQuotaUsage", usage_of(pb.QUOTA_SCOPE_ALIAS, "gpt"))).usages
    assert [(u.subject, u.remaining) for u in alias] == [("alias:gpt", 46)]
    other = (await world.call("GetQuotaUsage", usage_of(pb.QUOTA_SCOPE_ALIAS, "claude"))).usages
    assert list(other) == []  # no policy applies to it
    whole = (await world.call("GetQuotaUsage", usage_of(pb.QUOTA_SCOPE_GLOBAL))).usages
    assert [(u.subject, u.remaining) for u in whole] == [("global:*", 100)]


async def test_tenant_admin_sees_its_own_tenant_only(world: World, quota: MemoryQuota) -> None:
    await spend(quota, 2, tenant=world.a, consumer=world.a1)
    mine = tenant_admin(world.a)
    own = (await world.call("GetQuotaUsage", usage_of(TENANT, world.a), mine)).usages
    assert by_name(own)["requests_per_minute"].remaining == 8
    app = (await world.call("GetQuotaUsage", usage_of(CONSUMER, world.a1), mine)).usages
    assert app[0].remaining == 3
    key = usage_of(pb.QUOTA_SCOPE_KEY, world.a1_key)
    assert len((await world.call("GetQuotaUsage", key, mine)).usages) == 1
    await world.call("ResetQuotaUsage", reset_of(CONSUMER, world.a1), mine)

    # Another tenant's subjects are answered as missing ones.
    theirs = tenant_admin(world.b)
    for rpc, request in (
        ("GetQuotaUsage", usage_of(TENANT, world.a)),
        ("GetQuotaUsage", usage_of(CONSUMER, world.a1)),
        ("GetQuotaUsage", usage_of(pb.QUOTA_SCOPE_KEY, world.a1_key)),
        ("ResetQuotaUsage", reset_of(TENANT, world.a)),
        ("ResetQuotaUsage", reset_of(CONSUMER, world.a1)),
    ):
        await expect(world.call(rpc, request, theirs), *NOT_FOUND)
    missing = await expect(
        world.call("GetQuotaUsage", usage_of(CONSUMER, "con_nope"), theirs), *NOT_FOUND
    )
    hidden = await expect(
        world.call("GetQuotaUsage", usage_of(CONSUMER, world.a1), theirs), *NOT_FOUND
    )
    assert missing.details().replace("con_nope", world.a1) == hidden.details()
    # The tenant's counters were not reset by the refused call.
    own = (await world.call("GetQuotaUsage", usage_of(TENANT, world.a), mine)).usages
    assert by_name(own)["requests_per_minute"].remaining == 8

    # Subjects of no tenant take a global admin.
    for scope, ident in ((pb.QUOTA_SCOPE_ALIAS, "gpt"), (pb.QUOTA_SCOPE_GLOBAL, "")):
        await expect(world.call("GetQuotaUsage", usage_of(scope, ident), mine), *DENIED)
        await expect(world.call("ResetQuotaUsage", reset_of(scope, ident), mine), *DENIED)


async def test_consumers_and_anonymous_callers_are_refused(world: World) -> None:
    me = consumer(world.a, world.a1)
    await expect(world.call("GetQuotaUsage", usage_of(CONSUMER, world.a1), me), *DENIED)
    await expect(world.call("ResetQuotaUsage", reset_of(TENANT, world.a), me), *DENIED)
    await expect(
        world.call("GetQuotaUsage", usage_of(TENANT, world.a), None),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


async def test_invalid_subjects(world: World) -> None:
    await expect(world.call("GetQuotaUsage", usage_of(0, world.a)), *INVALID)
    await expect(world.call("GetQuotaUsage", usage_of(TENANT)), *INVALID)
    await expect(world.call("ResetQuotaUsage", reset_of(pb.QUOTA_SCOPE_GLOBAL, "x")), *INVALID)


async def test_a_global_admin_may_name_subjects_outside_the_store(world: World) -> None:
    # e.g. a JWT consumer: counted by id, never stored.
    usages = (await world.call("GetQuotaUsage", usage_of(CONSUMER, "jwt-app"))).usages
    assert [(u.subject, u.remaining) for u in usages] == [("consumer:jwt-app", 5)]


async def test_without_quotas_it_is_failed_precondition(tmp_path: Any) -> None:
    server, handle = await start_admin_server(str(tmp_path / "plain.db"))
    try:
        tenant = (await handle.store.create_tenant("acme")).id
        admin = (("x-test-principal", "admin"),)
        for call in (
            handle.stub.GetQuotaUsage(usage_of(TENANT, tenant), metadata=admin),
            handle.stub.ResetQuotaUsage(reset_of(TENANT, tenant), metadata=admin),
        ):
            error = await expect(call, grpc.StatusCode.FAILED_PRECONDITION, "QUOTAS_NOT_CONFIGURED")
            assert error.details() == "no quota policies are configured"
    finally:
        await handle.channel.close()
        await server.stop(0)
        await handle.store.close()


class _Unreachable:
    """A backend whose shared counters cannot be reached."""

    async def admit(self, limits: Sequence[Limit]) -> Decision:
        raise QuotaUnavailable

    async def settle(self, lease: Lease, *, tokens: int = 0, cost: float = 0.0) -> None:
        raise QuotaUnavailable

    async def usage(self, limits: Sequence[Limit]) -> tuple[LimitState, ...]:
        raise QuotaUnavailable

    async def reset(self, subject: str) -> None:
        raise QuotaUnavailable

    async def close(self) -> None:
        return None


async def test_unreachable_counters_are_unavailable(tmp_path: Any) -> None:
    server, handle = await start_admin_server(
        str(tmp_path / "down.db"), QuotaView(_Unreachable(), POLICIES)
    )
    try:
        tenant = (await handle.store.create_tenant("acme")).id
        admin = (("x-test-principal", "admin"),)
        for call in (
            handle.stub.GetQuotaUsage(usage_of(TENANT, tenant), metadata=admin),
            handle.stub.ResetQuotaUsage(reset_of(TENANT, tenant), metadata=admin),
        ):
            await expect(call, grpc.StatusCode.UNAVAILABLE, "QUOTA_BACKEND_UNAVAILABLE")
    finally:
        await handle.channel.close()
        await server.stop(0)
        await handle.store.close()


async def test_cli_usage_and_reset(
    world: World, quota: MemoryQuota, capsys: pytest.CaptureFixture[str]
) -> None:
    new = generate_key()
    await world.server.store.create_key(
        key_id=new.key_id,
        secret_hash=new.secret_hash,
        name="ops",
        tenant_id=None,
        admin_id=world.global_admin,
    )

    async def run(*argv: str) -> tuple[int, str, str]:
        args = ["admin", "quotas", *argv, "--target", world.server.target, "--plaintext"]
        capsys.readouterr()
        code = await asyncio.to_thread(admin_cli.main, [*args, "--api-key", new.key])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    await spend(quota, 3, tenant=world.a)
    code, out, err = await run("usage", "--scope", "tenant", "--id", world.a)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["subject", "limit_name", "kind", "limit", "remaining", "reset_after"]
    expected = [f"tenant:{world.a}", "requests_per_minute", "requests", "10.0", "7.0", "0s"]
    assert rows[0].split() == expected
    code, out, err = await run("reset", "--scope", "tenant", "--id", world.a, "--output", "json")
    assert code == 0, err
    remaining = {u["limit_name"]: u["remaining"] for u in json.loads(out)["usages"]}
    assert remaining == {"requests_per_minute": 10, "tokens_per_day": 1000}
    code, _, err = await run("usage", "--scope", "consumer", "--id", "con_nope")
    assert code == 0, err  # a global admin may name a subject the store does not hold
