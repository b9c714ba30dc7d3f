"""Retries, backoff and fallbacks around one call, within the caller's one deadline.

    attempt fails ──not retryable──> the call ends with its error (no fallback)
         │ retryable: UNAVAILABLE, a deployment's 429, its account out of quota
         ├─ attempts left on this alias, a deployment to try ──> backoff, then the next
         ├─ else the next fallback alias that can serve the call ──> its first attempt
         └─ else, or no time left for another attempt ──> the call ends with the last error

An alias with no available deployment is down: the call moves on to a fallback at
once, without waiting or calling anything. A call that ends without any attempt
ends with the requested alias's NO_HEALTHY_DEPLOYMENT (RetryInfo: when its first
ejection ends); otherwise with the last attempt's error.

`Failover` only decides; the service makes the attempts, sleeps the backoffs and
tells each deployment's health how its attempt ended. Nothing here awaits, so a pick
and the deployment's `health.begin()` happen with no await in between (health.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import grpc

from unigate.gateway.config import RetrySettings
from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.routing.health import Outcome
from unigate.gateway.routing.router import Deployment, Route, Router

MIN_FIRST_ATTEMPT_TIME = 0.005
"""A call with less than this left on the caller's deadline is not sent upstream."""

DEADLINE_SLACK = 0.01
"""An upstream timeout or connect failure with less than this left on the caller's
deadline was the caller's deadline running out, not the deployment failing."""

MIN_ATTEMPT_TIME = 0.1
"""Seconds an attempt after the first needs left on the deadline to be worth making:
with less, a model's answer (even its first token) is all but sure to come too late."""

DEPLOYMENT_FAULTS = frozenset(
    {
        Reason.UPSTREAM_UNAVAILABLE,
        Reason.UPSTREAM_TIMEOUT,
        Reason.UPSTREAM_ERROR,
        Reason.UPSTREAM_PROTOCOL_ERROR,
        Reason.UPSTREAM_AUTH_FAILED,
        Reason.UPSTREAM_RATE_LIMITED,
        Reason.UPSTREAM_QUOTA_EXHAUSTED,
    }
)
"""Failures on the deployment's side: they count against its health, and are worth
an operator's attention. The caller's mistakes say nothing about the deployment."""

_TIMEOUTS = frozenset({Reason.UPSTREAM_TIMEOUT, Reason.UPSTREAM_UNAVAILABLE})

# Limits of one deployment's vendor account: another deployment may have room, this
# one will not within the call, so a call never retries the deployment that said so.
ACCOUNT_LIMITS = frozenset({Reason.UPSTREAM_RATE_LIMITED, Reason.UPSTREAM_QUOTA_EXHAUSTED})


def retryable(error: GatewayError) -> bool:
    """Worth another attempt: the deployment is unavailable, or its account is limited."""
    if error.reason in ACCOUNT_LIMITS:
        return True
    return error.code == grpc.StatusCode.UNAVAILABLE and error.reason in DEPLOYMENT_FAULTS


def outcome_of(error: BaseException) -> Outcome:
    """What a failed attempt says about its deployment's health."""
    if isinstance(error, GatewayError) and error.reason in DEPLOYMENT_FAULTS:
        return Outcome.FAILURE
    return Outcome.NEUTRAL


def attempt_label(error: BaseException | None) -> str:
    """How an attempt ended, in metrics.ATTEMPT_OUTCOMES."""
    if error is None:
        return "ok"
    if not isinstance(error, Exception):
        return "cancelled"
    if isinstance(error, GatewayError):
        if retryable(error):
            return "retryable"
        if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "deadline"
    return "error"


def backoff(retry: RetrySettings, retries: int, rng: random.Random) -> float:
    """The wait before retry number `retries` (1 for the first): full jitter below
    `backoff` doubled for each retry before it, capped at `max_backoff`."""
    ceiling = min(retry.max_backoff, retry.backoff * 2.0 ** min(retries - 1, 62))
    return rng.uniform(0.0, ceiling)


def no_healthy_deployment(route: Route) -> GatewayError:
    wait = route.retry_after()
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        Reason.NO_HEALTHY_DEPLOYMENT,
        f"model alias {route.alias!r} has no healthy deployment (each is ejected after"
        f" failing); retry in {wait:.1f}s",
        metadata={"alias": route.alias},
        retry_after=wait,
    )


class Failover:
    """Where each attempt of one call goes: deployments of the requested alias, then
    of its fallbacks in order, each alias with its own `retry.attempts`.

    `first()` and `next()` return a deployment already claimed (`health.begin()`
    called); whoever makes the attempt calls `health.end()` however it goes.
    """

    __slots__ = (
        "_alias_attempts",
        "_chain",
        "_clock",
        "_deadline",
        "_failed",
        "_key",
        "_last_error",
        "_limited",
        "_needs",
        "_pending",
        "_rng",
        "_router",
        "attempts",
        "caller_deadline",
        "fallbacks",
        "route",
    )

    def __init__(
        self,
        router: Router,
        route: Route,
        needs: Sequence[str],
        key: Callable[[Route], str],
        deadline: float,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        *,
        caller_deadline: bool = False,
    ) -> None:
        self.route = route
        self.caller_deadline = caller_deadline
        """Whether the deadline is the caller's (not server.default_deadline)."""
        """The alias the current attempt belongs to."""
        self.attempts = 0
        """Attempts made so far, across aliases."""
        self.fallbacks: list[str] = []
        """The other aliases tried, in order: those given up on before `route`, and
        fallbacks found down after it when the call ends on its error."""
        self._router = router
        self._needs = needs
        self._key = key
        self._deadline = deadline
        self._rng = rng
        self._clock = clock
        self._alias_attempts = 0
        self._failed: list[Deployment] = []  # of this alias, in this call
        self._limited: list[Deployment] = []  # of those, the ones whose account said no
        self._chain = route.fallbacks
        self._pending = 0  # the next alias of `_chain` to look at
        self._last_error: GatewayError | None = None

    def time_left(self) -> float:
        """Seconds left on the call's deadline: the timeout of an attempt starting now."""
        return max(self._deadline - self._clock(), 0.0)

    def outcome(self, error: BaseException) -> Outcome:
        """What a failed attempt says about its deployment: as `outcome_of`, except
        that a timeout or connect failure when the caller's own deadline ran out says
        nothing (a caller with short deadlines must not eject deployments for all)."""
        outcome = outcome_of(error)
        if (
            outcome is Outcome.FAILURE
            and self.caller_deadline
            and isinstance(error, GatewayError)
            and error.reason in _TIMEOUTS
            and self.time_left() < DEADLINE_SLACK
        ):
            return Outcome.NEUTRAL
        return outcome

    def first(self) -> Deployment:
        """The first attempt's deployment; raises when every alias is down, or when the
        caller's deadline leaves no time for an attempt."""
        if self.caller_deadline and self.time_left() < MIN_FIRST_ATTEMPT_TIME:
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                Reason.DEADLINE_TOO_SHORT,
                f"the call's deadline leaves under {MIN_FIRST_ATTEMPT_TIME * 1000:.0f} ms"
                " for the upstream; send a longer deadline",
            )
        deployment = self._pick(self.route, (), ())
        if deployment is None:
            self._last_error = no_healthy_deployment(self.route)
            deployment = self._fall_back()
        return self._claim(deployment)

    def retry_delay(self, error: GatewayError) -> float:
        """The wait before `next()`, after an attempt failed with `error`; raises
        `error` when the call must end with it."""
        if not retryable(error):
            raise error
        self._last_error = error
        failed = self._failed[-1]
        if error.reason in ACCOUNT_LIMITS:
            self._limited.append(failed)
        retry = self.route.retry
        if self._alias_attempts < retry.attempts and self._may_retry_here():
            delay = backoff(retry, self._alias_attempts, self._rng)
        elif self._pending < len(self._chain):
            delay = 0.0
        else:
            raise error
        if self._deadline - self._clock() < delay + MIN_ATTEMPT_TIME:
            raise error
        return delay

    def next(self) -> Deployment:
        """The next attempt's deployment, after `retry_delay` and its wait; raises the
        last error when nothing is left to try, or no time."""
        if self._deadline - self._clock() < MIN_ATTEMPT_TIME:
            assert self._last_error is not None
            raise self._last_error
        deployment = None
        if self._alias_attempts < self.route.retry.attempts:
            deployment = self._pick(self.route, self._failed, self._limited)
        if deployment is None:
            deployment = self._fall_back()
        return self._claim(deployment)

    def _claim(self, deployment: Deployment) -> Deployment:
        deployment.health.begin()
        self.attempts += 1
        self._alias_attempts += 1
        self._failed.append(deployment)  # until it answers, which ends the call
        return deployment

    def _pick(
        self, route: Route, exclude: Sequence[Deployment], then_exclude: Sequence[Deployment]
    ) -> Deployment | None:
        """A deployment not in `exclude`; when every available one is, one not in
        `then_exclude` (a failed deployment may be retried, unless its account refused)."""
        key = self._key(route) if route.balancer.needs_key else ""
        deployment = route.pick(key, exclude)
        if deployment is None and len(then_exclude) < len(exclude):
            deployment = route.pick(key, then_exclude)
        return deployment

    def _may_retry_here(self) -> bool:
        limited = self._limited
        return any(d.health.available() and d not in limited for d in self.route.deployments)

    def _fall_back(self) -> Deployment:
        """The first deployment of the next fallback alias that can serve the call and
        is up; raises the last error when there is none (a failed attempt's, or the
        requested alias being down: a fallback found down too adds nothing to say).
        Fallbacks found down join `fallbacks` all the same: they were tried."""
        chain, down = self._chain, []
        while self._pending < len(chain):
            alias = chain[self._pending]
            self._pending += 1
            if alias == self.route.alias or alias in self.fallbacks or alias in down:
                continue  # tried already
            try:
                route = self._router.resolve(alias, self._needs)
            except GatewayError:
                continue  # it cannot serve this call (a capability, or disabled)
            deployment = self._pick(route, (), ())
            if deployment is None:
                down.append(alias)
                continue
            self.fallbacks.append(self.route.alias)
            self.fallbacks.extend(down)
            self.route = route
            self._alias_attempts = 0
            self._failed, self._limited = [], []
            return deployment
        self.fallbacks.extend(down)
        assert self._last_error is not None
        raise self._last_error
