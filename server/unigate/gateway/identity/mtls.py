"""mTLS identities: a verified client certificate mapped to a principal by config rules.

What grpc.aio puts in `ServicerContext.auth_context()` for a TLS peer (grpcio 1.85,
observed with a real server and client; tests/unit/test_identity_mtls.py keeps it so):

    transport_security_type         [b"ssl"]
    x509_common_name                [b"billing-client"]          subject CN, when present
    x509_subject                    [b"CN=billing-client"]
    x509_subject_alternative_name   every DNS, URI, e-mail and IP SAN, mixed
    peer_uri, peer_dns              the URI and DNS SANs, by type
    peer_spiffe_id                  [b"spiffe://example.org/ns/prod/sa/billing"], only
                                    when the certificate has exactly one URI SAN and it
                                    is a valid SPIFFE id (as the SPIFFE X.509-SVID spec
                                    requires); absent otherwise
    x509_pem_cert                   the leaf certificate

gRPC exposes the SPIFFE id itself, so nothing here parses certificates. Python's grpc
server credentials either require and verify a client certificate or do not ask for
one, so any certificate seen here was verified against the configured client CA.

Matching: an exact `spiffe_id` rule first, then the longest `spiffe_id_prefix`, then a
`common_name` rule; no rule (or no client certificate) → None, and the caller falls
back to keys and tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from unigate.gateway.identity.principal import Principal, Via
from unigate.gateway.identity.settings import MtlsIdentitySettings, MtlsRule

SPIFFE_ID = "peer_spiffe_id"
COMMON_NAME = "x509_common_name"


def _first(values: Iterable[bytes] | None) -> str | None:
    for value in values or ():
        return value.decode(errors="replace")
    return None


def _principal(rule: MtlsRule, subject: str) -> Principal:
    return Principal(
        via=Via.MTLS,
        subject=subject,
        tenant_id=rule.tenant,
        consumer_id=rule.consumer,
        roles=frozenset(rule.roles),
    )


class MtlsIdentifier:
    def __init__(self, settings: MtlsIdentitySettings) -> None:
        self._by_spiffe_id: dict[str, Principal] = {}
        self._by_common_name: dict[str, Principal] = {}
        prefixes: list[tuple[str, MtlsRule]] = []
        for rule in settings.rules:
            if rule.spiffe_id is not None:
                self._by_spiffe_id[rule.spiffe_id] = _principal(rule, rule.spiffe_id)
            elif rule.spiffe_id_prefix is not None:
                prefixes.append((rule.spiffe_id_prefix, rule))
            elif rule.common_name is not None:
                self._by_common_name[rule.common_name] = _principal(rule, rule.common_name)
        self._prefixes = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)

    def identify(self, auth_context: Mapping[str, Iterable[bytes]]) -> Principal | None:
        """The principal for a call's `context.auth_context()`, or None."""
        spiffe_id = _first(auth_context.get(SPIFFE_ID))
        if spiffe_id is not None:
            principal = self._by_spiffe_id.get(spiffe_id)
            if principal is not None:
                return principal
            for prefix, rule in self._prefixes:
                if spiffe_id.startswith(prefix):
                    return _principal(rule, spiffe_id)
        common_name = _first(auth_context.get(COMMON_NAME))
        if common_name is not None:
            return self._by_common_name.get(common_name)
        return None
