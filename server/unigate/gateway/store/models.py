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


# Call logs: one record per inference call (observability/calllog.py writes them in
# batches), and per-minute rollups of them that usage statistics are read from.


@dataclass(slots=True)
class CallLog:
    """One inference call, however it ended. Secrets never appear here: a key is
    recorded by its public id, and bodies (opt-in per alias) are redacted first."""

    request_id: str
    ts: float  # when the call arrived, UTC epoch seconds
    method: str  # the RPC: Chat, StreamChat, Complete, StreamComplete or Embed
    code: str  # the gRPC status name: OK, INVALID_ARGUMENT, UNAVAILABLE, ...
    reason: str = ""  # the ErrorInfo reason of a failure (errors.Reason)
    tenant_id: str | None = None
    consumer_id: str | None = None
    key_id: str | None = None  # the API key's public id, when a key was used
    alias: str = ""  # the model alias the caller named
    provider: str = ""  # the provider block that served the last attempt ("" if none)
    deployment: str = ""
    vendor_model: str = ""
    latency_ms: float = 0.0  # in the gateway, from arrival to the last byte
    upstream_latency_ms: float | None = None  # the last attempt, to its last byte
    ttft_ms: float | None = None  # streams: arrival to the first content sent
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: float = 0.0  # from the price table (quotas.prices), in its currency
    cache_hit: bool = False
    retries: int = 0  # attempts after the first, across deployments
    fallbacks: str = ""  # comma-separated aliases tried before the one that answered
    client_address: str = ""  # the caller's IP address
    end_user: str = ""  # the request's `user` field
    request_body: str | None = None  # JSON, redacted; only for aliases with log_bodies
    response_body: str | None = None
    id: int = 0  # given by the store, ascending in insertion order


@dataclass(frozen=True, slots=True)
class CallLogFilter:
    """Which call logs to list; every field set must match."""

    since: float | None = None  # ts >= since
    until: float | None = None  # ts < until
    tenant_id: str | None = None
    consumer_id: str | None = None
    alias: str | None = None
    codes: tuple[str, ...] = ()  # any of these status names
    errors_only: bool = False  # code != "OK"
    min_latency_ms: float | None = None
    request_id: str | None = None
    after_id: int | None = None  # following new calls: id > after_id, oldest first


class Bucket(enum.StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


BUCKET_SECONDS = {Bucket.MINUTE: 60, Bucket.HOUR: 3600, Bucket.DAY: 86400}


class GroupBy(enum.StrEnum):
    NONE = ""
    TENANT = "tenant"
    CONSUMER = "consumer"
    ALIAS = "alias"
    PROVIDER = "provider"


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Usage over [since, until), in UTC-aligned buckets; minute precision (the
    rollups are per minute, so since rounds down and until up to a whole minute)."""

    since: float
    until: float
    bucket: Bucket = Bucket.HOUR
    group_by: GroupBy = GroupBy.NONE
    tenant_id: str | None = None
    consumer_id: str | None = None
    alias: str | None = None
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class UsageRow:
    bucket_start: float  # UTC epoch seconds
    group: str  # the tenant id, consumer id, alias or provider; "" without group_by
    calls: int
    errors: int  # calls whose status was not OK
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost: float
    cache_hits: int
    latency_mean_ms: float
    latency_p50_ms: float  # estimated from a latency histogram (see store/rollup.py)
    latency_p95_ms: float
    latency_p99_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.calls if self.calls else 0.0
