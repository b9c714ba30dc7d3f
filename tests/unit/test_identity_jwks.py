"""JWKS: keys fetched from a local aiohttp server, refreshed for unknown kids, rate-limited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.unit.identity_tokens import b64, claims, hand_made, reason_of, settings, sign
from unigate.gateway.identity.errors import AuthError, AuthReason
from unigate.gateway.identity.jwt import JwtAuthenticator


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class JwksServer:
    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    hits: int = 0
    url: str = ""


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    state = JwksServer()

    async def serve(request: web.Request) -> web.Response:
        state.hits += 1
        if state.status != 200:
            return web.Response(status=state.status, text="down")
        return web.json_response({"keys": state.keys})

    app = web.Application()
    app.router.add_get("/jwks.json", serve)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/jwks.json"
    yield state
    await runner.cleanup()


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "use": "sig"}


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def jwks_auth(jwks_server: JwksServer) -> AsyncIterator[tuple[JwtAuthenticator, Monotonic]]:
    clock = Monotonic()
    config = settings(
        algorithms=["RS256", "ES256"],
        secret=None,
        jwks_url=jwks_server.url,
        jwks_refresh_interval=30,
    )
    auth = JwtAuthenticator(config, monotonic=clock)
    yield auth, clock
    await auth.close()


async def test_jwks_is_fetched_once_and_refreshed_for_an_unknown_kid(
    jwks_server: JwksServer,
    jwks_auth: tuple[JwtAuthenticator, Monotonic],
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    auth, clock = jwks_auth
    jwks_server.keys = [jwk(rsa_key, "k1")]
    assert (await auth.authenticate(sign(claims(sub="a"), rsa_key, "RS256", kid="k1"))).tenant_id
    clock.now += 3000  # known kids never refresh, however old (below jwks_max_age)
    await auth.authenticate(sign(claims(sub="b"), rsa_key, "RS256", kid="k1"))
    assert jwks_server.hits == 1
    jwks_server.keys.append(jwk(ec_key, "k2"))  # the IdP rotates in a new key
    assert await auth.authenticate(sign(claims(sub="c"), ec_key, "ES256", kid="k2"))
    assert jwks_server.hits == 2


async def test_unknown_kid_refreshes_are_rate_limited(
    jwks_server: JwksServer,
    jwks_auth: tuple[JwtAuthenticator, Monotonic],
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    auth, clock = jwks_auth
    jwks_server.keys = [jwk(rsa_key, "k1")]
    await auth.authenticate(sign(claims(), rsa_key, "RS256", kid="k1"))
    clock.now += 30
    for n in range(3):
        token = sign(claims(sub=f"s{n}"), other_rsa_key, "RS256", kid="unknown")
        assert await reason_of(auth, token) == AuthReason.INVALID_TOKEN
    assert jwks_server.hits == 2  # one refresh for three unknown-kid tokens
    clock.now += 29.9
    await reason_of(auth, sign(claims(sub="x"), other_rsa_key, "RS256", kid="unknown"))
    assert jwks_server.hits == 2
    jwks_server.keys.append(jwk(other_rsa_key, "unknown"))
    clock.now += 0.1
    assert await auth.authenticate(sign(claims(sub="y"), other_rsa_key, "RS256", kid="unknown"))
    assert jwks_server.hits == 3


async def test_an_unreachable_jwks_is_unavailable_then_recovers(
    jwks_server: JwksServer,
    jwks_auth: tuple[JwtAuthenticator, Monotonic],
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    auth, _ = jwks_auth
    jwks_server.status = 503
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(sign(claims(), rsa_key, "RS256", kid="k1"))
    assert caught.value.reason == AuthReason.JWKS_UNAVAILABLE
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    jwks_server.status, jwks_server.keys = 200, [jwk(rsa_key, "k1")]
    assert await auth.authenticate(sign(claims(), rsa_key, "RS256", kid="k1"))


async def test_a_failed_refresh_keeps_the_keys_it_had(
    jwks_server: JwksServer,
    jwks_auth: tuple[JwtAuthenticator, Monotonic],
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    auth, clock = jwks_auth
    jwks_server.keys = [jwk(rsa_key, "k1")]
    await auth.authenticate(sign(claims(sub="a"), rsa_key, "RS256", kid="k1"))
    jwks_server.status = 500
    clock.now += 3600  # past jwks_max_age: the next miss refreshes, and that fails
    assert await auth.authenticate(sign(claims(sub="b"), rsa_key, "RS256", kid="k1"))
    assert jwks_server.hits == 2


async def test_symmetric_keys_in_a_jwks_are_never_used(jwks_server: JwksServer) -> None:
    leaked = b"a-symmetric-key-published-in-the-jwks!!"
    jwks_server.keys = [{"kty": "oct", "kid": "k1", "k": b64(leaked)}]
    config = settings(algorithms=["HS256", "RS256"], jwks_url=jwks_server.url)
    auth = JwtAuthenticator(config)
    try:
        token = sign(claims(), leaked, "HS256", kid="k1")
        assert await reason_of(auth, token) == AuthReason.INVALID_TOKEN
        rs_like = hand_made({"alg": "RS256", "kid": "k1"}, claims(), leaked)
        assert await reason_of(auth, rs_like) == AuthReason.JWKS_UNAVAILABLE
    finally:
        await auth.close()
