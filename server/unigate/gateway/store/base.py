"""The store interface. SQLite (embedded default) and PostgreSQL implement it and
pass the same test suite (tests/store/). Every list is keyset-paginated by id
(AIP-158: page_size, page_token); a page token is opaque to callers.

Errors: `NotFoundError` for a missing record, `ConflictError` for a duplicate or
a state change that is not allowed; both carry a message for the caller.
`ValueError` for an argument no record could have (a bad page token, a negative
page size, an empty name, a key whose tenant is not its owner's).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

from unigate.gateway.store.models import (
    Admin,
    ApiKey,
    CallLog,
    CallLogFilter,
    Consumer,
    KeyOwner,
    Page,
    Service,
    Subscription,
    SubscriptionStatus,
    Tenant,
    UsageQuery,
    UsageRow,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class StoreError(Exception):
    pass


class NotFoundError(StoreError):
    pass


class ConflictError(StoreError):
    pass


class Store(Protocol):
    async def open(self) -> None:
        """Connect, and create or migrate the schema to the latest version."""

    async def close(self) -> None: ...

    # tenants and consumers
    async def create_tenant(self, name: str) -> Tenant: ...
    async def get_tenant(self, tenant_id: str) -> Tenant: ...
    async def list_tenants(self, page_size: int = 0, page_token: str = "") -> Page[Tenant]: ...
    async def update_tenant(
        self, tenant_id: str, *, name: str | None = None, disabled: bool | None = None
    ) -> Tenant: ...

    async def create_consumer(self, tenant_id: str, name: str) -> Consumer: ...
    async def get_consumer(self, consumer_id: str) -> Consumer: ...
    async def list_consumers(
        self, tenant_id: str, page_size: int = 0, page_token: str = ""
    ) -> Page[Consumer]: ...
    async def update_consumer(
        self, consumer_id: str, *, name: str | None = None, disabled: bool | None = None
    ) -> Consumer: ...

    async def create_admin(self, name: str, tenant_id: str | None) -> Admin: ...
    async def get_admin(self, admin_id: str) -> Admin: ...
    async def count_admins(self) -> int: ...

    # keys: the store never sees a secret, only its hash
    async def create_key(
        self,
        *,
        key_id: str,
        secret_hash: str,
        name: str,
        tenant_id: str | None,
        consumer_id: str | None = None,
        admin_id: str | None = None,
        expires_at: float | None = None,
    ) -> ApiKey: ...
    async def get_key(self, key_id: str) -> ApiKey: ...
    async def get_key_with_owner(self, key_id: str) -> KeyOwner:
        """The key, its tenant and its consumer or admin in one round trip (for auth
        on a cache miss: expiry, revocation and `disabled` checked from one read)."""

    async def list_keys(
        self,
        *,
        tenant_id: str | None = None,
        consumer_id: str | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[ApiKey]: ...
    async def revoke_key(self, key_id: str, *, at: float | None = None) -> ApiKey:
        """Revoke now, or schedule it (`at`, e.g. the end of a rotation's grace window)."""

    # services and subscriptions
    async def upsert_service(
        self, tenant_id: str, alias: str, *, requires_approval: bool
    ) -> Service: ...
    async def list_services(
        self, tenant_id: str, page_size: int = 0, page_token: str = ""
    ) -> Page[Service]: ...
    async def get_service(self, tenant_id: str, alias: str) -> Service: ...

    async def request_subscription(self, consumer_id: str, alias: str) -> Subscription:
        """Pending, or approved at once when the service needs no approval. Requesting
        again after a rejection or revocation makes it pending again."""

    async def decide_subscription(
        self, subscription_id: str, status: SubscriptionStatus, *, by: str, note: str = ""
    ) -> Subscription: ...
    async def get_subscription(self, subscription_id: str) -> Subscription: ...
    async def find_subscription(self, consumer_id: str, alias: str) -> Subscription | None: ...
    async def list_subscriptions(
        self,
        *,
        tenant_id: str | None = None,
        consumer_id: str | None = None,
        statuses: Sequence[SubscriptionStatus] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Subscription]: ...

    # quota policies: the limit fields of a quota.policy.Policy, per tenant or consumer
    async def set_quota_policy(
        self, tenant_id: str, consumer_id: str | None, policy: dict[str, Any]
    ) -> None:
        """Create or replace the tenant's policy (consumer_id None) or the consumer's;
        ValueError when `policy` is not a valid set of limits."""

    async def get_quota_policies(
        self, tenant_id: str, consumer_id: str | None
    ) -> list[tuple[str, dict[str, Any]]]:
        """("tenant", limits) when the tenant has a policy, then ("consumer", limits)
        when `consumer_id` is given and has one."""

    async def delete_quota_policy(self, tenant_id: str, consumer_id: str | None) -> None:
        """NotFoundError when there is none."""

    # call logs (observability/calllog.py writes them in batches, off the call's path)
    async def insert_call_logs(self, records: Sequence[CallLog]) -> None:
        """Insert the records and add them to the per-minute rollups, in one transaction."""

    async def list_call_logs(
        self, where: CallLogFilter, page_size: int = 0, page_token: str = ""
    ) -> Page[CallLog]:
        """Newest first (by id); with `where.after_id`, oldest first after that id."""

    async def usage_stats(self, query: UsageQuery) -> list[UsageRow]:
        """One row per (bucket, group) that saw calls, ordered by bucket then group."""

    async def delete_call_logs_before(self, ts: float, *, limit: int = 5000) -> int:
        """Delete up to `limit` call logs older than `ts`; how many were deleted.
        Small batches keep each transaction short (the retention job loops)."""

    async def delete_usage_before(
        self, ts: float, *, limit: int = 5000, periods: Collection[int] = ()
    ) -> int:
        """Delete up to `limit` usage rollup rows whose period ended by `ts`: of every
        level, or of those whose period (minutes: 1, 60, 1440) is in `periods`."""
