"""ResilientQuota's choices, with a primary that fails on demand."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from unigate.gateway.quota.base import Decision, Kind, Lease, Limit, LimitState, QuotaUnavailable
from unigate.gateway.quota.memory import MemoryQuota
from unigate.gateway.quota.resilient import QuotaEvent, ResilientQuota

RPM = Limit("rpm", Kind.REQUESTS, 2, 60, "tenant:t")
STREAMS = Limit("streams", Kind.CONCURRENCY, 1, 0, "tenant:t")
TPM = Limit("tpm", Kind.TOKENS, 100, 60, "tenant:t")


class FlakyQuota(MemoryQuota):
    """A shared backend that is down when told, and counts the calls it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise QuotaUnavailable("down")

    async def admit(self, limits: Sequence[Limit]) -> Decision:
        self._check()
        return await super().admit(limits)

    async def settle(self, lease: Lease, *, tokens: int = 0, cost: float = 0.0) -> None:
        self._check()
        await super().settle(lease, tokens=tokens, cost=cost)

    async def usage(self, limits: Sequence[Limit]) -> tuple[LimitState, ...]:
        self._check()
        return await super().usage(limits)

    async def reset(self, subject: str) -> None:
        self._check()
        await super().reset(subject)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def primary() -> FlakyQuota:
    return FlakyQuota()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> list[QuotaEvent]:
    return []


def resilient(
    primary: FlakyQuota, clock: Clock, events: list[QuotaEvent], mode: str
) -> ResilientQuota:
    return ResilientQuota(
        primary,
        MemoryQuota(),
        mode=mode,  # type: ignore[arg-type]
        backoff=1.0,
        on_event=events.append,
        clock=clock,
    )


async def test_fail_open_decides_locally_leaves_redis_alone_then_returns(
    primary: FlakyQuota, clock: Clock, events: list[QuotaEvent], caplog: pytest.LogCaptureFixture
) -> None:
    quota = resilient(primary, clock, events, "fail_open")
    primary.down = True
    with caplog.at_level(logging.WARNING, logger="unigate.quota"):
        decisions = [await quota.admit([RPM]) for _ in range(3)]
    assert [(d.allowed, d.degraded) for d in decisions] == [(True, True)] * 2 + [(False, True)]
    assert primary.calls == 1  # the backoff keeps the other calls off the dead backend
    assert quota.degraded
    assert len(caplog.records) == 1 and "unreachable" in caplog.records[0].getMessage()

    clock.now = 1.0
    await quota.admit([RPM])
    assert primary.calls == 2  # one try per backoff

    primary.down = False
    clock.now = 2.0
    back = await quota.admit([RPM])
    assert back.allowed and not back.degraded and not quota.degraded
    assert events == [QuotaEvent.OUTAGE] + [QuotaEvent.DEGRADED] * 4 + [QuotaEvent.RECOVERED]


async def test_fail_closed_raises_until_redis_answers(
    primary: FlakyQuota, clock: Clock, events: list[QuotaEvent]
) -> None:
    quota = resilient(primary, clock, events, "fail_closed")
    primary.down = True
    for _ in range(3):
        with pytest.raises(QuotaUnavailable, match="down"):
            await quota.admit([RPM])
    primary.down = False
    with pytest.raises(QuotaUnavailable):
        await quota.admit([RPM])  # still within the backoff
    clock.now = 1.0
    assert (await quota.admit([RPM])).allowed
    assert events == [QuotaEvent.OUTAGE] + [QuotaEvent.UNAVAILABLE] * 4 + [QuotaEvent.RECOVERED]


async def test_local_leases_settle_locally_and_missed_settles_are_replayed(
    primary: FlakyQuota, clock: Clock, events: list[QuotaEvent]
) -> None:
    quota = resilient(primary, clock, events, "fail_open")
    shared = await quota.admit([STREAMS, TPM])
    primary.down = True
    await quota.settle(shared.lease, tokens=30)  # kept for Redis, charged locally meanwhile
    local = await quota.admit([TPM])
    assert local.degraded and local.states[0].remaining == 70
    primary.down = False
    clock.now = 1.0
    await quota.settle(local.lease, tokens=20)
    assert primary.calls == 2  # a local lease never reaches the shared backend

    assert (await quota.usage([STREAMS, TPM]))[0].remaining == 0  # not yet replayed
    await asyncio.sleep(0)  # the replay task runs
    assert [s.remaining for s in await quota.usage([STREAMS, TPM])] == [1, 70]


async def test_usage_and_reset_need_the_shared_backend(
    primary: FlakyQuota, clock: Clock, events: list[QuotaEvent]
) -> None:
    quota = resilient(primary, clock, events, "fail_open")
    primary.down = True
    with pytest.raises(QuotaUnavailable):
        await quota.usage([RPM])
    with pytest.raises(QuotaUnavailable):
        await quota.reset("tenant:t")
    await quota.close()


def test_an_unknown_mode_is_refused(primary: FlakyQuota, clock: Clock) -> None:
    with pytest.raises(ValueError, match="fail_open or fail_closed"):
        resilient(primary, clock, [], "fail_sometimes")
