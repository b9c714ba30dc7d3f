"""Quotas that every gateway process shares, counted in Redis by atomic scripts.

One EVALSHA per admit (all of a call's limits at once, all or nothing) and at
most one per settle; the scripts in `scripts` are the only writers and use the
server's clock. Every Redis call is bounded by `timeout`; any failure or timeout
becomes QuotaUnavailable, so a caller never waits on a dead Redis for longer.

Keys: `<prefix>:<subject>|<kind>|<name>|<form>|<window us>|<buckets>`, the
subject escaped so that `reset` can find exactly its keys with SCAN. Every key of
one call is passed to one script, so on Redis Cluster give the prefix a hash tag
(e.g. `{unigate}`) to keep all quota keys on one shard.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from unigate.gateway.quota import scripts
from unigate.gateway.quota.base import Decision, Kind, Lease, Limit, LimitState, QuotaUnavailable
from unigate.gateway.quota.windows import (
    BUCKETS,
    CONCURRENCY_RETRY,
    EXACT_MAX,
    SLOT_TTL,
    Form,
    charge_of,
    form_of,
    state,
    unique,
)

MICROS = 1_000_000
SCAN_BATCH = 500
KNOWN_MAX = 10_000  # limits whose key and spec are kept ready


def _escape(subject: str) -> str:
    return subject.replace("%", "%25").replace("|", "%7C")


def _glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _micros(seconds: float) -> int:
    return round(seconds * MICROS)


@dataclass(frozen=True, slots=True)
class _Counter:
    key: str
    form: Form
    spec: str  # "<form> <limit> <window us>", as the check script reads it


class AdmitUnavailable(QuotaUnavailable):
    """An admit that failed, perhaps after Redis ran it: settling `lease` frees its slots."""

    def __init__(self, message: str, lease: Lease) -> None:
        super().__init__(message)
        self.lease = lease


class RedisQuota:
    def __init__(
        self,
        client: Redis | str,
        *,
        prefix: str = "unigate:quota",
        timeout: float = 0.1,
        slot_ttl: float = SLOT_TTL,
        concurrency_retry_after: float = CONCURRENCY_RETRY,
        buckets: int = BUCKETS,
        exact_max: int = EXACT_MAX,
    ) -> None:
        if isinstance(client, str):
            # No retries inside redis-py: one attempt, bounded by `timeout`.
            client = Redis.from_url(
                client,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._owns_client = True
        else:
            self._owns_client = False
        self._client = client
        self.prefix = prefix
        self._timeout = timeout
        self._slot_ttl = _micros(slot_ttl)
        self._retry = _micros(concurrency_retry_after)
        self._buckets = buckets
        self._exact_max = exact_max
        self._check = client.register_script(scripts.CHECK)
        self._settle = client.register_script(scripts.SETTLE)
        self._forget = client.register_script(scripts.FORGET)
        self._header = [str(self._slot_ttl), str(self._retry), str(buckets)]
        self._known: dict[Limit, _Counter] = {}
        self._process = secrets.token_hex(6)
        self._calls = itertools.count()

    async def admit(self, limits: Sequence[Limit]) -> Decision:
        limits = unique(limits)
        call_id = f"{self._process}-{next(self._calls)}"
        if not limits:
            return Decision(True, Lease((), call_id))
        try:
            allowed, states = await self._run_check(limits, call_id, count=True)
        except QuotaUnavailable as exc:
            slots = tuple(limit for limit in limits if limit.kind is Kind.CONCURRENCY)
            if not slots:
                raise
            # A timed-out script may still run when Redis wakes, taking slots no one settles.
            raise AdmitUnavailable(str(exc), Lease(slots, call_id)) from exc.__cause__
        if not allowed:
            violated = tuple(s for s in states if s.reset_after > 0)
            return Decision(False, Lease(()), states, violated)
        return Decision(True, Lease(limits, call_id), states)

    async def settle(self, lease: Lease, *, tokens: int = 0, cost: float = 0.0) -> None:
        keys: list[str] = []
        specs: list[str] = []
        for limit in lease.limits:
            counter = self._counter(limit)
            if counter.form is Form.SLOTS:
                keys.append(counter.key)
                specs.append("slots 0 0")
                continue
            amount = charge_of(limit, tokens, cost)
            if amount > 0:
                keys.append(counter.key)
                specs.append(f"{counter.form} {float(amount)!r} {_micros(limit.window)}")
        if keys:
            args = [lease.slot_id, str(self._buckets), "\n".join(specs)]
            await self._call("settle", self._settle, keys, args)

    async def usage(self, limits: Sequence[Limit]) -> tuple[LimitState, ...]:
        limits = unique(limits)
        if not limits:
            return ()
        _, states = await self._run_check(limits, "", count=False)
        return states

    async def reset(self, subject: str) -> None:
        pattern = f"{_glob(self.prefix)}:{_glob(_escape(subject))}|*"
        cursor: int = 0
        while True:
            scan = self._client.scan
            cursor, keys = await self._call("reset", scan, cursor, match=pattern, count=SCAN_BATCH)
            if keys:
                await self._call("reset", self._forget, keys)
            if cursor == 0:
                return

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _run_check(
        self, limits: tuple[Limit, ...], call_id: str, *, count: bool
    ) -> tuple[bool, tuple[LimitState, ...]]:
        counters = [self._counter(limit) for limit in limits]
        keys = [counter.key for counter in counters]
        specs = "\n".join(counter.spec for counter in counters)
        args = [call_id, *self._header, "1" if count else "0", specs]
        what = "admit" if count else "usage"
        reply = (await self._call(what, self._check, keys, args)).split()
        states = []
        for i, limit in enumerate(limits):
            used, until_room = float(reply[2 * i + 1]), float(reply[2 * i + 2])
            states.append(state(limit, used, None if until_room < 0 else until_room / MICROS))
        return int(reply[0]) == 1, tuple(states)

    def _counter(self, limit: Limit) -> _Counter:
        counter = self._known.get(limit)
        if counter is None:
            if len(self._known) >= KNOWN_MAX:
                self._known.clear()
            form = form_of(limit, self._exact_max)
            window = _micros(limit.window)
            key = f"{self.prefix}:{_escape(limit.subject)}|{limit.kind}|{limit.name}|{form}"
            if form is not Form.SLOTS:
                key = f"{key}|{window}|{self._buckets}"
            spec = f"{form} {float(limit.limit)!r} {window}"
            counter = self._known[limit] = _Counter(key, form, spec)
        return counter

    async def _call(
        self, what: str, command: Callable[..., Awaitable[Any]], *args: Any, **kw: Any
    ) -> Any:
        """The one place Redis failures and slowness become QuotaUnavailable."""
        try:
            async with asyncio.timeout(self._timeout):
                return await command(*args, **kw)
        except (RedisError, OSError, TimeoutError) as exc:
            raise QuotaUnavailable(f"quota {what} failed on Redis: {exc!r}") from exc
