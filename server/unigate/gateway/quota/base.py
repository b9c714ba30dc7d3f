"""Quotas and rate limits: the interface the gateway checks every call against.

A call is checked against every Limit that applies to it (per key, consumer,
tenant, model alias, upstream deployment). `admit` runs before the call: it counts
the request against request limits, takes a slot from concurrency limits, and
refuses the call if any token or spend budget is already used up. `settle` runs
when the call ends, however it ends: it adds the tokens and cost the call used
and gives the concurrency slots back. Two backends implement it: in memory (one
process) and Redis (many processes share the counters, through atomic scripts).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from unigate.gateway.errors import Reason


class Kind(enum.StrEnum):
    REQUESTS = "requests"  # calls per window
    TOKENS = "tokens"  # input + output tokens per window, charged when known
    SPEND = "spend"  # cost per window (currency units), charged when known
    CONCURRENCY = "concurrency"  # calls in flight, streams included


# The ErrorInfo reason of a refusal by each kind of limit.
REFUSAL_REASONS = {
    Kind.REQUESTS: Reason.RATE_LIMITED,
    Kind.TOKENS: Reason.TOKEN_QUOTA_EXCEEDED,
    Kind.SPEND: Reason.BUDGET_EXCEEDED,
    Kind.CONCURRENCY: Reason.CONCURRENCY_LIMITED,
}


@dataclass(frozen=True, slots=True)
class Limit:
    name: str  # e.g. "requests_per_minute": the x-ratelimit-*-<name> metadata suffix
    kind: Kind
    limit: float
    window: float  # seconds; ignored for concurrency
    subject: str  # what is limited, e.g. "tenant:ten_1", "alias:gpt", "deployment:openai/x"


@dataclass(frozen=True, slots=True)
class LimitState:
    limit: Limit
    remaining: float
    reset_after: float  # seconds until the window frees room (0 when there is room)


@dataclass(frozen=True, slots=True)
class Lease:
    """What `settle` needs: the limits the call was admitted under and its slots."""

    limits: tuple[Limit, ...]
    slot_id: str = ""  # identifies this call's concurrency slots


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    lease: Lease
    states: tuple[LimitState, ...] = ()  # every limit checked, after this call
    violated: tuple[LimitState, ...] = ()  # the ones that refused it (when not allowed)
    degraded: bool = False  # the shared backend was unreachable; decided locally (fail_open)

    @property
    def tightest(self) -> LimitState | None:
        """The state with the least room left, relative to its limit."""
        if not self.states:
            return None
        return min(self.states, key=lambda s: s.remaining / s.limit.limit if s.limit.limit else 0.0)

    @property
    def retry_after(self) -> float:
        return max((s.reset_after for s in self.violated), default=0.0)


@dataclass(frozen=True, slots=True)
class Usage:
    subject: str
    states: tuple[LimitState, ...] = field(default_factory=tuple)


class QuotaUnavailable(Exception):
    """The shared backend could not answer in time (fail_closed turns this into UNAVAILABLE)."""


class QuotaBackend(Protocol):
    async def admit(self, limits: Sequence[Limit]) -> Decision: ...

    async def settle(self, lease: Lease, *, tokens: int = 0, cost: float = 0.0) -> None: ...

    async def usage(self, limits: Sequence[Limit]) -> tuple[LimitState, ...]: ...

    async def reset(self, subject: str) -> None: ...

    async def close(self) -> None: ...
