"""JWT bearer tokens (pyjwt): HS256 with a shared secret; RS256 and ES256 with public
keys from the config or from a JWKS URL.

Which key may verify which token is decided here, before pyjwt sees either: the
token's `alg` must be in the allow-list, and the key must be of that algorithm's kind
(the secret only for HS256, RSA keys only for RS256, P-256 keys only for ES256). So a
public key can never serve as an HMAC secret (algorithm confusion), and `alg: none`
never verifies. pyjwt is then told to accept that one algorithm only.

JWKS: fetched on first use; again when a token names a `kid` it does not hold, or when
older than `jwks_max_age`, but at most once per `jwks_refresh_interval` once it holds
keys (unknown kids cannot make it hammer the IdP). A failed refresh keeps the keys it
had; with none at all, callers get JWKS_UNAVAILABLE (UNAVAILABLE: retry).

Verified tokens are cached by their text until their `exp` and never past it: an
entry at or after `exp` is dropped and the token verified again (which `leeway` may
still admit). A hot token costs a dict lookup.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.types import Options

from unigate.gateway.identity.cache import SingleFlight, TtlLru
from unigate.gateway.identity.errors import AuthError, AuthReason
from unigate.gateway.identity.principal import Principal, Via
from unigate.gateway.identity.settings import JwtSettings, PublicKey, load_public_key
from unigate.gateway.store.models import Role

log = logging.getLogger(__name__)


class JwksFetchError(Exception):
    """The JWKS document could not be fetched or read."""


class JwksFetcher(Protocol):
    async def __call__(self, url: str, timeout: float) -> Mapping[str, Any]: ...


class HttpJwksFetcher:
    """GETs a JWKS document with one aiohttp session: the caller's, or its own (made on
    first use, closed by `close`)."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owns_session = session is None

    async def __call__(self, url: str, timeout: float) -> Mapping[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.get(
                url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise JwksFetchError(f"{url} answered HTTP {response.status}")
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise JwksFetchError(f"{url}: {error!r}") from error
        try:
            document = json.loads(body)
        except ValueError as error:
            raise JwksFetchError(f"{url} did not answer JSON") from error
        if not isinstance(document, dict):
            raise JwksFetchError(f"{url} did not answer a JSON object")
        return document

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def _key_fits(algorithm: str, key: PublicKey) -> bool:
    if algorithm == "RS256":
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    return False


def _parse_jwks(document: Mapping[str, Any]) -> list[pyjwt.PyJWK]:
    """The signature keys of a JWKS; symmetric and encryption keys are never used."""
    usable = [
        jwk
        for jwk in pyjwt.PyJWKSet.from_dict(dict(document)).keys
        if jwk.key_type in ("RSA", "EC") and jwk.public_key_use in (None, "sig")
    ]
    if not usable:
        raise pyjwt.PyJWKSetError("the JWKS holds no RSA or EC signature key")
    return usable


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class JwtAuthenticator:
    """Bearer JWT → Principal, or AuthError. Without `fetch`, a `jwks_url` is fetched with
    its own aiohttp session, which `close` closes."""

    def __init__(
        self,
        settings: JwtSettings,
        fetch: JwksFetcher | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._algorithms = frozenset(settings.algorithms)
        self._secret = (
            settings.secret.get_secret_value().encode() if settings.secret is not None else None
        )
        self._static_keys = [load_public_key(pem) for pem in settings.public_keys]
        self._own_fetcher: HttpJwksFetcher | None = None
        if settings.jwks_url is not None and fetch is None:
            fetch = self._own_fetcher = HttpJwksFetcher()
        self._fetch = fetch if settings.jwks_url is not None else None
        self._jwks: list[pyjwt.PyJWK] = []
        self._jwks_loaded_at: float | None = None  # monotonic; None: never loaded
        self._jwks_tried_at = float("-inf")
        self._jwks_flight: SingleFlight[str, None] = SingleFlight()
        self._clock = clock
        self._monotonic = monotonic
        self._cache: TtlLru[str, Principal] = TtlLru(settings.cache_size)
        audience = settings.audience
        self._audience = [audience] if isinstance(audience, str) else audience
        required = ["exp"] + [
            claim for claim, on in (("iss", settings.issuer), ("aud", audience)) if on
        ]
        self._options: Options = {"require": required, "enforce_minimum_key_length": True}

    async def close(self) -> None:
        if self._own_fetcher is not None:
            await self._own_fetcher.close()

    async def authenticate(self, token: str) -> Principal:
        principal = self._cache.get(token, self._clock())
        if principal is not None:
            return principal
        claims = await self._verify(token)
        principal = self._principal(claims)
        self._cache.put(token, principal, float(claims["exp"]))
        return principal

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError:
            raise AuthError(
                AuthReason.MALFORMED_CREDENTIALS, "the bearer credential is not a JWT"
            ) from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in self._algorithms:
            accepted = ", ".join(sorted(self._algorithms))
            raise AuthError(
                AuthReason.INVALID_TOKEN,
                f"tokens signed with {algorithm!r} are not accepted (accepted: {accepted})",
            )
        if kid is not None and not isinstance(kid, str):
            raise AuthError(AuthReason.INVALID_TOKEN, "the token's kid is not a string")
        for key in await self._keys_for(algorithm, kid):
            try:
                return pyjwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self._audience,
                    issuer=self._settings.issuer,
                    leeway=self._settings.leeway,
                    options=self._options,
                )
            except pyjwt.InvalidSignatureError:
                continue  # another key of the same kind may have signed it
            except pyjwt.ExpiredSignatureError:
                raise AuthError(AuthReason.EXPIRED_TOKEN, "the token has expired") from None
            except pyjwt.PyJWTError as error:
                raise AuthError(
                    AuthReason.INVALID_TOKEN, f"the token is not valid: {error}"
                ) from None
        raise AuthError(AuthReason.INVALID_TOKEN, "the token's signature does not verify")

    async def _keys_for(self, algorithm: str, kid: str | None) -> list[Any]:
        if algorithm == "HS256":
            return [self._secret] if self._secret is not None else []
        keys: list[Any] = [key for key in self._static_keys if _key_fits(algorithm, key)]
        if self._fetch is None:
            return keys
        if self._jwks_due(kid):
            await self._jwks_flight.run("jwks", self._refresh_jwks)
        named = [
            jwk
            for jwk in self._jwks
            if jwk.algorithm_name == algorithm and (kid is None or jwk.key_id == kid)
        ]
        if not named and not keys and self._jwks_loaded_at is None:
            raise AuthError(
                AuthReason.JWKS_UNAVAILABLE, "the keys to verify tokens cannot be fetched now"
            )
        return named + keys

    def _jwks_due(self, kid: str | None) -> bool:
        if self._jwks_loaded_at is None:
            return True  # nothing to verify with: only single flight limits the fetches
        now = self._monotonic()
        if now - self._jwks_tried_at < self._settings.jwks_refresh_interval:
            return False
        unknown = kid is not None and all(jwk.key_id != kid for jwk in self._jwks)
        return unknown or now - self._jwks_loaded_at >= self._settings.jwks_max_age

    async def _refresh_jwks(self) -> None:
        assert self._fetch is not None and self._settings.jwks_url is not None
        self._jwks_tried_at = self._monotonic()
        try:
            document = await self._fetch(self._settings.jwks_url, self._settings.jwks_timeout)
            self._jwks = _parse_jwks(document)
        except (JwksFetchError, pyjwt.PyJWTError) as error:
            log.warning("JWKS refresh from %s failed: %s", self._settings.jwks_url, error)
            return
        self._jwks_loaded_at = self._monotonic()

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        names = self._settings.claims
        tenant = _claim(claims, names.tenant)
        if not isinstance(tenant, str) or not tenant:
            raise AuthError(
                AuthReason.INVALID_TOKEN, f"the token has no {names.tenant!r} claim naming a tenant"
            )
        roles = self._roles(_claim(claims, names.roles))
        consumer = _claim(claims, names.consumer)
        consumer = consumer if isinstance(consumer, str) and consumer else None
        if Role.CONSUMER in roles and consumer is None:
            raise AuthError(
                AuthReason.INVALID_TOKEN,
                f"the token has no {names.consumer!r} claim naming a consumer",
            )
        subject = claims.get("sub")
        return Principal(
            via=Via.JWT,
            subject=subject if isinstance(subject, str) else consumer or tenant,
            tenant_id=tenant,
            consumer_id=consumer,
            roles=roles,
        )

    def _roles(self, value: Any) -> frozenset[Role]:
        if value is None:
            value = [Role.CONSUMER.value]  # no roles claim: a consumer, if consumers may be
        names = value.split() if isinstance(value, str) else value
        if not isinstance(names, list):
            names = []
        allowed = self._settings.allowed_roles
        roles = frozenset(role for role in allowed if role.value in names)
        if not roles:
            accepted = ", ".join(role.value for role in allowed)
            raise AuthError(
                AuthReason.INVALID_TOKEN,
                f"the token grants none of the roles this gateway accepts ({accepted})",
            )
        return roles
