"""mTLS: a real grpc.aio TLS server on 127.0.0.1, client certificates made here."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from unigate.gateway.identity.mtls import MtlsIdentifier
from unigate.gateway.identity.principal import Principal, Via
from unigate.gateway.identity.settings import MtlsIdentitySettings, MtlsRule
from unigate.gateway.store.models import Role

BILLING = "spiffe://example.org/ns/prod/sa/billing"

RULES = MtlsIdentitySettings.model_validate(
    {
        "rules": [
            {"spiffe_id": BILLING, "tenant": "ten_a", "consumer": "con_billing"},
            {
                "spiffe_id_prefix": "spiffe://example.org/ns/",
                "tenant": "ten_a",
                "consumer": "con_ns",
            },
            {
                "spiffe_id_prefix": "spiffe://example.org/ns/ops/",
                "tenant": "ten_a",
                "roles": ["tenant_admin"],
            },
            {"common_name": "legacy-batch", "tenant": "ten_b", "consumer": "con_batch"},
            {"common_name": "root-operator", "roles": ["admin"]},
        ]
    }
)


@dataclass
class Pki:
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        self.ca_cert = self._issue("test-ca", self.ca_key, [], ca=True)

    def _issue(
        self,
        common_name: str | None,
        key: ec.EllipticCurvePrivateKey,
        sans: list[x509.GeneralName],
        *,
        ca: bool = False,
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.ca_key, hashes.SHA256())

    def pair(self, common_name: str | None, *uris: str, dns: str = "") -> tuple[bytes, bytes]:
        """(private key PEM, certificate PEM) signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uris]
        if dns:
            sans.append(x509.DNSName(dns))
        if common_name == "localhost":
            sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = self._issue(common_name, key, sans)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem, cert.public_bytes(serialization.Encoding.PEM)

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class TlsServer:
    pki: Pki
    port: int
    identified: list[Principal | None]
    contexts: list[Mapping[str, Iterable[bytes]]]

    async def call_as(self, client: tuple[bytes, bytes] | None) -> Principal | None:
        key, cert = client if client is not None else (None, None)
        credentials = grpc.ssl_channel_credentials(self.pki.ca_pem, key, cert)
        async with grpc.aio.secure_channel(f"127.0.0.1:{self.port}", credentials) as channel:
            who: Any = channel.unary_unary("/test.Probe/Who")
            assert await who(b"", timeout=5) == b"ok"
        return self.identified[-1]


async def start_server(pki: Pki, *, require_client_auth: bool) -> tuple[grpc.aio.Server, TlsServer]:
    identifier = MtlsIdentifier(RULES)
    identified: list[Principal | None] = []
    contexts: list[Mapping[str, Iterable[bytes]]] = []

    async def who(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        contexts.append(context.auth_context())
        identified.append(identifier.identify(context.auth_context()))
        return b"ok"

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Probe", {"Who": grpc.unary_unary_rpc_method_handler(who)}
            )
        ]
    )
    credentials = grpc.ssl_server_credentials(
        [pki.pair("localhost", dns="localhost")],
        root_certificates=pki.ca_pem,
        require_client_auth=require_client_auth,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, TlsServer(pki, port, identified, contexts)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[TlsServer]:
    server, handle = await start_server(pki, require_client_auth=True)
    yield handle
    await server.stop(grace=None)


async def test_grpc_exposes_the_spiffe_id_and_common_name(mtls_server: TlsServer, pki: Pki) -> None:
    await mtls_server.call_as(pki.pair("billing-client", BILLING, dns="billing.local"))
    context = {key: list(values) for key, values in mtls_server.contexts[-1].items()}
    assert context["transport_security_type"] == [b"ssl"]
    assert context["peer_spiffe_id"] == [BILLING.encode()]
    assert context["x509_common_name"] == [b"billing-client"]


async def test_a_spiffe_id_rule_matches(mtls_server: TlsServer, pki: Pki) -> None:
    principal = await mtls_server.call_as(pki.pair("anything", BILLING, dns="billing.local"))
    assert principal == Principal(
        via=Via.MTLS,
        subject=BILLING,
        tenant_id="ten_a",
        consumer_id="con_billing",
        roles=frozenset({Role.CONSUMER}),
    )


async def test_the_longest_spiffe_prefix_wins(mtls_server: TlsServer, pki: Pki) -> None:
    ops = "spiffe://example.org/ns/ops/sa/deployer"
    principal = await mtls_server.call_as(pki.pair(None, ops))
    assert principal is not None
    assert (principal.subject, principal.roles) == (ops, frozenset({Role.TENANT_ADMIN}))
    assert principal.consumer_id is None
    other = await mtls_server.call_as(pki.pair(None, "spiffe://example.org/ns/dev/sa/x"))
    assert other is not None and other.consumer_id == "con_ns"


async def test_a_common_name_rule_matches(mtls_server: TlsServer, pki: Pki) -> None:
    principal = await mtls_server.call_as(pki.pair("legacy-batch"))
    assert principal is not None
    assert (principal.subject, principal.tenant_id, principal.consumer_id) == (
        "legacy-batch",
        "ten_b",
        "con_batch",
    )


async def test_no_matching_rule_is_none(mtls_server: TlsServer, pki: Pki) -> None:
    assert await mtls_server.call_as(pki.pair("stranger", "spiffe://other.org/sa/x")) is None
    assert await mtls_server.call_as(pki.pair("stranger")) is None


async def test_two_uri_sans_are_no_spiffe_id_so_only_the_cn_counts(
    mtls_server: TlsServer, pki: Pki
) -> None:
    two = pki.pair("stranger", BILLING, "spiffe://example.org/ns/prod/sa/other")
    assert await mtls_server.call_as(two) is None
    with_cn = pki.pair("legacy-batch", BILLING, "spiffe://example.org/ns/prod/sa/other")
    principal = await mtls_server.call_as(with_cn)
    assert principal is not None and principal.consumer_id == "con_batch"


async def test_no_client_certificate_is_none(pki: Pki) -> None:
    server, handle = await start_server(pki, require_client_auth=False)
    try:
        assert await handle.call_as(None) is None
        assert "x509_common_name" not in handle.contexts[-1]
    finally:
        await server.stop(grace=None)


def test_precedence_without_a_server() -> None:
    identifier = MtlsIdentifier(RULES)
    both = {"peer_spiffe_id": [BILLING.encode()], "x509_common_name": [b"legacy-batch"]}
    matched = identifier.identify(both)
    assert matched is not None and matched.consumer_id == "con_billing"
    admin = identifier.identify({"x509_common_name": [b"root-operator"]})
    assert admin is not None and admin.is_admin() and admin.tenant_id is None
    assert identifier.identify({}) is None


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"tenant": "t", "consumer": "c"}, "exactly one"),
        ({"spiffe_id": BILLING, "common_name": "x", "tenant": "t", "consumer": "c"}, "exactly one"),
        ({"spiffe_id": "https://example.org/x", "tenant": "t", "consumer": "c"}, "SPIFFE"),
        ({"spiffe_id_prefix": "spiffe://example.org/ns", "tenant": "t", "consumer": "c"}, "'/'"),
        ({"common_name": "x", "consumer": "c"}, "needs a tenant"),
        ({"common_name": "x", "tenant": "t"}, "needs a consumer"),
        ({"common_name": "x", "tenant": "t", "roles": ["admin"]}, "admin rule is global"),
        ({"common_name": "x", "tenant": "t", "consumer": "c", "role": "x"}, "Extra inputs"),
    ],
)
def test_rules_refuse_ambiguous_or_unsafe_shapes(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MtlsRule.model_validate(rule)


def test_two_rules_for_one_identity_are_refused() -> None:
    rule = {"common_name": "x", "tenant": "t", "consumer": "c"}
    with pytest.raises(ValidationError, match="two rules match"):
        MtlsIdentitySettings.model_validate({"rules": [rule, rule]})
