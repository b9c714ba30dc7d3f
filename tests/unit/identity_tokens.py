"""Tokens and settings for the JWT tests: claims, signing, hand-made forgeries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from unigate.gateway.identity.errors import AuthError
from unigate.gateway.identity.jwt import JwtAuthenticator
from unigate.gateway.identity.settings import JwtSettings

SECRET = "a-shared-secret-of-at-least-32-bytes!"
ISSUER = "https://idp.test/"
AUDIENCE = "unigate"


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "con_billing",
        "tenant": "ten_a",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def sign(payload: dict[str, Any], key: Any, algorithm: str, **headers: Any) -> str:
    return pyjwt.encode(payload, key, algorithm=algorithm, headers=headers or None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token pyjwt would refuse to make: `alg: none`, or HMAC under a public key."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if hmac_key is None:
        return signing_input + "."
    mac = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def settings(**overrides: Any) -> JwtSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "algorithms": ["HS256"],
        "secret": SECRET,
        "issuer": ISSUER,
        "audience": AUDIENCE,
    }
    values.update(overrides)
    return JwtSettings(**values)


async def reason_of(auth: JwtAuthenticator, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(token)
    return caught.value.reason
