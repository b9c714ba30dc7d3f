"""What one process has seen of one deployment, and the circuit breaker on top.

    healthy --(consecutive failures, or error rate over the window)--> ejected
    ejected --(ejection period over)--> half_open
    half_open --(the one probe succeeds)--> healthy
    half_open --(the probe fails)--> ejected, for twice as long (up to max_ejection)

Every attempt is bracketed: `begin()` when it starts, `end(outcome, latency)` when it
ends, on every path (a cancel is NEUTRAL). Nothing here awaits or locks: the gateway
calls it from one event loop, and a pick followed by `begin()` happens without an
await in between, so a half-open deployment's probe is claimed by exactly one call.

The error rate is counted over `window` in a ring of buckets (one second each for
the default 30 s window) with running totals, so begin/end cost a few µs. The latency
EWMA follows successful attempts only, alpha 0.3 per sample: a failure that comes back
fast must not make a deployment look attractive.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable

from unigate.gateway.config import BreakerSettings

EWMA_ALPHA = 0.3
_BUCKETS = 30
_MIN_BUCKET_WIDTH = 0.001
_MAX_DOUBLINGS = 32


class Outcome(enum.Enum):
    """How an attempt ended, as far as the deployment's health goes."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"
    """The caller's mistake or a cancel: says nothing about the deployment."""


class Health:
    """One per (alias, deployment), per process."""

    __slots__ = (
        "_attempts",
        "_clock",
        "_ejected_until",
        "_failures",
        "_head",
        "_probe_started",
        "_probing",
        "_settings",
        "_streak",
        "_total_attempts",
        "_total_failures",
        "_width",
        "consecutive_failures",
        "ewma_latency",
        "in_flight",
    )

    def __init__(
        self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self.in_flight = 0
        self.consecutive_failures = 0
        self.ewma_latency: float | None = None
        """Seconds, of successful attempts; None until the first one."""
        self._streak = 0  # ejections in a row; 0 means healthy
        self._ejected_until = 0.0
        self._probing = False
        self._probe_started = 0.0
        self._width = max(settings.window / _BUCKETS, _MIN_BUCKET_WIDTH)
        self._attempts = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._head = 0  # the newest bucket number seen
        self._total_attempts = 0
        self._total_failures = 0

    def state(self) -> str:
        """`healthy`, `ejected` or `half_open`."""
        if self._streak == 0:
            return "healthy"
        return "ejected" if self._clock() < self._ejected_until else "half_open"

    def ejected_for(self) -> float:
        """Seconds left of the current ejection; 0.0 when not ejected."""
        if self._streak == 0:
            return 0.0
        return max(0.0, self._ejected_until - self._clock())

    def available(self) -> bool:
        """Healthy, or half-open with no probe in flight (the caller's attempt is the probe)."""
        if self._streak == 0:
            return True
        now = self._clock()
        if now < self._ejected_until:
            return False
        return not self._probing or self._probe_lost(now)

    def error_rate(self) -> float:
        """Failures over attempts in the sliding window; 0.0 without attempts.

        Reads only, never advances the window: metrics call it from their scrape
        thread while the event loop records attempts."""
        head = self._head
        first = max(head, math.floor(self._clock() / self._width)) - _BUCKETS + 1
        attempts = failures = 0
        for bucket in range(first, head + 1):
            slot = bucket % _BUCKETS
            attempts += self._attempts[slot]
            failures += self._failures[slot]
        return failures / attempts if attempts else 0.0

    def begin(self) -> None:
        """An attempt starts; in half-open state the first one is the probe."""
        self.in_flight += 1
        if self._streak:
            now = self._clock()
            if now >= self._ejected_until and (not self._probing or self._probe_lost(now)):
                self._probing = True
                self._probe_started = now

    def end(self, outcome: Outcome, latency: float | None) -> None:
        """An attempt ended; `latency` in seconds (counted for SUCCESS only)."""
        if self.in_flight > 0:
            self.in_flight -= 1
        if outcome is Outcome.NEUTRAL:
            # The probe said nothing: let the next call probe instead. (Attempts carry
            # no token, so an older attempt ending NEUTRAL also frees the probe slot.)
            self._probing = False
            return
        now = self._clock()
        failed = outcome is Outcome.FAILURE
        self._record(now, failed)
        if not failed:
            self.consecutive_failures = 0
            if latency is not None:
                ewma = self.ewma_latency
                self.ewma_latency = (
                    latency if ewma is None else ewma + EWMA_ALPHA * (latency - ewma)
                )
            if self._streak and now >= self._ejected_until:
                self._recover()
            return
        self.consecutive_failures += 1
        if not self._settings.enabled:
            return
        if self._streak:
            # Failures of attempts begun before the ejection do not extend it; a failure
            # once it is over (the probe's, most likely) ejects again, for longer.
            if now >= self._ejected_until:
                self._eject(now)
        elif self._tripped():
            self._eject(now)

    def _tripped(self) -> bool:
        settings = self._settings
        if self.consecutive_failures >= settings.consecutive_failures:
            return True
        return (
            self._total_attempts >= settings.min_calls
            and self._total_failures >= settings.error_rate * self._total_attempts
        )

    def _eject(self, now: float) -> None:
        self._streak += 1
        settings = self._settings
        doublings = min(self._streak - 1, _MAX_DOUBLINGS)
        self._ejected_until = now + min(settings.ejection * 2**doublings, settings.max_ejection)
        self._probing = False

    def _recover(self) -> None:
        self._streak = 0
        self._ejected_until = 0.0
        self._probing = False
        self.consecutive_failures = 0
        self._attempts = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._total_attempts = self._total_failures = 0

    def _probe_lost(self, now: float) -> bool:
        # A probe whose end() never came (a bug upstream of us) must not keep the
        # deployment out for good.
        return now - self._probe_started >= self._settings.max_ejection

    def _record(self, now: float, failed: bool) -> None:
        slot = self._advance(now)
        self._attempts[slot] += 1
        self._total_attempts += 1
        if failed:
            self._failures[slot] += 1
            self._total_failures += 1

    def _advance(self, now: float) -> int:
        """Retire the buckets that left the window; the slot of the current bucket."""
        number = math.floor(now / self._width)
        head = self._head
        if number > head:
            stale = head + 1 if number - head < _BUCKETS else number - _BUCKETS + 1
            for old in range(stale, number + 1):
                slot = old % _BUCKETS
                self._total_attempts -= self._attempts[slot]
                self._total_failures -= self._failures[slot]
                self._attempts[slot] = self._failures[slot] = 0
            self._head = number
        return self._head % _BUCKETS
