"""Routes: priority groups, exclusion, ejection, and what build_router fills in."""

from __future__ import annotations

from collections import Counter
from typing import cast

from unigate.gateway.config import BreakerSettings, parse_config
from unigate.gateway.providers.base import Provider
from unigate.gateway.providers.mock import MockProvider, MockSettings
from unigate.gateway.providers.transport import HttpTransport
from unigate.gateway.routing.balancers import ConsistentHash, SmoothWeighted
from unigate.gateway.routing.health import Health, Outcome
from unigate.gateway.routing.router import Deployment, Route, build_router
from unigate.v1 import inference_pb2 as pb

PROVIDER = cast(Provider, object())
BREAKER = BreakerSettings(consecutive_failures=1, ejection=10.0, max_ejection=60.0)


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def deployment(name: str, clock: Clock, priority: int = 0) -> Deployment:
    return Deployment(name, PROVIDER, "m", priority=priority, health=Health(BREAKER, clock))


def route(*deployments: Deployment) -> Route:
    return Route("alias", "", list(deployments), pb.Capabilities())


def eject(deployment: Deployment) -> None:
    deployment.health.begin()
    deployment.health.end(Outcome.FAILURE, None)


def recover(deployment: Deployment) -> None:
    deployment.health.begin()
    deployment.health.end(Outcome.SUCCESS, 0.1)


def names(route: Route, picks: int = 20) -> set[str]:
    found = set()
    for _ in range(picks):
        chosen = route.pick()
        assert chosen is not None
        found.add(chosen.name)
    return found


def test_defaults_round_robin_over_every_deployment() -> None:
    a = Deployment("a", PROVIDER, "m")
    b = Deployment("b", PROVIDER, "m")
    plain = route(a, b)
    assert [plain.pick() for _ in range(4)] == [a, b, a, b]
    assert (plain.fallbacks, plain.hash_key, plain.retry.attempts) == ((), "peer", 3)
    assert a.health is not b.health


def test_deployments_compare_by_identity() -> None:
    a = Deployment("same", PROVIDER, "m")
    b = Deployment("same", PROVIDER, "m")
    assert a != b
    assert len({a, b}) == 2


def test_pick_skips_excluded_and_ejected() -> None:
    clock = Clock()
    a, b, c = (deployment(n, clock) for n in "abc")
    r = route(a, b, c)
    assert names(r) == {"a", "b", "c"}
    eject(b)
    assert names(r) == {"a", "c"}
    assert r.pick(exclude=(a,)) is c
    assert r.pick(exclude={a, c}) is None


def test_pick_is_none_when_all_are_ejected_and_retry_after_says_when() -> None:
    clock = Clock()
    a, b = deployment("a", clock), deployment("b", clock)
    r = route(a, b)
    assert r.retry_after() == 0.0
    eject(a)
    clock.now += 4
    eject(b)
    assert r.pick() is None
    assert r.retry_after() == 6.0  # a is back first
    clock.now += 6
    assert r.pick() is a  # half open: a's probe
    a.health.begin()
    assert r.pick() is None  # one probe at a time
    a.health.end(Outcome.SUCCESS, 0.1)
    assert r.pick() is a


def test_priority_groups_fail_over_and_back() -> None:
    clock = Clock()
    primary = [deployment("p0", clock), deployment("p1", clock)]
    backup = [deployment("b0", clock, priority=1), deployment("b1", clock, priority=1)]
    r = route(backup[0], primary[0], backup[1], primary[1])
    assert names(r) == {"p0", "p1"}
    eject(primary[0])
    assert names(r) == {"p1"}
    assert r.pick(exclude=(primary[1],)) in backup
    eject(primary[1])
    assert names(r) == {"b0", "b1"}
    clock.now += 10
    assert names(r) <= {"p0", "p1"}  # half open: group 0 is available again
    recover(primary[0])
    recover(primary[1])
    assert names(r) == {"p0", "p1"}


def test_consistent_hash_route_moves_keys_of_an_ejected_deployment() -> None:
    clock = Clock()
    ds = [deployment(n, clock) for n in ("a", "b", "c")]
    r = route(*ds)
    r.balancer = ConsistentHash(ds)
    keys = [f"peer-{i}" for i in range(300)]
    before = {k: r.pick(k) for k in keys}
    eject(ds[0])
    during = {k: r.pick(k) for k in keys}
    assert all(during[k] is before[k] for k in keys if before[k] is not ds[0])
    assert all(during[k] is not ds[0] for k in keys)
    clock.now += 10
    recover(ds[0])
    assert {k: r.pick(k) for k in keys} == before


CONFIG = """
providers:
  m: {kind: mock}
  n: {kind: mock}
models:
  chat:
    balancer: weighted
    hash_key: metadata:x-session-id
    fallbacks: [spare]
    retry: {attempts: 2, backoff: 10ms}
    circuit_breaker: {consecutive_failures: 2, ejection: 5s}
    deployments:
      - {provider: m, model: one, weight: 3}
      - {provider: n, model: two, name: second, priority: 1}
  spare:
    deployments: [{provider: m, model: one}]
"""


def test_build_router_fills_routing_settings() -> None:
    config = parse_config(CONFIG)
    providers: dict[str, Provider] = {
        name: MockProvider(name, cast(MockSettings, settings), cast(HttpTransport, None))
        for name, settings in config.providers.items()
    }
    clock = Clock()
    router = build_router(config, providers, clock=clock)
    chat, spare = router.resolve("chat"), router.resolve("spare")
    assert isinstance(chat.balancer, SmoothWeighted)
    assert (chat.fallbacks, chat.hash_key, chat.retry.attempts) == (
        ("spare",),
        "metadata:x-session-id",
        2,
    )
    first, second = chat.deployments
    assert (first.name, first.weight, first.priority) == ("m/one", 3, 0)
    assert (second.name, second.weight, second.priority) == ("second", 1, 1)
    assert spare.deployments[0] is not first  # same upstream, its own health
    for _ in range(2):
        eject(first)
    assert first.health.ejected_for() == 5.0
    assert chat.pick() is second
    assert Counter(spare.pick() for _ in range(3)) == {spare.deployments[0]: 3}
