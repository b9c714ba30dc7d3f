"""Each balancer's choices, checked statistically over many picks."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import cast

import pytest

from unigate.gateway.config import BALANCERS
from unigate.gateway.providers.base import Provider
from unigate.gateway.routing.balancers import Balancer, make_balancer
from unigate.gateway.routing.health import Outcome
from unigate.gateway.routing.router import Deployment

PROVIDER = cast(Provider, object())


def deployments(*weights: int, prefix: str = "d") -> list[Deployment]:
    return [Deployment(f"{prefix}{i}", PROVIDER, "m", weight=w) for i, w in enumerate(weights)]


def shares(balancer: Balancer, candidates: Sequence[Deployment], picks: int) -> list[float]:
    counts = Counter(balancer.pick(candidates, "") for _ in range(picks))
    return [counts[d] / picks for d in candidates]


def longest_run(sequence: Sequence[Deployment]) -> dict[str, int]:
    longest: dict[str, int] = {}
    run = 0
    for index, deployment in enumerate(sequence):
        run = run + 1 if index and sequence[index - 1] is deployment else 1
        longest[deployment.name] = max(longest.get(deployment.name, 0), run)
    return longest


def test_every_configured_balancer_exists() -> None:
    ds = deployments(1, 1)
    for kind in BALANCERS:
        balancer = make_balancer(kind, ds)
        assert balancer.pick(ds, "k") in ds
        assert balancer.needs_key == (kind == "consistent_hash")
    with pytest.raises(ValueError, match="unknown balancer"):
        make_balancer("random", ds)


def test_round_robin_takes_turns() -> None:
    ds = deployments(1, 1, 1)
    balancer = make_balancer("round_robin", ds)
    assert [balancer.pick(ds, "").name for _ in range(6)] == ["d0", "d1", "d2"] * 2
    assert shares(balancer, ds[:2], 1000) == [0.5, 0.5]


def test_weighted_shares_follow_weights() -> None:
    ds = deployments(1, 2, 3)
    observed = shares(make_balancer("weighted", ds), ds, 6000)
    for share, expected in zip(observed, (1 / 6, 2 / 6, 3 / 6), strict=True):
        assert share == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("weights", [(1, 1, 4), (5, 1, 1), (2, 3, 5), (1, 10)])
def test_weighted_is_smooth(weights: tuple[int, ...]) -> None:
    ds = deployments(*weights)
    balancer = make_balancer("weighted", ds)
    sequence = [balancer.pick(ds, "") for _ in range(sum(weights) * 20)]
    for deployment in ds:
        assert longest_run(sequence)[deployment.name] <= deployment.weight
    # One full cycle gives every deployment exactly its weight.
    cycle = Counter(sequence[: sum(weights)])
    assert [cycle[d] for d in ds] == list(weights)


def test_weighted_redistributes_when_one_drops_out() -> None:
    ds = deployments(1, 2, 3)
    balancer = make_balancer("weighted", ds)
    shares(balancer, ds, 7)  # leave the current weights mid-cycle
    observed = shares(balancer, [ds[0], ds[2]], 4000)
    assert observed == pytest.approx([1 / 4, 3 / 4], abs=0.01)
    observed = shares(balancer, ds, 6000)
    assert observed == pytest.approx([1 / 6, 2 / 6, 3 / 6], abs=0.01)


def test_least_outstanding_prefers_the_idle_one() -> None:
    ds = deployments(1, 1, 1)
    for deployment, busy in zip(ds, (3, 0, 5), strict=True):
        deployment.health.in_flight = busy
    balancer = make_balancer("least_outstanding", ds)
    assert {balancer.pick(ds, "").name for _ in range(50)} == {"d1"}


def test_least_outstanding_shares_evenly_when_equal() -> None:
    ds = deployments(1, 1, 1)
    for deployment in ds:
        deployment.health.in_flight = 2
    observed = shares(make_balancer("least_outstanding", ds), ds, 3000)
    assert observed == pytest.approx([1 / 3] * 3, abs=0.01)


def test_least_outstanding_spreads_concurrent_calls() -> None:
    ds = deployments(1, 1, 1)
    balancer = make_balancer("least_outstanding", ds)
    for _ in range(9):
        balancer.pick(ds, "").health.begin()
    assert [d.health.in_flight for d in ds] == [3, 3, 3]


def keys(count: int) -> list[str]:
    return [f"10.0.{i // 256}.{i % 256}:{40000 + i}" for i in range(count)]


def placement(balancer: Balancer, candidates: Sequence[Deployment]) -> dict[str, str]:
    return {key: balancer.pick(candidates, key).name for key in keys(10_000)}


def test_consistent_hash_is_sticky_and_even() -> None:
    ds = deployments(1, 1, 1)
    balancer = make_balancer("consistent_hash", ds)
    first = placement(balancer, ds)
    assert placement(balancer, ds) == first
    assert placement(make_balancer("consistent_hash", deployments(1, 1, 1)), ds) == first
    counts = Counter(first.values())
    for deployment in ds:
        assert counts[deployment.name] / 10_000 == pytest.approx(1 / 3, rel=0.15)


def test_consistent_hash_respects_weights() -> None:
    ds = deployments(1, 3)
    counts = Counter(placement(make_balancer("consistent_hash", ds), ds).values())
    assert counts["d1"] / 10_000 == pytest.approx(3 / 4, rel=0.1)


def test_adding_a_deployment_moves_about_a_quarter_of_keys_all_to_it() -> None:
    three = deployments(1, 1, 1)
    four = [*three, Deployment("d3", PROVIDER, "m")]
    before = placement(make_balancer("consistent_hash", three), three)
    after = placement(make_balancer("consistent_hash", four), four)
    moved = [key for key in before if before[key] != after[key]]
    assert len(moved) / 10_000 <= 0.25 * 1.3
    assert len(moved) / 10_000 >= 0.25 * 0.7
    assert {after[key] for key in moved} == {"d3"}


def test_ejecting_one_moves_only_its_keys_and_they_come_back() -> None:
    ds = deployments(1, 1, 1)
    balancer = make_balancer("consistent_hash", ds)
    before = placement(balancer, ds)
    during = placement(balancer, [ds[0], ds[2]])
    for key, name in before.items():
        if name == "d1":
            assert during[key] in {"d0", "d2"}
        else:
            assert during[key] == name
    moved = Counter(during[key] for key in before if before[key] == "d1")
    assert min(moved.values()) / sum(moved.values()) > 0.35  # spread, not piled on one
    assert placement(balancer, ds) == before


def test_latency_prefers_the_fast_deployment() -> None:
    fast, slow = deployments(1, 1)
    for deployment, latency in ((fast, 0.010), (slow, 0.100)):
        attempt(deployment, latency)
    balancer = make_balancer("latency", [fast, slow], rng=random.Random(7))
    assert shares(balancer, [fast, slow], 1000) == [1.0, 0.0]
    ds = [fast, slow, *deployments(1, prefix="slow")]
    attempt(ds[2], 0.100)
    observed = shares(make_balancer("latency", ds, rng=random.Random(7)), ds, 3000)
    assert observed[0] > 0.6  # it is one of the two drawn 2/3 of the time, and wins


def test_latency_weighs_in_flight_calls() -> None:
    fast, slow = deployments(1, 1)
    attempt(fast, 0.010)
    attempt(slow, 0.030)
    fast.health.in_flight = 5  # 0.010 * 6 > 0.030 * 1
    balancer = make_balancer("latency", [fast, slow], rng=random.Random(7))
    assert balancer.pick([fast, slow], "") is slow


def test_latency_tries_a_never_called_deployment() -> None:
    known, new = deployments(1, 1)
    attempt(known, 0.010)
    balancer = make_balancer("latency", [known, new], rng=random.Random(7))
    assert balancer.pick([known, new], "") is new
    new.health.begin()
    new.health.begin()  # two in flight, none answered: assumed as fast as the other
    assert balancer.pick([known, new], "") is known


def test_latency_with_one_candidate() -> None:
    (only,) = deployments(1)
    assert make_balancer("latency", [only]).pick([only], "") is only


def test_priority_takes_the_first_candidate() -> None:
    ds = deployments(1, 1, 1)
    balancer = make_balancer("priority", ds)
    assert {balancer.pick(ds, "").name for _ in range(10)} == {"d0"}
    assert balancer.pick(ds[1:], "").name == "d1"


def attempt(deployment: Deployment, latency: float) -> None:
    deployment.health.begin()
    deployment.health.end(Outcome.SUCCESS, latency)
