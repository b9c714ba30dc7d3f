"""Quotas counted in this process's memory: exact for one process, shared by none.

Counters follow the rules in `windows`. Each admit looks at two counters in turn
and drops them if idle, so subjects that stop calling vanish without a pause to
sweep everything. Nothing awaits between checking and counting, so an admit is
atomic on the event loop: all of its limits count the call, or none does.
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Protocol

from unigate.gateway.quota.base import Decision, Kind, Lease, Limit, LimitState
from unigate.gateway.quota.windows import (
    BUCKETS,
    CONCURRENCY_RETRY,
    EXACT_MAX,
    SLOT_TTL,
    Form,
    charge_of,
    form_of,
    has_room,
    log_index,
    need_of,
    state,
    unique,
)

Clock = Callable[[], float]
SWEEP_STEP = 2  # counters looked at per admit: idle ones are found within len/2 admits
CounterKey = tuple[str, Kind, str, float, Form]


class _Counter(Protocol):
    def used(self, now: float) -> float: ...

    def wait(self, now: float, used: float, limit: float, need: int) -> float: ...

    def take(self, now: float, call_id: str) -> None: ...

    def idle(self, now: float) -> bool: ...


class _Log:
    """Exact: the admission time of every call still in the window, oldest first."""

    __slots__ = ("times", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self.times: deque[float] = deque()

    def used(self, now: float) -> float:
        times = self.times
        while times and times[0] + self.window <= now:
            times.popleft()
        return len(times)

    def wait(self, now: float, used: float, limit: float, need: int) -> float:
        index = log_index(int(used), limit)
        if index is None:
            return self.window
        return self.times[index] + self.window - now

    def take(self, now: float, call_id: str) -> None:
        self.times.append(now)

    def idle(self, now: float) -> bool:
        return not self.times or self.times[-1] + self.window <= now


class _Sums:
    """Bucketed: [bucket index, amount] pairs, oldest first."""

    __slots__ = ("_span", "buckets", "size")

    def __init__(self, window: float, buckets: int) -> None:
        self.size = window / buckets
        self._span = buckets
        self.buckets: deque[list[float]] = deque()

    def used(self, now: float) -> float:
        first = math.floor(now / self.size) - self._span
        buckets = self.buckets
        while buckets and buckets[0][0] < first:
            buckets.popleft()
        return sum(amount for _, amount in buckets)

    def wait(self, now: float, used: float, limit: float, need: int) -> float:
        for index, amount in self.buckets:
            used -= amount
            if has_room(used, limit, need):
                return (index + self._span + 1) * self.size - now
        return self._span * self.size

    def take(self, now: float, call_id: str) -> None:
        self.charge(now, 1)

    def charge(self, now: float, amount: float) -> None:
        index = math.floor(now / self.size)
        if self.buckets and self.buckets[-1][0] == index:
            self.buckets[-1][1] += amount
        else:
            self.buckets.append([index, amount])

    def idle(self, now: float) -> bool:
        return not self.buckets or self.buckets[-1][0] < math.floor(now / self.size) - self._span


class _Slots:
    """Concurrency: call id -> slot expiry. One ttl for all, so the dict's order
    (insertion) is expiry order: the oldest slot is first, the newest last."""

    __slots__ = ("held", "retry", "ttl")

    def __init__(self, ttl: float, retry: float) -> None:
        self.ttl = ttl
        self.retry = retry
        self.held: dict[str, float] = {}

    def used(self, now: float) -> float:
        held = self.held
        while held:
            call_id, expiry = next(iter(held.items()))
            if expiry > now:
                break
            del held[call_id]
        return len(held)

    def wait(self, now: float, used: float, limit: float, need: int) -> float:
        if not self.held:
            return self.retry
        return min(self.retry, next(iter(self.held.values())) - now)

    def take(self, now: float, call_id: str) -> None:
        self.held[call_id] = now + self.ttl

    def release(self, call_id: str) -> None:
        self.held.pop(call_id, None)

    def idle(self, now: float) -> bool:
        return not self.held or next(reversed(self.held.values())) <= now


class MemoryQuota:
    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        slot_ttl: float = SLOT_TTL,
        concurrency_retry_after: float = CONCURRENCY_RETRY,
        buckets: int = BUCKETS,
        exact_max: int = EXACT_MAX,
    ) -> None:
        self._clock = clock
        self._slot_ttl = slot_ttl
        self._retry = concurrency_retry_after
        self._buckets = buckets
        self._exact_max = exact_max
        self._counters: OrderedDict[CounterKey, _Counter] = OrderedDict()
        self._prefix = secrets.token_hex(4)
        self._calls = itertools.count()

    def __len__(self) -> int:
        """How many counters are held (idle ones are dropped as calls arrive)."""
        return len(self._counters)

    async def admit(self, limits: Sequence[Limit]) -> Decision:
        now = self._clock()
        self._drop_idle(now)
        limits = unique(limits)
        call_id = f"{self._prefix}-{next(self._calls)}"
        forms = [form_of(limit, self._exact_max) for limit in limits]
        counters = [self._counter(limit, form) for limit, form in zip(limits, forms, strict=True)]
        used = [counter.used(now) for counter in counters]
        needs = [need_of(form) for form in forms]
        rows = list(zip(limits, counters, used, needs, strict=True))
        if not all(has_room(u, limit.limit, need) for limit, _, u, need in rows):
            states = tuple(self._state(now, *row) for row in rows)
            violated = tuple(s for s in states if s.reset_after > 0)
            return Decision(False, Lease(()), states, violated)
        for _, counter, _, need in rows:
            if need:
                counter.take(now, call_id)
        after = tuple(self._state(now, limit, c, u + need, need) for limit, c, u, need in rows)
        return Decision(True, Lease(limits, call_id), after)

    async def settle(self, lease: Lease, *, tokens: int = 0, cost: float = 0.0) -> None:
        now = self._clock()
        for limit in lease.limits:
            form = form_of(limit, self._exact_max)
            if form is Form.SLOTS:
                slots = self._counters.get(self._key(limit, form))
                if isinstance(slots, _Slots):
                    slots.release(lease.slot_id)
                continue
            amount = charge_of(limit, tokens, cost)
            if amount > 0:
                sums = self._counter(limit, form)
                assert isinstance(sums, _Sums)
                sums.charge(now, amount)

    async def usage(self, limits: Sequence[Limit]) -> tuple[LimitState, ...]:
        now = self._clock()
        states = []
        for limit in unique(limits):
            form = form_of(limit, self._exact_max)
            counter = self._counter(limit, form)
            states.append(self._state(now, limit, counter, counter.used(now), need_of(form)))
        return tuple(states)

    async def reset(self, subject: str) -> None:
        for key in [key for key in self._counters if key[0] == subject]:
            del self._counters[key]

    async def close(self) -> None:
        self._counters.clear()

    def _key(self, limit: Limit, form: Form) -> CounterKey:
        return (limit.subject, limit.kind, limit.name, limit.window, form)

    def _counter(self, limit: Limit, form: Form) -> _Counter:
        key = self._key(limit, form)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._new(limit, form)
        return counter

    def _new(self, limit: Limit, form: Form) -> _Counter:
        if form is Form.SLOTS:
            return _Slots(self._slot_ttl, self._retry)
        if form is Form.LOG:
            return _Log(limit.window)
        return _Sums(limit.window, self._buckets)

    def _drop_idle(self, now: float) -> None:
        """A clock hand: look at a few counters from the front; drop the idle, requeue the rest."""
        counters = self._counters
        for _ in range(min(SWEEP_STEP, len(counters))):
            key, counter = counters.popitem(last=False)
            if not counter.idle(now):
                counters[key] = counter

    @staticmethod
    def _state(now: float, limit: Limit, counter: _Counter, used: float, need: int) -> LimitState:
        room = has_room(used, limit.limit, need)
        return state(limit, used, None if room else counter.wait(now, used, limit.limit, need))
