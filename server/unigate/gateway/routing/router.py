"""Model aliases to upstream deployments, and what each alias can do.

The router resolves the alias a caller named and checks that the alias has every
capability the call needs; the route then picks a deployment: from the lowest
priority group with an available one (health.py), by the alias's balancer
(balancers.py). Deployments compare by identity, so one upstream listed under two
aliases stays two deployments with two healths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import grpc

from unigate.gateway.config import BreakerSettings, GatewayConfig, ModelSettings, RetrySettings
from unigate.gateway.errors import FieldViolation, GatewayError, Reason
from unigate.gateway.providers.base import Provider
from unigate.gateway.routing.balancers import Balancer, RoundRobin, make_balancer
from unigate.gateway.routing.health import Health
from unigate.v1 import inference_pb2 as pb

CAPABILITY_NAMES = tuple(f.name for f in pb.Capabilities.DESCRIPTOR.fields)
RPC_CAPABILITIES = frozenset({"chat", "streaming", "completion", "embeddings"})


@dataclass(frozen=True, slots=True, eq=False)
class Deployment:
    name: str
    provider: Provider
    model: str
    weight: int = 1
    priority: int = 0
    health: Health = field(default_factory=lambda: Health(BreakerSettings()), repr=False)


@dataclass(slots=True)
class Route:
    alias: str
    description: str
    deployments: list[Deployment]
    capabilities: pb.Capabilities
    log_bodies: bool = False
    balancer: Balancer = field(default_factory=RoundRobin)
    fallbacks: tuple[str, ...] = ()
    retry: RetrySettings = field(default_factory=RetrySettings)
    hash_key: str = "peer"
    _groups: tuple[tuple[Deployment, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        levels = sorted({d.priority for d in self.deployments})
        self._groups = tuple(
            tuple(d for d in self.deployments if d.priority == level) for level in levels
        )

    def pick(self, key: str = "", exclude: Collection[Deployment] = ()) -> Deployment | None:
        """The lowest priority group that has an available deployment not in `exclude`;
        the balancer picks among those; None when there is none (every one ejected or excluded).

        Call `deployment.health.begin()` before the next await: a half-open deployment
        is available to one probe, and begin() is what claims it.
        """
        for group in self._groups:
            candidates = [d for d in group if d.health.available() and d not in exclude]
            if candidates:
                return self.balancer.pick(candidates, key)
        return None

    def retry_after(self) -> float:
        """The shortest ejected_for() among its deployments: when one may be back (0.0 when
        some deployment is not ejected, e.g. only excluded or probing)."""
        return min(d.health.ejected_for() for d in self.deployments)

    def info(self) -> pb.ModelInfo:
        kinds = sorted({d.provider.kind for d in self.deployments})
        return pb.ModelInfo(
            alias=self.alias,
            description=self.description,
            providers=kinds,
            capabilities=self.capabilities,
        )


class Router:
    def __init__(self, routes: Mapping[str, Route], disabled: Mapping[str, str]) -> None:
        self._routes = dict(routes)
        self._disabled = dict(disabled)
        self._listing = pb.ListModelsResponse(
            models=[self._routes[a].info() for a in sorted(self._routes)]
        )

    def resolve(self, alias: str, needs: Iterable[str] = ()) -> Route:
        """The route for an alias that can do everything in `needs`, or a GatewayError."""
        route = self._routes.get(alias)
        if route is None:
            raise self._unknown(alias)
        missing = [name for name in needs if not getattr(route.capabilities, name)]
        if missing:
            # A whole RPC the alias cannot serve is UNIMPLEMENTED; something in the
            # request it cannot honour (an image, tools, a JSON schema) is the
            # caller's to change: INVALID_ARGUMENT.
            rpc_level = all(name in RPC_CAPABILITIES for name in missing)
            raise GatewayError(
                grpc.StatusCode.UNIMPLEMENTED if rpc_level else grpc.StatusCode.INVALID_ARGUMENT,
                Reason.CAPABILITY_UNSUPPORTED,
                f"model alias {alias!r} does not support {', '.join(missing)};"
                " ListModels shows each alias's capabilities",
                metadata={"alias": alias, "capability": ",".join(missing)},
            )
        return route

    def _unknown(self, alias: str) -> GatewayError:
        if alias in self._disabled:
            return GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.MODEL_DISABLED,
                f"model alias {alias!r} is disabled: {self._disabled[alias]}",
                metadata={"alias": alias},
            )
        return GatewayError(
            grpc.StatusCode.NOT_FOUND,
            Reason.MODEL_NOT_FOUND,
            f"unknown model alias {alias!r}; ListModels shows the aliases you may use",
            metadata={"alias": alias},
            field_violations=[FieldViolation("model", f"no model alias named {alias!r}")],
        )

    def routes(self) -> list[Route]:
        return [self._routes[alias] for alias in sorted(self._routes)]

    @property
    def disabled_aliases(self) -> list[str]:
        return sorted(self._disabled)

    def list_models(self) -> pb.ListModelsResponse:
        return self._listing


def build_router(
    config: GatewayConfig,
    providers: Mapping[str, Provider],
    clock: Callable[[], float] = time.monotonic,
) -> Router:
    """Routes for every alias whose deployments have an enabled provider."""
    routes: dict[str, Route] = {}
    disabled: dict[str, str] = {}
    for alias, settings in config.models.items():
        deployments = [
            Deployment(
                d.name or f"{d.provider}/{d.model}",
                providers[d.provider],
                d.model,
                weight=d.weight,
                priority=d.priority,
                health=Health(settings.circuit_breaker, clock),
            )
            for d in settings.deployments
            if d.provider in providers
        ]
        if not deployments:
            names = sorted({d.provider for d in settings.deployments})
            why = "; ".join(f"provider {n!r}: {config.disabled_providers[n]}" for n in names)
            disabled[alias] = why
            continue
        routes[alias] = Route(
            alias,
            settings.description,
            deployments,
            _capabilities(settings, deployments),
            log_bodies=settings.log_bodies,
            balancer=make_balancer(settings.balancer, deployments),
            fallbacks=tuple(settings.fallbacks),
            retry=settings.retry,
            hash_key=settings.hash_key,
        )
    return Router(routes, disabled)


def _capabilities(settings: ModelSettings, deployments: list[Deployment]) -> pb.Capabilities:
    """What every deployment can do, less what the config switches off."""
    result = pb.Capabilities()
    for name in CAPABILITY_NAMES:
        has = all(getattr(d.provider.capabilities(), name) for d in deployments)
        override = getattr(settings.capabilities, name)
        setattr(result, name, has if override is None else has and override)
    return result
