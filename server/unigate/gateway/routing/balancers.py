"""How a route picks one deployment among the available ones of a priority group.

One balancer per route, chosen by `models.<alias>.balancer` (config.BALANCERS). The
route hands `pick` the candidates, non-empty and in config order: the deployments of
its lowest priority group that are available and not excluded by a retry. Balancers
keep their own small state (a counter, current weights, a hash ring) and read each
deployment's `health`; none of them awaits.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from unigate.gateway.routing.router import Deployment

VIRTUAL_NODES = 160
"""Points on the consistent-hash ring per unit of weight."""
MAX_RING_POINTS = 20_000
"""Big weights are scaled down to this many points in all, to bound memory and start-up."""


class Balancer(Protocol):
    needs_key: bool
    """True when `pick` uses `key` (consistent_hash): callers may skip computing it otherwise."""

    def pick(self, candidates: Sequence[Deployment], key: str) -> Deployment: ...


class RoundRobin:
    needs_key = False

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[Deployment], key: str) -> Deployment:
        index = self._next % len(candidates)
        self._next = index + 1
        return candidates[index]


class SmoothWeighted:
    """nginx's smooth weighted round robin: weights 1/1/4 give c b c a c c, not a b c c c c.

    A deployment that drops out of the candidates (ejected, or excluded by a retry)
    keeps its current weight, so its return does not start a burst.
    """

    needs_key = False

    def __init__(self) -> None:
        self._current: dict[Deployment, int] = {}

    def pick(self, candidates: Sequence[Deployment], key: str) -> Deployment:
        current = self._current
        total = 0
        best: Deployment | None = None
        best_weight = 0
        for deployment in candidates:
            weight = current.get(deployment, 0) + deployment.weight
            current[deployment] = weight
            total += deployment.weight
            if best is None or weight > best_weight:
                best, best_weight = deployment, weight
        assert best is not None
        current[best] = best_weight - total
        return best


class LeastOutstanding:
    """Fewest attempts in flight; ties go round robin, so idle deployments share evenly."""

    needs_key = False

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[Deployment], key: str) -> Deployment:
        count = len(candidates)
        start = self._next % count
        self._next = start + 1
        best = candidates[start]
        fewest = best.health.in_flight
        for step in range(1, count):
            deployment = candidates[(start + step) % count]
            if deployment.health.in_flight < fewest:
                best, fewest = deployment, deployment.health.in_flight
        return best


class ConsistentHash:
    """A hash ring over every deployment of the route, built once.

    A key goes to the first point after its hash whose deployment is a candidate, so
    an ejected deployment's keys spread over the others and come back when it
    returns, and adding a deployment moves only the keys its new points take (~1/N).
    """

    needs_key = True

    def __init__(self, deployments: Sequence[Deployment]) -> None:
        total_weight = sum(d.weight for d in deployments) or 1
        scale = min(1.0, MAX_RING_POINTS / (VIRTUAL_NODES * total_weight))
        points: list[tuple[int, int, Deployment]] = []
        seen: dict[str, int] = {}
        for order, deployment in enumerate(deployments):
            # Two deployments under one name would share every point: tell them apart.
            twin = seen.get(deployment.name, 0)
            seen[deployment.name] = twin + 1
            label = deployment.name if twin == 0 else f"{deployment.name}~{twin}"
            count = max(1, round(VIRTUAL_NODES * deployment.weight * scale))
            points.extend((_hash(f"{label}#{i}"), order, deployment) for i in range(count))
        points.sort(key=lambda point: (point[0], point[1]))
        self._hashes = [point[0] for point in points]
        self._owners = [point[2] for point in points]
        self._size = len(deployments)

    def pick(self, candidates: Sequence[Deployment], key: str) -> Deployment:
        owners = self._owners
        if not owners:
            return candidates[0]
        start = bisect.bisect_right(self._hashes, _hash(key))
        size = len(owners)
        if len(candidates) == self._size:
            return owners[start % size]
        allowed = {id(d) for d in candidates}
        for step in range(size):
            owner = owners[(start + step) % size]
            if id(owner) in allowed:
                return owner
        return candidates[0]  # candidates from outside the ring: not expected


class PowerOfTwoLatency:
    """Two random distinct candidates; the lower EWMA latency * (in flight + 1) wins.

    A deployment without an EWMA yet costs nothing while idle, so it gets tried; with
    attempts in flight it is assumed as fast as the other, so one that never answers
    does not soak up calls before the breaker notices.
    """

    needs_key = False

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[Deployment], key: str) -> Deployment:
        count = len(candidates)
        if count == 1:
            return candidates[0]
        first = self._rng.randrange(count)
        second = self._rng.randrange(count - 1)
        if second >= first:
            second += 1
        a, b = candidates[first], candidates[second]
        a_latency, b_latency = a.health.ewma_latency, b.health.ewma_latency
        a_cost = _cost(a, b_latency)
        b_cost = _cost(b, a_latency)
        return b if b_cost < a_cost else a


class Priority:
    """The first candidate in config order: strict failover within a group too."""

    needs_key = False

    def pick(self, candidates: Sequence[Deployment], key: str) -> Deployment:
        return candidates[0]


def make_balancer(
    kind: str, deployments: Sequence[Deployment], *, rng: random.Random | None = None
) -> Balancer:
    """The balancer named `kind` (one of config.BALANCERS) for a route's deployments."""
    factories: dict[str, Callable[[], Balancer]] = {
        "round_robin": RoundRobin,
        "weighted": SmoothWeighted,
        "least_outstanding": LeastOutstanding,
        "consistent_hash": lambda: ConsistentHash(deployments),
        "latency": lambda: PowerOfTwoLatency(rng),
        "priority": Priority,
    }
    factory = factories.get(kind)
    if factory is None:
        raise ValueError(f"unknown balancer {kind!r} (one of: {', '.join(factories)})")
    return factory()


def _cost(deployment: Deployment, other_latency: float | None) -> float:
    health = deployment.health
    latency = health.ewma_latency
    if latency is None:
        if health.in_flight == 0:
            return 0.0
        latency = 1.0 if other_latency is None else other_latency
    return latency * (health.in_flight + 1)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
