"""A private redis-server killed or frozen mid-test: fail_open and fail_closed as configured.

Every call is timed: with Redis dead or hung, none may take longer than BOUND.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from tests.quota.conftest import PrivateRedis
from unigate.gateway.quota.base import Decision, Kind, Limit, QuotaUnavailable
from unigate.gateway.quota.memory import MemoryQuota
from unigate.gateway.quota.redis_backend import RedisQuota
from unigate.gateway.quota.resilient import FailMode, QuotaEvent, ResilientQuota

BOUND = 0.5  # seconds any call may take while Redis is down
BACKOFF = 0.2
RPM = Limit("rpm", Kind.REQUESTS, 3, 60, "tenant:t")
STREAMS = Limit("streams", Kind.CONCURRENCY, 1, 0, "tenant:t")
T = TypeVar("T")

NewResilient = Callable[[FailMode], ResilientQuota]


@pytest.fixture
async def events() -> list[QuotaEvent]:
    return []


@pytest.fixture
async def new_resilient(
    private_redis: PrivateRedis, events: list[QuotaEvent]
) -> AsyncIterator[NewResilient]:
    made: list[ResilientQuota] = []

    def new(mode: FailMode) -> ResilientQuota:
        primary = RedisQuota(private_redis.url, prefix="faults", timeout=0.1)
        quota = ResilientQuota(
            primary, MemoryQuota(), mode=mode, backoff=BACKOFF, on_event=events.append
        )
        made.append(quota)
        return quota

    yield new
    for quota in made:
        await quota.close()


async def timed(call: Awaitable[T]) -> T:
    started = time.perf_counter()
    try:
        return await call
    finally:
        assert time.perf_counter() - started < BOUND


async def until_shared(quota: ResilientQuota, limits: list[Limit]) -> Decision:
    """Admit until Redis decides again (bounded by a few backoffs)."""
    deadline = time.monotonic() + 10 * BACKOFF + 2
    while time.monotonic() < deadline:
        decision = await timed(quota.admit(limits))
        if not decision.degraded:
            return decision
        await asyncio.sleep(BACKOFF / 4)
    raise AssertionError("never went back to Redis")


async def test_fail_open_serves_locally_while_redis_is_dead_then_returns(
    new_resilient: NewResilient,
    private_redis: PrivateRedis,
    events: list[QuotaEvent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    quota = new_resilient("fail_open")
    first = await quota.admit([RPM])
    assert first.allowed and not first.degraded

    private_redis.kill()
    with caplog.at_level(logging.WARNING, logger="unigate.quota"):
        local = [await timed(quota.admit([RPM])) for _ in range(4)]
    assert all(d.degraded for d in local)
    assert [d.allowed for d in local] == [True, True, True, False]  # counted locally
    assert local[-1].retry_after > 0
    outage_logs = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outage_logs) == 1  # once per outage, not per call
    assert events == [QuotaEvent.OUTAGE] + [QuotaEvent.DEGRADED] * 4

    private_redis.start()  # empty: no persistence
    back = await until_shared(quota, [RPM])
    assert back.allowed and back.states[0].remaining == 2
    assert QuotaEvent.RECOVERED in events and not quota.degraded


async def test_fail_closed_refuses_promptly_while_redis_is_dead_then_returns(
    new_resilient: NewResilient, private_redis: PrivateRedis, events: list[QuotaEvent]
) -> None:
    quota = new_resilient("fail_closed")
    assert (await quota.admit([RPM])).allowed

    private_redis.kill()
    for _ in range(5):
        with pytest.raises(QuotaUnavailable):
            await timed(quota.admit([RPM]))
    assert events == [QuotaEvent.OUTAGE] + [QuotaEvent.UNAVAILABLE] * 5

    private_redis.start()
    deadline = time.monotonic() + 10 * BACKOFF + 2
    while True:
        try:
            decision = await timed(quota.admit([RPM]))
            break
        except QuotaUnavailable:
            assert time.monotonic() < deadline, "never went back to Redis"
            await asyncio.sleep(BACKOFF / 4)
    assert decision.allowed and not decision.degraded


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
async def test_a_hung_redis_costs_at_most_the_timeout(
    new_resilient: NewResilient, private_redis: PrivateRedis, mode: FailMode
) -> None:
    quota = new_resilient(mode)
    assert (await quota.admit([RPM])).allowed
    private_redis.pause()  # accepts connections, answers nothing
    try:
        for _ in range(5):
            if mode == "fail_open":
                assert (await timed(quota.admit([RPM]))).degraded
            else:
                with pytest.raises(QuotaUnavailable):
                    await timed(quota.admit([RPM]))
    finally:
        private_redis.resume()
    await asyncio.sleep(BACKOFF)
    back = await until_shared(quota, [RPM])
    # The admit that timed out may have run when Redis woke: counted there as well
    # as locally (over, never under).
    assert back.states[0].remaining in (0, 1)


async def test_the_slot_of_an_admit_that_timed_out_comes_back(
    new_resilient: NewResilient, private_redis: PrivateRedis
) -> None:
    quota = new_resilient("fail_open")
    assert (await quota.admit([RPM])).allowed  # connected, the admit script loaded
    private_redis.pause()
    try:
        local = await timed(quota.admit([STREAMS]))  # Redis runs it late, on waking
    finally:
        private_redis.resume()
    assert local.allowed and local.degraded
    await quota.settle(local.lease)
    await asyncio.sleep(BACKOFF)
    deadline = time.monotonic() + 5
    while (await timed(quota.usage([STREAMS])))[0].remaining != 1:
        assert time.monotonic() < deadline, "the late slot was never given back"
        await asyncio.sleep(0.02)


async def test_a_settle_redis_missed_is_replayed_when_it_answers(
    new_resilient: NewResilient, private_redis: PrivateRedis
) -> None:
    quota = new_resilient("fail_closed")
    held = await quota.admit([STREAMS])
    assert held.allowed
    private_redis.pause()
    try:
        with pytest.raises(QuotaUnavailable):
            await timed(quota.admit([RPM]))  # the outage starts
        await timed(quota.settle(held.lease, tokens=5))  # within the backoff: kept, not sent
    finally:
        private_redis.resume()
    await asyncio.sleep(BACKOFF)
    deadline = time.monotonic() + 5
    while (await timed(quota.usage([STREAMS])))[0].remaining != 1:
        assert time.monotonic() < deadline, "the slot never came back"
        await asyncio.sleep(0.02)


async def test_leases_decided_locally_are_settled_locally(
    new_resilient: NewResilient, private_redis: PrivateRedis
) -> None:
    quota = new_resilient("fail_open")
    private_redis.kill()
    local = await timed(quota.admit([STREAMS]))
    assert local.allowed and local.degraded
    assert not (await timed(quota.admit([STREAMS]))).allowed  # the local slot is held

    private_redis.start()
    shared = await until_shared(quota, [STREAMS])
    assert shared.allowed  # Redis never saw the local slot
    await quota.settle(local.lease)
    await quota.settle(shared.lease)
    assert (await quota.usage([STREAMS]))[0].remaining == 1
