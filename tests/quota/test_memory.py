"""The in-memory backend on a clock that moves only when told: exact edges."""

from __future__ import annotations

import pytest

from unigate.gateway.quota.base import Kind, Limit
from unigate.gateway.quota.memory import MemoryQuota


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def rpm(limit: float = 3, window: float = 10) -> Limit:
    return Limit("rpm", Kind.REQUESTS, limit, window, "key:k")


async def admit_at(quota: MemoryQuota, clock: FakeClock, at: float, limit: Limit) -> bool:
    clock.now = 1000.0 + at
    return (await quota.admit([limit])).allowed


async def test_a_call_passes_exactly_when_the_oldest_leaves(clock: FakeClock) -> None:
    quota = MemoryQuota(clock=clock)
    for at in (0, 1, 2):
        assert await admit_at(quota, clock, at, rpm())
    clock.now = 1000.0 + 9.75
    refused = await quota.admit([rpm()])
    assert not refused.allowed and refused.retry_after == pytest.approx(0.25)
    assert await admit_at(quota, clock, 10, rpm())  # the call at 0 has left
    assert not await admit_at(quota, clock, 10.5, rpm())  # the one at 1 has not


async def test_no_burst_of_two_n_across_a_window_edge(clock: FakeClock) -> None:
    quota = MemoryQuota(clock=clock)
    assert [await admit_at(quota, clock, 9.9, rpm()) for _ in range(4)] == [True] * 3 + [False]
    assert not await admit_at(quota, clock, 10.1, rpm())  # a fixed window would reset here
    assert not await admit_at(quota, clock, 19.89, rpm())
    assert [await admit_at(quota, clock, 19.9, rpm()) for _ in range(4)] == [True] * 3 + [False]


async def test_bucketed_requests_never_exceed_n_and_are_late_by_one_bucket_at_most(
    clock: FakeClock,
) -> None:
    quota = MemoryQuota(clock=clock, exact_max=0, buckets=10)  # 1 s buckets
    for _ in range(3):
        assert await admit_at(quota, clock, 0.5, rpm())
    clock.now = 1000.0 + 10.5
    refused = await quota.admit([rpm()])
    assert not refused.allowed  # the true window freed room at 10.5; the bucket ends at 11
    assert refused.retry_after == pytest.approx(0.5)
    assert await admit_at(quota, clock, 11, rpm())


async def test_token_charges_leave_the_window_one_by_one(clock: FakeClock) -> None:
    quota = MemoryQuota(clock=clock, buckets=100)
    tpm = Limit("tpm", Kind.TOKENS, 100, 10, "tenant:t")
    for at, tokens in ((0, 70), (5, 40)):
        clock.now = 1000.0 + at
        await quota.settle((await quota.admit([tpm])).lease, tokens=tokens)
    clock.now = 1000.0 + 6
    refused = await quota.admit([tpm])
    assert not refused.allowed and refused.retry_after == pytest.approx(4.1)  # when the 70 leaves
    clock.now = 1000.0 + 10.1
    decision = await quota.admit([tpm])
    assert decision.allowed and decision.states[0].remaining == pytest.approx(60)


async def test_a_slot_expires_after_its_ttl(clock: FakeClock) -> None:
    quota = MemoryQuota(clock=clock, slot_ttl=30, concurrency_retry_after=1)
    streams = Limit("streams", Kind.CONCURRENCY, 1, 0, "tenant:t")
    assert await admit_at(quota, clock, 0, streams)
    clock.now = 1000.0 + 29.5
    refused = await quota.admit([streams])
    assert refused.retry_after == pytest.approx(0.5)  # sooner than the 1 s hint
    assert await admit_at(quota, clock, 30, streams)


async def test_idle_counters_are_dropped(clock: FakeClock) -> None:
    quota = MemoryQuota(clock=clock)
    for n in range(100):
        limit = Limit("rpm", Kind.REQUESTS, 5, 10, f"key:{n}")
        assert await admit_at(quota, clock, 0, limit)
    assert len(quota) == 100
    busy = rpm(limit=10**6)
    for _ in range(60):
        await admit_at(quota, clock, 11, busy)
    assert len(quota) == 1


async def test_a_limit_below_one_refuses_everything(clock: FakeClock) -> None:
    quota = MemoryQuota(clock=clock)
    refused = await quota.admit([rpm(limit=0)])
    assert not refused.allowed and refused.retry_after == pytest.approx(10)
