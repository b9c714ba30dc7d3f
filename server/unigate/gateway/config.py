"""The gateway's configuration: YAML in, typed and checked settings out.

Strings may use `${NAME}` (required) and `${NAME:-default}` (optional) to read
environment variables, so secrets never sit in the file. Anything wrong stops
start-up with one ConfigError that names the file, each key at fault and what is
wrong with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from unigate.gateway.config_types import Duration
from unigate.gateway.identity.settings import IdentitySettings
from unigate.gateway.providers.base import ProviderSettings
from unigate.gateway.providers.registry import PROVIDER_KINDS
from unigate.gateway.quota.policy import QuotaSettings


class ConfigError(Exception):
    """A configuration that cannot be used; str() is the whole message for the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = "[::]"
    port: int = Field(50051, ge=0, le=65535)
    grace_period: Duration = 30.0
    """How long in-flight calls and streams may run on after SIGTERM/SIGINT."""
    drain_delay: Duration = 0.0
    """How long to keep serving after health turns NOT_SERVING, so balancers notice."""
    default_deadline: Duration = 300.0
    """The upstream timeout for calls that arrive without a gRPC deadline."""
    max_receive_message_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_send_message_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_concurrent_streams: int | None = Field(None, gt=0)
    keepalive_time: Duration = 60.0
    keepalive_timeout: Duration = 20.0
    min_client_ping_interval: Duration = 10.0
    max_connection_idle: Duration | None = None
    max_connection_age: Duration | None = None
    max_connection_age_grace: Duration | None = None
    reflection: bool = True
    request_id_in_headers: bool = False
    """Send a unary answer's x-request-id in the response headers instead of its
    trailers: one more grpc batch per call (~95 µs here); streams always use headers."""


class LoggingSettings(_Strict):
    level: str = Field("info", pattern=r"(?i)^(debug|info|warning|error)$")
    format: str = Field("json", pattern=r"^(json|text)$")
    access_log: bool = True


class UpstreamSettings(_Strict):
    connections_per_upstream: int = Field(100, gt=0)
    connect_timeout: Duration = 10.0
    keepalive_timeout: Duration = 30.0


class CapabilityOverrides(_Strict):
    """Switch off capabilities an alias's provider has but its model lacks."""

    chat: bool | None = None
    streaming: bool | None = None
    tools: bool | None = None
    images: bool | None = None
    json_output: bool | None = None
    embeddings: bool | None = None
    completion: bool | None = None


class DeploymentSettings(_Strict):
    provider: str
    """The name of a block under `providers`."""
    model: str
    """The vendor's model name."""
    name: str | None = None
    """A name for metrics and logs; defaults to `<provider>/<model>`."""
    weight: int = Field(1, ge=1, le=1000)
    """Its share of calls under the weighted and consistent-hash balancers."""
    priority: int = Field(0, ge=0)
    """Its failover group: calls go to the lowest group with an available deployment."""


BALANCERS = (
    "round_robin",
    "weighted",
    "least_outstanding",
    "consistent_hash",
    "latency",
    "priority",
)


class RetrySettings(_Strict):
    """Retries of an alias's call on retryable failures (UNAVAILABLE, a deployment's
    429, connection errors), never after a streamed answer has begun."""

    attempts: int = Field(3, ge=1, le=10)
    """Attempts per alias, the first included (1: no retries)."""
    backoff: Duration = 0.05
    """The first backoff; each retry doubles it, with full jitter."""
    max_backoff: Duration = 1.0


class BreakerSettings(_Strict):
    """Per deployment: eject after `consecutive_failures`, or when `error_rate` of at
    least `min_calls` attempts in `window` failed; for `ejection`, doubling on each
    ejection in a row up to `max_ejection`; then one probe call decides."""

    enabled: bool = True
    consecutive_failures: int = Field(5, ge=1)
    error_rate: float = Field(0.5, gt=0, le=1)
    min_calls: int = Field(20, ge=1)
    window: Duration = 30.0
    ejection: Duration = 10.0
    max_ejection: Duration = 300.0


class ModelSettings(_Strict):
    description: str = ""
    deployments: list[DeploymentSettings] = Field(min_length=1)
    capabilities: CapabilityOverrides = CapabilityOverrides()
    balancer: str = Field("round_robin", pattern="^(" + "|".join(BALANCERS) + ")$")
    """How a deployment is picked within a priority group (docs/routing.md)."""
    hash_key: str = "peer"
    """consistent_hash: `peer` (the caller's address) or `metadata:<name>` (e.g.
    metadata:x-session-id, falling back to the address when the header is absent)."""
    retry: RetrySettings = RetrySettings()
    circuit_breaker: BreakerSettings = BreakerSettings()
    fallbacks: list[str] = Field(default_factory=list)
    """Other aliases to try, in order, when every deployment of this one failed."""
    log_bodies: bool = False
    """Store request and response bodies in the call log, redacted (call_log.redact)."""


class RoutingSettings(_Strict):
    trust_forwarded_for: bool = False
    """Take the caller's address from `x-forwarded-for` (its first entry) when set,
    for consistent hashing and call logs; only behind a proxy that sets it."""


class StoreSettings(_Strict):
    url: str = Field("sqlite:///unigate.db", pattern=r"^(sqlite|postgresql|postgres)://")
    """sqlite:///path/to/file.db (created on first start) or postgresql://user@host/db."""


class TlsSettings(_Strict):
    """TLS on the gRPC port; with `client_ca_file`, clients must present a certificate."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    require_client_cert: bool = True
    """With client_ca_file: refuse clients without a certificate (mTLS). False asks
    for none at all (grpc cannot ask without requiring), so mTLS rules then never match."""


class AuthSettings(IdentitySettings):
    """Who may call: on by default. `enabled: false` lets every caller use every alias
    (demos and tests only; the gateway logs a warning and serves no AdminService)."""

    enabled: bool = True
    access_cache_ttl: Duration = 5.0
    """How long a subscription decision may be cached in each process."""


class CallLogSettings(_Strict):
    """Every inference call recorded in the store, written in batches off the call's path."""

    enabled: bool = True
    store_url: str | None = Field(None, pattern=r"^(sqlite|postgresql|postgres)://")
    """Where call logs go; the `store.url` database when unset (its own connection)."""
    queue_size: int = Field(10_000, gt=0)
    """Records waiting to be written; beyond this, new records are dropped and counted."""
    batch_size: int = Field(500, gt=0)
    flush_interval: Duration = 1.0
    """A batch is written when it is full or this long after its first record."""
    retention: Duration = 30 * 86400.0
    """How long call records are kept; 0 keeps them forever."""
    usage_retention: Duration = 400 * 86400.0
    """How long the hourly and daily usage rollups (GetUsageStats) are kept; 0: forever."""
    minute_usage_retention: Duration = 30 * 86400.0
    """How long the per-minute rollups are kept (minute buckets, and the minute edges
    of other ranges); they hold up to one row per call, so keep this short."""
    cleanup_interval: Duration = 3600.0
    redact: list[str] = Field(default_factory=list)
    """Regular expressions removed from logged bodies, besides the built-in ones
    (e-mail addresses, card numbers, API keys and bearer tokens)."""

    @model_validator(mode="after")
    def _patterns_compile(self) -> CallLogSettings:
        for index, pattern in enumerate(self.redact):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise _KeyedError(f"call_log.redact[{index}]", f"not a regex: {exc}") from None
        return self


class MetricsSettings(_Strict):
    """Prometheus metrics over HTTP on a port of their own (GET /metrics)."""

    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = Field(9464, ge=0, le=65535)


class TracingSettings(_Strict):
    """OpenTelemetry spans for each call and each upstream attempt."""

    enabled: bool = False
    exporter: str = Field("otlp", pattern=r"^(otlp|console)$")
    endpoint: str = "http://127.0.0.1:4317"
    """The OTLP/gRPC collector (exporter: otlp)."""
    service_name: str = "unigate"
    sample_ratio: float = Field(1.0, ge=0, le=1)
    """Share of new traces recorded; a caller's sampled traceparent is always followed."""


class GatewayConfig(_Strict):
    server: ServerSettings = ServerSettings()
    logging: LoggingSettings = LoggingSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    routing: RoutingSettings = RoutingSettings()
    store: StoreSettings = StoreSettings()
    tls: TlsSettings | None = None
    auth: AuthSettings = AuthSettings()
    quotas: QuotaSettings = QuotaSettings()
    call_log: CallLogSettings = CallLogSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    disabled_providers: dict[str, str] = Field(default_factory=dict, exclude=True)
    """Provider blocks left without a credential: name -> why (filled by load_config)."""

    @model_validator(mode="after")
    def _mtls_rules_need_client_certificates(self) -> GatewayConfig:
        tls = self.tls
        if self.auth.mtls.rules and (
            tls is None or not tls.client_ca_file or not tls.require_client_cert
        ):
            raise _KeyedError(
                "auth.mtls.rules",
                "need tls.client_ca_file with tls.require_client_cert: true, or no client"
                " presents a certificate to match",
            )
        return self

    @model_validator(mode="after")
    def _fallbacks_name_aliases(self) -> GatewayConfig:
        for alias, model in self.models.items():
            for index, other in enumerate(model.fallbacks):
                if other not in self.models or other == alias:
                    raise _KeyedError(
                        f"models.{alias}.fallbacks[{index}]",
                        f"{other!r} is not another model alias"
                        f" (defined: {', '.join(sorted(self.models))})",
                    )
            if model.hash_key != "peer" and not (
                model.hash_key.startswith("metadata:") and len(model.hash_key) > 9
            ):
                raise _KeyedError(
                    f"models.{alias}.hash_key", "write peer or metadata:<header name>"
                )
        return self

    @model_validator(mode="after")
    def _deployments_name_providers(self) -> GatewayConfig:
        for alias, model in self.models.items():
            for index, deployment in enumerate(model.deployments):
                if deployment.provider not in self.providers:
                    known = ", ".join(sorted(self.providers)) or "none"
                    raise _KeyedError(
                        f"models.{alias}.deployments[{index}].provider",
                        f"no provider block named {deployment.provider!r} (defined: {known})",
                    )
        return self


class _KeyedError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, _join(path, str(k)), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env, problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{path}: environment variable {name} is not set"
            f" (set it, or write ${{{name}:-}} to make it optional)"
        )
        return ""

    return _ENV_REF.sub(substitute, node)


def _why_empty(written: str) -> str:
    names = [match.group(1) for match in _ENV_REF.finditer(written)]
    if names:
        return f"its api_key is empty (set {' or '.join(names)})"
    return "its api_key is empty"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, str(part))
    return out


# Values under keys like these are never echoed in an error: they may be credentials.
_SECRET_WORDS = re.compile(r"key|secret|token|password|auth|header|credential", re.IGNORECASE)


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    given = error.get("input")
    secret = any(_SECRET_WORDS.search(str(part)) for part in error.get("loc", ()))
    shown = (
        f" (got {given!r})" if isinstance(given, str | int | float | bool) and not secret else ""
    )
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{message}{shown}"


def _validate_providers(raw: Any, problems: list[str]) -> dict[str, ProviderSettings]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append("providers: must be a mapping of provider names to blocks")
        return {}
    known = ", ".join(sorted(PROVIDER_KINDS))
    settings: dict[str, ProviderSettings] = {}
    for name, block in raw.items():
        where = f"providers.{name}"
        if not isinstance(block, dict):
            problems.append(f"{where}: must be a mapping with at least `kind`")
            continue
        kind = block.get("kind")
        if kind is None:
            problems.append(f"{where}.kind: required key is missing (one of: {known})")
            continue
        entry = PROVIDER_KINDS.get(str(kind))
        if entry is None:
            problems.append(f"{where}.kind: unknown provider kind {kind!r} (one of: {known})")
            continue
        try:
            settings[str(name)] = entry.settings.model_validate(block)
        except ValidationError as exc:
            problems.extend(
                f"{_join(where, _format_loc(error['loc']))}: {_describe(error)}"
                for error in exc.errors()
            )
    return settings


def parse_config(
    text: str, source: str = "<config>", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Parse and check a YAML configuration; raise ConfigError naming every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config error in {source}{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config error in {source}: the top level must be a mapping of keys")

    problems: list[str] = []
    blocks: dict[Any, Any] = raw["providers"] if isinstance(raw.get("providers"), dict) else {}
    written_keys = {
        str(name): str(block.get("api_key"))
        for name, block in blocks.items()
        if isinstance(block, dict) and "api_key" in block
    }
    raw = _interpolate(raw, "", os.environ if env is None else env, problems)
    blocks = raw["providers"] if isinstance(raw.get("providers"), dict) else {}
    disabled = {
        str(name): _why_empty(written_keys.get(str(name), ""))
        for name, block in blocks.items()
        if isinstance(block, dict) and block.get("api_key") == ""
    }
    providers = _validate_providers(raw.get("providers"), problems)
    if problems:
        raise _config_error(source, problems)
    try:
        config = GatewayConfig.model_validate({**raw, "providers": providers})
    except ValidationError as exc:
        for error in exc.errors():
            if isinstance(error.get("ctx", {}).get("error"), _KeyedError):
                problems.append(str(error["ctx"]["error"]))
            else:
                problems.append(f"{_format_loc(error['loc'])}: {_describe(error)}")
        raise _config_error(source, problems) from None
    return config.model_copy(update={"disabled_providers": disabled})


def _config_error(source: str, problems: list[str]) -> ConfigError:
    if len(problems) == 1:
        return ConfigError(f"config error in {source}: {problems[0]}")
    lines = "\n".join(f"  - {p}" for p in problems)
    return ConfigError(f"config error in {source}:\n{lines}")


def load_config(path: str | Path) -> GatewayConfig:
    """Read and check a configuration file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config error: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config error in {path}: not UTF-8 text (byte {exc.start}"
            f" is {exc.object[exc.start]:#x})"
        ) from None
    return parse_config(text, str(path))
