"""TLS and mTLS on the gRPC port, from the config."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.certs import CertificateAuthority
from tests.conftest import MOCK_CONFIG, StartGateway
from unigate.v1 import inference_pb2 as pb
from unigate.v1 import inference_pb2_grpc

REQUEST = pb.ChatRequest(
    model="mock", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])]
)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority()


async def call(target: str, credentials: grpc.ChannelCredentials | None) -> pb.ChatResponse:
    options = [("grpc.ssl_target_name_override", "gateway.test")]
    channel = (
        grpc.aio.secure_channel(target, credentials, options=options)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        response: pb.ChatResponse = await stub.Chat(REQUEST, timeout=5)
        return response


async def test_tls(start_gateway: StartGateway, ca: CertificateAuthority, tmp_path: Path) -> None:
    server = ca.issue("gateway.test", dns_names=("gateway.test",), server=True)
    tls = {
        "cert_file": write(tmp_path, "server.pem", server.cert),
        "key_file": write(tmp_path, "server.key", server.key),
    }
    gateway = await start_gateway({**MOCK_CONFIG, "tls": tls})
    trusted = grpc.ssl_channel_credentials(root_certificates=ca.pem)
    assert (await call(gateway.target, trusted)).message.content[0].text == "hi"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(gateway.target, None)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    stranger = grpc.ssl_channel_credentials(root_certificates=CertificateAuthority().pem)
    with pytest.raises(grpc.aio.AioRpcError):
        await call(gateway.target, stranger)


async def test_mtls_requires_a_client_certificate(
    start_gateway: StartGateway, ca: CertificateAuthority, tmp_path: Path
) -> None:
    server = ca.issue("gateway.test", dns_names=("gateway.test",), server=True)
    client = ca.issue("billing", uris=("spiffe://example.org/ns/prod/sa/billing",))
    tls = {
        "cert_file": write(tmp_path, "server.pem", server.cert),
        "key_file": write(tmp_path, "server.key", server.key),
        "client_ca_file": write(tmp_path, "ca.pem", ca.pem),
    }
    gateway = await start_gateway({**MOCK_CONFIG, "tls": tls})
    with_cert = grpc.ssl_channel_credentials(ca.pem, client.key, client.cert)
    assert (await call(gateway.target, with_cert)).message.content[0].text == "hi"
    without_cert = grpc.ssl_channel_credentials(root_certificates=ca.pem)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(gateway.target, without_cert)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
