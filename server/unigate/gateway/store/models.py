"""The records the store keeps: who may call, and what they may call.

    Tenant ─┬─ Consumer (an application) ─┬─ ApiKey (hash only)
            │                             └─ Subscription (to a Service) ── status
            ├─ Service (a model alias the tenant may see; needs approval or not)
            └─ Admin (an operator; tenant-scoped, or global when tenant_id is None)

Times are UTC epoch seconds (float). Ids are opaque strings with a type prefix.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar


class SubscriptionStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVOKED = "revoked"


class Role(enum.StrEnum):
    ADMIN = "admin"  # every tenant, every admin call
    TENANT_ADMIN = "tenant_admin"  # admin calls within its own tenant
    CONSUMER = "consumer"  # inference calls, and requesting its own subscriptions


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: float
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Consumer:
    id: str
    tenant_id: str
    name: str
    created_at: float
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Admin:
    id: str
    tenant_id: str | None  # None: a global admin
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's public part. The secret is never stored, only `secret_hash`."""

    id: str  # the public id, also the lookup part of the key string
    tenant_id: str | None
    consumer_id: str | None  # set for a consumer's key
    admin_id: str | None  # set for an admin's key
    name: str
    secret_hash: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """A key with the records that decide whether it may be used, read together."""

    key: ApiKey
    tenant: Tenant | None  # None only for a global admin's key
    consumer: Consumer | None
    admin: Admin | None


@dataclass(frozen=True, slots=True)
class Service:
    tenant_id: str
    alias: str
    requires_approval: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    tenant_id: str
    consumer_id: str
    alias: str
    status: SubscriptionStatus
    requested_at: float
    decided_by: str | None = None  # the admin id that approved, rejected or revoked
    decided_at: float | None = None
    note: str = ""


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list and the token for the next (empty when there is none)."""

    items: list[T]
    next_page_token: str = ""
