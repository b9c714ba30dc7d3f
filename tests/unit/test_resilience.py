"""Retries and fallbacks: which failures are retried, the backoff, and where each
attempt of a call goes (Failover), on real routes and healths with a manual clock."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from unigate.gateway.config import BreakerSettings, RetrySettings
from unigate.gateway.errors import GatewayError, Reason, from_http_status
from unigate.gateway.providers.mock import MockProvider, MockSettings
from unigate.gateway.providers.transport import HttpTransport
from unigate.gateway.routing.health import Health, Outcome
from unigate.gateway.routing.resilience import (
    MIN_ATTEMPT_TIME,
    Failover,
    attempt_label,
    backoff,
    outcome_of,
    retryable,
)
from unigate.gateway.routing.router import Deployment, Route, Router
from unigate.v1 import inference_pb2 as pb

PROVIDER = MockProvider("mock", MockSettings(kind="mock"), HttpTransport())
BREAKER = BreakerSettings(consecutive_failures=1, ejection=30.0, max_ejection=60.0)
CHAT = pb.Capabilities(chat=True, streaming=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def http(status: int) -> GatewayError:
    return from_http_status(status, "vendor words", provider="openai", deployment="d")


def error(code: grpc.StatusCode, reason: str) -> GatewayError:
    return GatewayError(code, reason, "words")


UNAVAILABLE = http(503)


@pytest.mark.parametrize(
    ("failure", "retry", "outcome"),
    [
        (http(500), True, Outcome.FAILURE),
        (http(502), True, Outcome.FAILURE),
        (http(503), True, Outcome.FAILURE),
        (http(504), True, Outcome.FAILURE),
        (http(408), True, Outcome.FAILURE),
        (http(429), True, Outcome.FAILURE),  # one deployment's rate limit
        (http(402), True, Outcome.FAILURE),  # one account's billing quota
        (http(401), False, Outcome.FAILURE),  # the gateway's key: no retry mends it
        (http(409), False, Outcome.FAILURE),
        (http(400), False, Outcome.NEUTRAL),
        (http(413), False, Outcome.NEUTRAL),
        (http(422), False, Outcome.NEUTRAL),
        (http(403), False, Outcome.NEUTRAL),
        (http(404), False, Outcome.NEUTRAL),
        (error(grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_UNAVAILABLE), True, Outcome.FAILURE),
        (
            error(grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_PROTOCOL_ERROR),
            True,
            Outcome.FAILURE,
        ),
        # The caller's deadline ran out waiting: a slow deployment, no time to retry.
        (error(grpc.StatusCode.DEADLINE_EXCEEDED, Reason.UPSTREAM_TIMEOUT), False, Outcome.FAILURE),
        (error(grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST), False, Outcome.NEUTRAL),
        (error(grpc.StatusCode.NOT_FOUND, Reason.MODEL_NOT_FOUND), False, Outcome.NEUTRAL),
        # The gateway's own quotas and backends are not a deployment's doing.
        (error(grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.RATE_LIMITED), False, Outcome.NEUTRAL),
        (
            error(grpc.StatusCode.UNAVAILABLE, Reason.QUOTA_BACKEND_UNAVAILABLE),
            False,
            Outcome.NEUTRAL,
        ),
        (
            error(grpc.StatusCode.UNAVAILABLE, Reason.NO_HEALTHY_DEPLOYMENT),
            False,
            Outcome.NEUTRAL,
        ),
    ],
)
def test_classification(failure: GatewayError, retry: bool, outcome: Outcome) -> None:
    assert retryable(failure) is retry
    assert outcome_of(failure) is outcome


def test_cancels_and_bugs_say_nothing_about_the_deployment() -> None:
    assert outcome_of(asyncio.CancelledError()) is Outcome.NEUTRAL
    assert outcome_of(GeneratorExit()) is Outcome.NEUTRAL
    assert outcome_of(KeyError("bug")) is Outcome.NEUTRAL


@pytest.mark.parametrize(
    ("failure", "label"),
    [
        (None, "ok"),
        (http(503), "retryable"),
        (http(429), "retryable"),
        (error(grpc.StatusCode.DEADLINE_EXCEEDED, Reason.UPSTREAM_TIMEOUT), "deadline"),
        (asyncio.CancelledError(), "cancelled"),
        (http(400), "error"),
        (KeyError("bug"), "error"),
    ],
)
def test_attempt_labels(failure: BaseException | None, label: str) -> None:
    assert attempt_label(failure) == label


def test_backoff_doubles_with_full_jitter_up_to_the_cap() -> None:
    retry = RetrySettings(backoff=0.05, max_backoff=1.0)
    rng = random.Random(7)
    ceilings = [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for number, ceiling in enumerate(ceilings, start=1):
        delays = [backoff(retry, number, rng) for _ in range(2000)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter: spread over the whole range, not bunched near the ceiling.
        assert max(delays) > 0.95 * ceiling
        assert min(delays) < 0.05 * ceiling
        assert sum(delays) / len(delays) == pytest.approx(ceiling / 2, rel=0.1)
    assert backoff(retry, 500, rng) <= 1.0  # no overflow however many retries


def test_backoff_is_reproducible_with_a_seeded_random() -> None:
    retry = RetrySettings()
    first = [backoff(retry, n, random.Random(3)) for n in range(1, 5)]
    again = [backoff(retry, n, random.Random(3)) for n in range(1, 5)]
    assert first == again


# --- Failover ------------------------------------------------------------------------


class World:
    """Routes of real deployments and healths, a manual clock, and a call's deadline."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.routes: dict[str, Route] = {}

    def route(
        self,
        alias: str,
        *names: str,
        attempts: int = 3,
        fallbacks: tuple[str, ...] = (),
        capabilities: pb.Capabilities = CHAT,
    ) -> Route:
        deployments = [
            Deployment(name, PROVIDER, "m", health=Health(BREAKER, self.clock)) for name in names
        ]
        route = Route(
            alias,
            "",
            deployments,
            capabilities,
            fallbacks=fallbacks,
            retry=RetrySettings(attempts=attempts, backoff=0.05, max_backoff=1.0),
        )
        self.routes[alias] = route
        return route

    def failover(self, alias: str, budget: float = 10.0) -> Failover:
        router = Router(self.routes, {})
        return Failover(
            router,
            router.resolve(alias, ("chat",)),
            ("chat",),
            lambda route: "",
            self.clock() + budget,
            random.Random(1),
            self.clock,
        )


def fail(deployment: Deployment, failure: GatewayError = UNAVAILABLE) -> GatewayError:
    deployment.health.end(outcome_of(failure), None)
    return failure


def eject(deployment: Deployment) -> None:
    deployment.health.begin()
    fail(deployment)


def answer(deployment: Deployment) -> None:
    deployment.health.end(Outcome.SUCCESS, 0.1)


def names(*deployments: Deployment) -> list[str]:
    return [d.name for d in deployments]


def test_a_retry_goes_to_a_deployment_that_has_not_failed() -> None:
    world = World()
    world.route("gpt", "a", "b", "c")
    failover = world.failover("gpt")
    first = failover.first()
    assert first.health.in_flight == 1  # claimed: begin() before anything awaits
    failover.retry_delay(fail(first))
    second = failover.next()
    failover.retry_delay(fail(second))
    third = failover.next()
    assert sorted(names(first, second, third)) == ["a", "b", "c"]
    answer(third)
    assert failover.attempts == 3
    assert failover.fallbacks == []


def test_when_every_deployment_failed_a_failed_one_is_tried_again() -> None:
    world = World()
    world.route("gpt", "only")
    failover = world.failover("gpt")
    first = failover.first()
    first.health.end(Outcome.NEUTRAL, None)  # a failure that does not eject it
    assert 0 < failover.retry_delay(UNAVAILABLE) <= 0.05
    assert failover.next() is first
    assert failover.attempts == 2


def test_a_rate_limited_deployment_is_not_asked_again_in_the_call() -> None:
    world = World()
    world.route("gpt", "a", "b")
    for limit in (http(429), http(402)):
        failover = world.failover("gpt")
        first = failover.first()
        first.health.end(Outcome.NEUTRAL, None)
        failover.retry_delay(limit)
        second = failover.next()
        assert second is not first
        second.health.end(Outcome.NEUTRAL, None)
        with pytest.raises(GatewayError) as caught:
            failover.retry_delay(limit)  # both accounts said no: nothing left to try
        assert caught.value is limit


def test_errors_of_the_caller_end_the_call_at_once() -> None:
    world = World()
    world.route("gpt", "a", "b", fallbacks=("claude",))
    world.route("claude", "c")
    failover = world.failover("gpt")
    bad = http(400)
    fail(failover.first(), bad)
    with pytest.raises(GatewayError) as caught:
        failover.retry_delay(bad)
    assert caught.value is bad
    assert failover.attempts == 1


def test_attempts_per_alias_then_fallbacks_in_order_each_with_its_own_budget() -> None:
    world = World()
    world.route("gpt", "a", "b", "c", attempts=2, fallbacks=("claude", "gemini"))
    world.route("claude", "d", attempts=1)
    world.route("gemini", "e", "f", attempts=2)
    failover = world.failover("gpt")
    made = [failover.first()]
    delays = []
    for _ in range(4):
        delays.append(failover.retry_delay(fail(made[-1])))
        made.append(failover.next())
    answer(made[-1])
    assert [d.name for d in made[:2]] != ["c", "c"]
    assert names(*made[2:]) in (["d", "e", "f"], ["d", "f", "e"])
    # A backoff between attempts on one alias; none before a fallback's first.
    assert delays[0] > 0 and delays[1] == 0 and delays[2] == 0 and delays[3] > 0
    assert failover.route.alias == "gemini"
    assert failover.fallbacks == ["gpt", "claude"]
    assert failover.attempts == 5


def test_the_last_error_ends_the_call_when_every_alias_is_used_up() -> None:
    world = World()
    world.route("gpt", "a", attempts=1, fallbacks=("claude",))
    world.route("claude", "b", attempts=1)
    failover = world.failover("gpt")
    failover.retry_delay(fail(failover.first()))
    last = http(502)
    fail(failover.next(), last)
    with pytest.raises(GatewayError) as caught:
        failover.retry_delay(last)
    assert caught.value is last
    assert (failover.route.alias, failover.fallbacks) == ("claude", ["gpt"])


def test_fallbacks_that_cannot_serve_the_call_or_repeat_are_skipped() -> None:
    world = World()
    world.route("gpt", "a", attempts=1, fallbacks=("embedder", "gpt-2", "gpt-2", "claude"))
    world.route("embedder", "e", capabilities=pb.Capabilities(embeddings=True))
    world.route("gpt-2", "b", attempts=1)
    world.route("claude", "c", attempts=1)
    failover = world.failover("gpt")
    failover.retry_delay(fail(failover.first()))
    second = failover.next()
    assert second.name == "b"
    failover.retry_delay(fail(second))
    assert failover.next().name == "c"
    assert failover.fallbacks == ["gpt", "gpt-2"]


def test_an_alias_with_every_deployment_ejected_is_down_at_once() -> None:
    world = World()
    gpt = world.route("gpt", "a", "b")
    for deployment in gpt.deployments:
        deployment.health.begin()
        fail(deployment)
    world.clock.now += 5.0
    failover = world.failover("gpt")
    with pytest.raises(GatewayError) as caught:
        failover.first()
    down = caught.value
    assert (down.code, down.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.NO_HEALTHY_DEPLOYMENT)
    assert down.retry_after == pytest.approx(25.0)
    assert "'gpt'" in down.message and down.metadata == {"alias": "gpt"}
    assert failover.attempts == 0
    assert all(d.health.in_flight == 0 for d in gpt.deployments)


def test_a_down_alias_falls_back_without_an_attempt() -> None:
    world = World()
    gpt = world.route("gpt", "a", fallbacks=("claude",))
    world.route("claude", "b")
    gpt.deployments[0].health.begin()
    fail(gpt.deployments[0])
    failover = world.failover("gpt")
    assert failover.first().name == "b"
    assert (failover.route.alias, failover.fallbacks, failover.attempts) == (
        "claude",
        ["gpt"],
        1,
    )


def test_no_retry_without_time_for_an_attempt_after_its_backoff() -> None:
    world = World()
    world.route("gpt", "a", "b", fallbacks=("claude",))
    world.route("claude", "c")
    failover = world.failover("gpt", budget=0.2)
    first = failover.first()
    world.clock.now += 0.2 - MIN_ATTEMPT_TIME + 0.001  # the attempt took most of the budget
    with pytest.raises(GatewayError) as caught:
        failover.retry_delay(fail(first))
    assert caught.value is UNAVAILABLE
    assert failover.attempts == 1


def test_the_deadline_is_checked_again_after_the_backoff() -> None:
    world = World()
    world.route("gpt", "a", "b")
    failover = world.failover("gpt", budget=1.0)
    first = failover.first()
    world.clock.now += 0.5
    assert failover.time_left() == pytest.approx(0.5)
    failover.retry_delay(fail(first))
    world.clock.now += 0.45  # a slow wake-up from the backoff's sleep
    with pytest.raises(GatewayError):
        failover.next()
    assert failover.time_left() == pytest.approx(0.05)


def test_a_fallback_found_down_leaves_the_last_attempts_error() -> None:
    world = World()
    world.route("gpt", "a", attempts=1, fallbacks=("claude",))
    claude = world.route("claude", "b")
    eject(claude.deployments[0])
    failover = world.failover("gpt")
    last = http(502)
    fail(failover.first(), last)
    assert failover.retry_delay(last) == 0.0
    with pytest.raises(GatewayError) as caught:
        failover.next()
    assert caught.value is last
    # The call ends on gpt's error; claude was tried too.
    assert (failover.route.alias, failover.fallbacks) == ("gpt", ["claude"])


def test_every_alias_down_is_the_requested_alias_down() -> None:
    world = World()
    gpt = world.route("gpt", "a", fallbacks=("claude",))
    claude = world.route("claude", "b")
    eject(gpt.deployments[0])
    world.clock.now += 10.0
    eject(claude.deployments[0])
    failover = world.failover("gpt")
    with pytest.raises(GatewayError) as caught:
        failover.first()
    assert caught.value.reason == Reason.NO_HEALTHY_DEPLOYMENT
    assert caught.value.metadata == {"alias": "gpt"}
    assert caught.value.retry_after == pytest.approx(20.0)
    assert (failover.attempts, failover.route.alias, failover.fallbacks) == (0, "gpt", ["claude"])


def test_fallbacks_found_down_are_reported_in_order() -> None:
    world = World()
    world.route("gpt", "a", attempts=1, fallbacks=("claude", "gemini"))
    claude = world.route("claude", "b")
    world.route("gemini", "c")
    eject(claude.deployments[0])
    failover = world.failover("gpt")
    failover.retry_delay(fail(failover.first()))
    assert failover.next().name == "c"
    assert (failover.route.alias, failover.fallbacks) == ("gemini", ["gpt", "claude"])


def test_a_call_with_no_time_left_touches_no_deployment() -> None:
    world = World()
    route = world.route("gpt", "a")
    router = Router(world.routes, {})
    failover = Failover(
        router,
        router.resolve("gpt", ("chat",)),
        ("chat",),
        lambda route: "",
        world.clock() + 0.001,
        random.Random(1),
        world.clock,
        caller_deadline=True,
    )
    with pytest.raises(GatewayError) as caught:
        failover.first()
    assert caught.value.reason == Reason.DEADLINE_TOO_SHORT
    assert route.deployments[0].health.in_flight == 0


def test_a_timeout_at_the_callers_deadline_says_nothing_about_the_deployment() -> None:
    world = World()
    world.route("gpt", "a")
    router = Router(world.routes, {})

    def failover(caller_deadline: bool) -> Failover:
        return Failover(
            router,
            router.resolve("gpt", ("chat",)),
            ("chat",),
            lambda route: "",
            world.clock() + 0.005,  # all but spent
            random.Random(1),
            world.clock,
            caller_deadline=caller_deadline,
        )

    timeout = GatewayError(grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_TIMEOUT, "timed out")
    assert failover(caller_deadline=True).outcome(timeout) is Outcome.NEUTRAL
    # the gateway's own default deadline running out is the deployment being slow
    assert failover(caller_deadline=False).outcome(timeout) is Outcome.FAILURE
