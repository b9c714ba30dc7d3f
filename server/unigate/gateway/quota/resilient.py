"""Redis first; when it cannot answer in time, a configured choice.

  fail_open    decide in this process's memory (Decision.degraded=True), so each
               process enforces the limits alone until Redis is back
  fail_closed  raise QuotaUnavailable (the gateway answers UNAVAILABLE)

An outage is logged once when it starts and once when it ends; `on_event` sees
each start, end and locally decided or refused call, for metrics. After a
failure Redis is left alone for `backoff` seconds, then one call tries it again:
a dead Redis costs calls no latency, a recovered one is used within `backoff`.

Leases decided locally are settled locally (their slot id is marked). Settles
Redis could not take are kept, up to `pending_max`, and replayed when it answers
again: slots come back before their ttl and charges land late, not never. So are
the slots of an admit that timed out, in case Redis ran it late; its request
counts stay (counted twice, locally and in Redis: over, never under).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from unigate.gateway.quota.base import (
    Decision,
    Lease,
    Limit,
    LimitState,
    QuotaBackend,
    QuotaUnavailable,
)
from unigate.gateway.quota.redis_backend import AdmitUnavailable

log = logging.getLogger("unigate.quota")

FailMode = Literal["fail_open", "fail_closed"]
LOCAL = "local:"  # marks the slot id of a lease the fallback admitted


class QuotaEvent(enum.StrEnum):
    OUTAGE = "outage"  # Redis stopped answering (once per outage)
    RECOVERED = "recovered"  # Redis answers again
    DEGRADED = "degraded"  # a call decided locally (fail_open)
    UNAVAILABLE = "unavailable"  # a call refused for want of Redis (fail_closed)


class ResilientQuota:
    def __init__(
        self,
        primary: QuotaBackend,
        fallback: QuotaBackend,
        *,
        mode: FailMode,
        backoff: float = 1.0,
        pending_max: int = 10_000,
        on_event: Callable[[QuotaEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("fail_open", "fail_closed"):
            raise ValueError(f"mode must be fail_open or fail_closed, not {mode!r}")
        self._primary = primary
        self._fallback = fallback
        self.mode = mode
        self._backoff = backoff
        self._on_event = on_event
        self._clock = clock
        self._down_since: float | None = None
        self._reason = ""
        self._next_try = 0.0
        self._local_calls = 0
        self._pending: deque[tuple[Lease, int, float]] = deque(maxlen=pending_max)
        self._dropped = 0
        self._replaying: asyncio.Task[None] | None = None

    @property
    def degraded(self) -> bool:
        """Whether Redis is considered down right now."""
        return self._down_since is not None

    async def admit(self, limits: Sequence[Limit]) -> Decision:
        if self._may_try():
            try:
                decision = await self._primary.admit(limits)
            except QuotaUnavailable as exc:
                if isinstance(exc, AdmitUnavailable):
                    self._defer(exc.lease, 0, 0.0)
                self._failed(exc)
            else:
                self._answered()
                return decision
        if self.mode == "fail_closed":
            self._emit(QuotaEvent.UNAVAILABLE)
            raise QuotaUnavailable(self._reason)
        decision = await self._fallback.admit(limits)
        self._local_calls += 1
        self._emit(QuotaEvent.DEGRADED)
        lease = replace(decision.lease, slot_id=LOCAL + decision.lease.slot_id)
        return replace(decision, lease=lease, degraded=True)

    async def settle(self, lease: Lease, *, tokens: int = 0, cost: float = 0.0) -> None:
        """Never raises for an unreachable Redis: the settle is kept and replayed."""
        if lease.slot_id.startswith(LOCAL):
            local = replace(lease, slot_id=lease.slot_id.removeprefix(LOCAL))
            await self._fallback.settle(local, tokens=tokens, cost=cost)
            return
        if not lease.limits:
            return
        if self._may_try():
            try:
                await self._primary.settle(lease, tokens=tokens, cost=cost)
            except QuotaUnavailable as exc:
                self._failed(exc)
            else:
                self._answered()
                return
        self._defer(lease, tokens, cost)
        if self.mode == "fail_open":
            # Local decisions during the outage see these charges too.
            await self._fallback.settle(lease, tokens=tokens, cost=cost)

    async def usage(self, limits: Sequence[Limit]) -> tuple[LimitState, ...]:
        """Redis's view only: local counts made during an outage are not the shared truth."""
        try:
            states = await self._primary.usage(limits)
        except QuotaUnavailable as exc:
            self._failed(exc)
            raise
        self._answered()
        return states

    async def reset(self, subject: str) -> None:
        await self._fallback.reset(subject)
        try:
            await self._primary.reset(subject)
        except QuotaUnavailable as exc:
            self._failed(exc)
            raise
        self._answered()

    async def close(self) -> None:
        if self._replaying is not None:
            self._replaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replaying
        await self._primary.close()
        await self._fallback.close()

    def _may_try(self) -> bool:
        if self._down_since is None:
            return True
        now = self._clock()
        if now < self._next_try:
            return False
        self._next_try = now + self._backoff  # the calls meanwhile do not pile onto Redis
        return True

    def _failed(self, exc: QuotaUnavailable) -> None:
        now = self._clock()
        self._next_try = now + self._backoff
        self._reason = str(exc)
        if self._down_since is not None:
            return
        self._down_since = now
        action = "deciding locally" if self.mode == "fail_open" else "refusing calls"
        log.warning("quota counters unreachable, %s until they answer: %s", action, exc)
        self._emit(QuotaEvent.OUTAGE)

    def _answered(self) -> None:
        if self._down_since is None:
            return
        log.warning(
            "quota counters answer again after %.1f s; %d calls were decided locally,"
            " %d settles will be replayed (%d dropped)",
            self._clock() - self._down_since,
            self._local_calls,
            len(self._pending),
            self._dropped,
        )
        self._down_since = None
        self._local_calls = self._dropped = 0
        self._emit(QuotaEvent.RECOVERED)
        if self._pending and (self._replaying is None or self._replaying.done()):
            self._replaying = asyncio.create_task(self._replay())

    def _defer(self, lease: Lease, tokens: int, cost: float) -> None:
        if len(self._pending) == self._pending.maxlen:
            self._dropped += 1
        self._pending.append((lease, tokens, cost))

    async def _replay(self) -> None:
        while self._pending:
            lease, tokens, cost = self._pending.popleft()
            try:
                await self._primary.settle(lease, tokens=tokens, cost=cost)
            except QuotaUnavailable as exc:
                self._pending.appendleft((lease, tokens, cost))
                self._failed(exc)
                return

    def _emit(self, event: QuotaEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)
