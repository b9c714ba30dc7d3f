"""Build the gateway's grpc.aio server from a config, and run it until told to stop.

`create_server` binds (port 0 picks a free port, for tests) and starts serving;
`serve` adds signal handling and graceful drain for the command line.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from unigate.gateway.config import CallLogSettings, GatewayConfig, ServerSettings, TlsSettings
from unigate.gateway.identity.access import AccessPolicy
from unigate.gateway.identity.jwt import JwtAuthenticator
from unigate.gateway.identity.keys import KeyAuthenticator
from unigate.gateway.identity.mtls import MtlsIdentifier
from unigate.gateway.interceptors.access import AccessInterceptor
from unigate.gateway.interceptors.auth import Authenticator, AuthInterceptor, store_key_lookup
from unigate.gateway.interceptors.calllog import CallLogInterceptor
from unigate.gateway.interceptors.errors import ErrorInterceptor
from unigate.gateway.interceptors.inflight import InFlight, InFlightInterceptor
from unigate.gateway.interceptors.quota import QuotaInterceptor
from unigate.gateway.interceptors.request_id import RequestIdInterceptor
from unigate.gateway.observability.access import AccessLog
from unigate.gateway.observability.calllog import CallLogWriter
from unigate.gateway.observability.metrics import DeploymentState, Metrics
from unigate.gateway.observability.redact import Redactor
from unigate.gateway.observability.tracing import Tracing
from unigate.gateway.providers.base import Provider
from unigate.gateway.providers.registry import PROVIDER_KINDS
from unigate.gateway.providers.transport import HttpTransport, TransportLimits
from unigate.gateway.quota.base import QuotaBackend
from unigate.gateway.quota.memory import MemoryQuota
from unigate.gateway.quota.redis_backend import RedisQuota
from unigate.gateway.quota.resilient import ResilientQuota
from unigate.gateway.routing.router import Router, build_router
from unigate.gateway.services.admin import AdminService, QuotaView
from unigate.gateway.services.inference import InferenceService
from unigate.gateway.services.reflection import enable_reflection
from unigate.gateway.store.base import Store
from unigate.gateway.store.factory import open_store
from unigate.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc

log = logging.getLogger("unigate")

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


@dataclass
class Security:
    """Authentication and approved access, with the store they read; empty when off."""

    interceptors: list[grpc.aio.ServerInterceptor]
    store: Store | None = None
    authenticator: Authenticator | None = None

    async def close(self) -> None:
        if self.authenticator is not None:
            await self.authenticator.close()
        if self.store is not None:
            await self.store.close()


def _quota(config: GatewayConfig, store: Store | None) -> QuotaInterceptor | None:
    """The quota interceptor, when any policy is configured or the store (auth on)
    may hold some; a call no policy applies to skips the counters."""
    settings = config.quotas
    if not settings.policies and store is None:
        return None
    backend: QuotaBackend
    if settings.backend == "memory":
        backend = MemoryQuota()
    else:
        redis = RedisQuota(settings.redis_url, prefix=settings.key_prefix, timeout=settings.timeout)
        backend = ResilientQuota(redis, MemoryQuota(), mode=settings.on_redis_failure)
    return QuotaInterceptor(
        backend,
        settings.policies,
        settings.prices,
        store=store,
        cache_ttl=settings.policy_cache_ttl,
    )


async def _security(config: GatewayConfig) -> Security:
    auth = config.auth
    if not auth.enabled:
        log.warning(
            "auth is disabled: every caller may use every model alias, and the AdminService"
            " is not served (set auth.enabled: true)"
        )
        return Security([])
    where = config.store.url.split("@")[-1]  # never the user:password part
    try:
        store = await open_store(config.store.url)
    except Exception as exc:  # driver errors of every kind: one clear start-up message
        raise OSError(f"cannot open the store {where}: {type(exc).__name__}: {exc}") from None
    keys = KeyAuthenticator.from_settings(store_key_lookup(store), auth.api_keys)
    jwts = JwtAuthenticator(auth.jwt) if auth.jwt.enabled else None
    mtls = MtlsIdentifier(auth.mtls) if auth.mtls.rules else None
    policy = AccessPolicy(store, ttl=auth.access_cache_ttl)
    authenticator = Authenticator(keys, jwts, mtls, check_identity=policy.check_identity)
    interceptors: list[grpc.aio.ServerInterceptor] = [
        AuthInterceptor(authenticator),
        AccessInterceptor(policy),
    ]
    return Security(interceptors, store, authenticator)


@dataclass
class Observability:
    """Where calls are recorded: access log, call log, metrics, traces; each optional."""

    access_log: AccessLog | None = None
    call_log: CallLogWriter | None = None
    call_log_store: Store | None = None
    metrics: Metrics | None = None
    metrics_port: int | None = None
    tracing: Tracing | None = None

    def interceptor(self, config: GatewayConfig) -> CallLogInterceptor | None:
        if not (self.access_log or self.call_log or self.metrics or self.tracing):
            return None
        return CallLogInterceptor(
            access_log=self.access_log,
            writer=self.call_log,
            metrics=self.metrics,
            tracing=self.tracing,
            prices=config.quotas.prices,
            trust_forwarded_for=config.routing.trust_forwarded_for,
        )

    def start(self, config: GatewayConfig, router: Router) -> None:
        if self.access_log is not None:
            self.access_log.start()
        if self.call_log is not None:
            self.call_log.start()
        if self.metrics is not None:
            self._watch(self.metrics, router)
            settings = config.metrics
            try:
                self.metrics_port = self.metrics.start(settings.host, settings.port)
            except OSError as exc:
                where = _address(settings.host, settings.port)
                raise OSError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from None

    def _watch(self, metrics: Metrics, router: Router) -> None:
        if self.call_log is not None:
            writer = self.call_log
            metrics.watch_queue("call_log", lambda: writer.depth, lambda: writer.dropped)
        if self.access_log is not None:
            access = self.access_log
            metrics.watch_queue("access_log", lambda: access.depth, lambda: access.dropped)
        metrics.watch_deployments(lambda: _deployment_states(router))

    async def close(self) -> None:
        """Flush what is queued (after the server stopped), then let go of the rest."""
        if self.access_log is not None:
            await self.access_log.close()
        if self.call_log is not None:
            await self.call_log.close()
        if self.call_log_store is not None:
            await self.call_log_store.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)
        if self.metrics is not None:
            self.metrics.stop()


def _deployment_states(router: Router) -> list[DeploymentState]:
    return [
        DeploymentState(
            d.name,
            route.alias,
            d.provider.name,
            d.health.state(),
            d.health.in_flight,
            d.health.ewma_latency,
            d.health.error_rate(),
            d.health.ejected_for(),
        )
        for route in router.routes()
        for d in route.deployments
    ]


async def _call_log(settings: CallLogSettings, default_url: str) -> tuple[CallLogWriter, Store]:
    url = settings.store_url or default_url
    try:
        store = await open_store(url)
    except Exception as exc:
        where = url.split("@")[-1]  # never the user:password part
        raise OSError(
            f"cannot open the call log store {where}: {type(exc).__name__}: {exc}"
        ) from None
    writer = CallLogWriter(
        store,
        queue_size=settings.queue_size,
        batch_size=settings.batch_size,
        flush_interval=settings.flush_interval,
        redactor=Redactor(settings.redact),
        retention=settings.retention,
        usage_retention=settings.usage_retention,
        minute_usage_retention=settings.minute_usage_retention,
        cleanup_interval=settings.cleanup_interval,
    )
    return writer, store


async def _observability(config: GatewayConfig, tracing: Tracing | None) -> Observability:
    seen = Observability()
    if config.logging.access_log:
        seen.access_log = AccessLog(text=config.logging.format == "text")
    if config.call_log.enabled:
        seen.call_log, seen.call_log_store = await _call_log(config.call_log, config.store.url)
    if config.metrics.enabled:
        seen.metrics = Metrics()
    seen.tracing = tracing or Tracing.from_settings(config.tracing)
    return seen


@dataclass
class Gateway:
    """A running gateway: its server, the port it bound and what it must close."""

    server: grpc.aio.Server
    port: int
    config: GatewayConfig
    health: health_aio.HealthServicer
    transport: HttpTransport
    providers: Mapping[str, Provider]
    router: Router
    inflight: InFlight
    security: Security
    observability: Observability
    quota: QuotaInterceptor | None = None

    @property
    def metrics_port(self) -> int | None:
        return self.observability.metrics_port

    async def stop(self, grace: float | None = None, *, hurry: asyncio.Event | None = None) -> None:
        """Drain: health NOT_SERVING; after drain_delay, refuse new calls; let in-flight
        calls finish within the grace period; then stop. Setting `hurry` (a second
        signal) skips whatever waiting is left.
        """
        settings = self.config.server
        grace = settings.grace_period if grace is None else grace
        hurry = hurry or asyncio.Event()
        await self.health.enter_graceful_shutdown()
        if settings.drain_delay:
            await _first_of(hurry.wait(), timeout=settings.drain_delay)
        self.inflight.refuse_new_calls()
        if grace > 0 and not hurry.is_set():
            await _first_of(self.inflight.wait_idle(), hurry.wait(), timeout=grace)
        # One stop, with no grace: what is still open now is over time or plumbing
        # (health Watch streams). Two overlapping stop() calls can crash grpc.
        await self.server.stop(0)
        await self.observability.close()
        if self.quota is not None:
            await self.quota.close()
        await asyncio.gather(*(p.close() for p in self.providers.values()))
        await self.security.close()
        await self.transport.close()


async def _first_of(*waits: Coroutine[Any, Any, Any], timeout: float) -> None:
    """Wait until one of `waits` finishes or `timeout` passes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    options = [
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        ("grpc.keepalive_time_ms", ms(settings.keepalive_time)),
        ("grpc.keepalive_timeout_ms", ms(settings.keepalive_timeout)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(settings.min_client_ping_interval)),
        ("grpc.so_reuseport", 0),
    ]
    optional = {
        "grpc.max_concurrent_streams": settings.max_concurrent_streams,
        "grpc.max_connection_idle_ms": settings.max_connection_idle,
        "grpc.max_connection_age_ms": settings.max_connection_age,
        "grpc.max_connection_age_grace_ms": settings.max_connection_age_grace,
    }
    for key, value in optional.items():
        if value is not None:
            options.append((key, int(value) if key == "grpc.max_concurrent_streams" else ms(value)))
    return options


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """TLS from PEM files; with a client CA, clients present certificates (mTLS)."""

    def read(path: str, what: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise OSError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None

    pair = (read(tls.key_file, "key_file"), read(tls.cert_file, "cert_file"))
    client_ca = read(tls.client_ca_file, "client_ca_file") if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None and tls.require_client_cert,
    )


def _bind_problem(address: str) -> str:
    """Why grpc could not bind, in words (grpc itself only says that it failed)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, int(port)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "the address is already in use by another process"
        return exc.strerror or str(exc)
    return "grpc could not bind it (set GRPC_VERBOSITY=debug for details)"


def build_providers(config: GatewayConfig, transport: HttpTransport) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, settings in config.providers.items():
        if name in config.disabled_providers:
            continue
        providers[name] = PROVIDER_KINDS[settings.kind].factory(name, settings, transport)
    return providers


async def create_server(
    config: GatewayConfig,
    host: str | None = None,
    port: int | None = None,
    *,
    tracing: Tracing | None = None,
) -> Gateway:
    """Build, bind and start the server; the returned Gateway knows the bound port.
    `tracing` replaces the one the config describes (tests bring an in-memory one)."""
    settings = config.server
    seen = await _observability(config, tracing)
    transport = HttpTransport(
        TransportLimits(
            connections_per_upstream=config.upstream.connections_per_upstream,
            connect_timeout=config.upstream.connect_timeout,
            keepalive_timeout=config.upstream.keepalive_timeout,
        ),
        tracing=seen.tracing,
    )
    providers = build_providers(config, transport)
    router = build_router(config, providers)
    for name, why in config.disabled_providers.items():
        aliases = [
            alias
            for alias in router.disabled_aliases
            if any(d.provider == name for d in config.models[alias].deployments)
        ]
        log.warning(
            "provider %r disabled: %s; model aliases not served: %s",
            name,
            why,
            ", ".join(aliases) or "none",
        )

    inflight = InFlight()
    # Outermost first; each wraps the ones after it (docs/architecture.md).
    interceptors: list[grpc.aio.ServerInterceptor] = [
        InFlightInterceptor(inflight),
        RequestIdInterceptor(in_headers=settings.request_id_in_headers),
        ErrorInterceptor(),
    ]
    if (recorder := seen.interceptor(config)) is not None:
        interceptors.append(recorder)
    try:
        security = await _security(config)
    except BaseException:
        await asyncio.gather(transport.close(), seen.close())
        raise
    interceptors.extend(security.interceptors)
    quota = _quota(config, security.store)
    if quota is not None:
        interceptors.append(quota)
    server = grpc.aio.server(interceptors=interceptors, options=_server_options(settings))

    inference_pb2_grpc.add_InferenceServiceServicer_to_server(
        InferenceService(
            router,
            settings.default_deadline,
            seen.tracing,
            metrics=seen.metrics,
            trust_forwarded_for=config.routing.trust_forwarded_for,
        ),
        server,
    )
    services = [INFERENCE_SERVICE]
    if security.store is not None:
        forget = security.authenticator.forget_key if security.authenticator else None
        view = QuotaView(quota.backend, quota.policies) if quota else None
        admin = AdminService(
            security.store,
            key_changed=forget,
            quotas=view,
            call_logs=seen.call_log_store,
            router=router,
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
        services.append(ADMIN_SERVICE)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if settings.reflection:
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        enable_reflection((*services, health_name), server)

    address = _address(host or settings.host, settings.port if port is None else port)
    credentials = _server_credentials(config.tls) if config.tls is not None else None
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:
        await transport.close()
        await security.close()
        await seen.close()
        raise OSError(f"cannot listen on {address}: {_bind_problem(address)}") from None
    try:
        seen.start(config, router)
    except OSError:
        await transport.close()
        await security.close()
        await seen.close()
        raise
    await server.start()
    for service in ("", *services):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    return Gateway(
        server,
        bound,
        config,
        health,
        transport,
        providers,
        router,
        inflight,
        security,
        seen,
        quota,
    )


async def serve(config: GatewayConfig, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain gracefully; a second signal stops at once."""
    gateway = await create_server(config, host, port)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    hurry = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            log.warning("second signal: stopping now, cancelling in-flight calls")
            hurry.set()
            return
        log.info("received %s: draining", signal.Signals(signum).name)
        stopping.set()

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    log.info(
        "unigate serving",
        extra={
            "address": _address(host or config.server.host, gateway.port),
            "models": [m.alias for m in gateway.router.list_models().models],
        },
    )
    await stopping.wait()
    await gateway.stop(hurry=hurry)
    for signum in signals:
        loop.remove_signal_handler(signum)
    log.info("unigate stopped")
