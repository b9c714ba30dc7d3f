"""JWT: each algorithm with local keys, every rejection, claims mapping, the cache."""

from __future__ import annotations

import time
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from tests.unit.identity_tokens import (
    AUDIENCE,
    ISSUER,
    SECRET,
    claims,
    hand_made,
    public_pem,
    reason_of,
    settings,
    sign,
)
from unigate.gateway.identity.errors import AuthError, AuthReason
from unigate.gateway.identity.jwt import JwtAuthenticator
from unigate.gateway.identity.principal import Via
from unigate.gateway.identity.settings import JwtSettings
from unigate.gateway.store.models import Role


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256"])
async def test_each_algorithm_verifies_with_its_key(
    algorithm: str, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    signing_key: Any = {"HS256": SECRET, "RS256": rsa_key, "ES256": ec_key}[algorithm]
    if algorithm == "HS256":
        config = settings()
    else:
        config = settings(
            algorithms=[algorithm], secret=None, public_keys=[public_pem(signing_key)]
        )
    principal = await JwtAuthenticator(config).authenticate(sign(claims(), signing_key, algorithm))
    assert principal.via == Via.JWT
    assert (principal.tenant_id, principal.consumer_id) == ("ten_a", "con_billing")
    assert principal.roles == {Role.CONSUMER}
    assert principal.subject == "con_billing"


async def test_expired_token_fails_but_leeway_absorbs_clock_skew() -> None:
    auth = JwtAuthenticator(settings(leeway=30))
    now = int(time.time())
    expired = sign(claims(exp=now - 60, iat=now - 600, nbf=now - 600), SECRET, "HS256")
    assert await reason_of(auth, expired) == AuthReason.EXPIRED_TOKEN
    skewed = sign(claims(exp=now - 10, iat=now - 600, nbf=now - 600), SECRET, "HS256")
    assert (await auth.authenticate(skewed)).tenant_id == "ten_a"


async def test_not_yet_valid_tokens_fail() -> None:
    auth = JwtAuthenticator(settings(leeway=30))
    now = int(time.time())
    assert await reason_of(auth, sign(claims(nbf=now + 120), SECRET, "HS256")) == "INVALID_TOKEN"
    assert await reason_of(auth, sign(claims(iat=now + 120), SECRET, "HS256")) == "INVALID_TOKEN"
    assert (await auth.authenticate(sign(claims(nbf=now + 20), SECRET, "HS256"))).tenant_id


async def test_a_token_without_exp_fails() -> None:
    token = sign(claims(exp=None), SECRET, "HS256")
    assert await reason_of(JwtAuthenticator(settings()), token) == AuthReason.INVALID_TOKEN


async def test_wrong_signature(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    auth = JwtAuthenticator(
        settings(algorithms=["RS256"], secret=None, public_keys=[public_pem(rsa_key)])
    )
    forged = sign(claims(), other_rsa_key, "RS256")
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(forged)
    assert caught.value.reason == AuthReason.INVALID_TOKEN
    assert "signature" in caught.value.message
    hs_forged = sign(claims(), "another-secret-that-is-32-bytes-long", "HS256")
    assert await reason_of(JwtAuthenticator(settings()), hs_forged) == AuthReason.INVALID_TOKEN


async def test_any_configured_key_of_the_right_kind_may_have_signed(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    pems = [public_pem(rsa_key), public_pem(other_rsa_key)]
    auth = JwtAuthenticator(settings(algorithms=["RS256"], secret=None, public_keys=pems))
    assert (await auth.authenticate(sign(claims(), other_rsa_key, "RS256"))).tenant_id == "ten_a"


@pytest.mark.parametrize(
    "overrides",
    [{"aud": "someone-else"}, {"aud": None}, {"iss": "https://evil.test/"}, {"iss": None}],
)
async def test_wrong_or_missing_audience_and_issuer(overrides: dict[str, Any]) -> None:
    token = sign(claims(**overrides), SECRET, "HS256")
    assert await reason_of(JwtAuthenticator(settings()), token) == AuthReason.INVALID_TOKEN


async def test_alg_none_never_verifies() -> None:
    token = hand_made({"alg": "none", "typ": "JWT"}, claims(), None)
    with pytest.raises(AuthError) as caught:
        await JwtAuthenticator(settings()).authenticate(token)
    assert caught.value.reason == AuthReason.INVALID_TOKEN
    assert "'none'" in caught.value.message
    with pytest.raises(ValidationError):
        settings(algorithms=["none"])


async def test_hs_token_fails_when_only_rs_is_allowed(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    auth = JwtAuthenticator(settings(algorithms=["RS256"], secret=None, public_keys=[pem]))
    # the classic confusion: HMAC keyed with the public key the gateway trusts
    confused = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), pem.encode())
    assert await reason_of(auth, confused) == AuthReason.INVALID_TOKEN
    assert await reason_of(auth, sign(claims(), SECRET, "HS256")) == AuthReason.INVALID_TOKEN


async def test_a_public_key_never_serves_as_the_hmac_secret(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    auth = JwtAuthenticator(settings(algorithms=["HS256", "RS256"], public_keys=[pem]))
    confused = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), pem.encode())
    assert await reason_of(auth, confused) == AuthReason.INVALID_TOKEN
    assert (await auth.authenticate(sign(claims(), rsa_key, "RS256"))).tenant_id == "ten_a"


async def test_an_rsa_key_does_not_verify_es256(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    pem = public_pem(rsa_key)
    auth = JwtAuthenticator(settings(algorithms=["RS256", "ES256"], secret=None, public_keys=[pem]))
    assert await reason_of(auth, sign(claims(), ec_key, "ES256")) == AuthReason.INVALID_TOKEN


async def test_garbage_is_malformed() -> None:
    auth = JwtAuthenticator(settings())
    for text in ("abc.def", "not a token", "a.b.c"):
        assert await reason_of(auth, text) == AuthReason.MALFORMED_CREDENTIALS


# --- claims --------------------------------------------------------------------------------


async def test_claim_names_are_configurable_and_may_be_nested_or_namespaced() -> None:
    names = {"tenant": "https://example.com/tenant", "consumer": "azp", "roles": "realm.roles"}
    auth = JwtAuthenticator(settings(claims=names, allowed_roles=["consumer", "tenant_admin"]))
    token = sign(
        claims(
            tenant=None,
            **{"https://example.com/tenant": "ten_z"},
            azp="con_z",
            realm={"roles": ["consumer", "tenant_admin", "admin", "viewer"]},
        ),
        SECRET,
        "HS256",
    )
    principal = await auth.authenticate(token)
    assert (principal.tenant_id, principal.consumer_id, principal.subject) == (
        "ten_z",
        "con_z",
        "con_billing",
    )
    assert principal.roles == {Role.CONSUMER, Role.TENANT_ADMIN}  # never a global admin


async def test_roles_as_a_space_separated_string() -> None:
    token = sign(claims(sub=None, roles="tenant_admin other"), SECRET, "HS256")
    both = settings(allowed_roles=["consumer", "tenant_admin"])
    principal = await JwtAuthenticator(both).authenticate(token)
    assert principal.roles == {Role.TENANT_ADMIN}
    assert principal.consumer_id is None and principal.subject == "ten_a"


@pytest.mark.parametrize(
    "overrides",
    [
        {"tenant": None},
        {"tenant": ""},
        {"tenant": 42},
        {"sub": None},  # the consumer role needs a consumer
        {"roles": ["admin"]},  # a role the gateway does not grant to tokens
        {"roles": {"consumer": True}},
    ],
)
async def test_claims_that_name_no_usable_principal(overrides: dict[str, Any]) -> None:
    token = sign(claims(**overrides), SECRET, "HS256")
    assert await reason_of(JwtAuthenticator(settings()), token) == AuthReason.INVALID_TOKEN


# --- the cache -----------------------------------------------------------------------------


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = pyjwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(pyjwt, "decode", counting)  # the module the gateway calls
    return calls


async def test_a_verified_token_is_served_from_cache_until_exp_and_never_after(
    decode_calls: list[str],
) -> None:
    token_claims = claims()
    clock_now = [float(token_claims["iat"])]
    auth = JwtAuthenticator(settings(), clock=lambda: clock_now[0])
    token = sign(token_claims, SECRET, "HS256")
    first = await auth.authenticate(token)
    clock_now[0] = token_claims["exp"] - 0.001
    assert await auth.authenticate(token) is first
    assert len(decode_calls) == 1
    clock_now[0] = token_claims["exp"]
    await auth.authenticate(token)  # re-verified (pyjwt's own clock still finds it valid)
    assert len(decode_calls) == 2


async def test_rejected_tokens_are_not_cached(decode_calls: list[str]) -> None:
    auth = JwtAuthenticator(settings())
    token = sign(claims(aud="someone-else"), SECRET, "HS256")
    for _ in range(2):
        assert await reason_of(auth, token) == AuthReason.INVALID_TOKEN
    assert len(decode_calls) == 2


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"secret": None}, "HS256 needs a secret"),
        ({"secret": "short"}, "at least 32 bytes"),
        ({"algorithms": ["RS256"]}, "secret is only for HS256"),
        ({"algorithms": ["RS256"], "secret": None}, "need public_keys or a jwks_url"),
        ({"algorithms": []}, "at least one"),
        ({"public_keys": ["not a pem"]}, "public_keys[0]"),
        ({"allowed_roles": ["admin"]}, "global admin"),
        ({"jwks_url": "file:///etc/keys"}, "http"),
        ({"algorithm": "HS256"}, "Extra inputs"),
    ],
)
def test_settings_refuse_unsafe_or_incomplete_configs(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings(**overrides)


def test_settings_accept_durations_and_certificates() -> None:
    parsed = settings(leeway="1m", jwks_refresh_interval="250ms")
    assert (parsed.leeway, parsed.jwks_refresh_interval) == (60.0, 0.25)
    assert JwtSettings().enabled is False  # disabled needs no keys


async def test_a_token_without_roles_is_no_consumer_unless_consumers_are_allowed() -> None:
    admins_only = settings(allowed_roles=["tenant_admin"])
    payload = {"sub": "con_1", "tenant": "ten_1", "exp": int(time.time()) + 60}
    token = pyjwt.encode({**payload, "iss": ISSUER, "aud": AUDIENCE}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="none of the roles"):
        await JwtAuthenticator(admins_only).authenticate(token)
    principal = await JwtAuthenticator(settings()).authenticate(token)
    assert principal.roles == {Role.CONSUMER}


def test_jwks_must_be_https_except_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        settings(algorithms=["RS256"], secret=None, jwks_url="http://idp.example.com/jwks")
    assert settings(algorithms=["RS256"], secret=None, jwks_url="http://127.0.0.1:9/j").jwks_url
