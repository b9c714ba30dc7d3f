"""Model aliases to upstream deployments, and what each alias can do.

The router resolves the alias a caller named, checks that the alias has every
capability the call needs, and picks a deployment. Balancing across several
deployments is round robin here; richer strategies plug in at `Route.pick`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc

from unigate.gateway.config import GatewayConfig, ModelSettings
from unigate.gateway.errors import FieldViolation, GatewayError, Reason
from unigate.gateway.providers.base import Provider
from unigate.v1 import inference_pb2 as pb

CAPABILITY_NAMES = tuple(f.name for f in pb.Capabilities.DESCRIPTOR.fields)
RPC_CAPABILITIES = frozenset({"chat", "streaming", "completion", "embeddings"})


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    provider: Provider
    model: str


@dataclass(slots=True)
class Route:
    alias: str
    description: str
    deployments: list[Deployment]
    capabilities: pb.Capabilities
    log_bodies: bool = False
    _cycle: Iterable[Deployment] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cycle = itertools.cycle(self.deployments)

    def pick(self) -> Deployment:
        return next(iter(self._cycle))

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


def build_router(config: GatewayConfig, providers: Mapping[str, Provider]) -> Router:
    """Routes for every alias whose deployments have an enabled provider."""
    routes: dict[str, Route] = {}
    disabled: dict[str, str] = {}
    for alias, settings in config.models.items():
        deployments = [
            Deployment(d.name or f"{d.provider}/{d.model}", providers[d.provider], d.model)
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
