"""The contract both backends keep, on real time with short windows."""

from __future__ import annotations

import asyncio

import pytest

from tests.quota.conftest import NewQuota
from unigate.gateway.quota.base import Kind, Limit, QuotaBackend

W = 0.5  # seconds: short windows keep the suite fast
SLACK = 0.03  # scheduling slack on top of an announced reset_after


def lim(
    name: str = "rpm",
    kind: Kind = Kind.REQUESTS,
    limit: float = 3,
    window: float = W,
    subject: str = "tenant:t1",
) -> Limit:
    return Limit(name, kind, limit, window, subject)


async def allowed_count(quota: QuotaBackend, limits: list[Limit], calls: int) -> int:
    return sum([(await quota.admit(limits)).allowed for _ in range(calls)])


@pytest.mark.parametrize("exact_max", [1000, 0], ids=["log", "buckets"])
async def test_requests_pass_exactly_n_then_again_after_the_window(
    new_quota: NewQuota, exact_max: int
) -> None:
    quota = new_quota(exact_max=exact_max)
    rpm = lim(limit=5)
    decisions = [await quota.admit([rpm]) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.states[0].remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert [d.states[0].reset_after > 0 for d in decisions] == [False] * 4 + [True]

    refused = await quota.admit([rpm])
    assert not refused.allowed
    assert [s.limit for s in refused.violated] == [rpm]
    assert refused.violated[0].remaining == 0
    assert 0 < refused.retry_after <= W * (1 + 1 / 60) + SLACK

    await asyncio.sleep(refused.retry_after + SLACK)
    assert await allowed_count(quota, [rpm], 6) == 5


@pytest.mark.parametrize("exact_max", [1000, 0], ids=["log", "buckets"])
async def test_the_window_slides_and_refusals_are_not_counted(
    new_quota: NewQuota, exact_max: int
) -> None:
    quota = new_quota(exact_max=exact_max)
    rpm = lim(limit=4, window=0.6)
    assert await allowed_count(quota, [rpm], 2) == 2
    await asyncio.sleep(0.3)
    assert await allowed_count(quota, [rpm], 2) == 2
    refused = await quota.admit([rpm])  # a fixed window would have reset by now
    assert not refused.allowed
    assert 0.2 < refused.retry_after <= 0.31 + SLACK  # when the first two leave

    await asyncio.sleep(refused.retry_after + SLACK)
    assert await allowed_count(quota, [rpm], 3) == 2  # only the first two left


async def test_admit_is_all_or_nothing(quota: QuotaBackend) -> None:
    loose = lim("rpm", limit=5)
    tight = lim("burst", limit=1, subject="key:k1")
    slots = lim("streams", Kind.CONCURRENCY, 3, 0)
    assert (await quota.admit([loose, tight, slots])).allowed

    refused = await quota.admit([loose, tight, slots])
    assert not refused.allowed
    assert [s.limit for s in refused.violated] == [tight]
    assert not refused.lease.limits
    usage = {s.limit.name: s.remaining for s in await quota.usage([loose, tight, slots])}
    assert usage == {"rpm": 4, "burst": 0, "streams": 2}


async def test_tokens_are_charged_at_settle_and_refused_once_used_up(quota: QuotaBackend) -> None:
    tpm = lim("tpm", Kind.TOKENS, 100)
    first = await quota.admit([tpm])
    assert first.allowed and first.states[0].remaining == 100  # nothing known yet
    await quota.settle(first.lease, tokens=60)
    assert (await quota.usage([tpm]))[0].remaining == 40

    second = await quota.admit([tpm])
    assert second.allowed  # 40 left: the call may use more, known only at its end
    await quota.settle(second.lease, tokens=60)
    refused = await quota.admit([tpm])
    assert not refused.allowed
    assert [s.limit for s in refused.violated] == [tpm]
    assert 0 < refused.retry_after <= W * (1 + 1 / 60) + SLACK

    await asyncio.sleep(refused.retry_after + SLACK)
    assert (await quota.admit([tpm])).allowed


async def test_spend_stops_calls_once_spent(quota: QuotaBackend) -> None:
    budget = lim("spend_per_day", Kind.SPEND, 1.0, window=60)
    for cost in (0.25, 0.75):
        decision = await quota.admit([budget])
        assert decision.allowed
        await quota.settle(decision.lease, cost=cost)
    refused = await quota.admit([budget])
    assert not refused.allowed and refused.violated[0].limit == budget
    assert 59 < refused.retry_after <= 61.1


async def test_admit_charges_no_tokens_and_refused_leases_charge_nothing(
    quota: QuotaBackend,
) -> None:
    tpm = lim("tpm", Kind.TOKENS, 10)
    rpm = lim("rpm", limit=1)
    assert await allowed_count(quota, [tpm], 5) == 5
    assert (await quota.admit([tpm, rpm])).allowed
    refused = await quota.admit([tpm, rpm])
    assert not refused.allowed
    await quota.settle(refused.lease, tokens=500)
    assert (await quota.usage([tpm]))[0].remaining == 10


async def test_concurrency_refuses_beyond_n_and_settle_gives_slots_back(
    quota: QuotaBackend,
) -> None:
    streams = lim("streams", Kind.CONCURRENCY, 2, 0)
    first, second = await quota.admit([streams]), await quota.admit([streams])
    assert first.allowed and second.allowed
    refused = await quota.admit([streams])
    assert not refused.allowed
    assert refused.violated[0].limit == streams and refused.retry_after > 0

    await quota.settle(first.lease)
    third = await quota.admit([streams])
    assert third.allowed
    await quota.settle(first.lease)  # settled twice: frees nothing more
    assert not (await quota.admit([streams])).allowed

    await quota.settle(second.lease)
    await quota.settle(third.lease)
    assert (await quota.usage([streams]))[0].remaining == 2


async def test_a_slot_never_settled_comes_back_after_slot_ttl(new_quota: NewQuota) -> None:
    quota = new_quota(slot_ttl=0.3)
    streams = lim("streams", Kind.CONCURRENCY, 1, 0)
    assert (await quota.admit([streams])).allowed  # its holder dies: no settle
    refused = await quota.admit([streams])
    assert not refused.allowed
    assert 0 < refused.retry_after <= 0.3  # the slot's expiry, sooner than the 1 s hint
    await asyncio.sleep(refused.retry_after + SLACK)
    assert (await quota.admit([streams])).allowed


async def test_reset_clears_one_subject_only(quota: QuotaBackend) -> None:
    subjects = ["tenant:a*", "tenant:a*b", "tenant:a", "odd|sub%ject[1]"]
    limits = {subject: [lim(subject=subject, limit=1)] for subject in subjects}
    for subject in subjects:
        assert (await quota.admit(limits[subject])).allowed
        assert not (await quota.admit(limits[subject])).allowed

    await quota.reset("tenant:a*")
    await quota.reset("odd|sub%ject[1]")
    assert (await quota.admit(limits["tenant:a*"])).allowed
    assert (await quota.admit(limits["odd|sub%ject[1]"])).allowed
    assert not (await quota.admit(limits["tenant:a*b"])).allowed
    assert not (await quota.admit(limits["tenant:a"])).allowed


async def test_usage_reads_without_counting(quota: QuotaBackend) -> None:
    rpm, tpm = lim(limit=5), lim("tpm", Kind.TOKENS, 100)
    assert await allowed_count(quota, [rpm, tpm], 3) == 3
    for _ in range(5):
        states = await quota.usage([rpm, tpm])
    assert [(s.limit, s.remaining, s.reset_after) for s in states] == [
        (rpm, 2, 0.0),
        (tpm, 100, 0.0),
    ]
    assert await quota.usage([]) == ()


async def test_tightest_and_retry_after(quota: QuotaBackend) -> None:
    roomy = lim("rps", limit=10, window=0.3)
    snug = lim("rpm", limit=4, window=0.6)
    decision = await quota.admit([roomy, snug])
    assert decision.allowed and not decision.degraded
    assert decision.tightest is not None and decision.tightest.limit == snug
    assert decision.retry_after == 0

    short = lim("short", limit=1, window=0.3, subject="key:k")
    long = lim("long", limit=1, window=0.6, subject="key:k")
    assert (await quota.admit([short, long])).allowed
    refused = await quota.admit([short, long])
    assert {s.limit for s in refused.violated} == {short, long}
    assert refused.retry_after == max(s.reset_after for s in refused.violated)
    assert 0.5 < refused.retry_after <= 0.6 + SLACK


async def test_the_same_limit_twice_counts_once(quota: QuotaBackend) -> None:
    rpm = lim(limit=2)
    assert await allowed_count(quota, [rpm, rpm], 3) == 2


async def test_no_limits_always_pass(quota: QuotaBackend) -> None:
    decision = await quota.admit([])
    assert decision.allowed and decision.states == () and decision.tightest is None
    await quota.settle(decision.lease, tokens=5, cost=1.0)
