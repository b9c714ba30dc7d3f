"""The per-deployment circuit breaker, on a clock the tests move by hand."""

from __future__ import annotations

import pytest

from unigate.gateway.config import BreakerSettings
from unigate.gateway.routing.health import Health, Outcome


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(**overrides: object) -> BreakerSettings:
    settings = {
        "consecutive_failures": 3,
        "error_rate": 0.5,
        "min_calls": 10,
        "window": 30.0,
        "ejection": 10.0,
        "max_ejection": 35.0,
    }
    return BreakerSettings.model_validate(settings | overrides)


def attempt(health: Health, outcome: Outcome, latency: float | None = 0.1) -> None:
    health.begin()
    health.end(outcome, latency)


def fail(health: Health, times: int = 1) -> None:
    for _ in range(times):
        attempt(health, Outcome.FAILURE)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_new_deployment_is_healthy_and_idle(clock: Clock) -> None:
    health = Health(breaker(), clock)
    assert (health.state(), health.available(), health.ejected_for()) == ("healthy", True, 0.0)
    assert (health.in_flight, health.consecutive_failures, health.ewma_latency) == (0, 0, None)
    assert health.error_rate() == 0.0


def test_begin_and_end_track_in_flight(clock: Clock) -> None:
    health = Health(breaker(), clock)
    health.begin()
    health.begin()
    assert health.in_flight == 2
    health.end(Outcome.SUCCESS, 0.1)
    health.end(Outcome.NEUTRAL, None)
    assert health.in_flight == 0


def test_consecutive_failures_eject(clock: Clock) -> None:
    health = Health(breaker(), clock)
    fail(health, 2)
    attempt(health, Outcome.SUCCESS)
    fail(health, 2)
    assert health.state() == "healthy"
    fail(health)
    assert health.state() == "ejected"
    assert not health.available()
    assert health.ejected_for() == pytest.approx(10.0)
    clock.now += 4
    assert health.ejected_for() == pytest.approx(6.0)


def test_error_rate_ejects_only_after_min_calls(clock: Clock) -> None:
    health = Health(breaker(consecutive_failures=100), clock)
    for _ in range(4):
        attempt(health, Outcome.FAILURE)
        attempt(health, Outcome.SUCCESS)
    assert health.error_rate() == 0.5
    assert health.state() == "healthy"  # 8 attempts: fewer than min_calls
    attempt(health, Outcome.SUCCESS)
    attempt(health, Outcome.FAILURE)  # the 10th: 5 of 10 failed
    assert health.state() == "ejected"


def test_error_rate_below_the_threshold_does_not_eject(clock: Clock) -> None:
    health = Health(breaker(consecutive_failures=100), clock)
    for _ in range(20):
        attempt(health, Outcome.SUCCESS)
        attempt(health, Outcome.SUCCESS)
        attempt(health, Outcome.FAILURE)
    assert health.error_rate() == pytest.approx(1 / 3)
    assert health.state() == "healthy"


def test_the_window_forgets_old_attempts(clock: Clock) -> None:
    health = Health(breaker(consecutive_failures=100), clock)
    for _ in range(9):
        attempt(health, Outcome.FAILURE)
    clock.now += 31
    assert health.error_rate() == 0.0
    attempt(health, Outcome.FAILURE)  # 1 of 1 in the window, below min_calls
    assert health.state() == "healthy"
    for _ in range(8):
        attempt(health, Outcome.SUCCESS)
        clock.now += 1
    assert health.error_rate() == pytest.approx(1 / 9)


def test_neutral_outcomes_do_not_count(clock: Clock) -> None:
    health = Health(breaker(), clock)
    fail(health, 2)
    for _ in range(20):
        attempt(health, Outcome.NEUTRAL, None)
    assert health.consecutive_failures == 2
    assert health.error_rate() == 1.0
    fail(health)
    assert health.state() == "ejected"


def test_ejection_ends_in_half_open_with_one_probe(clock: Clock) -> None:
    health = Health(breaker(), clock)
    fail(health, 3)
    clock.now += 10
    assert (health.state(), health.ejected_for(), health.available()) == ("half_open", 0.0, True)
    health.begin()  # the probe
    assert not health.available()
    health.end(Outcome.SUCCESS, 0.2)
    assert (health.state(), health.available(), health.consecutive_failures) == (
        "healthy",
        True,
        0,
    )
    assert health.error_rate() == 0.0  # counts start over
    fail(health, 2)
    assert health.state() == "healthy"
    fail(health)
    assert health.ejected_for() == pytest.approx(10.0)  # the streak started over too


def test_a_failed_probe_ejects_for_longer_up_to_the_cap(clock: Clock) -> None:
    health = Health(breaker(), clock)
    fail(health, 3)
    periods = []
    for _ in range(4):
        periods.append(health.ejected_for())
        clock.now += health.ejected_for()
        assert health.available()
        fail(health)  # the probe
    assert periods == [10.0, 20.0, 35.0, 35.0]
    assert health.state() == "ejected"


def test_a_neutral_probe_lets_the_next_call_probe(clock: Clock) -> None:
    health = Health(breaker(), clock)
    fail(health, 3)
    clock.now += 10
    health.begin()
    assert not health.available()
    health.end(Outcome.NEUTRAL, None)
    assert health.available()
    assert health.state() == "half_open"


def test_attempts_begun_before_the_ejection_do_not_extend_or_end_it(clock: Clock) -> None:
    health = Health(breaker(), clock)
    for _ in range(3):
        health.begin()
    fail(health, 3)
    health.end(Outcome.FAILURE, None)
    health.end(Outcome.SUCCESS, 0.1)
    assert health.state() == "ejected"
    assert health.ejected_for() == pytest.approx(10.0)
    assert health.in_flight == 1


def test_a_lost_probe_is_given_up_after_max_ejection(clock: Clock) -> None:
    health = Health(breaker(), clock)
    fail(health, 3)
    clock.now += 10
    health.begin()  # its end() never comes
    clock.now += 34
    assert not health.available()
    clock.now += 1
    assert health.available()


def test_disabled_breaker_never_ejects_but_still_measures(clock: Clock) -> None:
    health = Health(breaker(enabled=False), clock)
    fail(health, 50)
    assert (health.state(), health.available(), health.error_rate()) == ("healthy", True, 1.0)
    assert health.consecutive_failures == 50
    attempt(health, Outcome.SUCCESS, 0.5)
    assert health.ewma_latency == 0.5


def test_ewma_follows_successes_only(clock: Clock) -> None:
    health = Health(breaker(), clock)
    attempt(health, Outcome.SUCCESS, 1.0)
    assert health.ewma_latency == 1.0
    attempt(health, Outcome.FAILURE, 0.001)
    attempt(health, Outcome.SUCCESS, None)
    assert health.ewma_latency == 1.0
    attempt(health, Outcome.SUCCESS, 2.0)
    assert health.ewma_latency == pytest.approx(1.3)
    for _ in range(30):
        attempt(health, Outcome.SUCCESS, 0.1)
    assert health.ewma_latency == pytest.approx(0.1, abs=1e-4)


def test_the_error_rate_only_reads_and_forgets_what_left_the_window(clock: Clock) -> None:
    health = Health(breaker(consecutive_failures=100), clock)
    fail(health)
    attempt(health, Outcome.SUCCESS)
    clock.now += 10
    fail(health, 2)
    assert health.error_rate() == 0.75
    totals = (health._total_attempts, health._total_failures, health._head)
    clock.now += 25  # the first two attempts (35 s ago) have left the 30 s window
    assert health.error_rate() == 1.0
    assert (health._total_attempts, health._total_failures, health._head) == totals
    clock.now += 30
    assert health.error_rate() == 0.0
