"""How each kind of limit is counted: the rules both backends follow.

Every limit is kept in one of four forms:

  log    requests, up to `exact_max` per window: one entry per admitted call,
         dropped `window` seconds after it; exact (never more than `limit` calls
         in any `window`-long span, and a call passes as soon as the oldest
         counted one leaves).
  count  larger request limits: bucketed sums, +1 at admit (memory bounded).
  sum    tokens and spend: bucketed sums, checked at admit, charged at settle.
  slots  concurrency: one slot per call in flight, each with an expiry.

A bucketed window of `window` seconds has `buckets` buckets of `window/buckets`
seconds. A charge is counted until the end of its bucket plus `window`: never
less than the true sliding window, at most one bucket (1/buckets) longer.
Requests and slots need room for this call (`used + 1 <= limit`); tokens and
spend only need the budget not to be used up yet (`used < limit`), since their
size is known only when the call ends.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

from unigate.gateway.quota.base import Kind, Limit, LimitState

EXACT_MAX = 1000  # request limits up to this many calls per window keep an exact log
BUCKETS = 60
SLOT_TTL = 600.0  # seconds a concurrency slot is held if its call never settles
CONCURRENCY_RETRY = 1.0  # what to tell a caller refused a slot; calls end when they end
MIN_WAIT = 1e-6  # a refused call is never told to retry at once


class Form(enum.StrEnum):
    LOG = "log"
    COUNT = "count"
    SUM = "sum"
    SLOTS = "slots"


def form_of(limit: Limit, exact_max: int) -> Form:
    if limit.kind is Kind.CONCURRENCY:
        return Form.SLOTS
    if limit.kind is Kind.REQUESTS:
        return Form.LOG if limit.limit <= exact_max else Form.COUNT
    return Form.SUM


def need_of(form: Form) -> int:
    """What admit adds to the counter: one call, or nothing (tokens and spend)."""
    return 0 if form is Form.SUM else 1


def charge_of(limit: Limit, tokens: int, cost: float) -> float:
    """What settle adds to this limit: the call's tokens, its cost, or nothing."""
    if limit.kind is Kind.TOKENS:
        return tokens
    if limit.kind is Kind.SPEND:
        return cost
    return 0


def has_room(used: float, limit: float, need: int) -> bool:
    return used + need <= limit if need else used < limit


def log_index(used: int, limit: float) -> int | None:
    """Which entry of a full log (oldest first) must leave before a call fits."""
    whole = math.floor(limit)
    return used - whole if whole >= 1 else None


def state(limit: Limit, used: float, wait: float | None) -> LimitState:
    """`wait` is None when there is room, else the seconds until there is."""
    reset_after = 0.0 if wait is None else max(wait, MIN_WAIT)
    return LimitState(limit, max(0.0, float(limit.limit - used)), reset_after)


def unique(limits: Sequence[Limit]) -> tuple[Limit, ...]:
    """The same limit twice in one call is one limit."""
    return tuple(dict.fromkeys(limits))
