"""Who is calling: the result of authentication, read by every later layer."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from unigate.gateway.store.models import Role


class Via(enum.StrEnum):
    API_KEY = "api_key"
    JWT = "jwt"
    MTLS = "mtls"


@dataclass(frozen=True, slots=True)
class Principal:
    via: Via
    subject: str  # the key id, the JWT `sub`, or the certificate subject / SPIFFE id
    tenant_id: str | None  # None only for a global admin
    consumer_id: str | None = None
    admin_id: str | None = None
    roles: frozenset[Role] = field(default_factory=frozenset)

    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    def can_administer(self, tenant_id: str) -> bool:
        """Global admins administer every tenant; tenant admins only their own."""
        return self.is_admin() or (Role.TENANT_ADMIN in self.roles and self.tenant_id == tenant_id)
