"""Authentication through the real server: JWTs and client certificates as well as
keys, health without credentials, and access decided per tenant and subscription."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt as pyjwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.certs import CertificateAuthority
from tests.conftest import RunningGateway, StartGateway
from tests.helpers import error_info
from unigate.gateway.store.models import SubscriptionStatus
from unigate.v1 import inference_pb2 as pb
from unigate.v1 import inference_pb2_grpc

SECRET = "a-shared-secret-of-at-least-32-bytes!!"
ISSUER = "https://idp.test"
SPIFFE = "spiffe://example.org/ns/prod/sa/billing"
REQUEST = pb.ChatRequest(
    model="mock", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])]
)


@dataclass
class World:
    gateway: RunningGateway
    tenant: str
    consumer: str
    other_tenant: str
    other_consumer: str

    def token(self, **overrides: Any) -> str:
        claims = {
            "sub": self.consumer,
            "tenant": self.tenant,
            "iss": ISSUER,
            "aud": "unigate",
            "exp": int(time.time()) + 600,
        }
        claims.update(overrides)
        return pyjwt.encode(claims, SECRET, algorithm="HS256")


def config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "logging": {"access_log": False},
        "store": {"url": f"sqlite:///{tmp_path}/unigate.db"},
        "auth": {
            "api_keys": {"cache_ttl": "0s"},
            "access_cache_ttl": "0s",
            "jwt": {
                "enabled": True,
                "algorithms": ["HS256"],
                "secret": SECRET,
                "issuer": ISSUER,
                "audience": "unigate",
            },
            **extra,
        },
        "providers": {"m": {"kind": "mock"}},
        "models": {"mock": {"deployments": [{"provider": "m", "model": "echo"}]}},
    }


async def seed(gateway: RunningGateway) -> World:
    store = gateway.gateway.security.store
    assert store is not None
    tenant = await store.create_tenant("acme")
    consumer = await store.create_consumer(tenant.id, "billing")
    await store.upsert_service(tenant.id, "mock", requires_approval=True)
    subscription = await store.request_subscription(consumer.id, "mock")
    await store.decide_subscription(subscription.id, SubscriptionStatus.APPROVED, by="test")
    other = await store.create_tenant("globex")
    other_consumer = await store.create_consumer(other.id, "spy")
    return World(gateway, tenant.id, consumer.id, other.id, other_consumer.id)


@pytest.fixture
async def world(start_gateway: StartGateway, tmp_path: Path) -> World:
    return await seed(await start_gateway(config(tmp_path)))


async def chat(world: World, token: str) -> pb.ChatResponse:
    metadata = (("authorization", f"Bearer {token}"),)
    response: pb.ChatResponse = await world.gateway.stub.Chat(REQUEST, metadata=metadata)
    return response


async def test_a_valid_jwt_passes(world: World) -> None:
    assert (await chat(world, world.token())).message.content[0].text == "hi"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "EXPIRED_TOKEN"),
        ("wrong signature", "INVALID_TOKEN"),
        ("wrong audience", "INVALID_TOKEN"),
        ("wrong issuer", "INVALID_TOKEN"),
        ("alg none", "INVALID_TOKEN"),
        ("no tenant claim", "INVALID_TOKEN"),
    ],
)
async def test_bad_jwts_are_unauthenticated(world: World, case: str, reason: str) -> None:
    tokens = {
        "expired": world.token(exp=int(time.time()) - 120),
        "wrong signature": pyjwt.encode(
            {
                "sub": world.consumer,
                "tenant": world.tenant,
                "iss": ISSUER,
                "aud": "unigate",
                "exp": int(time.time()) + 600,
            },
            "another-secret-that-is-32-bytes-long!!",
            algorithm="HS256",
        ),
        "wrong audience": world.token(aud="someone-else"),
        "wrong issuer": world.token(iss="https://evil.test"),
        "alg none": pyjwt.encode(
            {
                "sub": world.consumer,
                "tenant": world.tenant,
                "iss": ISSUER,
                "aud": "unigate",
                "exp": int(time.time()) + 600,
            },
            None,
            algorithm="none",
        ),
        "no tenant claim": world.token(tenant=None),
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat(world, tokens[case])
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value).reason == reason


async def test_another_tenants_alias_does_not_exist_for_the_caller(world: World) -> None:
    token = world.token(sub=world.other_consumer, tenant=world.other_tenant)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat(world, token)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    listing = await world.gateway.stub.ListModels(
        pb.ListModelsRequest(), metadata=(("authorization", f"Bearer {token}"),)
    )
    assert list(listing.models) == []


async def test_health_needs_no_credentials_but_inference_does(world: World) -> None:
    health = health_pb2_grpc.HealthStub(world.gateway.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="unigate.v1.AdminService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await world.gateway.stub.Chat(REQUEST)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value).reason == "MISSING_CREDENTIALS"
    assert "authorization: Bearer" in (caught.value.details() or "")


async def test_a_mapped_client_certificate_authenticates(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    ca = CertificateAuthority()
    server = ca.issue("gateway.test", dns_names=("gateway.test",), server=True)
    for name, data in {"s.pem": server.cert, "s.key": server.key, "ca.pem": ca.pem}.items():
        (tmp_path / name).write_bytes(data)
    settings = config(tmp_path)
    settings["tls"] = {
        "cert_file": str(tmp_path / "s.pem"),
        "key_file": str(tmp_path / "s.key"),
        "client_ca_file": str(tmp_path / "ca.pem"),
    }
    gateway = await start_gateway(settings)
    world = await seed(gateway)
    settings["auth"]["mtls"] = {
        "rules": [{"spiffe_id": SPIFFE, "tenant": world.tenant, "consumer": world.consumer}]
    }
    gateway = await start_gateway(settings)  # the same store file, now with the rule

    async def call(cert_uri: str) -> pb.ChatResponse:
        client = ca.issue("workload", uris=(cert_uri,))
        credentials = grpc.ssl_channel_credentials(ca.pem, client.key, client.cert)
        options = [("grpc.ssl_target_name_override", "gateway.test")]
        async with grpc.aio.secure_channel(gateway.target, credentials, options=options) as ch:
            response: pb.ChatResponse = await inference_pb2_grpc.InferenceServiceStub(ch).Chat(
                REQUEST, timeout=5
            )
            return response

    assert (await call(SPIFFE)).message.content[0].text == "hi"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call("spiffe://example.org/ns/prod/sa/stranger")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_jwt_for_a_missing_or_disabled_consumer_fails(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat(world, world.token(sub="con_does_not_exist"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(caught.value).reason == "UNKNOWN_CONSUMER"
    store = world.gateway.gateway.security.store
    assert store is not None
    await store.update_consumer(world.consumer, disabled=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat(world, world.token())
    assert error_info(caught.value).reason == "DISABLED_CONSUMER"
    await store.update_consumer(world.consumer, disabled=False)
    await store.update_tenant(world.tenant, disabled=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat(world, world.token())
    assert error_info(caught.value).reason == "DISABLED_TENANT"
