"""Settings for the three ways a caller proves who it is. The gateway config embeds
`IdentitySettings`; its YAML shape (every field optional, defaults shown where useful):

    auth:
      api_keys:
        cache_ttl: 5s          # also the bound on how long a revoked key may still pass
        cache_size: 100000
      jwt:
        enabled: true
        algorithms: [RS256, ES256]           # any of HS256, RS256, ES256; never none
        jwks_url: https://idp.example.com/.well-known/jwks.json
        public_keys: []                      # PEM public keys or certificates (RS256/ES256)
        secret: ${UNIGATE_JWT_SECRET}        # HS256 only; at least 32 bytes
        issuer: https://idp.example.com/
        audience: unigate                    # or a list
        leeway: 30s
        claims: {tenant: tenant, consumer: sub, roles: roles}
        allowed_roles: [consumer, tenant_admin]
        cache_size: 10000
        jwks_refresh_interval: 30s           # at most one refresh for unknown kids per interval
        jwks_max_age: 1h
        jwks_timeout: 5s
      mtls:
        rules:                               # exact spiffe_id, then longest prefix, then CN
          - {spiffe_id: "spiffe://example.org/ns/prod/sa/billing", tenant: ten_a, consumer: con_b}
          - {spiffe_id_prefix: "spiffe://example.org/ns/ops/", tenant: ten_a, roles: [tenant_admin]}
          - {common_name: legacy-batch, tenant: ten_a, consumer: con_c}
"""

from __future__ import annotations

from typing import Literal, Self

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from unigate.gateway.config_types import Duration
from unigate.gateway.store.models import Role

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
JwtAlgorithm = Literal["HS256", "RS256", "ES256"]
_ASYMMETRIC: list[JwtAlgorithm] = ["RS256", "ES256"]
MIN_HMAC_SECRET_BYTES = 32  # RFC 7518 §3.2: at least the hash's output size


def load_public_key(pem: str) -> PublicKey:
    """An RSA or EC public key from a PEM public key or certificate."""
    data = pem.strip().encode()
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except UnsupportedAlgorithm as error:
        raise ValueError(str(error)) from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"a {type(key).__name__} cannot verify RS256 or ES256 tokens")
    return key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKeySettings(_Strict):
    cache_ttl: Duration = 5.0
    cache_size: int = Field(default=100_000, ge=1)


class JwtClaimNames(_Strict):
    """Which claims name the tenant, the consumer and the roles. A name is looked up as
    is first (namespaced claims like `https://example.com/tenant` contain dots), then as
    a dotted path into nested objects (`realm_access.roles`)."""

    tenant: str = "tenant"
    consumer: str = "sub"
    roles: str = "roles"


class JwtSettings(_Strict):
    enabled: bool = False
    algorithms: list[JwtAlgorithm] = Field(default_factory=lambda: _ASYMMETRIC.copy())
    secret: SecretStr | None = None
    public_keys: list[str] = Field(default_factory=list)
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | list[str] | None = None
    leeway: Duration = 30.0
    claims: JwtClaimNames = Field(default_factory=JwtClaimNames)
    allowed_roles: list[Role] = Field(default_factory=lambda: [Role.CONSUMER])
    cache_size: int = Field(default=10_000, ge=1)
    jwks_refresh_interval: Duration = 30.0
    jwks_max_age: Duration = 3600.0
    jwks_timeout: Duration = Field(default=5.0, gt=0)

    @field_validator("public_keys")
    @classmethod
    def _keys_load(cls, pems: list[str]) -> list[str]:
        for index, pem in enumerate(pems):
            try:
                load_public_key(pem)
            except ValueError as error:
                raise ValueError(f"public_keys[{index}] is not a usable PEM key: {error}") from None
        return pems

    @field_validator("jwks_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        # Whoever serves the JWKS can mint any token: plain http only on loopback.
        loopback = ("http://127.0.0.1", "http://localhost", "http://[::1]")
        if url is not None and not url.startswith(("https://", *loopback)):
            raise ValueError("jwks_url must be an https:// URL (http:// only on loopback)")
        return url

    @field_validator("allowed_roles")
    @classmethod
    def _no_global_admin(cls, roles: list[Role]) -> list[Role]:
        if Role.ADMIN in roles:
            raise ValueError(
                "a token cannot make a global admin (every JWT names a tenant); "
                "use tenant_admin, or an admin API key"
            )
        return roles

    @model_validator(mode="after")
    def _keys_for_algorithms(self) -> Self:
        if not self.enabled:
            return self
        if not self.algorithms:
            raise ValueError("algorithms must name at least one of HS256, RS256, ES256")
        wants_hmac = "HS256" in self.algorithms
        if wants_hmac != (self.secret is not None):
            raise ValueError("HS256 needs a secret, and a secret is only for HS256")
        secret = self.secret.get_secret_value() if self.secret is not None else ""
        if wants_hmac and len(secret.encode()) < MIN_HMAC_SECRET_BYTES:
            raise ValueError(f"the HS256 secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")
        asymmetric = set(self.algorithms) - {"HS256"}
        if asymmetric and not (self.public_keys or self.jwks_url):
            raise ValueError(f"{', '.join(sorted(asymmetric))} need public_keys or a jwks_url")
        return self


class MtlsRule(_Strict):
    """Maps one certificate identity (exactly one matcher) to a principal."""

    spiffe_id: str | None = None
    spiffe_id_prefix: str | None = None
    common_name: str | None = None
    tenant: str | None = None
    consumer: str | None = None
    roles: list[Role] = Field(default_factory=lambda: [Role.CONSUMER], min_length=1)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        matchers = [self.spiffe_id, self.spiffe_id_prefix, self.common_name]
        if sum(m is not None for m in matchers) != 1:
            raise ValueError("a rule needs exactly one of spiffe_id, spiffe_id_prefix, common_name")
        for spiffe in (self.spiffe_id, self.spiffe_id_prefix):
            if spiffe is not None and not spiffe.startswith("spiffe://"):
                raise ValueError(f"{spiffe!r} is not a SPIFFE id (spiffe://trust-domain/path)")
        if self.spiffe_id_prefix is not None and not self.spiffe_id_prefix.endswith("/"):
            # Without it, ".../sa/bill" would also admit ".../sa/billing-evil".
            raise ValueError("spiffe_id_prefix must end with '/'")
        if Role.ADMIN in self.roles:
            if self.tenant is not None or len(self.roles) > 1:
                raise ValueError("an admin rule is global: roles [admin] and no tenant")
        elif not self.tenant:
            raise ValueError("a rule needs a tenant (only a global admin rule has none)")
        if Role.CONSUMER in self.roles and not self.consumer:
            raise ValueError("a rule with the consumer role needs a consumer")
        return self


class MtlsIdentitySettings(_Strict):
    rules: list[MtlsRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[tuple[str, str]] = set()
        for rule in self.rules:
            for kind in ("spiffe_id", "spiffe_id_prefix", "common_name"):
                value = getattr(rule, kind)
                if value is not None and (kind, value) in seen:
                    raise ValueError(f"two rules match {kind} {value!r}")
                if value is not None:
                    seen.add((kind, value))
        return self


class IdentitySettings(_Strict):
    api_keys: ApiKeySettings = Field(default_factory=ApiKeySettings)
    jwt: JwtSettings = Field(default_factory=JwtSettings)
    mtls: MtlsIdentitySettings = Field(default_factory=MtlsIdentitySettings)
